"""The README's newcomer path, run as printed (issue 18 item 1).

Every fenced code block of README.md is read when the tests are collected:
```bash blocks hold commands, ```python blocks are run as scripts, ```toml
blocks are reference sketches (not run). Each command, with its [optional]
parts expanded (`[--json | --config]` gives the command without them, then
with each), is one test, run in README order in one scratch copy of the
project (its Makefile, pyproject.toml and configs/, and .venv linked to this
virtualenv), with bash and a timeout, and must exit 0; the commands with a
promise the README spells out (the file a run writes, the plots of analyze,
...) have it checked too (CHECKS).

Only the commands in INSTEAD are not run as printed: CI cannot (an 85-second
run, a second 1.3 GB install, a site's module system, a SLURM cluster), and
INSTEAD says what runs in their place. A command the README gains is run
as printed, so it fails here unless it works in CI or is added to INSTEAD.

What the test adds to the commands is what a newcomer adds: `my.toml` is
edited after `mpiswim config > my.toml` (the README: "edit it") into a tiny
run (SMALL_RUN). Every file a command reads was written by an earlier command
of the README (`runs/default.h5` by `make run`, `runs/swimmer-default.h5` by
the run of `my.toml`), so the path is the one a newcomer walks, in order. The
README's five "next things" (own config, more ranks, resume, looking at the
run, a cluster job) each have their checks in CHECKS, or in INSTEAD for the
cluster job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from jobs import environment, finish_job, start_job

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent  # the virtualenv running the tests: `make test`'s .venv
TIMEOUT = 180  # seconds per command on a loaded 2-core machine (each takes 1-12 s idle); reaching it fails
SHELL_LANGUAGES = {"bash", "sh", "console", "shell"}
NOT_RUN_LANGUAGES = {"toml"}  # the config sketch of "Config (TOML)": key names, not a file or a command


# --- what CI runs in place of the commands it cannot run ------------------------------------


def make_run_instead(workdir: Path) -> str:
    """`make run` is the install (which `make test` runs in CI, .ci/run) plus a 120-iteration, ~85 s run.

    Here: `make -n run` must print exactly the command the README says it runs
    (`mpiexec -n 4 mpiswim train --out runs/default.h5`, plus --force), and that
    command runs with `--iterations 2` added; it writes the runs/default.h5 the
    later commands use.
    """
    planned = bash("make -n run", workdir).stdout.strip().splitlines()
    train = [line for line in planned if "mpiswim train " in line]
    assert len(train) == 1, f"`make -n run` shows no single `mpiswim train` line:\n{planned}"
    shown = re.sub(r"\S*/(?=mpiexec |mpiswim )", "", train[0])  # .venv/bin/mpiexec -> mpiexec
    said = re.search(r"runs\s+`(mpiexec -n 4 mpiswim train --out\s+runs/default\.h5)`", README.read_text())
    assert said, "the README no longer says which command `make run` runs"
    assert shown == " ".join(said.group(1).split()) + " --force", (
        f"`make run` runs `{shown}`, the README says `{said.group(1)}`"
    )
    result = bash(train[0] + " --iterations 2", workdir)
    assert (workdir / "runs/default.h5").is_file(), result.stdout
    return result.stdout


def make_test_fast_instead(workdir: Path) -> str:
    """`make test-fast` is a part of `make test` (which CI runs, and which runs this file); here `make -n test-fast`
    must show pytest leaving out the slow tests, as the README says."""
    planned = bash("make -n test-fast", workdir).stdout
    assert re.search(r"pytest .*-m .not slow.", planned), (
        f"`make -n test-fast` runs no `pytest -m 'not slow'`:\n{planned}"
    )
    return planned


def cluster_job_instead(workdir: Path) -> str:
    """`sbatch ... slurm/pool.sbatch my.toml runs/my.h5` needs a SLURM cluster.

    CI submits the same script with the same arguments (a config, then the
    checkpoint's path) to a real one-node SLURM in `make slurm-test`
    (.ci/run, slurm/test_slurm.sh). Here: the script exists, parses, and
    test_slurm.sh still submits it that way.
    """
    script = REPO / "slurm/pool.sbatch"
    bash(f"bash -n {shlex.quote(str(script))}", workdir, whose="the test's syntax check of slurm/pool.sbatch,")
    submitted = re.findall(
        r'sbatch [^\n]*"\$repo/slurm/pool\.sbatch" \S+\.toml "\S+\.h5"', (REPO / "slurm/test_slurm.sh").read_text()
    )
    assert submitted, "slurm/test_slurm.sh no longer submits slurm/pool.sbatch with a config and a checkpoint path"
    return ""


# README command -> what CI runs instead (a function run here at the command's place, or the
# place where CI runs it). Every command of the README not listed here is run as printed.
INSTEAD: dict[str, Callable[[Path], str] | str] = {
    "make run": make_run_instead,
    "make test": "CI itself: .ci/run runs `make test`, which runs this file",
    "make test-fast": make_test_fast_instead,
    "module load openmpi": "no module system in CI; the site's MPI is the cluster's own",
    "make venv EXTRAS=test,analysis MPI4PY_FROM_SOURCE=1": "a second 1.3 GB install; CI installs with the same `make "
    "venv` rule (through `make test`), with the MPI wheel",
    "sbatch --ntasks=10 --time=1:00:00 slurm/pool.sbatch my.toml runs/my.h5": cluster_job_instead,
}

# The edit that makes `my.toml` a run of seconds: short episodes, few of them, and a target every
# new best agent reaches, so that each run stops at its first new best (with exit code 0) and
# `--resume runs/swimmer-default.h5 --iterations 200` continues a run without training 200 iterations.
SMALL_RUN = {"iterations": "3", "T": "40", "iterate_episodes": "2", "evaluate_episodes": "2"}
SMALL_TARGET = "target = -1e9\ntarget_episodes = 1\n"

# The README's Python block calls history_frame, which needs pandas ("mpiswim does not install it").
# Without pandas the block runs with this stand-in, which checks what history_frame hands pandas.
PANDAS_STANDIN = """\
import numpy


class DataFrame:
    def __init__(self, columns):
        assert isinstance(columns, dict) and all(isinstance(v, numpy.ndarray) for v in columns.values()), columns
        self.columns = columns

    def set_index(self, name):
        assert name in self.columns, name
        return self
"""


# --- reading the README -------------------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```\s*$", text, re.M | re.S)]


def commands(body: str) -> list[str]:
    """The commands of a shell block: one per line, comments (`  # ...`) and comment-only lines dropped."""
    found = []
    for line in body.splitlines():
        command = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if command:
            found.append(command)
    return found


def variants(command: str) -> list[str]:
    """The command without its [optional] parts, then with each alternative of each part in turn."""
    parts = re.split(r"\[([^\[\]]+)\]", command)  # text, group, text, group, ..., text
    texts, groups = parts[::2], parts[1::2]
    out = ["".join(texts)]
    for i, group in enumerate(groups):
        for alternative in group.split(" | "):
            out.append(
                "".join(text + (alternative.removesuffix("...") if j == i else "") for j, text in enumerate(texts[:-1]))
                + texts[-1]
            )
    return [" ".join(c.split()) for c in out]


def readme_steps() -> list[tuple[str, str]]:
    """("shell" | "python", text) of every step of the README's blocks, in order."""
    steps = []
    for language, body in fenced_blocks(README.read_text()):
        if language in SHELL_LANGUAGES:
            for command in commands(body):
                steps += (
                    [("shell", variant) for variant in variants(command)]
                    if command not in INSTEAD
                    else [("shell", command)]
                )
        elif language == "python":
            steps.append(("python", body))
    return steps


STEPS = readme_steps()


# --- running ------------------------------------------------------------------------------


def bash(
    command: str, workdir: Path, check: bool = True, whose: str = "the README's", **extra: str
) -> subprocess.CompletedProcess:
    """Run `command` with bash in `workdir` (its own session: killed whole at the timeout)."""
    env = environment(**extra)
    env.pop("VIRTUAL_ENV", None)
    job = start_job(["bash", "-c", command], workdir, env, merge_output=True)
    code, output = finish_job(job, TIMEOUT, f"`{command}`")
    result = subprocess.CompletedProcess(command, code, output, "")
    if check and code != 0:
        pytest.fail(
            f"{whose} `{command}` exits with code {code} in {workdir}:\n{output}\n"
            "Fix the README or the command; if CI cannot run it, add it to INSTEAD in tests/test_readme.py with what "
            "CI runs instead."
        )
    return result


def info(path: Path) -> dict:
    return json.loads(
        bash(
            f"{VENV}/bin/mpiswim info {shlex.quote(str(path))} --json",
            path.parent,
            whose="the test's own look at the run,",
        ).stdout
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A scratch copy of the project the README's commands run in, and what the steps so far left there."""
    workdir = tmp_path_factory.mktemp("newcomer")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, workdir / name)  # keeps the time stamp, so make sees the venv as up to date
    for name in (
        "configs",
        "analysis",
        "slurm",
    ):  # what the README's commands name: configs, analysis/two_runs.py, slurm/
        shutil.copytree(REPO / name, workdir / name)
    (workdir / ".venv").symlink_to(VENV)
    return {"dir": workdir, "prelude": ""}


# --- what each command promises -----------------------------------------------------------


def shrink_config(workdir: Path, output: str, before: dict) -> None:
    """`mpiswim config > my.toml` gives a valid config; edit it, as the README invites, into SMALL_RUN."""
    path = workdir / "my.toml"
    assert tomllib.loads(path.read_text())["run"]["name"]
    text = path.read_text()
    for key, value in SMALL_RUN.items():
        text, n = re.subn(rf"^{key} = \S+", f"{key} = {value}", text, count=1, flags=re.M)
        assert n == 1, f"my.toml has no `{key} = ` line to edit"
    text = text.replace("[run]\n", "[run]\n" + SMALL_TARGET, 1)
    path.write_text(text)
    doc = tomllib.loads(text)
    assert doc["run"]["target"] == -1e9 and doc["env"]["T"] == 40, text


def wrote_named_run(workdir: Path, output: str, before: dict) -> None:
    """The README: `mpirun -n 10 mpiswim train --config my.toml` writes runs/swimmer-default.h5 (the config's name)."""
    assert info(workdir / "runs/swimmer-default.h5")["iterations_done"] >= 1, output


def wrote_pool_of(path: str, ranks: int) -> Callable:
    def check(workdir: Path, output: str, before: dict) -> None:
        summary = info(workdir / path)
        assert summary["world_size"] == ranks and summary["iterations_done"] >= 1, output

    return check


def fast_config_reached_its_target(workdir: Path, output: str, before: dict) -> None:
    """The README: the fast config "stops itself at 340 (T = 1000) -> runs/fast-swimmer.h5"."""
    summary = info(workdir / "runs/fast-swimmer.h5")
    assert summary["world_size"] == 2 and summary["iterations_done"] < summary["iterations_planned"], output
    assert "target reached" in output, output


RESUMED = "runs/swimmer-default.h5"


def continued(workdir: Path, output: str, before: dict) -> None:
    after = info(workdir / RESUMED)
    assert after["iterations_done"] > before[RESUMED]["iterations_done"], output


def continued_to_200(workdir: Path, output: str, before: dict) -> None:
    continued(workdir, output, before)
    assert info(workdir / RESUMED)["iterations_planned"] == 200, output


def resumed_if_exists(workdir: Path, output: str, before: dict) -> None:
    """my.toml's file exists by now, so `--resume-if-exists` resumes it: still one run, none of its iterations lost."""
    assert info(workdir / RESUMED)["iterations_done"] >= before[RESUMED]["iterations_done"], output
    assert "resum" in output.lower(), output


def text_says(words: str) -> Callable:
    def check(workdir: Path, output: str, before: dict) -> None:
        assert words in output, output

    return check


def plots(folder: str, *names: str) -> Callable:
    def check(workdir: Path, output: str, before: dict) -> None:
        for name in names:
            assert (workdir / folder / name).stat().st_size > 0, f"no {folder}/{name}:\n{output}"

    return check


def film(workdir: Path, output: str, before: dict) -> None:
    """`--steps 300` into a .gif keeps every 2nd step: the start and 150 steps, as many frames as render says it
    wrote.
    """
    from PIL import Image

    said = re.search(r"(\d+) frames", output)
    with Image.open(workdir / "swimmer.gif") as gif:
        assert said and gif.n_frames == int(said.group(1)) in (150, 151), (gif.n_frames, output)


# (pattern a command matches in full, its check); the first match counts.
CHECKS: list[tuple[str, Callable]] = [
    (r"mpiswim config > my\.toml", shrink_config),
    (r"mpirun -n \d+ mpiswim train --config my\.toml", wrote_named_run),
    (r"mpirun -n 5 mpiswim train --config my\.toml --out runs/p5\.h5", wrote_pool_of("runs/p5.h5", 5)),
    (r"mpirun -n 2 mpiswim train --config configs/fast-swimmer\.toml", fast_config_reached_its_target),
    (r"mpirun -n \d+ mpiswim train --resume runs/swimmer-default\.h5", continued),
    (r"mpirun -n \d+ mpiswim train --resume runs/swimmer-default\.h5 --iterations 200", continued_to_200),
    (r"mpirun -n \d+ mpiswim train --config my\.toml --resume-if-exists", resumed_if_exists),
    (r"mpiswim info runs/default\.h5", text_says("best score")),
    (r"mpiswim evaluate runs/default\.h5 .*", text_says("mean return")),
    (r"mpiswim analyze runs/default\.h5 --out plots", plots("plots", "learning_curve.png", "wins.png", "timings.png")),
    (r"mpiswim render runs/default\.h5 --out swimmer\.gif --steps 300", film),
    (
        r"python analysis/two_runs\.py runs/default\.h5 runs/swimmer-default\.h5 --out two_runs\.png",
        plots(".", "two_runs.png"),
    ),
]


# --- the tests ----------------------------------------------------------------------------


def test_every_fenced_block_says_what_it_is():
    """An untagged block would escape the test: its commands would be neither run nor listed."""
    blocks = fenced_blocks(README.read_text())
    untagged = [
        body.splitlines()[0]
        for language, body in blocks
        if language not in SHELL_LANGUAGES | NOT_RUN_LANGUAGES | {"python"}
    ]
    assert not untagged, f"README blocks without a known language tag (bash, python or toml): {untagged}"
    assert sum(kind == "shell" for kind, _ in STEPS) >= 10, STEPS


def test_every_command_instead_is_still_in_the_readme():
    shown = {text for kind, text in STEPS if kind == "shell"}
    assert not set(INSTEAD) - shown, f"INSTEAD lists commands the README no longer shows: {set(INSTEAD) - shown}"


@pytest.mark.slow
@pytest.mark.parametrize("kind,text", STEPS, ids=[text.splitlines()[0] for _, text in STEPS])
def test_readme_step(project, kind, text):
    workdir = project["dir"]
    if kind == "python":
        script = workdir / "readme_block.py"
        script.write_text(text)
        extra = {}
        if importlib.util.find_spec("pandas") is None:
            (workdir / "standin").mkdir(exist_ok=True)
            (workdir / "standin/pandas.py").write_text(PANDAS_STANDIN)
            extra["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(workdir / "standin"), os.environ.get("PYTHONPATH")])
            )
        bash(f"{project['prelude']}python readme_block.py", workdir, **extra)
        return
    instead = INSTEAD.get(text)
    if callable(instead):
        instead(workdir)
        return
    if instead is not None:
        pytest.skip(f"not run here: {instead}")
    before = {RESUMED: info(workdir / RESUMED)} if " train " in text and (workdir / RESUMED).exists() else {}
    output = bash(project["prelude"] + text, workdir).stdout
    if text.startswith(("source ", ". ")):
        project["prelude"] += text + " && "  # the shell state the README's next commands rely on
    check = next((check for pattern, check in CHECKS if re.fullmatch(pattern, text)), None)
    if check is not None:
        check(workdir, output, before)
