"""Config validation: every kind of bad input gives one ConfigError naming the field, the value and the fix."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import tomlkit

from mpiswim.config import (
    DEFAULT_CONFIG,
    DEFAULT_STALL_TIMEOUT,
    DEFAULTS,
    HIDDEN,
    KEYS,
    LEGACY_DEFAULTS,
    SCHEMA,
    Config,
    ConfigError,
    check_max_seconds,
    check_stall_timeout,
    field_label,
    keys_markdown,
    load_config,
    parse_config,
    parse_stored_config,
    set_up_stall_timeout,
)
from mpiswim.tasks import check_task
from mpiswim.train import config_differences

MINIMAL = """\
[run]
iterations = 3
[env]
id = "Swimmer-v5"
T = 50
[pool]
iterate_episodes = 2
evaluate_episodes = 2
[ranks]
alpha = 1e-4
eta = 1e-3
"""


class UnboundedActions(gym.Env):
    """A toy task whose action space has no bounds (no Gymnasium MuJoCo task is like that)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,))
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,))


gym.register("MpiswimTest/Unbounded-v0", entry_point=UnboundedActions)


def problem(text: str, world_size: int = 2, task: bool = False, **kwargs) -> str:
    """The one-line ConfigError of parse_config (with task=True: of check_task on its Config)."""
    with pytest.raises(ConfigError) as caught:
        cfg = parse_config(text, world_size, **kwargs)
        if task:
            check_task(cfg)
    message = str(caught.value)
    assert message.startswith("config error") and "Fix:" in message and "\n" not in message
    return message


def test_the_embedded_default_is_valid_for_any_pool_size():
    for world_size in (1, 4, 10):
        cfg = parse_config(DEFAULT_CONFIG, world_size)
        assert len(cfg.alpha) == len(cfg.eta) == world_size
        assert cfg.env_id == "Swimmer-v5" and cfg.features == "linear" and cfg.baseline == "state-time"
        assert (
            cfg.update == "tanh-density" and cfg.common_evaluation is True
        )  # the best setting found (docs/results.md)
        assert cfg.evaluation_action == "mean"
        assert min(cfg.alpha) >= 1e-6 and max(cfg.alpha) <= 1e-4  # the spread of configs/improved-swimmer.toml


def test_a_minimal_config_gets_the_documented_defaults():
    """A key left out means the embedded default's value (since 0.2.0)."""
    cfg = parse_config(MINIMAL, 2)
    assert (cfg.seed, cfg.gamma, cfg.patience, cfg.features, cfg.update) == (0, 1.0, 0, "linear", "tanh-density")
    assert cfg.baseline == "state-time" and cfg.time_feature
    assert cfg.evaluation_action == "mean"
    assert cfg.common_evaluation is True
    assert (
        parse_config(
            MINIMAL.replace("evaluate_episodes = 2", "evaluate_episodes = 2\ncommon_evaluation = false"), 2
        ).common_evaluation
        is False
    )
    assert cfg.alpha == (1e-4, 1e-4) and cfg.eta == (1e-3, 1e-3)
    assert (cfg.name, cfg.out) == ("mpiswim", "runs/mpiswim.h5")


def without_defaults(text: str) -> str:
    """`text` with every key that has a default removed (comments and layout kept)."""
    document = tomlkit.parse(text)
    for section, keys in DEFAULTS.items():
        for key in keys:
            document.get(section, {}).pop(key, None)
    return tomlkit.dumps(document)


def test_a_key_left_out_means_the_embedded_defaults_value():
    """One set of defaults: the embedded default and a config that leaves out every optional key are the same run."""
    full = parse_config(DEFAULT_CONFIG, 4)
    bare_text = without_defaults(DEFAULT_CONFIG)
    required = {(section, key) for section, keys in SCHEMA.items() for key, (_, needed) in keys.items() if needed}
    assert {(section, key) for section, table in tomllib.loads(bare_text).items() for key in table} == required | {
        ("ranks", "alpha"),
        ("ranks", "eta"),
    }
    left_out = parse_config(bare_text, 4)
    assert dataclasses.replace(left_out, name=full.name, out=full.out, toml_text=full.toml_text) == full
    shown = tomllib.loads(DEFAULT_CONFIG)
    assert [
        (section, key)
        for section, table in shown.items()
        for key, value in table.items()
        if key in DEFAULTS[section] and DEFAULTS[section][key] != value
    ] == [("run", "name")]  # the embedded default names its own run; a config without a name is "mpiswim"


def test_every_key_is_declared_once_and_everything_comes_from_its_declaration():
    """KEYS is the one home of a key: the schema, the defaults, Config's fields, the labels and docs/config.md."""
    declared = [(key.section, key.name) for key in KEYS]
    assert len(set(declared)) == len(declared)
    assert {(section, key) for section, keys in SCHEMA.items() for key in keys} == set(declared)
    fields = [field.name for field in dataclasses.fields(Config)]
    assert fields == [key.attribute for key in KEYS if key.attribute] + ["world_size", "toml_text"]
    assert field_label("search_noise") == "[search] noise" and field_label("env_id") == "[env] id"
    page = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()
    assert keys_markdown() in page, (
        "docs/config.md's table of keys differs from mpiswim.config.KEYS: paste keys_markdown()"
    )
    for key in KEYS:  # every key the template shows has the sentence of its declaration beside it
        if key.shown != HIDDEN:
            assert " ".join(key.doc.split()[:4]) in " ".join(DEFAULT_CONFIG.split()), key.label


def test_validating_a_config_imports_no_environment():
    """No import loop: mpiswim.config needs nothing from mpiswim.env (which imports it)."""
    code = (
        "import sys, mpiswim.config; sys.exit(sorted(m for m in sys.modules if m.startswith(('mpiswim.', "
        "'gymnasium', 'numpy'))) != ['mpiswim.config'])"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


STORED = MINIMAL.replace(
    "[ranks]", "[policy]\nobservation_scale = 1.0\n[ranks]"
)  # [pool] without the five keys, [policy] without them


@pytest.mark.parametrize("written_by", [None, "", "0.1.0", "0.1.7", "not a version"])
def test_a_config_stored_before_0_2_0_keeps_the_old_meaning_of_left_out_keys(written_by):
    cfg = parse_stored_config(STORED, 2, None, written_by)
    old = {key: value for keys in LEGACY_DEFAULTS.values() for key, value in keys.items()}
    assert (
        {key: getattr(cfg, key) for key in old}
        == old
        == {
            "common_evaluation": False,
            "evaluation_action": "sample",
            "features": "signed",
            "update": "unit-density",
            "baseline": "state",
        }
    )
    assert cfg.toml_text.count("made explicit") == 5 and cfg.toml_text.startswith(STORED.split("[pool]")[0])
    assert parse_config(cfg.toml_text, 2) == cfg  # a resumed run stores the explicit text: it keeps the meaning
    assert parse_stored_config(STORED, 2, {"alpha": (1e-5, 1e-4), "eta": (1e-3, 1e-3)}, written_by).alpha == (
        1e-5,
        1e-4,
    )


@pytest.mark.parametrize("written_by", ["0.2.0", "0.2.1.dev3", "1.0"])
def test_a_config_stored_since_0_2_0_means_the_new_defaults(written_by):
    cfg = parse_stored_config(STORED, 2, None, written_by)
    assert cfg == parse_config(STORED, 2) and cfg.toml_text == STORED
    assert (cfg.common_evaluation, cfg.evaluation_action, cfg.features, cfg.update, cfg.baseline) == (
        True,
        "mean",
        "linear",
        "tanh-density",
        "state-time",
    )


def test_stored_keys_that_are_given_stay_as_they_are():
    given = MINIMAL.replace("evaluate_episodes = 2", 'evaluate_episodes = 2\nevaluation_action = "mean"').replace(
        "[ranks]", '[policy]\nfeatures = "linear"\n[ranks]'
    )
    cfg = parse_stored_config(given, 2, None, "0.1.0")
    assert (cfg.evaluation_action, cfg.features, cfg.update, cfg.common_evaluation) == (
        "mean",
        "linear",
        "unit-density",
        False,
    )
    assert cfg.toml_text.count("made explicit") == 3
    assert (
        parse_stored_config(DEFAULT_CONFIG, 2, None, "0.1.0").toml_text == DEFAULT_CONFIG
    )  # nothing left out: unchanged
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_stored_config("[pool\n", 2, None, "0.1.0")


def test_the_seed_config_has_ten_ranks_with_a_cautious_first_member():
    cfg = load_config("configs/seed-swimmer.toml", 10)
    assert cfg.alpha == (1e-5,) + (1e-4,) * 9 and cfg.eta == (1e-4,) + (1e-3,) * 9
    assert (cfg.T, cfg.gamma, cfg.iterate_episodes, cfg.evaluate_episodes, cfg.iterations) == (500, 1.0, 10, 10, 400)


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/**/*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid_for_its_pool(path):
    """Each config under configs/ parses for as many ranks as its alpha list has (4 for a {min, max} spread), and fits
    its task.
    """
    alpha = tomllib.loads(path.read_text())["ranks"]["alpha"]
    cfg = load_config(path, len(alpha) if isinstance(alpha, list) else 4)
    check_task(cfg)
    assert cfg.T in (500, 1000)
    # configs/<body>.toml trains that body (ARS V2 on the bodies other than the swimmer); the rest train the swimmer
    assert cfg.env_id == "Swimmer-v5" or cfg.env_id.lower() == f"{path.stem}-v5"


def test_the_best_config_is_the_improved_one_scored_on_the_beta_mean():
    improved, best = (
        load_config("configs/improved-swimmer.toml", 10),
        load_config("configs/improved-mean-eval.toml", 10),
    )
    assert (improved.evaluation_action, best.evaluation_action) == ("sample", "mean")
    assert (
        dataclasses.replace(
            best, name=improved.name, out=improved.out, evaluation_action="sample", toml_text=improved.toml_text
        )
        == improved
    )


def test_malformed_toml():
    assert "not valid TOML" in problem("[run\niterations = 3")


def test_unknown_key_names_it_and_suggests_the_right_one():
    message = problem(MINIMAL.replace("T = 50", "T = 50\ngama = 0.9"))
    assert "[env] gama" in message and "did you mean 'gamma'" in message
    assert "[polcy]" not in message
    message = problem(MINIMAL + "[polcy]\nfeatures = 'signed'\n")
    assert "polcy" in message and "did you mean 'policy'" in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("T = 50", 'T = "50"', "[env] T"),
        ("T = 50", "T = 50.5", "[env] T"),
        ("iterations = 3", "iterations = true", "[run] iterations"),
        ("evaluate_episodes = 2", "evaluate_episodes = 2\ncommon_evaluation = 1", "[pool] common_evaluation"),
        ('id = "Swimmer-v5"', "id = 5", "[env] id"),
        ("alpha = 1e-4", 'alpha = "1e-4"', "[ranks] alpha"),
        ("alpha = 1e-4", 'alpha = [1e-4, "x"]', "[ranks] alpha"),
    ],
)
def test_wrong_types(old, new, field):
    assert field in problem(MINIMAL.replace(old, new))


def test_a_section_that_is_not_a_table():
    message = problem("pool = 3\n" + MINIMAL.replace("[pool]\niterate_episodes = 2\nevaluate_episodes = 2\n", ""))
    assert "pool = 3" in message and "must be a table" in message


def test_missing_required_key():
    message = problem(MINIMAL.replace("T = 50\n", ""))
    assert "[env] T" in message and "missing" in message


def test_list_length_must_equal_the_pool_size():
    message = problem(MINIMAL.replace("alpha = 1e-4", "alpha = [1e-4, 1e-4, 1e-4]"), world_size=2)
    assert "[ranks] alpha" in message and "3 entries" in message and "2 ranks" in message
    assert parse_config(MINIMAL.replace("alpha = 1e-4", "alpha = [1e-5, 1e-4, 1e-4]"), 3).alpha == (1e-5, 1e-4, 1e-4)


def test_a_min_max_table_spreads_the_step_sizes_in_log_over_the_ranks():
    spread = MINIMAL.replace("alpha = 1e-4", "alpha = {min = 1e-6, max = 1e-4}")
    assert parse_config(spread, 3).alpha == pytest.approx((1e-6, 1e-5, 1e-4), rel=1e-12)
    assert parse_config(spread, 1).alpha == pytest.approx((1e-5,), rel=1e-12)  # one rank: the middle of the range
    assert parse_config(MINIMAL.replace("eta = 1e-3", "eta = {min = 1e-3, max = 1e-3}"), 4).eta == (1e-3,) * 4


@pytest.mark.parametrize(
    ("table", "problem_text"),
    [
        ("{min = 1e-6}", "exactly the keys min and max"),
        ("{min = 1e-6, max = 1e-4, mid = 1e-5}", "exactly the keys min and max"),
        ("{min = 1e-4, max = 1e-6}", "min is larger than max"),
        ("{min = 0.0, max = 1e-4}", "positive"),
        ("{min = 1e-6, max = 'big'}", "positive"),
    ],
)
def test_a_bad_min_max_table_names_the_field_and_the_fix(table, problem_text):
    message = problem(MINIMAL.replace("alpha = 1e-4", f"alpha = {table}"))
    assert "[ranks] alpha" in message and problem_text in message and "Fix:" in message


@pytest.mark.parametrize("value", ["0", "-1e-4", "inf", "nan", "[1e-4, 0.0]", "[1e-4, -inf]"])
def test_step_sizes_must_be_positive_and_finite(value):
    message = problem(MINIMAL.replace("eta = 1e-3", f"eta = {value}"))
    assert "[ranks] eta" in message and "positive" in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("iterations = 3", "iterations = 0", "[run] iterations"),
        ("T = 50", "T = 0", "[env] T"),
        ("T = 50", "T = 50\ngamma = 1.5", "[env] gamma"),
        ("iterate_episodes = 2", "iterate_episodes = -1", "[pool] iterate_episodes"),
        ("evaluate_episodes = 2", "evaluate_episodes = 0", "[pool] evaluate_episodes"),
        ("evaluate_episodes = 2", "evaluate_episodes = 2\npatience = -3", "[pool] patience"),
        ("[ranks]", "[policy]\nfeatures = 'radial'\n[ranks]", "[policy] features"),
        ("[ranks]", "[policy]\nupdate = 'adam'\n[ranks]", "[policy] update"),
        ("[ranks]", "[policy]\nbaseline = 'time'\n[ranks]", "[policy] baseline"),
        ("evaluate_episodes = 2", "evaluate_episodes = 2\nevaluation_action = 'mode'", "[pool] evaluation_action"),
        ("[run]", "[run]\nseed = -1", "[run] seed"),
    ],
)
def test_out_of_range_values(old, new, field):
    assert field in problem(MINIMAL.replace(old, new))


@pytest.mark.parametrize("value", ["-1", "0.5", "nan", "inf", "-inf", "true", '"600"'])
def test_stall_timeout_is_0_or_at_least_a_second(value):
    message = problem(MINIMAL.replace("iterations = 3", f"iterations = 3\nstall_timeout = {value}"))
    assert "[run] stall_timeout" in message


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "true", '"20m"'])
def test_max_seconds_is_0_or_a_positive_number_of_seconds(value):
    message = problem(MINIMAL.replace("iterations = 3", f"iterations = 3\nmax_seconds = {value}"))
    assert message.startswith("config error: [run] max_seconds = ") and "Fix: " in message


def test_max_seconds_defaults_to_no_limit_and_may_change_on_resume():
    assert parse_config(MINIMAL, 2).max_seconds == parse_config(DEFAULT_CONFIG, 2).max_seconds == 0
    stored = parse_config(DEFAULT_CONFIG, 2)
    given = parse_config(DEFAULT_CONFIG.replace("max_seconds = 0", "max_seconds = 1200"), 2)
    assert given.max_seconds == 1200 and config_differences(stored, given) == []  # not a reason to refuse a resume
    assert check_max_seconds("--time-limit", 0) == 0 and check_max_seconds("--time-limit", 2.5) == 2.5
    with pytest.raises(ConfigError, match=r"--time-limit = -3\.0: must be 0 \(no time limit\)"):
        check_max_seconds("--time-limit", -3.0)


def test_stall_timeout_defaults_to_ten_minutes_and_0_turns_the_watch_off():
    assert (
        parse_config(MINIMAL, 2).stall_timeout
        == parse_config(DEFAULT_CONFIG, 2).stall_timeout
        == DEFAULT_STALL_TIMEOUT
        == 600
    )
    assert parse_config(MINIMAL.replace("iterations = 3", "iterations = 3\nstall_timeout = 0"), 2).stall_timeout == 0
    assert (
        parse_config(MINIMAL.replace("iterations = 3", "iterations = 3\nstall_timeout = 2.5"), 2).stall_timeout == 2.5
    )
    with pytest.raises(ConfigError, match="--stall-timeout = -3"):
        check_stall_timeout("--stall-timeout", -3.0)
    assert (
        set_up_stall_timeout(None) == set_up_stall_timeout(-3.0) == DEFAULT_STALL_TIMEOUT
        and set_up_stall_timeout(0.0) == 0
    )


def test_unknown_environment_id():
    assert (
        parse_config(MINIMAL.replace("Swimmer-v5", "Swimmmer-v5"), 2).env_id == "Swimmmer-v5"
    )  # the text alone is fine
    message = problem(MINIMAL.replace("Swimmer-v5", "Swimmmer-v5"), task=True)
    assert "[env] id" in message and "Swimmmer-v5" in message


def test_unbounded_action_space(monkeypatch):
    monkeypatch.setattr("mpiswim.tasks.mujoco_ids", lambda: ["Swimmer-v5", "MpiswimTest/Unbounded-v0"])
    message = problem(
        MINIMAL.replace("Swimmer-v5", "MpiswimTest/Unbounded-v0").replace(
            "[ranks]", "[policy]\nfeatures = 'linear'\n[ranks]"
        ),
        task=True,
    )
    assert "unbounded" in message and "MpiswimTest/Unbounded-v0" in message


def test_signed_coding_too_large_for_the_observation_size():
    signed = MINIMAL.replace("Swimmer-v5", "HalfCheetah-v5").replace(
        "[ranks]", "[policy]\nfeatures = 'signed'\n[ranks]"
    )
    message = problem(signed, task=True)
    assert "[policy] features" in message and "2^17" in message and 'features = "linear"' in message
    linear = MINIMAL.replace("Swimmer-v5", "HalfCheetah-v5").replace(
        "[ranks]", "[policy]\nfeatures = 'linear'\n[ranks]"
    )
    assert check_task(parse_config(linear, 2)) == (17, 6)


def test_unreadable_config_files(tmp_path):
    for path in (tmp_path / "missing.toml", tmp_path):
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(path, 2)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(binary, 2)


def write_hyperparameters(path, **datasets) -> None:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)


FROM_FILE = MINIMAL.replace("alpha = 1e-4\neta = 1e-3\n", 'hyperparameters = "steps.h5"\n')


def test_hyperparameters_from_an_hdf5_file(tmp_path):
    write_hyperparameters(tmp_path / "steps.h5", alpha=np.array([1e-5, 1e-4]), eta=np.array([1e-4, 1e-3]))
    (tmp_path / "run.toml").write_text(FROM_FILE)
    cfg = load_config(tmp_path / "run.toml", 2)
    assert cfg.alpha == (1e-5, 1e-4) and cfg.eta == (1e-4, 1e-3)


@pytest.mark.parametrize(
    ("datasets", "expected"),
    [
        ({"alpha": np.ones(3) * 1e-4, "eta": np.ones(2) * 1e-3}, "shape (3,)"),
        ({"alpha": np.ones((2, 2)) * 1e-4, "eta": np.ones(2) * 1e-3}, "shape (2, 2)"),
        ({"alpha": np.array([b"a", b"b"]), "eta": np.ones(2) * 1e-3}, "type"),
        ({"eta": np.ones(2) * 1e-3}, "no dataset 'alpha'"),
        ({"alpha": np.ones(2), "eta": np.ones(2), "beta": np.ones(2)}, "unknown dataset 'beta'"),
        ({"alpha": np.array([1e-4, np.nan]), "eta": np.ones(2) * 1e-3}, "positive finite"),
    ],
)
def test_bad_hyperparameter_files(tmp_path, datasets, expected):
    write_hyperparameters(tmp_path / "steps.h5", **datasets)
    message = problem(FROM_FILE, base_dir=tmp_path)
    assert expected in message and "[ranks]" in message and "steps.h5" in message


def _external_storage(f, secret):
    f.create_dataset("alpha", shape=(2,), dtype="<f8", external=[(str(secret), 0, 16)])


def _virtual(f, secret):
    layout = h5py.VirtualLayout(shape=(2,), dtype="<f8")
    layout[:] = h5py.VirtualSource(str(secret.with_suffix(".h5")), "alpha", shape=(2,))
    f.create_virtual_dataset("alpha", layout)


def _soft_link(f, secret):
    f.create_dataset("hidden", data=np.ones(2) * 1e-4)
    f["alpha"] = h5py.SoftLink("/hidden")


def _external_link(f, secret):
    f["alpha"] = h5py.ExternalLink(str(secret.with_suffix(".h5")), "alpha")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_external_storage, "external raw storage"),
        (_virtual, "virtual dataset"),
        (_soft_link, "soft link"),
        (_external_link, "external link"),
    ],
)
def test_hyperparameter_file_reads_no_other_file(tmp_path, make, expected):
    """A dataset whose values live in another file (a password file, say) is refused, naming it; nothing is read."""
    secret = tmp_path / "secret"
    secret.write_bytes(np.array([1e-4, 2e-4]).tobytes())  # bytes that would pass as step sizes
    write_hyperparameters(secret.with_suffix(".h5"), alpha=np.array([1e-4, 2e-4]))
    with h5py.File(tmp_path / "steps.h5", "w") as f:
        make(f, secret)
        f.create_dataset("eta", data=np.ones(2) * 1e-3)
    message = problem(FROM_FILE, base_dir=tmp_path)
    assert expected in message and "'/alpha'" in message and "steps.h5" in message and "in the file" in message


def test_hyperparameter_file_declaring_huge_data_is_refused_before_reading(tmp_path):
    """10^9 compressed elements in a 2 KB file: refused from the declared shape, quickly, in one short line."""
    with h5py.File(tmp_path / "steps.h5", "w") as f:
        f.create_dataset("alpha", shape=(10**9,), dtype="<f8", chunks=(10**6,), compression="gzip", fillvalue=1e-4)
        f.create_dataset("eta", data=np.ones(2) * 1e-3)
    assert (tmp_path / "steps.h5").stat().st_size < 10_000
    started = time.perf_counter()
    message = problem(FROM_FILE, base_dir=tmp_path)
    assert time.perf_counter() - started < 5  # reading it would take minutes and 8 GB
    assert "shape (1000000000,)" in message and len(message) < 400


def test_hyperparameter_file_that_is_not_hdf5_or_missing(tmp_path):
    assert "no such file" in problem(FROM_FILE, base_dir=tmp_path)
    (tmp_path / "steps.h5").mkdir()
    assert "is a directory" in problem(FROM_FILE, base_dir=tmp_path)
    (tmp_path / "steps.h5").rmdir()
    (tmp_path / "steps.h5").write_text("alpha = 1")
    message = problem(FROM_FILE, base_dir=tmp_path)
    assert "cannot be read as HDF5" in message and "steps.h5" in message and "\n" not in message


def test_step_sizes_in_both_the_file_and_the_config(tmp_path):
    write_hyperparameters(tmp_path / "steps.h5", alpha=np.ones(2) * 1e-4, eta=np.ones(2) * 1e-3)
    message = problem(FROM_FILE.replace("[ranks]", "[ranks]\nalpha = 1e-4"), base_dir=tmp_path)
    assert "not both" in message


def test_config_text_is_kept_verbatim():
    text = MINIMAL + "# a comment the user wrote\n"
    assert parse_config(text, 1).toml_text == text
    assert tomllib.loads(parse_config(text, 1).toml_text)["env"]["T"] == 50


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "positive"),
        ("-2.0", "positive"),
        ("nan", "positive"),
        ("[]", "empty"),
        ('"big"', "expected"),
        ("[1.0, 2.0]", "2 entries but Swimmer-v5 has 8"),
    ],
)
def test_observation_scale_must_be_positive_and_fit_the_task(value, expected):
    message = problem(MINIMAL + f"[policy]\nobservation_scale = {value}\n", task=True)
    assert "[policy] observation_scale" in message and expected in message


def test_observation_scale_as_a_number_or_one_entry_per_observation_value():
    assert parse_config(MINIMAL, 2).observation_scale == 1.0
    assert parse_config(MINIMAL + "[policy]\nobservation_scale = 2\n", 2).observation_scale == 2.0
    scales = [0.5, 1, 1, 1, 2, 2, 3, 3]
    assert parse_config(MINIMAL + f"[policy]\nobservation_scale = {scales}\n", 2).observation_scale == tuple(
        float(s) for s in scales
    )


# --- the seed-faithful options and train --set ---


@pytest.mark.parametrize(
    ("addition", "field"),
    [
        ('[policy]\nintercept = "global"', "[policy] intercept"),
        ('[policy]\nnormalisation = "batch"', "[policy] normalisation"),
        ('[policy]\nbaseline_target = "later"', "[policy] baseline_target"),
        ('[policy]\nprecision = "float16"', "[policy] precision"),
        ('[policy]\neta_travels = "yes"', "[policy] eta_travels"),
        ("[normalisation]\nhorizon = 1000", "[normalisation]"),  # without normalisation = "running"
        ('[policy]\nnormalisation = "running"\n[normalisation]\nrefit_every = 0', "[normalisation] refit_every"),
        (
            '[policy]\nnormalisation = "running"\n[normalisation]\nrefit_every = 300\nhorizon = 1000',
            "[normalisation] horizon",
        ),
        ('[policy]\nnormalisation = "running"\n[normalisation]\nrecency = 1.5', "[normalisation] recency"),
        ('[policy]\nnormalisation = "running"\nobservation_scale = 2.0', "[policy] observation_scale"),
    ],
)
def test_bad_seed_faithful_options_name_the_field(addition, field):
    assert field in problem(MINIMAL.replace("[ranks]", f"{addition}\n[ranks]"))


def test_seed_faithful_options_belong_to_reinforce_branches():
    search = MINIMAL.replace(
        "iterate_episodes = 2", 'iterate_episodes = 2\nlearner = "random-search"\nevaluation_action = "mean"'
    )
    assert "[policy] intercept" in problem(search.replace("[ranks]", '[policy]\nintercept = "shared"\n[ranks]'))


def test_the_seed_faithful_config_turns_every_option_on():
    cfg = load_config("configs/seed-faithful.toml", 10)
    assert (cfg.intercept, cfg.normalisation, cfg.baseline_target, cfg.precision, cfg.eta_travels) == (
        "shared",
        "running",
        "after-update",
        "float32",
        True,
    )
    assert cfg.scaler == (2000, 100_000) and cfg.recency == 0.99999
    assert (cfg.evaluation_action, cfg.common_evaluation, cfg.patience) == ("sample", False, 0)
    plain = parse_config(MINIMAL, 1)
    assert (plain.intercept, plain.normalisation, plain.scaler, plain.eta_travels) == ("per-block", "none", None, False)


def test_a_new_target_is_written_into_the_stored_text_keeping_its_comments():
    from mpiswim.config import with_target

    text = "# my notes\n" + MINIMAL.replace("T = 50", "T = 50  # short")
    raised = with_target(text, 3900)
    assert parse_config(raised, 1).target == 3900 and "# my notes" in raised and "# short" in raised
    assert parse_config(with_target(raised, None), 1).target is None
    assert parse_config(with_target(raised, 12.5), 1).target == 12.5


def test_set_overrides_keep_the_config_text_and_validate_like_it(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("# my notes\n" + MINIMAL.replace("T = 50", "T = 50  # short"))
    cfg = load_config(
        path,
        1,
        [
            "run.seed=4",
            "env.id=Hopper-v5",
            "env.T=80",
            "policy.features=linear",
            'run.name="a b"',
            "ranks.alpha=[2e-4]",
        ],
    )
    assert (cfg.seed, cfg.env_id, cfg.T, cfg.features, cfg.name, cfg.alpha) == (
        4,
        "Hopper-v5",
        80,
        "linear",
        "a b",
        (2e-4,),
    )
    assert cfg.toml_text.startswith("# my notes\n") and "T = 80  # short" in cfg.toml_text  # what the checkpoint stores
    assert parse_config(cfg.toml_text, 1) == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=4", "--set = 'seed=4': is not section.key=value"),
        ("run.seed", "is not section.key=value"),
        ("runs.seed=4", "there is no [runs] section"),
        ("run.sed=4", "[run] sed = 4: unknown key"),
        ("run.seed=-2", "[run] seed = -2"),
        ("env.T=fifty", "[env] T = 'fifty'"),
    ],
)
def test_bad_set_overrides_name_the_field(tmp_path, override, expected):
    path = tmp_path / "my.toml"
    path.write_text(MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(path, 1, [override])
    assert expected in str(caught.value) and "Fix:" in str(caught.value)


def test_the_embedded_default_on_another_body_takes_its_episode_limit_and_a_name_of_its_own(tmp_path):
    """`train --set env.id=Hopper-v5` without --config ran Hopper with Swimmer's T = 500 as "swimmer-default": the
    body's own episode limit (Gymnasium's max_episode_steps) and "hopper-default" now, unless --set gives them; the
    default Swimmer run keeps its text, so its numbers."""
    from argparse import Namespace

    from mpiswim.tasks import embedded_config
    from mpiswim.train import prepare

    assert embedded_config() == embedded_config([]) == DEFAULT_CONFIG
    swimmer = parse_config(embedded_config(["env.id=Swimmer-v5"]), 2)
    assert (swimmer.T, swimmer.name) == (500, "swimmer-default")
    hopper = parse_config(embedded_config(["env.id=Hopper-v5"]), 2)
    assert (hopper.T, hopper.name, hopper.out) == (1000, "hopper-default", "runs/hopper-default.h5")
    cheetah = parse_config(embedded_config(["env.id=HalfCheetah-v5", "run.seed=3"]), 2)
    assert (cheetah.T, cheetah.name, cheetah.seed) == (1000, "halfcheetah-default", 3)
    given = parse_config(embedded_config(["env.id=Hopper-v5", "env.T=300", "run.name=mine"]), 2)
    assert (given.T, given.name) == (300, "mine")
    args = Namespace(config=None, resume=None, set=["env.id=Hopper-v5"], iterations=None, out=str(tmp_path / "h.h5"))
    setup, _, writer = prepare(args, 2)  # where train resolves the config
    writer.close()
    assert (setup.cfg.T, setup.cfg.name, setup.cfg.env_id) == (1000, "hopper-default", "Hopper-v5")
