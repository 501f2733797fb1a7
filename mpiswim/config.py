"""Run configuration: the TOML schema, its validation, and the embedded default.

A config is read and validated once (on rank 0) and the resulting `Config` is
shared with the other ranks. Every problem is reported as one `ConfigError`
whose message names the field, the value that was given and how to fix it.
A key left out means its value in DEFAULTS, which is built from the embedded
default. Only the text is checked here: whether the task exists and fits the
config is mpiswim.tasks.check_task's question (this module imports only
mpiswim.plain_hdf5, to read a hyperparameter file).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEATURE_MAPS = ("signed", "linear")
UPDATE_RULES = ("unit-density", "log-density", "tanh-density")
BASELINES = ("state", "state-time")
EVALUATION_ACTIONS = ("sample", "mean")
LEARNERS = ("reinforce", "random-search")
INTERCEPTS = ("per-block", "shared")
NORMALISATIONS = ("none", "running")
BASELINE_TARGETS = ("before-update", "after-update")
PRECISIONS = ("float64", "float32")
MAX_STORED_CHUNKS = 10_000  # horizon / refit_every: rows of a scaler's state
HYPERPARAMETERS = ("alpha", "eta")
# 2^12 blocks is already 4096 x (d+1) weights per action shape; beyond that
# the signed coding stops fitting in memory and almost every block stays unseen.
MAX_SIGNED_OBS_DIM = 12
# Upper limits that keep a typo from exhausting memory: every rank preallocates
# T steps of trajectory and a row per episode (Gymnasium's tasks use T <= 1000).
MAX_T = 100_000
MAX_EPISODES = 10_000
# A rank that has not reached a collective within [run] stall_timeout seconds of the others is
# taken as hung (mpiswim.stall.StallWatch); 0 turns the watch off. Shorter than a second is refused.
MIN_STALL_TIMEOUT = 1.0

# The embedded default: printed by `mpiswim config`, run by `mpiswim train` without --config.
# Its values are also what a key left out of any config means (DEFAULTS below).
DEFAULT_CONFIG = """\
# mpiswim run configuration (TOML). Print this again with `mpiswim config`.
# Every rank of `mpirun -n P mpiswim train --config FILE` is one pool member.
# A key left out means the value shown here (docs/config.md lists every key).

[run]
name = "swimmer-default"   # free text, stored in the checkpoint; also names it when out is left out
seed = 0                   # base seed; rank r in iteration k uses the stream (seed, k, r)
iterations = 120           # pool iterations to run (train --iterations overrides)
# out = "runs/my-run.h5"   # HDF5 checkpoint, written after every iteration; left out: runs/<name>.h5
                           # (here runs/swimmer-default.h5). train --out overrides both.
stall_timeout = 600        # seconds a rank may keep the others waiting at one of the pool's collectives
                           # before it is taken as hung (at least 20 x the slowest iteration so far;
                           # set-up and the first iteration get at least 600 s): the job ends naming it
                           # (exit code 5), checkpoint intact. 0 = never (plain blocking MPI waits).
                           # May change on resume; train --stall-timeout overrides it.
# target = 150             # stop once the best agent scores this on target_episodes (default 5) fresh
                           # episodes (checked after each new best); left out: run all iterations

[env]
id = "Swimmer-v5"          # any Gymnasium MuJoCo id with a bounded Box action space
T = 500                    # steps per episode at most (the episode also ends on termination)
gamma = 1.0                # discount of the return, in [0, 1]

[pool]
learner = "reinforce"      # how a rank improves its branch: "reinforce" (REINFORCE episodes) or
                           # "random-search" (a step along a direction pooled from every rank's random
                           # tries, with a [search] table: see configs/fast-swimmer.toml)
iterate_episodes = 5       # REINFORCE episodes each rank spends improving its branch
evaluate_episodes = 5      # no-update episodes whose mean return is the branch's score
patience = 0               # fall back to the best-ever agent after this many
                           # iterations without a new best; 0 = never fall back
max_degenerate_iterations = 10  # stop if every branch breaks this many iterations in a row
common_evaluation = true   # true: every rank evaluates on the same start states and action noise, so
                           # branches are compared on equal terms (common random numbers);
                           # false: each rank draws its own
evaluation_action = "mean" # "mean": score a branch by acting with its Beta mean a/(a+b), a deterministic
                           #   controller (the update episodes still draw actions);
                           # "sample": score it with Beta draws, as training acts

[policy]
features = "linear"        # "linear": one block [1, s];
                           # "signed": one block [1, s] per sign pattern of s (2^d blocks)
update = "tanh-density"    # the policy's step per parameter: "tanh-density" (tanh of the density gradient),
                           # "unit-density" (the density gradient scaled to unit length) or
                           # "log-density" (the ordinary score-function rule)
baseline = "state-time"    # "state-time": v(s, t) = w . [phi(s), (T - t) / T], which sees the steps left
                           # that the gamma = 1 return grows with; "state": v(s) = w . phi(s)
observation_scale = 1.0    # the features hold s / observation_scale (the block still follows
                           # the signs of s): a number, or a list with one entry per observation value

[ranks]
# A number applies to every rank; a list needs exactly one entry per rank; a table
# {min = a, max = b} spaces P values evenly in log from a (rank 0) to b (the last rank;
# a single rank gets the middle, sqrt(a * b)).
# Instead of alpha/eta, `hyperparameters = "file.h5"` reads datasets of length P.
alpha = {min = 1e-6, max = 1e-4}  # policy step sizes: the pool picks the one that works at each stage
eta = 1e-3                 # baseline step size
"""

# section -> key -> (type, required); the type is what TOML must give.
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "run": {
        "name": (str, False),
        "seed": (int, False),
        "iterations": (int, True),
        "out": (str, False),
        "stall_timeout": ((int, float), False),
        "target": ((int, float), False),
        "target_episodes": (int, False),
    },
    "env": {"id": (str, True), "T": (int, True), "gamma": ((int, float), False)},
    "pool": {
        "iterate_episodes": (int, True),
        "evaluate_episodes": (int, True),
        "patience": (int, False),
        "max_degenerate_iterations": (int, False),
        "common_evaluation": (bool, False),
        "common_action_noise": (bool, False),
        "evaluation_action": (str, False),
        "learner": (str, False),
    },
    "policy": {
        "features": (str, False),
        "update": (str, False),
        "baseline": (str, False),
        "observation_scale": ((int, float, list), False),
        "intercept": (str, False),
        "normalisation": (str, False),
        "baseline_target": (str, False),
        "precision": (str, False),
        "eta_travels": (bool, False),
    },
    "normalisation": {"refit_every": (int, False), "horizon": (int, False), "recency": ((int, float), False)},
    "ranks": {
        "alpha": ((int, float, list, dict), False),
        "eta": ((int, float, list, dict), False),
        "hyperparameters": (str, False),
    },
    "search": {"noise": ((int, float), False), "top": (int, False), "intercept": (bool, False)},
}

# The defaults of the keys the embedded default does not show. [run] name is here too: the
# embedded default names its own run "swimmer-default", a config without a name is "mpiswim".
UNSHOWN_DEFAULTS: dict[str, dict[str, Any]] = {
    "run": {"name": "mpiswim", "target_episodes": 5},
    "pool": {"common_action_noise": False},
    "policy": {
        "intercept": "per-block",
        "normalisation": "none",
        "baseline_target": "before-update",
        "precision": "float64",
        "eta_travels": False,
    },
    # the running scaler: refit every 2,000 observations from the last 100,000, weight 0.99999 per observation
    "normalisation": {"refit_every": 2000, "horizon": 100_000, "recency": 0.99999},
    "search": {"noise": 0.01, "top": 0, "intercept": False},  # noise: ARS's for Swimmer (Mania et al. 2018)
}


def _defaults() -> dict[str, dict[str, Any]]:
    """What each optional key left out means: its value in DEFAULT_CONFIG, else in UNSHOWN_DEFAULTS.

    Required keys and the step sizes of [ranks] have none.
    """
    shown = tomllib.loads(DEFAULT_CONFIG)
    defaults = {section: dict(UNSHOWN_DEFAULTS.get(section, {})) for section in SCHEMA}
    for section, table in shown.items():
        if section != "ranks":
            defaults[section] |= {
                key: value
                for key, value in table.items()
                if not SCHEMA[section][key][1] and (section, key) != ("run", "name")
            }
    return defaults


# section -> key -> the value a key left out means: the one home of every default.
DEFAULTS = _defaults()
DEFAULT_STALL_TIMEOUT = float(DEFAULTS["run"]["stall_timeout"])

# What five keys meant when left out before mpiswim 0.2.0, which made the embedded default's values
# the defaults. parse_stored_config writes them into the config text of an older checkpoint, so it
# keeps its meaning (docs/config.md, "Defaults changed in 0.2.0").
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "pool": {"common_evaluation": False, "evaluation_action": "sample"},
    "policy": {"features": "signed", "update": "unit-density", "baseline": "state"},
}
NEW_DEFAULTS_SINCE = (0, 2)  # the mpiswim version from which a left-out key means DEFAULTS' value


class ConfigError(Exception):
    """A problem with the user's input: one message naming field, value and fix."""


@dataclass(frozen=True)
class Config:
    """A validated run configuration for a pool of `world_size` ranks."""

    name: str
    seed: int
    iterations: int
    out: str
    env_id: str
    T: int
    gamma: float
    iterate_episodes: int
    evaluate_episodes: int
    patience: int
    max_degenerate_iterations: int
    common_evaluation: bool
    evaluation_action: str
    features: str
    update: str
    baseline: str
    observation_scale: tuple[float, ...] | float
    alpha: tuple[float, ...]
    eta: tuple[float, ...]
    world_size: int
    toml_text: str
    stall_timeout: float  # seconds; 0 = no stall watch (not part of the run: may change on resume)
    learner: (
        str  # how a rank improves its branch: REINFORCE episodes, or a step along the pooled random-search direction
    )
    search_noise: float  # random-search: standard deviation of the parameter perturbations
    search_top: int  # random-search: directions kept for the step (the best by their better side); 0 = all
    search_intercept: bool  # random-search: the directions move the intercept weights too
    target: float | None  # stop once the best agent scores this on fresh episodes; None = no target
    target_episodes: int  # fresh episodes behind the target check
    # The seed-faithful options (docs/config.md, "Seed-faithful options"):
    intercept: str  # "shared": one intercept weight for every sign block
    normalisation: str  # "running": features are observations standardised by a running scaler (mpiswim.normalise)
    refit_every: int  # running scaler: refit from its horizon every this many observations
    horizon: int  # running scaler: observations a refit looks back over
    recency: float  # running scaler: weight of an observation relative to the next newer one
    baseline_target: str  # "after-update": the policy's target is G_t minus the baseline after its SGD step
    precision: str  # "float32": the policy's step directions are computed in float32
    eta_travels: bool  # the baseline's eta is the winner's, carried with the promoted agent
    common_action_noise: bool  # every rank's Beta draws come from one stream per iteration (start states stay per rank)

    @property
    def scaler(self) -> tuple[int, int] | None:
        """(refit_every, horizon) of the running scalers, or None without normalisation."""
        return (self.refit_every, self.horizon) if self.normalisation == "running" else None

    @property
    def time_feature(self) -> bool:
        """The baseline also sees the fraction of steps left ([policy] baseline = "state-time")."""
        return self.baseline == "state-time"


def quote(value: Any, limit: int = 80) -> str:
    """repr(value), shortened for a one-line message: a long list shows its first and last entries and its length."""
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{', '.join(quote(v, 20) for v in value[:3])}, ..., {quote(value[-1], 20)}] ({len(value)} entries)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def _fail(field: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"config error: {field} = {quote(value)}: {problem}. Fix: {fix}.")


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        bool: "true or false",
        dict: "a table {min = ..., max = ...}",
    }
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def _check_keys(table: dict, allowed: dict, where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys are {', '.join(allowed)}"
            shown = (
                key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else repr(key)
            )  # a quoted key may hold anything, even newlines
            raise _fail(f"{where}{shown}", table[key], "unknown key", f"remove it ({hint})")


def _get(doc: dict, section: str, key: str) -> Any:
    """The value of [section] key, checked against SCHEMA's type; DEFAULTS' (or None) when it is left out."""
    expected, required = SCHEMA[section][key]
    table = doc.get(section, {})
    if key not in table:
        if required:
            raise _fail(
                f"[{section}] {key}",
                None,
                "missing",
                f"add '{key} = ...' to the [{section}] table (see `mpiswim config`)",
            )
        return DEFAULTS[section].get(key)
    value = table[key]
    kinds = expected if isinstance(expected, tuple) else (expected,)
    # TOML booleans are Python ints: a bool is valid only where a bool is expected, and only a bool is.
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        raise _fail(
            f"[{section}] {key}",
            value,
            f"expected {_type_name(expected)}, got {type(value).__name__}",
            f"write {key} as {_type_name(expected)}",
        )
    return value


def _one_of(doc: dict, section: str, key: str, choices: tuple[str, ...], what: str) -> str:
    """A string key that must be one of `choices`."""
    value = _get(doc, section, key)
    if value not in choices:
        raise _fail(f"[{section}] {key}", value, f"unknown {what}", f"use one of {', '.join(choices)}")
    return value


def _at_least(field: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise _fail(field, value, f"must be at least {minimum}", f"set it to {minimum} or more")
    return value


def _at_most(field: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise _fail(field, value, f"must be at most {maximum}", f"set it to {maximum} or less")
    return value


def _text(field: str, value: str) -> str:
    if not value.isprintable():  # a NUL, or a newline that would split the run's log lines
        raise _fail(field, value, "contains a control character (a newline, a tab, a NUL)", "remove it")
    return value


def check_stall_timeout(field: str, value: Any) -> float:
    """Seconds for the stall watch: 0 (off), or a finite number of at least MIN_STALL_TIMEOUT.

    `field` names where the value came from: "[run] stall_timeout" or "--stall-timeout".
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value == 0 or (math.isfinite(value) and value >= MIN_STALL_TIMEOUT))
    ):
        raise _fail(
            field,
            value,
            f"must be 0 (no stall watch) or a finite number of seconds of at least {MIN_STALL_TIMEOUT:g}",
            f"give seconds such as {DEFAULT_STALL_TIMEOUT:g} (the default), or 0 to wait for a stalled rank forever",
        )
    return float(value)


def set_up_stall_timeout(value: float | None) -> float:
    """The stall timeout while the run is set up (before every rank has the config): --stall-timeout if valid, else the
    default.
    """
    try:
        return DEFAULT_STALL_TIMEOUT if value is None else check_stall_timeout("--stall-timeout", value)
    except ConfigError:
        return DEFAULT_STALL_TIMEOUT  # rank 0 refuses the value once the set-up is shared


def _spread(field: str, value: dict, world_size: int) -> list[float]:
    """{min = a, max = b}: world_size step sizes spaced evenly in log from a (rank 0) to b (the last rank).

    A single rank gets the geometric mean sqrt(a * b), the middle of the range.
    """
    if set(value) != {"min", "max"}:
        raise _fail(field, value, "a table needs exactly the keys min and max", "write it as {min = 1e-6, max = 1e-4}")
    low, high = value["min"], value["max"]
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise _fail(
                field,
                value,
                f"entry {quote(v)} is not a positive finite step size",
                "use positive numbers such as {min = 1e-6, max = 1e-4}",
            )
    if low > high:
        raise _fail(field, value, "min is larger than max", "swap them")
    if world_size == 1:
        return [math.sqrt(low * high)]
    return [low * (high / low) ** (r / (world_size - 1)) for r in range(world_size)]


def _step_sizes(name: str, value: Any, world_size: int) -> tuple[float, ...]:
    field = f"[ranks] {name}"
    if isinstance(value, dict):
        value = _spread(field, value, world_size)
    if isinstance(value, list):
        if len(value) != world_size:
            raise _fail(
                field,
                value,
                f"has {len(value)} entries but the pool has {world_size} ranks",
                f"give exactly {world_size} values (one per rank), or a single number for all ranks",
            )
        values = value
    else:
        values = [value] * world_size
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(field, value, f"entry {quote(v)} is not a number", "use numbers such as 1e-4")
        if not (math.isfinite(v) and v > 0):
            raise _fail(
                field, value, f"entry {quote(v)} is not a positive finite step size", "use positive numbers like 1e-4"
            )
    return tuple(float(v) for v in values)


def _observation_scale(value: Any) -> tuple[float, ...] | float:
    """A positive number, or a list of them (its length is checked against the task in mpiswim.tasks.check_task)."""
    field = "[policy] observation_scale"
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(field, value, "is an empty list", "give one number for every observation value, or a single number")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise _fail(
                field, value, f"entry {quote(v)} is not a positive finite number", "use positive numbers like 1.0"
            )
    return tuple(float(v) for v in values) if isinstance(value, list) else float(value)


def _search(
    doc: dict, learner: str, iterate_episodes: int, evaluation_action: str, world_size: int
) -> tuple[float, int, bool]:
    """The [search] table: (noise, top, intercept). It belongs to learner = "random-search" and is refused otherwise."""
    if learner != "random-search":
        if "search" in doc:
            raise _fail(
                "[search]",
                doc["search"],
                'is used only by [pool] learner = "random-search"',
                'remove the [search] table, or set learner = "random-search" in [pool]',
            )
        return DEFAULTS["search"]["noise"], DEFAULTS["search"]["top"], DEFAULTS["search"]["intercept"]
    if iterate_episodes % 2:
        raise _fail(
            "[pool] iterate_episodes",
            iterate_episodes,
            'must be even with learner = "random-search" (each direction is tried as +noise and -noise, one episode '
            "each)",
            f"set it to {iterate_episodes + 1} or {max(2, iterate_episodes - 1)}",
        )
    if evaluation_action != "mean":
        raise _fail(
            "[pool] evaluation_action",
            evaluation_action,
            "random-search branches act with the Beta mean, so they must be scored with it",
            'set evaluation_action = "mean" in [pool]',
        )
    noise = float(_get(doc, "search", "noise"))
    if not (math.isfinite(noise) and noise > 0):
        raise _fail(
            "[search] noise",
            noise,
            "must be a positive finite number",
            f"use a standard deviation such as {DEFAULTS['search']['noise']}",
        )
    directions = world_size * iterate_episodes // 2
    top = _at_least("[search] top", _get(doc, "search", "top"), 0)  # 0 = all
    if top > directions:
        raise _fail(
            "[search] top",
            top,
            f"is more than the {directions} directions of an iteration ({world_size} ranks x iterate_episodes / 2)",
            f"keep at most {directions}, or 0 for all",
        )
    return noise, top, _get(doc, "search", "intercept")


def _target(doc: dict) -> tuple[float | None, int]:
    """[run] target and target_episodes: the fresh-episode score at which the run may stop, and its episodes."""
    target = _get(doc, "run", "target")
    if target is not None and not math.isfinite(target):
        raise _fail(
            "[run] target",
            target,
            "is not a finite number",
            "give a score such as 150, or leave the key out for no target",
        )
    episodes = _at_most(
        "[run] target_episodes",
        _at_least("[run] target_episodes", _get(doc, "run", "target_episodes"), 1),
        MAX_EPISODES,
    )
    return (None if target is None else float(target)), episodes


def _seed_options(doc: dict, learner: str, observation_scale: tuple[float, ...] | float) -> dict[str, Any]:
    """The seed-faithful [policy] keys and the [normalisation] table, as Config fields."""
    options = {
        "intercept": _one_of(doc, "policy", "intercept", INTERCEPTS, "intercept"),
        "normalisation": _one_of(doc, "policy", "normalisation", NORMALISATIONS, "normalisation"),
        "baseline_target": _one_of(doc, "policy", "baseline_target", BASELINE_TARGETS, "baseline target"),
        "precision": _one_of(doc, "policy", "precision", PRECISIONS, "precision"),
        "eta_travels": _get(doc, "policy", "eta_travels"),
        "common_action_noise": _get(doc, "pool", "common_action_noise"),
    }
    changed = [(section, key) for key in options for section in ("policy", "pool") if key in doc.get(section, {})]
    if learner == "random-search" and changed:
        section, key = changed[0]
        fix = f"remove {key} from [{section}], or set learner = 'reinforce' in [pool]"
        raise _fail(
            f"[{section}] {key}",
            doc[section][key],
            'belongs to REINFORCE branches, not to learner = "random-search"',
            fix,
        )
    if options["normalisation"] != "running":
        if "normalisation" in doc:
            fix = 'remove the [normalisation] table, or set normalisation = "running" in [policy]'
            raise _fail(
                "[normalisation]", doc["normalisation"], 'is used only with [policy] normalisation = "running"', fix
            )
        return options | DEFAULTS["normalisation"]  # the scaler's settings, unused without it
    if observation_scale != 1.0:
        raise _fail(
            "[policy] observation_scale",
            observation_scale,
            'has no effect with normalisation = "running" (the scaler sets the scale)',
            "remove observation_scale from [policy]",
        )
    refit_every = _at_least("[normalisation] refit_every", _get(doc, "normalisation", "refit_every"), 1)
    horizon = _at_least("[normalisation] horizon", _get(doc, "normalisation", "horizon"), refit_every)
    if horizon % refit_every or horizon // refit_every > MAX_STORED_CHUNKS:
        raise _fail(
            "[normalisation] horizon",
            horizon,
            f"must be a multiple of refit_every ({refit_every}) and at most {MAX_STORED_CHUNKS} times it",
            f"use e.g. {refit_every * max(1, min(MAX_STORED_CHUNKS, round(horizon / refit_every)))}",
        )
    recency = float(_get(doc, "normalisation", "recency"))
    if not 0.0 < recency <= 1.0:
        raise _fail(
            "[normalisation] recency",
            recency,
            "must lie in (0, 1] (1 weighs every observation of the horizon alike)",
            f"use e.g. {DEFAULTS['normalisation']['recency']}",
        )
    return dict(options, refit_every=refit_every, horizon=horizon, recency=recency)


def read_hyperparameter_file(path: Path, world_size: int) -> dict[str, tuple[float, ...]]:
    """Per-rank hyperparameters from an HDF5 file: one dataset of length P per name."""
    import h5py

    from mpiswim.plain_hdf5 import UnplainData, read_plain, refuse_unplain

    field = "[ranks] hyperparameters"
    wanted = (
        "give the path (relative to the config file) of an HDF5 file with datasets 'alpha' and 'eta' of length "
        f"{world_size}"
    )
    if not path.exists():
        raise _fail(field, str(path), "no such file", wanted)
    if path.is_dir():
        raise _fail(field, str(path), "is a directory", wanted)
    if not path.is_file():  # a FIFO would block the read until someone writes to it; a device has no end
        raise _fail(field, str(path), "is not a regular file (a pipe or a device)", wanted)
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as error:
        reason = (
            str(error).splitlines()[0] if str(error) else error.__class__.__name__
        )  # h5py's first line; the rest is HDF5 internals
        raise _fail(field, str(path), f"cannot be read as HDF5 ({reason})", wanted) from None
    values = {}
    with handle:
        try:
            refuse_unplain(handle)
            for key in handle:
                if key not in HYPERPARAMETERS:
                    keep = f"keep only {', '.join(HYPERPARAMETERS)}"
                    raise _fail(field, str(path), f"contains unknown dataset {quote(key)}", keep)
            arrays = {key: read_plain(handle, key, (world_size,)) for key in HYPERPARAMETERS}
        except UnplainData as error:
            fix = f"store {' and '.join(HYPERPARAMETERS)} as plain float datasets of length {world_size} in the file"
            raise _fail(field, str(path), str(error), fix) from None
        for key, data in arrays.items():
            try:
                values[key] = _step_sizes(key, [float(v) for v in data], world_size)
            except ConfigError as error:  # _step_sizes names '[ranks] alpha'; say that the values came from this file
                raise ConfigError(
                    str(error).replace("config error: ", f"config error: hyperparameter file '{path}' ({field}): ", 1)
                ) from None
    return values


def parse_config(
    text: str,
    world_size: int,
    base_dir: Path = Path("."),
    stored_step_sizes: dict[str, tuple[float, ...]] | None = None,
) -> Config:
    """Validate TOML text for a pool of `world_size` ranks; raise ConfigError on any problem.

    Only the text is checked: whether Gymnasium can make the task is mpiswim.tasks.check_task's
    question. `stored_step_sizes` (alpha/eta per rank) replaces the [ranks] values: a resumed
    run takes them from its checkpoint, not from a file that may have moved.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"config error: the file is not valid TOML ({error}). Fix: correct the syntax; `mpiswim config` prints a "
            "valid example."
        ) from None
    _check_keys(doc, SCHEMA, "")
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise _fail(section, table, "must be a table", f"write it as a [{section}] section")
        _check_keys(table, SCHEMA[section], f"[{section}] ")

    seed = _at_least("[run] seed", _get(doc, "run", "seed"), 0)
    iterations = _at_least("[run] iterations", _get(doc, "run", "iterations"), 1)
    T = _at_most("[env] T", _at_least("[env] T", _get(doc, "env", "T"), 1), MAX_T)
    gamma = float(_get(doc, "env", "gamma"))
    if not 0.0 <= gamma <= 1.0:
        raise _fail("[env] gamma", gamma, "must lie in [0, 1]", "use a discount such as 1.0 or 0.99")
    iterate_episodes = _at_most(
        "[pool] iterate_episodes",
        _at_least("[pool] iterate_episodes", _get(doc, "pool", "iterate_episodes"), 1),
        MAX_EPISODES,
    )
    evaluate_episodes = _at_most(
        "[pool] evaluate_episodes",
        _at_least("[pool] evaluate_episodes", _get(doc, "pool", "evaluate_episodes"), 1),
        MAX_EPISODES,
    )
    patience = _at_least("[pool] patience", _get(doc, "pool", "patience"), 0)
    evaluation_action = _one_of(doc, "pool", "evaluation_action", EVALUATION_ACTIONS, "evaluation action")
    learner = _one_of(doc, "pool", "learner", LEARNERS, "learner")
    search_noise, search_top, search_intercept = _search(doc, learner, iterate_episodes, evaluation_action, world_size)
    target, target_episodes = _target(doc)
    max_degenerate = _at_least("[pool] max_degenerate_iterations", _get(doc, "pool", "max_degenerate_iterations"), 1)
    features = _one_of(doc, "policy", "features", FEATURE_MAPS, "feature map")
    update = _one_of(doc, "policy", "update", UPDATE_RULES, "update rule")
    baseline = _one_of(doc, "policy", "baseline", BASELINES, "baseline")

    observation_scale = _observation_scale(_get(doc, "policy", "observation_scale"))
    seed_options = _seed_options(doc, learner, observation_scale)

    ranks = doc.get("ranks", {})
    file_name = _get(doc, "ranks", "hyperparameters")
    if stored_step_sizes is not None:
        steps = stored_step_sizes
    elif file_name is not None:
        given = [k for k in HYPERPARAMETERS if k in ranks]
        if given:
            raise _fail(
                f"[ranks] {given[0]}",
                ranks[given[0]],
                "given together with 'hyperparameters'",
                "take the step sizes either from the HDF5 file or from the config, not both",
            )
        steps = read_hyperparameter_file(base_dir / file_name, world_size)
    else:
        steps = {}
        for key in HYPERPARAMETERS:
            value = _get(doc, "ranks", key)
            if value is None and key == "eta" and learner == "random-search":
                steps[key] = (0.0,) * world_size  # random-search branches have no baseline to train
                continue
            if value is None:
                raise _fail(
                    f"[ranks] {key}",
                    None,
                    "missing",
                    f"add '{key} = 1e-4' (or a list of {world_size} values) to [ranks], or 'hyperparameters = "
                    '"file.h5"\'',
                )
            steps[key] = _step_sizes(key, value, world_size)

    env_id = _get(doc, "env", "id")
    if not env_id.isprintable():
        raise _fail("[env] id", env_id, "contains control characters", "use a Gymnasium id such as 'Swimmer-v5'")
    if ":" in env_id:  # Gymnasium's make would import the module named before the ':'
        raise _fail(
            "[env] id",
            env_id,
            "names a Python module to import (the part before ':'), and mpiswim never imports code a config names",
            "use a registered Gymnasium MuJoCo id such as 'Swimmer-v5', without a module",
        )

    name = _text("[run] name", _get(doc, "run", "name"))
    out = _get(doc, "run", "out")
    out = _text("[run] out", default_out(name) if out is None else out)
    if not out:
        raise _fail(
            "[run] out",
            out,
            "is empty",
            f'give a file name such as "{default_out(name)}", or leave the key out for that name',
        )
    return Config(
        name=name,
        seed=seed,
        iterations=iterations,
        out=out,
        env_id=env_id,
        T=T,
        gamma=gamma,
        iterate_episodes=iterate_episodes,
        evaluate_episodes=evaluate_episodes,
        patience=patience,
        max_degenerate_iterations=max_degenerate,
        common_evaluation=_get(doc, "pool", "common_evaluation"),
        evaluation_action=evaluation_action,
        features=features,
        update=update,
        baseline=baseline,
        observation_scale=observation_scale,
        alpha=steps["alpha"],
        eta=steps["eta"],
        world_size=world_size,
        toml_text=text,
        stall_timeout=check_stall_timeout("[run] stall_timeout", _get(doc, "run", "stall_timeout")),
        learner=learner,
        search_noise=search_noise,
        search_top=search_top,
        search_intercept=search_intercept,
        target=target,
        target_episodes=target_episodes,
        **seed_options,
    )


def file_name_for(name: str) -> str:
    """`name` made safe as a file name: ASCII letters, digits, '.', '_' and '-' are kept.

    Every other run of characters becomes one '-', leading and trailing dots
    and dashes go (so never '..' or a hidden file); 'run' if nothing is left.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return safe[:100] or "run"


def default_out(name: str) -> str:
    """The checkpoint of a run whose config has no [run] out and whose command has no --out: runs/<name>.h5."""
    return f"runs/{file_name_for(name)}.h5"


def apply_overrides(text: str, overrides: list[str] | tuple[str, ...]) -> str:
    """The TOML text with each `section.key=value` of `train --set` applied (comments and layout kept).

    The value is read as a TOML value (1e-4, true, [1, 2], "text"); a value that
    is not one is taken as a string, so --set env.id=Hopper-v5 needs no quotes.
    The result is validated like any config (an unknown key is refused there).
    """
    import tomlkit

    document = tomlkit.parse(text)
    for override in overrides:
        key, equals, value_text = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not equals or not dot or not section or not name or "." in name:
            raise _fail(
                "--set",
                override,
                "is not section.key=value",
                "write it like --set run.seed=3 or --set env.id=Hopper-v5",
            )
        if section not in SCHEMA:
            close = difflib.get_close_matches(section, list(SCHEMA), n=1)
            raise _fail(
                "--set",
                override,
                f"there is no [{section}] section",
                f"use one of {', '.join(SCHEMA)}" + (f" (did you mean '{close[0]}'?)" if close else ""),
            )
        try:
            value = tomllib.loads(f"value = {value_text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = value_text.strip()
        if section not in document:
            document[section] = tomlkit.table()
        document[section][name] = value
    return tomlkit.dumps(document)


def check_overridden(text: str) -> Config:
    """Validate a config that `mpiswim config --set` printed, for the pool its [ranks] lists imply (1 rank without
    lists).
    """
    ranks = tomllib.loads(text).get("ranks", {})
    lists = [len(value) for value in ranks.values() if isinstance(value, list)]
    return parse_config(text, lists[0] if lists else 1)


def load_config(path: str | Path, world_size: int, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate a config file, with `train --set` overrides applied; unreadable files are a ConfigError too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = (
            error.strerror.lower()
            if isinstance(error, OSError) and error.strerror
            else f"{error.__class__.__name__}: {error}"
        )  # "no such file or directory", "is a directory"
        raise ConfigError(
            f"config error: cannot read config file '{path}' ({reason}). Fix: check the path, or print an example with "
            "`mpiswim config > my.toml`."
        ) from None
    return parse_config(apply_overrides(text, overrides) if overrides else text, world_size, base_dir=path.parent)


def written_before_new_defaults(written_by: str | None) -> bool:
    """Whether mpiswim `written_by` (a checkpoint's versions["mpiswim"]) predates NEW_DEFAULTS_SINCE.

    A missing or unreadable version counts as old: files without one were all written before 0.2.0.
    """
    match = re.match(r"\s*(\d+)\.(\d+)", written_by) if isinstance(written_by, str) else None
    return match is None or (int(match[1]), int(match[2])) < NEW_DEFAULTS_SINCE


def make_explicit(text: str, values: dict[str, dict[str, Any]]) -> str:
    """`text` with every key of `values` that it leaves out written in, marked by a comment (comments and layout kept).

    Text that is not TOML, or whose section is not a table, comes back unchanged: parse_config names the problem.
    """
    import tomlkit

    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError:
        return text
    added = False
    for section, keys in values.items():
        if section not in document:
            document[section] = tomlkit.table()
        table = document[section]
        if not isinstance(table, dict):
            return text
        for key, value in keys.items():
            if key not in table:
                table.add(
                    key,
                    tomlkit.item(value).comment("made explicit: the value a left-out key meant before mpiswim 0.2.0"),
                )
                added = True
    return tomlkit.dumps(document) if added else text


def parse_stored_config(
    config_toml: str, world_size: int, stored_step_sizes: dict[str, tuple[float, ...]] | None, written_by: str | None
) -> Config:
    """The Config that a checkpoint's stored config text meant when mpiswim `written_by` wrote it.

    Before 0.2.0 a key of LEGACY_DEFAULTS left out meant its old value, so those keys are
    written into the text first; the Config's toml_text is that explicit text, so a resumed
    run that stores it again keeps the meaning. `written_by` is the "mpiswim" entry of the
    checkpoint's versions attribute (None when missing); `stored_step_sizes` as in parse_config.
    """
    text = make_explicit(config_toml, LEGACY_DEFAULTS) if written_before_new_defaults(written_by) else config_toml
    return parse_config(text, world_size, stored_step_sizes=stored_step_sizes)
