"""Property-based tests of the config validator (issue 4): generated bad input gives a clean ConfigError.

Hypothesis throws malformed TOML, values of every TOML type in every field,
unknown keys, lists of the wrong length and HDF5 hyperparameter files of any
shape and type at `parse_config`. Each example must either give a valid Config
or one ConfigError naming the problem and the fix, never another exception, and
an oracle written from the config rules (docs/config.md) says which of the two it must be.
"""

from __future__ import annotations

import copy
import math
import tempfile
import tomllib
import unicodedata
from datetime import date, datetime, time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mpiswim import tasks
from mpiswim.config import (
    BASELINE_TARGETS,
    BASELINES,
    BEST_BY,
    EVALUATION_ACTIONS,
    FEATURE_MAPS,
    INTERCEPTS,
    LEARNERS,
    MAX_EPISODES,
    MAX_T,
    NORMALISATIONS,
    PRECISIONS,
    SCHEMA,
    UPDATE_RULES,
    Config,
    ConfigError,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.slow  # 150 generated cases a test: 10-25 s in all; make test-fast leaves them out

P = 3  # pool size of the generated configs
BASE = {
    "run": {"name": "properties", "seed": 1, "iterations": 3, "out": "run.h5"},
    "env": {"id": "Swimmer-v5", "T": 40, "gamma": 1.0},
    "pool": {"iterate_episodes": 2, "evaluate_episodes": 2, "common_evaluation": False, "evaluation_action": "sample"},
    "policy": {"features": "signed", "update": "unit-density", "baseline": "state"},
    "ranks": {"alpha": 1e-4, "eta": 1e-3},
}
# The [search] table's fields are tried on a random-search pool: 3 ranks x 2 / 2 = 3 directions an iteration.
SEARCH_BASE = copy.deepcopy(BASE) | {"search": {"noise": 0.01}}
SEARCH_BASE["pool"] |= {"learner": "random-search", "evaluation_action": "mean"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- writing TOML (the standard library only reads it) ------------------------------------


def toml_string(text: str) -> str:
    escaped = "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
    return f'"{escaped}"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict) -> str:
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for section, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(section)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# Any value TOML can hold: scalars of every type (huge, negative, NaN, infinite), arrays, inline tables.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, -1, MAX_T, MAX_T + 1, MAX_EPISODES + 1]),
    st.floats(),
    st.sampled_from([0.0, 1e-4, 0.5, 1.0, 1.5, -1e-4]),
    st.text(max_size=12),
    st.sampled_from(
        [*FEATURE_MAPS, *UPDATE_RULES, *BASELINES, *EVALUATION_ACTIONS, *LEARNERS, "Swimmer-v5", "", "run.h5"]
    ),
    st.builds(
        lambda low, high: {"min": low, "max": high},
        st.sampled_from([1e-6, 1e-4, 0.0, -1.0, "x"]),
        st.sampled_from([1e-4, 1e-6, math.inf]),
    ),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


# --- the oracle: what docs/config.md says is valid ---------------------------------------------


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_step(value) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0


def is_spread(value) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"min", "max"}
        and is_step(value["min"])
        and is_step(value["max"])
        and value["min"] <= value["max"]
    )


def is_text(value) -> bool:  # no control character: a NUL or a newline would split the log's lines
    return isinstance(value, str) and not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)


VALID = {
    ("run", "name"): is_text,
    ("run", "seed"): lambda v: is_int(v) and v >= 0,
    ("run", "iterations"): lambda v: is_int(v) and v >= 1,
    ("run", "out"): lambda v: is_text(v) and v != "",
    ("run", "stall_timeout"): lambda v: is_number(v) and (v == 0 or (math.isfinite(v) and v >= 1)),
    ("run", "tensorboard"): lambda v: isinstance(v, bool),
    ("run", "max_seconds"): lambda v: is_number(v) and (v == 0 or (math.isfinite(v) and v > 0)),
    ("run", "target"): lambda v: is_number(v) and math.isfinite(v),
    ("run", "target_episodes"): lambda v: is_int(v) and 1 <= v <= MAX_EPISODES,
    ("run", "best_by"): lambda v: v in BEST_BY,
    ("env", "id"): lambda v: (
        isinstance(v, str) and v.isprintable()
    ),  # whether Gymnasium knows it: mpiswim.tasks.check_task
    ("env", "T"): lambda v: is_int(v) and 1 <= v <= MAX_T,
    ("env", "gamma"): lambda v: is_number(v) and 0 <= v <= 1,
    ("pool", "iterate_episodes"): lambda v: is_int(v) and 1 <= v <= MAX_EPISODES,
    ("pool", "evaluate_episodes"): lambda v: is_int(v) and 1 <= v <= MAX_EPISODES,
    ("pool", "patience"): lambda v: is_int(v) and v >= 0,
    ("pool", "max_degenerate_iterations"): lambda v: is_int(v) and v >= 1,
    ("pool", "common_evaluation"): lambda v: isinstance(v, bool),
    ("pool", "evaluation_action"): lambda v: v in EVALUATION_ACTIONS,
    ("pool", "learner"): lambda v: v == "reinforce",  # BASE scores with draws, which random search refuses
    ("policy", "baseline"): lambda v: v in BASELINES,
    ("policy", "features"): lambda v: v in FEATURE_MAPS,
    ("policy", "update"): lambda v: v in UPDATE_RULES,
    # a list's length is checked against the task by mpiswim.tasks.check_task, which these tests leave out
    ("policy", "observation_scale"): lambda v: (
        is_step(v) or (isinstance(v, list) and len(v) > 0 and all(is_step(x) for x in v))
    ),
    ("ranks", "alpha"): lambda v: (
        is_step(v) or is_spread(v) or (isinstance(v, list) and len(v) == P and all(map(is_step, v)))
    ),
    ("ranks", "eta"): lambda v: (
        is_step(v) or is_spread(v) or (isinstance(v, list) and len(v) == P and all(map(is_step, v)))
    ),
    ("ranks", "hyperparameters"): lambda v: False,  # BASE gives alpha and eta too: "not both"
    ("policy", "intercept"): lambda v: v in INTERCEPTS,
    ("policy", "normalisation"): lambda v: v in NORMALISATIONS and v != "pooled",  # pooled: random search only
    ("policy", "baseline_target"): lambda v: v in BASELINE_TARGETS,
    ("policy", "precision"): lambda v: v in PRECISIONS,
    ("policy", "eta_travels"): lambda v: isinstance(v, bool),
    ("pool", "common_action_noise"): lambda v: isinstance(v, bool),
    # BASE has no normalisation = "running", so a [normalisation] table is refused whatever it holds
    ("normalisation", "refit_every"): lambda v: False,
    ("normalisation", "horizon"): lambda v: False,
    ("normalisation", "recency"): lambda v: False,
    ("search", "noise"): lambda v: (  # per rank, like [ranks] alpha
        is_step(v) or is_spread(v) or (isinstance(v, list) and len(v) == P and all(map(is_step, v)))
    ),
    ("search", "top"): lambda v: is_int(v) and 0 <= v <= 3,
    ("search", "intercept"): lambda v: isinstance(v, bool),
    ("search", "shift"): lambda v: is_number(v) and math.isfinite(v) and v >= 0,
}
FIELDS = sorted(VALID)


def validate(text: str, world_size: int = P, check_task: bool = False, **kwargs) -> Config | None:
    """parse_config's verdict (and check_task's): a Config, or None after checking the ConfigError is one clean
    message.
    """
    try:
        cfg = parse_config(text, world_size, **kwargs)
        if check_task:
            tasks.check_task(cfg)
        return cfg
    except ConfigError as error:
        message = str(error)
        assert message.startswith("config error") and "Fix:" in message and "\n" not in message, message
        return None


# --- the properties ------------------------------------------------------------------------


def test_the_base_config_is_valid():
    assert validate(to_toml(BASE)) is not None
    assert validate(to_toml(SEARCH_BASE)) is not None
    assert set(VALID) == {(section, key) for section, keys in SCHEMA.items() for key in keys}


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text):
    validate(text)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_file_content_is_a_config_or_a_config_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.toml"
        path.write_bytes(content)
        try:
            load_config(path, P)
        except ConfigError as error:
            assert str(error).startswith("config error") and "Fix:" in str(error)


@SETTINGS
@given(st.sampled_from(FIELDS), toml_values, st.booleans())
def test_any_value_in_any_field_is_accepted_exactly_when_valid(field, value, drop_others):
    section, key = field
    document = copy.deepcopy(SEARCH_BASE if section == "search" else BASE)
    if drop_others and key == "hyperparameters":  # alone: then the file (which does not exist) is read
        document["ranks"] = {}
    document.setdefault(section, {})[key] = value
    text = to_toml(document)
    tomllib.loads(text)  # the generated TOML itself is valid: the validator is what is being tested
    cfg = validate(text, base_dir=Path("/nonexistent"))
    assert (cfg is not None) == VALID[field](value), (field, value)


@SETTINGS
@given(st.sampled_from([None, *SCHEMA]), st.text(min_size=1, max_size=10), toml_values)
def test_unknown_keys_and_sections_are_refused(section, key, value):
    document = copy.deepcopy(BASE)
    table = document if section is None else document.setdefault(section, {})
    if key in table or (section is None and key in SCHEMA):
        return
    table[key] = value
    assert validate(to_toml(document)) is None


@SETTINGS
@given(
    st.sampled_from(["alpha", "eta"]), st.lists(st.floats(1e-6, 1e-2), max_size=8).filter(lambda steps: len(steps) != P)
)
def test_step_size_lists_must_have_one_entry_per_rank(name, steps):
    document = copy.deepcopy(BASE)
    document["ranks"][name] = steps
    try:
        parse_config(to_toml(document), P)
    except ConfigError as error:
        assert f"[ranks] {name}" in str(error) and f"has {len(steps)} entries but the pool has {P} ranks" in str(error)
    else:
        raise AssertionError(f"a list of {len(steps)} step sizes was accepted for {P} ranks")


@pytest.mark.filterwarnings("ignore:.*latest versioned environment")  # Gymnasium's note on "Swimmer" without a version
@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        ["Swimmer-v5", "Hopper-v5", "CartPole-v1", "Humanoid-v5", "Pendulum-v1", "NoSuchTask-v0", "", "Swimmer"]
    )
    | st.text(max_size=15)
)
def test_environment_ids_are_checked_without_tracebacks(env_id):
    document = copy.deepcopy(BASE)
    document["env"]["id"] = env_id
    validate(to_toml(document), check_task=True)


# --- HDF5 hyperparameter files -----------------------------------------------------------

dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint16, np.bool_, np.complex128, "S4"])
datasets = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)) | hnp.arrays(
    np.float64, st.sampled_from([(P,), (P - 1,), (P, 1)]), elements=st.floats(-1, 1e-2)
)


def valid_dataset(data: np.ndarray | None) -> bool:
    if data is None or data.dtype.kind not in "fiu" or data.shape != (P,):
        return False
    values = data.astype(np.float64)
    return bool(np.all(np.isfinite(values)) and np.all(values > 0))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["alpha", "eta", "beta", "alpha_group"]), datasets, max_size=4), st.booleans())
def test_hyperparameter_files_of_any_shape_and_type(contents, garbage):
    document = copy.deepcopy(BASE)
    document["ranks"] = {"hyperparameters": "steps.h5"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "steps.h5"
        if garbage:
            path.write_bytes(b"not an HDF5 file" * 10)
        else:
            with h5py.File(path, "w") as f:
                for name, data in contents.items():
                    if name == "alpha_group":
                        f.create_group("alpha" if "alpha" not in contents else "group").create_dataset("x", data=data)
                    else:
                        f.create_dataset(name, data=data)
        cfg = validate(to_toml(document), base_dir=Path(folder))
    expected = (
        not garbage
        and set(contents) == {"alpha", "eta"}
        and all(valid_dataset(contents[name]) for name in ("alpha", "eta"))
    )
    assert (cfg is not None) == expected, contents
    if cfg is not None:
        assert cfg.alpha == tuple(float(v) for v in contents["alpha"]) and len(cfg.eta) == P
