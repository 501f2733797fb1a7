"""Run configuration: every key declared once, its validation, and the embedded default.

`KEYS` declares each key of the TOML file once: its section, type, default,
bounds or choices, the sentence that documents it, whether a resume may change
it and whether `analyze` compares it. The template `mpiswim config` prints
(DEFAULT_CONFIG), the schema, the defaults, the `Config` dataclass, the table
in docs/config.md (`keys_markdown`), train's resume rule and analyze's
comparison all come from it; rules that tie several keys together are a few
named functions below.

A config is read and validated once (on rank 0) and the resulting `Config` is
shared with the other ranks. Every problem is reported as one `ConfigError`
whose message names the field, the value that was given and how to fix it.
Only the text is checked here: whether the task exists and fits the config is
mpiswim.tasks.check_task's question (this module imports only
mpiswim.plain_hdf5, to read a hyperparameter file).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import textwrap
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEATURE_MAPS = ("linear", "signed")
UPDATE_RULES = ("tanh-density", "unit-density", "log-density")
BASELINES = ("state-time", "state")
EVALUATION_ACTIONS = ("mean", "sample")
BEST_BY = ("recorded", "fresh")  # [run] best_by: what makes a winner the best agent
# The learners, the one registry: [pool] learner's name -> "module:function" of a mpiswim.pool.Learner.
LEARNERS = {"reinforce": "mpiswim.learn:reinforce_branch", "random-search": "mpiswim.search:random_search_branch"}
INTERCEPTS = ("per-block", "shared")
NORMALISATIONS = ("none", "running", "pooled")
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

REQUIRED = "required"  # the default of a key that a config must give
HIDDEN = "hidden"  # the embedded default does not show the key


class ConfigError(Exception):
    """A problem with the user's input: one message naming field, value and fix."""


@dataclass(frozen=True)
class Key:
    """One key of the config file, and everything mpiswim knows about it."""

    section: str
    name: str
    types: type | tuple[type, ...]  # what TOML must give
    default: Any  # what the key left out means; REQUIRED: it must be given; None: "not set"
    doc: str  # what it does: the template's comment and docs/config.md's table
    field: str | None = ""  # the Config field it fills ("" = its name; None = none, e.g. [ranks] hyperparameters)
    choices: tuple[str, ...] | dict[str, str] = ()  # the allowed strings, the default first
    what: str = ""  # what the choices are, for "unknown feature map"
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[str, Any], Any] | None = None  # check(label, value) -> the value as the Config holds it
    shown: Any = None  # the value the embedded default shows (None: the default; HIDDEN: not shown)
    commented: bool = False  # shown commented out (a key whose default is "not set")
    resumable: bool = False  # a resumed run may change it
    compared: bool = True  # `analyze` compares it across runs (seeds and lengths are not the config's run)

    @property
    def label(self) -> str:
        return f"[{self.section}] {self.name}"

    @property
    def attribute(self) -> str | None:
        return self.name if self.field == "" else self.field


# --- value checks that belong to one key -------------------------------------------------


def quote(value: Any, limit: int = 80) -> str:
    """repr(value), shortened for a one-line message: a long list shows its first and last entries and its length."""
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{', '.join(quote(v, 20) for v in value[:3])}, ..., {quote(value[-1], 20)}] ({len(value)} entries)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def _fail(field: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"config error: {field} = {quote(value)}: {problem}. Fix: {fix}.")


def has_control_character(text: str) -> bool:
    """A NUL, a newline or another control character, or a Unicode line or paragraph separator: what would split or
    garble the run's log lines.
    """
    return any(unicodedata.category(character) in ("Cc", "Zl", "Zp") for character in text)


def _text(field: str, value: str) -> str:
    if has_control_character(value):
        raise _fail(field, value, "contains a control character (a newline, a tab, a NUL)", "remove it")
    return value


def _env_id(field: str, value: str) -> str:
    if not value.isprintable():
        raise _fail(field, value, "contains control characters", "use a Gymnasium id such as 'Swimmer-v5'")
    if ":" in value:  # Gymnasium's make would import the module named before the ':'
        raise _fail(
            field,
            value,
            "names a Python module to import (the part before ':'), and mpiswim never imports code a config names",
            "use a registered Gymnasium MuJoCo id such as 'Swimmer-v5', without a module",
        )
    return value


def _unit_interval(field: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise _fail(field, value, "must lie in [0, 1]", "use a discount such as 1.0 or 0.99")
    return float(value)


def _finite(field: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise _fail(field, value, "is not a finite number", "give a score such as 150, or leave it out (no target)")
    return None if value is None else float(value)


def _recency(field: str, value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise _fail(
            field, value, "must lie in (0, 1] (1 weighs every observation of the horizon alike)", "use e.g. 0.99999"
        )
    return float(value)


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


def check_max_seconds(field: str, value: Any) -> float:
    """Seconds of wall time a training job may take: 0 (no limit), or a positive finite number.

    `field` names where the value came from: "[run] max_seconds" or "--time-limit".
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value == 0 or (math.isfinite(value) and value > 0))
    ):
        raise _fail(
            field,
            value,
            "must be 0 (no time limit) or a positive finite number of seconds",
            "give seconds of wall time such as 1200 (20 minutes), or 0 to run all the iterations",
        )
    return float(value)


def _observation_scale(field: str, value: Any) -> tuple[float, ...] | float:
    """A positive number, or a list of them (its length is checked against the task in mpiswim.tasks.check_task)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(field, value, "is an empty list", "give one number for every observation value, or a single number")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise _fail(
                field, value, f"entry {quote(v)} is not a positive finite number", "use positive numbers like 1.0"
            )
    return tuple(float(v) for v in values) if isinstance(value, list) else float(value)


NUMBER, STEP_SIZES = (int, float), (int, float, list, dict)

# Every key, in the order of the embedded default.
# fmt: off
KEYS: tuple[Key, ...] = (
    Key("run", "name", str, "mpiswim", "free text, stored in the checkpoint; also names it when out is left out",
        check=_text, shown="swimmer-default", compared=False),
    Key("run", "seed", int, 0, "base seed; rank r in iteration k uses the stream (seed, k, r)", minimum=0,
        compared=False),
    Key("run", "iterations", int, REQUIRED, "pool iterations to run (train --iterations overrides)", minimum=1,
        shown=120, resumable=True, compared=False),
    Key("run", "out", str, None, "HDF5 checkpoint, written after every iteration; left out: runs/<name>.h5 (here "
        "runs/swimmer-default.h5). train --out overrides both.", check=_text, shown="runs/my-run.h5", commented=True,
        resumable=True, compared=False),
    Key("run", "stall_timeout", NUMBER, 600, "seconds a rank may keep the others waiting at one of the pool's "
        "collectives before it is taken as hung (at least 20 x the slowest iteration so far; set-up and the first "
        "iteration get at least 600 s): the job ends naming it (exit code 5), checkpoint intact. 0 = never (plain "
        "blocking MPI waits). May change on resume; train --stall-timeout overrides it.",
        check=check_stall_timeout, resumable=True, compared=False),
    Key("run", "max_seconds", NUMBER, 0, "time budget: after this many seconds of wall time (from the start of "
        "train) the run finishes the iteration in progress, writes it and stops with exit code 0 and the command that "
        "resumes it. 0 = no limit. Per job: a resumed job counts from its own start. train --time-limit overrides it.",
        check=check_max_seconds, resumable=True, compared=False),
    Key("run", "target", NUMBER, None, "stop once the best agent scores this on target_episodes (default 5) fresh "
        "episodes (checked after each new best); left out: run all iterations. A run that stopped at its target goes "
        "on to a new one with --resume-if-exists and the new target (the file then stores it)", check=_finite,
        shown=150, commented=True, resumable=True, compared=False),
    Key("run", "target_episodes", int, 5, "fresh episodes behind the target check (and behind best_by = \"fresh\")",
        minimum=1, maximum=MAX_EPISODES, shown=HIDDEN),
    Key("run", "best_by", str, "recorded", '"recorded": the best agent is the winner with the highest score (the '
        "highest of many noisy means, so it flatters the agent); \"fresh\": a winner scoring above the best agent's "
        "fresh score plays target_episodes fresh episodes (shared by the ranks) and becomes the best agent only if "
        "their mean is higher; the target check then reads that mean", choices=BEST_BY, what="best-agent rule",
        shown=HIDDEN),
    Key("run", "tensorboard", bool, False, "true: rank 0 writes a TensorBoard event stream beside the checkpoint "
        "(RUN.h5 -> RUN.tb/): scores, step sizes, phase times, steps per iteration. Needs the tensorboard extra "
        "(pip install 'mpiswim[tensorboard]'); train --tensorboard DIR chooses the folder", shown=HIDDEN,
        resumable=True, compared=False),
    Key("env", "id", str, REQUIRED, "any Gymnasium MuJoCo id with a bounded Box action space", field="env_id",
        check=_env_id, shown="Swimmer-v5"),
    Key("env", "T", int, REQUIRED, "steps per episode at most (the episode also ends on termination)", minimum=1,
        maximum=MAX_T, shown=500),
    Key("env", "gamma", NUMBER, 1.0, "discount of the return, in [0, 1]", check=_unit_interval),
    Key("pool", "learner", str, "reinforce", 'how a rank improves its branch: "reinforce" (REINFORCE episodes) or '
        '"random-search" (a step along a direction pooled from every rank\'s random tries, with a [search] table: see '
        "configs/fast-swimmer.toml)", choices=LEARNERS, what="learner"),
    Key("pool", "iterate_episodes", int, REQUIRED, "REINFORCE episodes each rank spends improving its branch",
        minimum=1, maximum=MAX_EPISODES, shown=5),
    Key("pool", "evaluate_episodes", int, REQUIRED, "no-update episodes whose mean return is the branch's score",
        minimum=1, maximum=MAX_EPISODES, shown=5),
    Key("pool", "patience", int, 0, "fall back to the best-ever agent after this many iterations without a new best; "
        "0 = never fall back", minimum=0),
    Key("pool", "max_degenerate_iterations", int, 10, "stop if every branch breaks this many iterations in a row",
        minimum=1),
    Key("pool", "common_evaluation", bool, True, "true: every rank evaluates on the same start states and action "
        "noise, so branches are compared on equal terms (common random numbers); false: each rank draws its own"),
    Key("pool", "evaluation_action", str, "mean", '"mean": score a branch by acting with its Beta mean a/(a+b), a '
        'deterministic controller (the update episodes still draw actions); "sample": score it with Beta draws, as '
        "training acts", choices=EVALUATION_ACTIONS, what="evaluation action"),
    Key("pool", "common_action_noise", bool, False, "seed-faithful: every rank draws its actions from one stream per "
        "iteration (start states stay per rank)", shown=HIDDEN),
    Key("policy", "features", str, "linear", '"linear": one block [1, s]; "signed": one block [1, s] per sign '
        "pattern of s (2^d blocks)", choices=FEATURE_MAPS, what="feature map"),
    Key("policy", "update", str, "tanh-density", 'the policy\'s step per parameter: "tanh-density" (tanh of the '
        'density gradient), "unit-density" (the density gradient scaled to unit length) or "log-density" (the '
        "ordinary score-function rule)", choices=UPDATE_RULES, what="update rule"),
    Key("policy", "baseline", str, "state-time", '"state-time": v(s, t) = w . [phi(s), (T - t) / T], which sees the '
        'steps left that the gamma = 1 return grows with; "state": v(s) = w . phi(s)', choices=BASELINES,
        what="baseline"),
    Key("policy", "observation_scale", (int, float, list), 1.0, "the features hold s / observation_scale (the block "
        "still follows the signs of s): a number, or a list with one entry per observation value",
        check=_observation_scale),
    Key("policy", "intercept", str, "per-block", 'seed-faithful: "shared" gives every sign block one intercept '
        "weight", choices=INTERCEPTS, what="intercept", shown=HIDDEN),
    Key("policy", "normalisation", str, "none", 'seed-faithful: "running" standardises the observation with a '
        'running scaler ([normalisation]); random search: "pooled" standardises it with the mean and standard '
        "deviation of every state the pool's exploration episodes visited, updated once per iteration (ARS V2)",
        choices=NORMALISATIONS, what="normalisation", shown=HIDDEN),
    Key("policy", "baseline_target", str, "before-update", 'seed-faithful: "after-update" takes the policy\'s '
        "target after the baseline's SGD step", choices=BASELINE_TARGETS, what="baseline target", shown=HIDDEN),
    Key("policy", "precision", str, "float64", 'seed-faithful: "float32" computes the policy\'s step directions in '
        "float32", choices=PRECISIONS, what="precision", shown=HIDDEN),
    Key("policy", "eta_travels", bool, False, "seed-faithful: the baseline's step size travels with the agent",
        shown=HIDDEN),
    Key("normalisation", "refit_every", int, 2000, "running scaler: refit from its horizon every this many "
        "observations", minimum=1, shown=HIDDEN),
    Key("normalisation", "horizon", int, 100_000, "running scaler: observations a refit looks back over (a multiple "
        "of refit_every)", shown=HIDDEN),
    Key("normalisation", "recency", NUMBER, 0.99999, "running scaler: weight of an observation relative to the next "
        "newer one, in (0, 1]", check=_recency, shown=HIDDEN),
    Key("ranks", "alpha", STEP_SIZES, None, "policy step sizes: the pool picks the one that works at each stage",
        shown={"min": 1e-6, "max": 1e-4}),
    Key("ranks", "eta", STEP_SIZES, None, "baseline step size", shown=1e-3),
    Key("ranks", "hyperparameters", str, None, "an HDF5 file (path relative to the config) with datasets alpha and "
        "eta of length P, instead of alpha and eta", field=None, shown=HIDDEN),
    Key("search", "noise", STEP_SIZES, 0.01, "random-search: standard deviation of the parameter perturbations (ARS's "
        "for Swimmer, Mania et al. 2018); per rank like [ranks] alpha", field="search_noise", shown=HIDDEN),
    Key("search", "top", int, 0, "random-search: directions kept for the step (the best by their better side); 0 = "
        "all", field="search_top", minimum=0, shown=HIDDEN),
    Key("search", "intercept", bool, False, "random-search: the directions move the intercept weights too",
        field="search_intercept", shown=HIDDEN),
    Key("search", "shift", NUMBER, 0.0, "random-search: reward subtracted per step from the exploration returns "
        "(ARS's shift: the body's healthy reward, so standing still earns nothing); never from scores. More than a "
        "standing body earns per step after its costs makes falling early pay (Ant: docs/results.md)",
        field="search_shift", minimum=0.0, shown=HIDDEN),
)
# fmt: on


# --- what comes from the declarations ----------------------------------------------------

SECTIONS = tuple(dict.fromkeys(key.section for key in KEYS))
# section -> key -> (type, required): what TOML must give.
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    section: {key.name: (key.types, key.default == REQUIRED) for key in KEYS if key.section == section}
    for section in SECTIONS
}
# section -> key -> the value a key left out means (keys that must be given, or are "not set", have none).
DEFAULTS: dict[str, dict[str, Any]] = {
    section: {key.name: key.default for key in KEYS if key.section == section and key.default not in (REQUIRED, None)}
    for section in SECTIONS
}
DEFAULT_STALL_TIMEOUT = float(DEFAULTS["run"]["stall_timeout"])
# Config fields a resumed run may change, and those `analyze` does not compare across runs.
RESUMABLE = (*(key.attribute for key in KEYS if key.resumable), "toml_text")
NOT_COMPARED = (*(key.attribute for key in KEYS if not key.compared), "toml_text", "world_size")

# What five keys meant when left out before mpiswim 0.2.0, which made the embedded default's values
# the defaults. parse_stored_config writes them into the config text of an older checkpoint, so it
# keeps its meaning (docs/config.md, "Defaults changed in 0.2.0").
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "pool": {"common_evaluation": False, "evaluation_action": "sample"},
    "policy": {"features": "signed", "update": "unit-density", "baseline": "state"},
}
NEW_DEFAULTS_SINCE = (0, 2)  # the mpiswim version from which a left-out key means DEFAULTS' value


def field_label(attribute: str) -> str:
    """How a message names a Config field: '[search] noise' for search_noise, 'number of ranks' for world_size."""
    labels = {key.attribute: key.label for key in KEYS} | {"world_size": "number of ranks", "toml_text": "config text"}
    return labels.get(attribute, attribute)


def _annotation(key: Key) -> Any:
    if key.types == STEP_SIZES:  # one value per rank: [ranks] alpha and eta, [search] noise
        return tuple[float, ...]
    if key.types == NUMBER:
        return float | None if key.default is None else float
    return key.types if isinstance(key.types, type) else Any


def _scaler(self) -> tuple[int, int] | None:
    """(refit_every, horizon) of the scalers' state (mpiswim.policy.scaler_shape), or None without normalisation.

    "pooled" keeps one row, the statistics alone: (1, 0).
    """
    if self.normalisation == "pooled":
        return (1, 0)
    return (self.refit_every, self.horizon) if self.normalisation == "running" else None


def _time_feature(self) -> bool:
    """The baseline also sees the fraction of steps left ([policy] baseline = "state-time")."""
    return self.baseline == "state-time"


# A validated run configuration for a pool of `world_size` ranks: one field per key of KEYS (named by
# Key.attribute, e.g. env_id for [env] id), the per-rank step sizes alpha and eta, and the config text.
Config = dataclasses.make_dataclass(
    "Config",
    [(key.attribute, _annotation(key)) for key in KEYS if key.attribute] + [("world_size", int), ("toml_text", str)],
    frozen=True,
    namespace={"scaler": property(_scaler), "time_feature": property(_time_feature), "__module__": __name__},
)
Config.__doc__ = "A validated run configuration for a pool of `world_size` ranks (fields: mpiswim.config.KEYS)."


# --- the embedded default and the reference table ----------------------------------------

TEMPLATE_HEAD = """\
# mpiswim run configuration (TOML). Print this again with `mpiswim config`.
# Every rank of `mpirun -n P mpiswim train --config FILE` is one pool member.
# A key left out means the value shown here (docs/config.md lists every key).
"""
SECTION_NOTES = {
    "ranks": "A number applies to every rank; a list needs exactly one entry per rank; a table\n"
    "{min = a, max = b} spaces P values evenly in log from a (rank 0) to b (the last rank;\n"
    "a single rank gets the middle, sqrt(a * b)).\n"
    'Instead of alpha/eta, `hyperparameters = "file.h5"` reads datasets of length P.',
}
COMMENT_COLUMN, COMMENT_WIDTH = 27, 110


def toml_value(value: Any) -> str:
    """`value` as a TOML value: 1e-4 rather than 0.0001, a table as {min = ..., max = ...}."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{name} = {toml_value(v)}" for name, v in value.items()) + "}"
    if isinstance(value, float) and value != 0 and abs(math.log10(abs(value))) >= 3:
        return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].replace('+', '')}{m[2]}", f"{value:.0e}")
    return repr(value)


def render_template() -> str:
    """The embedded default: every shown key with its value and its declaration's sentence as a comment."""
    lines = [TEMPLATE_HEAD.rstrip("\n")]
    for section in SECTIONS:
        keys = [key for key in KEYS if key.section == section and key.shown != HIDDEN]
        if not keys:
            continue
        lines += ["", f"[{section}]", *(f"# {line}" for line in SECTION_NOTES.get(section, "").splitlines())]
        for key in keys:
            shown = key.default if key.shown is None else key.shown
            assignment = f"{'# ' if key.commented else ''}{key.name} = {toml_value(shown)}"
            comment = textwrap.wrap(key.doc, COMMENT_WIDTH - COMMENT_COLUMN, break_on_hyphens=False)
            gap = " " if len(assignment) < COMMENT_COLUMN - 1 else "  "
            lines.append(f"{assignment.ljust(COMMENT_COLUMN - 1)}{gap}# {comment[0]}")
            lines += [f"{' ' * COMMENT_COLUMN}# {line}" for line in comment[1:]]
    return "\n".join(lines) + "\n"


# The embedded default: printed by `mpiswim config`, run by `mpiswim train` without --config.
DEFAULT_CONFIG = render_template()


def keys_markdown() -> str:
    """docs/config.md's table of every key (tests/test_config.py fails if the page drifts from it)."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for key in KEYS:
        kinds = key.types if isinstance(key.types, tuple) else (key.types,)
        kind = " or ".join(dict.fromkeys(_TYPE_NAMES[k] for k in kinds))
        if key.choices:
            kind = " \\| ".join(f'`"{choice}"`' for choice in key.choices)
        default = {REQUIRED: "required", None: "not set"}.get(key.default) if key.default in (REQUIRED, None) else None
        default = default or f"`{toml_value(key.default)}`"
        notes = [note for flag, note in ((key.resumable, "may change on resume"),) if flag]
        rows.append(f"| `{key.label}` | {kind} | {default} | {key.doc}{''.join(f' ({n})' for n in notes)} |")
    return "\n".join(rows) + "\n"


# --- reading and checking a config ------------------------------------------------------


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    bool: "true or false",
    dict: "a table {min = ..., max = ...}",
}


def _type_name(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(dict.fromkeys(_TYPE_NAMES[k] for k in kinds))


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


def _at_least(field: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise _fail(field, value, f"must be at least {minimum}", f"set it to {minimum} or more")
    return value


def _at_most(field: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise _fail(field, value, f"must be at most {maximum}", f"set it to {maximum} or less")
    return value


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


def _step_sizes(name: str, value: Any, world_size: int, section: str = "ranks") -> tuple[float, ...]:
    """One positive value per rank from a number (every rank), a list (one per rank) or a {min, max} spread."""
    field = f"[{section}] {name}"
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


def with_target(text: str, target: float | None) -> str:
    """The config text with [run] target set to `target` (taken out when None), comments and layout kept: the config a
    resumed run that goes on to a new target stores.
    """
    import tomlkit

    document = tomlkit.parse(text)
    run = document.setdefault("run", tomlkit.table())
    if target is None:
        run.pop("target", None)
    else:
        run["target"] = target
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


def _value(doc: dict, key: Key) -> Any:
    """The value of one key as the Config holds it: type, choices, bounds and its own check applied."""
    value = _get(doc, key.section, key.name)
    if value is None:  # a key that is "not set"
        return None
    if key.choices and value not in key.choices:
        raise _fail(key.label, value, f"unknown {key.what}", f"use one of {', '.join(key.choices)}")
    if key.minimum is not None:
        _at_least(key.label, value, key.minimum)
    if key.maximum is not None:
        _at_most(key.label, value, key.maximum)
    if key.check is not None:
        return key.check(key.label, value)
    return float(value) if key.types == NUMBER else value


# --- rules that tie several keys together ----------------------------------------------------


def _random_search_rules(doc: dict, values: dict[str, Any], world_size: int) -> None:
    """The [search] table belongs to learner = "random-search", which needs even iterate_episodes and mean scoring."""
    values["search_noise"] = _step_sizes("noise", values["search_noise"], world_size, section="search")
    if values["learner"] != "random-search":
        if "search" in doc:
            raise _fail(
                "[search]",
                doc["search"],
                'is used only by [pool] learner = "random-search"',
                'remove the [search] table, or set learner = "random-search" in [pool]',
            )
        return
    iterate_episodes = values["iterate_episodes"]
    if iterate_episodes % 2:
        raise _fail(
            "[pool] iterate_episodes",
            iterate_episodes,
            'must be even with learner = "random-search" (each direction is tried as +noise and -noise, one episode '
            "each)",
            f"set it to {iterate_episodes + 1} or {max(2, iterate_episodes - 1)}",
        )
    if values["evaluation_action"] != "mean":
        raise _fail(
            "[pool] evaluation_action",
            values["evaluation_action"],
            "random-search branches act with the Beta mean, so they must be scored with it",
            'set evaluation_action = "mean" in [pool]',
        )
    directions = world_size * iterate_episodes // 2
    if values["search_top"] > directions:
        raise _fail(
            "[search] top",
            values["search_top"],
            f"is more than the {directions} directions of an iteration ({world_size} ranks x iterate_episodes / 2)",
            f"keep at most {directions}, or 0 for all",
        )


# The seed-faithful options change REINFORCE branches; random search has none of them.
REINFORCE_ONLY = (
    ("policy", "intercept"),
    ("policy", "baseline_target"),
    ("policy", "precision"),
    ("policy", "eta_travels"),
    ("pool", "common_action_noise"),
)


def _seed_faithful_rules(doc: dict, values: dict[str, Any]) -> None:
    """The seed-faithful options belong to REINFORCE; the [normalisation] table to normalisation = "running"."""
    given = [(section, key) for section, key in REINFORCE_ONLY if key in doc.get(section, {})]
    if values["learner"] == "random-search" and values["normalisation"] == "running":
        raise _fail(
            "[policy] normalisation",
            "running",
            'belongs to REINFORCE branches, not to learner = "random-search"',
            'use normalisation = "pooled" (ARS\'s statistics of the pool\'s states), or learner = "reinforce"',
        )
    if values["learner"] != "random-search" and values["normalisation"] == "pooled":
        raise _fail(
            "[policy] normalisation",
            "pooled",
            'belongs to learner = "random-search" (the statistics come from its exploration episodes)',
            'use normalisation = "running" with REINFORCE, or set learner = "random-search" in [pool]',
        )
    if values["learner"] == "random-search" and given:
        section, key = given[0]
        raise _fail(
            f"[{section}] {key}",
            doc[section][key],
            'belongs to REINFORCE branches, not to learner = "random-search"',
            f"remove {key} from [{section}], or set learner = 'reinforce' in [pool]",
        )
    if values["normalisation"] != "running":
        if "normalisation" in doc:
            raise _fail(
                "[normalisation]",
                doc["normalisation"],
                'is used only with [policy] normalisation = "running"',
                'remove the [normalisation] table, or set normalisation = "running" in [policy]',
            )
    if values["normalisation"] != "none" and values["observation_scale"] != 1.0:
        raise _fail(
            "[policy] observation_scale",
            values["observation_scale"],
            f'has no effect with normalisation = "{values["normalisation"]}" (the statistics set the scale)',
            "remove observation_scale from [policy]",
        )
    if values["normalisation"] != "running":
        return
    refit_every, horizon = values["refit_every"], _at_least("[normalisation] horizon", values["horizon"], 1)
    _at_least("[normalisation] horizon", horizon, refit_every)
    if horizon % refit_every or horizon // refit_every > MAX_STORED_CHUNKS:
        raise _fail(
            "[normalisation] horizon",
            horizon,
            f"must be a multiple of refit_every ({refit_every}) and at most {MAX_STORED_CHUNKS} times it",
            f"use e.g. {refit_every * max(1, min(MAX_STORED_CHUNKS, round(horizon / refit_every)))}",
        )


def _rank_step_sizes(
    doc: dict,
    learner: str,
    world_size: int,
    base_dir: Path,
    stored_step_sizes: dict[str, tuple[float, ...]] | None,
) -> dict[str, tuple[float, ...]]:
    """alpha and eta per rank: stored in a checkpoint, from [ranks] hyperparameters' file, or from the config."""
    if stored_step_sizes is not None:
        return stored_step_sizes
    ranks, file_name = doc.get("ranks", {}), _get(doc, "ranks", "hyperparameters")
    if file_name is not None:
        given = [k for k in HYPERPARAMETERS if k in ranks]
        if given:
            raise _fail(
                f"[ranks] {given[0]}",
                ranks[given[0]],
                "given together with 'hyperparameters'",
                "take the step sizes either from the HDF5 file or from the config, not both",
            )
        return read_hyperparameter_file(base_dir / file_name, world_size)
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
                f"add '{key} = 1e-4' (or a list of {world_size} values) to [ranks], or 'hyperparameters = \"file.h5\"'",
            )
        steps[key] = _step_sizes(key, value, world_size)
    return steps


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

    values = {key.attribute: _value(doc, key) for key in KEYS if key.attribute and key.section != "ranks"}
    _random_search_rules(doc, values, world_size)
    _seed_faithful_rules(doc, values)
    values |= _rank_step_sizes(doc, values["learner"], world_size, base_dir, stored_step_sizes)
    if values["out"] is None:
        values["out"] = default_out(values["name"])
    if not values["out"]:
        raise _fail(
            "[run] out",
            values["out"],
            "is empty",
            f'give a file name such as "{default_out(values["name"])}", or leave the key out for that name',
        )
    return Config(**values, world_size=world_size, toml_text=text)
