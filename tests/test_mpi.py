"""End-to-end tests that launch real MPI jobs (mpiexec from the virtualenv, 2-4 ranks, with timeouts)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jobs import environment

from mpiswim.checkpoint import read_raw

pytestmark = pytest.mark.slow  # every test here starts mpiexec

DRIVER = Path(__file__).with_name("mpi_driver.py")
TIMEOUT = 240

TINY_CONFIG = """\
[run]
name = "tiny"
seed = 7
iterations = 3

[env]
id = "Swimmer-v5"
T = 40
gamma = 1.0

[pool]
iterate_episodes = 2
evaluate_episodes = 2
common_evaluation = false
evaluation_action = "sample"

[policy]
features = "signed"
update = "unit-density"
baseline = "state"

[ranks]
alpha = {alpha}
eta = 1e-3
"""


def mpiexec() -> str:
    """The launcher beside this Python (the MPI wheel's), else the one on PATH."""
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        pytest.fail("no mpiexec/mpirun found: run the tests through `make test`, which installs MPI")
    return found


def launch(ranks: int, mode: str, outdir: Path, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run the test driver on `ranks` ranks; fail (never hang) if it outlives the timeout."""
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(DRIVER), mode, str(outdir), *args]
    env = environment()
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=outdir)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"MPI job did not finish within {timeout} s (a rank hung?): {error.stderr}")


def write_config(tmp_path: Path, alpha: str = "1e-4", iterations: int = 3) -> Path:
    text = TINY_CONFIG.format(alpha=alpha).replace("iterations = 3", f"iterations = {iterations}")
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def read_pool(path: Path) -> dict[str, np.ndarray]:
    """The pool's rows (trimmed to the iterations done) and the current agents, as mpiswim reads them back."""
    raw = read_raw(path)
    data = {f"pool/{name}": values for name, values in raw.pool.items()}
    for which in ("current", "best"):
        for part, values in (
            raw.agent(which)._asdict().items()
        ):  # with the running scalers and a travelling eta when the config has them
            data[f"agent/{which}/{part}"] = values
    data["iterations_done"] = raw.iterations_done
    return data


def assert_same_numbers(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Two runs' read_pool data agree bit for bit, timings aside."""
    for name, values in expected.items():
        if name != "pool/timings":
            np.testing.assert_array_equal(actual[name], values, err_msg=name)


def exit_codes(outdir: Path, ranks: int) -> list[int]:
    return [int((outdir / f"rc.{r}").read_text()) for r in range(ranks)]


def test_broadcast_gives_every_rank_the_roots_parameters_bit_for_bit(tmp_path):
    result = launch(3, "broadcast", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "broadcast.ok").exists()


# The seed-faithful options on the tiny config: scalers refit within an episode, so every part of the agent moves.
SEED_FAITHFUL = (
    TINY_CONFIG.replace("eta = 1e-3", "eta = [1e-3, 1e-2, 1e-1]")
    .replace(
        'update = "unit-density"\n',
        'update = "tanh-density"\nintercept = "shared"\nnormalisation = "running"\nbaseline_target = '
        '"after-update"\nprecision = "float32"\neta_travels = true\n',
    )
    .replace("[ranks]", "[normalisation]\nrefit_every = 30\nhorizon = 90\n\n[ranks]")
)


@pytest.mark.parametrize("config", [TINY_CONFIG, SEED_FAITHFUL], ids=["default", "seed-faithful"])
def test_pool_iteration_picks_argmax_and_replaces_every_agent(tmp_path, config):
    """The winner's whole agent reaches every rank: parameters, and with the seed-faithful options its scalers and
    eta.
    """
    (tmp_path / "config.toml").write_text(config.format(alpha="[1e-5, 1e-4, 1e-3]"))
    result = launch(3, "pool", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pool.ok").exists()


SEARCH_CONFIG = (
    TINY_CONFIG.replace("iterate_episodes = 2", 'learner = "random-search"\niterate_episodes = 4')
    .replace(
        'common_evaluation = false\nevaluation_action = "sample"',
        'evaluation_action = "mean"\ncommon_evaluation = true',
    )
    .replace("eta = 1e-3", "[search]\nnoise = 0.1")
)


def test_random_search_pools_every_ranks_exploration_into_one_step(tmp_path):
    (tmp_path / "config.toml").write_text(SEARCH_CONFIG.format(alpha="[0.01, 0.1, 1.0]"))
    result = launch(3, "search", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "search.ok").exists()


ARS_V2 = {  # ARS V2-t on a body that falls: pooled normalisation and the shift
    'id = "Swimmer-v5"': 'id = "Hopper-v5"',
    'features = "signed"': 'features = "linear"\nnormalisation = "pooled"',
    "noise = 0.1": "noise = 0.1\nshift = 1.0\ntop = 4",
}


BEST_BY_FRESH = 'name = "tiny"\nbest_by = "fresh"\ntarget_episodes = 4'


@pytest.mark.parametrize("variant", ["swimmer", "ars-v2-hopper", "best-by-fresh"])
def test_resumed_random_search_run_equals_uninterrupted_run(tmp_path, variant):
    config = tmp_path / "search.toml"
    text = SEARCH_CONFIG.format(alpha="{min = 0.05, max = 0.5}").replace("iterations = 3", "iterations = 4")
    for old, new in ARS_V2.items() if variant == "ars-v2-hopper" else ():
        text = text.replace(old, new)
    text = text.replace('name = "tiny"', BEST_BY_FRESH) if variant == "best-by-fresh" else text
    config.write_text(text)
    straight = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "straight.h5")
    assert straight.returncode == 0, straight.stderr
    first = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "resumed.h5", "--iterations", "2")
    second = launch(2, "cli", tmp_path, "train", "--resume", "resumed.h5", "--iterations", "4")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    expected, actual = read_pool(tmp_path / "straight.h5"), read_pool(tmp_path / "resumed.h5")
    assert actual["iterations_done"] == 4
    assert np.all(np.isfinite(expected["pool/train_returns"]))  # 4 exploration returns per rank and iteration
    assert_same_numbers(actual, expected)
    if variant == "ars-v2-hopper":  # the statistics travel with the agent and in the checkpoint
        statistics = read_raw(tmp_path / "resumed.h5").agent("current").policy_scaler
        np.testing.assert_array_equal(statistics, read_raw(tmp_path / "straight.h5").agent("current").policy_scaler)
        assert statistics.shape == (1, 2 + 2 * 11) and statistics[0, 0] > 0  # count: the states explored so far


def test_with_best_by_fresh_the_best_agent_is_the_winner_whose_shared_fresh_episodes_scored_highest(tmp_path):
    """3 ranks share each candidate winner's 4 fresh episodes (rank r plays r, r + 3). A winner plays them exactly when
    its score beats the best fresh score so far; the best score is the highest of their means, and the best agent's
    episodes replayed here one after another give that mean: the ranks' shares make up the whole."""
    from mpiswim.checkpoint import load_checkpoint
    from mpiswim.env import Trajectory, run_episode, task_for
    from mpiswim.state import fresh_episode_stream

    config = tmp_path / "search.toml"
    text = SEARCH_CONFIG.format(alpha="[0.01, 0.1, 1.0]").replace("iterations = 3", "iterations = 6")
    config.write_text(text.replace('name = "tiny"', BEST_BY_FRESH))
    result = launch(3, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert result.returncode == 0, result.stderr
    pool = read_pool(tmp_path / "run.h5")
    rows = np.arange(6)
    fresh, best = pool["pool/fresh_score"], pool["pool/best_score"]
    winners = pool["pool/scores"][rows, pool["pool/winner"]]
    best_before = np.concatenate([[-np.inf], best[:-1]])
    np.testing.assert_array_equal(~np.isnan(fresh), winners > best_before)
    np.testing.assert_array_equal(best, np.maximum.accumulate(np.where(np.isnan(fresh), -np.inf, fresh)))
    assert np.isnan(fresh).any() or (fresh < winners).any()  # the winners' scores flatter them: not every one is kept

    checkpoint = load_checkpoint(tmp_path / "run.h5")
    cfg, state = checkpoint.config, checkpoint.state
    task = task_for(cfg)
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    replayed = [
        run_episode(task, state.best_agent, fresh_episode_stream(cfg.seed, state.best_iteration, episode), cfg.T,
                    trajectory, mean_action=True)[0]
        for episode in range(4)
    ]  # fmt: skip
    assert np.mean(replayed) == state.best_score == best[-1]
    check = launch(1, "cli", tmp_path, "check", "run.h5")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_reached_target_ends_the_run_cleanly(tmp_path):
    config = write_config(tmp_path, iterations=50)
    config.write_text(config.read_text().replace('name = "tiny"', 'name = "tiny"\ntarget = -1000\ntarget_episodes = 2'))
    result = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert result.returncode == 0, result.stderr
    assert exit_codes(tmp_path, 2) == [0, 0]
    assert "target check: the new best agent scores" in result.stdout and "(target -1000): reached" in result.stdout
    assert "mpiswim: done (target reached): 1 iterations" in result.stdout
    assert read_pool(tmp_path / "run.h5")["iterations_done"] == 1
    check = launch(1, "cli", tmp_path, "check", "run.h5")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_run_stopped_at_its_target_goes_on_to_a_new_target_with_the_uninterrupted_numbers(tmp_path):
    """A run that stopped at target -1000 after 1 of 3 iterations, resumed with --resume-if-exists and the target 1e9,
    runs its other 2 iterations with exactly the numbers of a run started with 1e9 (the check only decides where a run
    stops); the file then stores the new target and checks."""
    from mpiswim.checkpoint import load_checkpoint

    def config_with(target: str) -> Path:
        path = tmp_path / f"target{target}.toml"
        path.write_text(TINY_CONFIG.format(alpha="1e-4").replace('name = "tiny"', f'name = "tiny"\ntarget = {target}'))
        return path

    low, high = config_with("-1000"), config_with("1e9")
    stopped = launch(2, "cli", tmp_path, "train", "--config", str(low), "--out", "run.h5")
    assert stopped.returncode == 0 and "mpiswim: done (target reached): 1 iterations" in stopped.stdout, stopped.stderr
    straight = launch(2, "cli", tmp_path, "train", "--config", str(high), "--out", "straight.h5")
    went_on = launch(2, "cli", tmp_path, "train", "--config", str(high), "--out", "run.h5", "--resume-if-exists")
    assert straight.returncode == 0 and went_on.returncode == 0, straight.stderr + went_on.stderr
    assert exit_codes(tmp_path, 2) == [0, 0] and "scores the target 1e+09" in went_on.stdout
    assert_same_numbers(read_pool(tmp_path / "run.h5"), read_pool(tmp_path / "straight.h5"))
    assert read_pool(tmp_path / "run.h5")["iterations_done"] == 3
    assert load_checkpoint(tmp_path / "run.h5").config.target == 1e9
    check = launch(1, "cli", tmp_path, "check", "run.h5")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_time_limit_stops_every_rank_cleanly_and_the_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    """[run] max_seconds = 1 of 400 iterations: rank 0 decides after an iteration, every rank stops after it with exit
    code 0, the file checks; resumed with --time-limit 0 (the stored limit lifted) to 2 more iterations, the run has
    exactly the numbers of an uninterrupted run of as many iterations."""
    config = write_config(tmp_path, iterations=400)
    config.write_text(config.read_text().replace('name = "tiny"', 'name = "tiny"\nmax_seconds = 1'))
    limited = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert limited.returncode == 0 and exit_codes(tmp_path, 2) == [0, 0], limited.stdout + limited.stderr
    done = read_pool(tmp_path / "run.h5")["iterations_done"]
    assert 1 <= done < 400  # set-up and compiling alone take about a second
    assert "0:00:01 of wall time (time limit), whichever comes first" in limited.stdout
    assert limited.stdout.count(f"mpiswim: time limit reached after {done} iterations (") == 1, limited.stdout
    assert "Resume with: `mpirun -n 2 mpiswim train --resume run.h5` (the resumed job gets 1 s again" in limited.stdout
    check = launch(1, "cli", tmp_path, "check", "run.h5")
    assert check.returncode == 0, check.stdout + check.stderr
    total = str(done + 2)
    resumed = launch(2, "cli", tmp_path, "train", "--resume", "run.h5", "--iterations", total, "--time-limit", "0")
    assert resumed.returncode == 0 and "time limit" not in resumed.stdout, resumed.stdout + resumed.stderr
    straight = launch(
        2, "cli", tmp_path, "train", "--config", str(config), "--out", "straight.h5", "--iterations", total,
        "--time-limit", "0",
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr
    actual, expected = read_pool(tmp_path / "run.h5"), read_pool(tmp_path / "straight.h5")
    assert actual["iterations_done"] == done + 2
    assert_same_numbers(actual, expected)


def test_train_records_the_scores_the_ranks_computed(tmp_path):
    config = write_config(tmp_path)
    result = launch(3, "scores", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert result.returncode == 0, result.stderr
    assert exit_codes(tmp_path, 3) == [0, 0, 0]
    data = read_pool(tmp_path / "run.h5")
    assert data["iterations_done"] == 3
    computed = np.array([[float(v) for v in (tmp_path / f"scores.{r}").read_text().split()] for r in range(3)]).T
    np.testing.assert_array_equal(data["pool/scores"], computed)
    np.testing.assert_array_equal(data["pool/winner"], np.argmax(computed, axis=1))
    assert data["pool/train_returns"].shape == (3, 3, 2)
    assert data["pool/timings"].shape == (3, 3, 4)
    assert "iteration    3/3" in result.stdout


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    config = write_config(tmp_path, iterations=4)
    straight = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "straight.h5")
    assert straight.returncode == 0, straight.stderr
    first = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "resumed.h5", "--iterations", "2")
    assert first.returncode == 0, first.stderr
    assert read_pool(tmp_path / "resumed.h5")["iterations_done"] == 2
    second = launch(2, "cli", tmp_path, "train", "--resume", "resumed.h5", "--iterations", "4")
    assert second.returncode == 0, second.stderr

    expected, actual = read_pool(tmp_path / "straight.h5"), read_pool(tmp_path / "resumed.h5")
    assert actual["iterations_done"] == 4
    assert_same_numbers(actual, expected)  # every /pool dataset, steps included
    # a swimmer never falls: each rank ran its 2 + 2 episodes of T = 40 steps in each iteration, in both runs
    assert actual["pool/steps"].tolist() == expected["pool/steps"].tolist() == [[160, 160]] * 4


def test_resumed_seed_faithful_run_equals_uninterrupted_run(tmp_path):
    """The scalers and the travelling eta are checkpointed with the agents: a resumed run gives the same numbers.
    The config differences come from --set, which the checkpoint stores in its config."""
    config = tmp_path / "seed.toml"
    config.write_text(SEED_FAITHFUL.format(alpha="[1e-4, 1e-3]").replace("[1e-3, 1e-2, 1e-1]", "[1e-3, 1e-2]"))
    changes = [
        "--set",
        "run.iterations=4",
        "--set",
        "normalisation.refit_every=25",
        "--set",
        "normalisation.horizon=100",
    ]
    straight = launch(2, "cli", tmp_path, "train", "--config", str(config), *changes, "--out", "straight.h5")
    assert straight.returncode == 0, straight.stderr
    first = launch(
        2, "cli", tmp_path, "train", "--config", str(config), *changes, "--out", "resumed.h5", "--iterations", "2"
    )
    second = launch(2, "cli", tmp_path, "train", "--resume", "resumed.h5", "--iterations", "4")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    expected, actual = read_pool(tmp_path / "straight.h5"), read_pool(tmp_path / "resumed.h5")
    assert actual["iterations_done"] == 4
    assert (
        expected["agent/current/policy_scaler"].shape == (5, 18)
        and expected["agent/current/policy_scaler"][0, 0] == 4 * 4 * 40
    )
    assert expected["agent/current/baseline_eta"][0] in (1e-3, 1e-2)
    assert_same_numbers(actual, expected)
    stored = launch(1, "cli", tmp_path, "info", "straight.h5", "--config")
    assert "refit_every = 25" in stored.stdout and "horizon = 100" in stored.stdout


def test_failing_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    config = write_config(tmp_path, iterations=6)
    result = launch(3, "fail", tmp_path, "train", "--config", str(config), "--out", "run.h5", timeout=120)
    assert result.returncode != 0
    assert "injected failure" in result.stderr
    data = read_pool(tmp_path / "run.h5")
    assert data["iterations_done"] in (1, 2)  # rank 0 may or may not have written iteration 2 before the abort
    assert data["pool/scores"].shape[0] == data["iterations_done"]


def test_bad_config_exits_nonzero_on_every_rank_with_one_message(tmp_path):
    config = write_config(tmp_path, alpha="[1e-4, 1e-4]")
    result = launch(3, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5", timeout=120)
    assert result.returncode != 0
    assert exit_codes(tmp_path, 3) == [2, 2, 2]
    assert result.stderr.count("config error") == 1
    assert "[ranks] alpha" in result.stderr and "3 ranks" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run.h5").exists()


def test_existing_output_is_not_overwritten_and_resume_needs_same_ranks(tmp_path):
    config = write_config(tmp_path, iterations=1)
    first = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run.h5").read_bytes()

    again = launch(2, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert exit_codes(tmp_path, 2) == [2, 2]
    assert "already exists" in again.stderr and "--force" in again.stderr

    other_size = launch(3, "cli", tmp_path, "train", "--resume", "run.h5", "--iterations", "2")
    assert exit_codes(tmp_path, 3) == [2, 2, 2]
    assert "2 ranks" in other_size.stderr and "mpirun -n 2" in other_size.stderr
    assert (tmp_path / "run.h5").read_bytes() == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--iterations", "0"], "--iterations 0: must be at least 1"),  # mpiswim's own check, before MPI starts
        (["--iterations", "many"], "invalid int value: 'many'"),  # an argparse error
    ],
)
def test_a_usage_error_under_mpiexec_is_printed_once(tmp_path, options, message):
    """Every process finds the error before MPI starts; rank 0 (from the launcher's variables) says it, every process
    exits
    2.
    """
    command = f"{shlex.quote(sys.executable)} -m mpiswim.cli train {shlex.join(options)}; echo $? > rc.$PMI_RANK"
    env = environment()
    result = subprocess.run(
        [mpiexec(), "-n", "3", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
    )
    assert exit_codes(tmp_path, 3) == [2, 2, 2], result.stderr
    assert result.stderr.count(message) == 1 and result.stderr.count("mpiswim") <= 2, (
        result.stderr
    )  # argparse adds one usage line


def test_a_checkpoint_written_before_the_new_defaults_resumes_with_its_own_meaning(tmp_path, monkeypatch):
    """A file mpiswim 0.1.0 wrote from a config that left the five changed keys out meant their old values
    (signed features, unit-density, state baseline, sampled and separate evaluation): resumed now, it runs
    exactly as that config written out in full, and its file keeps saying so."""
    from dataclasses import replace

    from mpiswim import checkpoint
    from mpiswim.config import LEGACY_DEFAULTS, parse_config
    from mpiswim.policy import initial_agent
    from mpiswim.state import initial_state

    explicit = write_config(tmp_path, iterations=2)
    straight = launch(2, "cli", tmp_path, "train", "--config", str(explicit), "--out", "straight.h5")
    assert straight.returncode == 0, straight.stderr

    # The old file: the same run before its first iteration, its stored text without the five keys.
    left_out = [
        line
        for line in explicit.read_text().splitlines()
        if line.split(" = ")[0] not in {key for table in LEGACY_DEFAULTS.values() for key in table}
    ]
    cfg = parse_config(explicit.read_text(), 2)
    cfg = replace(cfg, toml_text="\n".join(left_out) + "\n")
    monkeypatch.setattr(checkpoint.writer, "package_versions", lambda: {"mpiswim": "0.1.0"})  # where build_image looks
    agent = initial_agent(8, 2, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    checkpoint.CheckpointWriter.create(tmp_path / "old.h5", cfg, initial_state(agent), []).close()
    assert "features" not in checkpoint.load_checkpoint(tmp_path / "old.h5").config_toml

    resumed = launch(2, "cli", tmp_path, "train", "--resume", "old.h5")
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = read_pool(tmp_path / "straight.h5"), read_pool(tmp_path / "old.h5")
    assert actual["iterations_done"] == 2
    assert_same_numbers(actual, expected)
    stored = checkpoint.load_checkpoint(tmp_path / "old.h5").config
    assert (stored.features, stored.update, stored.baseline, stored.evaluation_action, stored.common_evaluation) == (
        "signed",
        "unit-density",
        "state",
        "sample",
        False,
    )


def test_a_third_learner_is_one_function_and_one_registry_line(tmp_path):
    """The pool runs any mpiswim.pool.Learner registered in mpiswim.config.LEARNERS: here tests/third_learner.py."""
    config = TINY_CONFIG.format(alpha="[1e-3, 2e-3, 3e-3]").replace("[pool]\n", '[pool]\nlearner = "shift"\n')
    (tmp_path / "config.toml").write_text(config)
    result = launch(3, "third-learner", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "third.ok").exists()
