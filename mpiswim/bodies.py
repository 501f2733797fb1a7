"""What differs between Gymnasium's MuJoCo v5 bodies, read from the env: a `Body` for the compiled episode.

The compiled episode (mpiswim.compiled) is one loop for every body. What it
needs to know about a body is small, and this module reads it from the
Gymnasium env itself (its private weights and ranges, so non-default
`gymnasium.make` arguments are followed):

- the observation: a list of segments of MuJoCo's arrays (qpos from an offset,
  qvel, cinert, cvel, qfrc_actuator, cfrc_ext), each clipped or not;
- the forward position the velocity reward differences: qpos[0], a body's x
  (Ant's torso) or the mass centre's x (Humanoid);
- the healthy test and its ranges: none, planar (Hopper, Walker2d: height
  and angle, Hopper also every state value), Ant's, Humanoid's;
- the contact cost: none, Ant's (clipped forces), Humanoid's (clipped cost);
- the reward weights.

Every expression the compiled episode evaluates follows the v5 source of the
body in the same order, so the numbers are Gymnasium's to the last bit
(tests/test_bodies.py). A body class this module does not know, or a value it
cannot follow, gives a reason instead of a Body, and the task runs the Python loop.
"""

from __future__ import annotations

import importlib
import math
from typing import NamedTuple

import numpy as np

# where the forward position is read
POSITION_QPOS, POSITION_BODY, POSITION_MASS_CENTRE = 0, 1, 2
# the healthy test
HEALTHY_ALWAYS, HEALTHY_PLANAR, HEALTHY_ANT, HEALTHY_HUMANOID = 0, 1, 2, 3
# the contact cost
CONTACT_NONE, CONTACT_CLIPPED_FORCES, CONTACT_CLIPPED_COST = 0, 1, 2
# the MuJoCo arrays an observation segment reads (flattened, C order)
QPOS, QVEL, CINERT, CVEL, QFRC_ACTUATOR, CFRC_EXT = range(6)
NO_CLIP = (-math.inf, math.inf)
LONGEST_SUM = 128  # the compiled sums follow numpy's summation order up to this many values (6 per body, 1 per control)


class Body(NamedTuple):
    """One body's observation, reward and healthy test as the compiled episode evaluates them."""

    position: int  # POSITION_*: where the forward position is read
    main_body: int  # POSITION_BODY: the body whose x is read (Ant's torso)
    forward_weight: float
    ctrl_weight: float
    healthy: int  # HEALTHY_*
    healthy_weight: float  # added when healthy (0.0 when not)
    terminate: bool  # end the episode when unhealthy (terminate_when_unhealthy)
    z_range: np.ndarray  # (2,) the healthy height's bounds
    angle_range: np.ndarray  # (2,) HEALTHY_PLANAR's angle bounds
    state_range: np.ndarray  # (2,) HEALTHY_PLANAR's bounds on qpos[2:], qvel (Hopper); empty when not checked
    contact: int  # CONTACT_*
    contact_weight: float
    contact_range: np.ndarray  # (2,) the clip of the forces (Ant) or of the cost (Humanoid)
    segments: np.ndarray  # (k, 3) int64 rows: source array, start, stop
    clips: np.ndarray  # (k, 2) each segment's clip bounds (NO_CLIP: none)
    post_constraint: bool  # call mj_rnePostConstraint after stepping: the body reads cfrc_ext


class NotFollowed(Exception):
    """A value of the env the compiled episode cannot follow; its message says which."""


def _float(env, name: str) -> float:
    if not hasattr(env, name):
        raise NotFollowed(f"env.{name} is missing")
    value = getattr(env, name)
    if isinstance(value, bool) or not isinstance(value, (float, int)) or not math.isfinite(value):
        raise NotFollowed(f"env.{name} is {value!r} ({type(value).__name__}), not a finite float")
    return float(value)


def _flag(env, name: str) -> bool:
    value = getattr(env, name, None)
    if not isinstance(value, bool):
        raise NotFollowed(f"env.{name} is {value!r}, not True or False")
    return value


def _range(env, name: str) -> np.ndarray:
    value = getattr(env, name, None)
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(bound, (float, int)) and not isinstance(bound, bool) for bound in value)
        or any(math.isnan(bound) for bound in value)
    ):
        raise NotFollowed(f"env.{name} is {value!r}, not a (low, high) pair of numbers")
    return np.array(value, dtype=np.float64)


def _positions(env, skipped: int) -> list[tuple[int, int, int, tuple[float, float]]]:
    """qpos without its first `skipped` values when the env excludes them (v5's default), then qvel."""
    start = skipped if _flag(env, "_exclude_current_positions_from_observation") else 0
    return [(QPOS, start, env.model.nq, NO_CLIP), (QVEL, 0, env.model.nv, NO_CLIP)]


def _falls(env, healthy: int) -> dict:
    """The terms of a body that can fall: its healthy test, reward for being healthy, termination and height range."""
    return dict(
        healthy=healthy,
        healthy_weight=_float(env, "_healthy_reward"),
        terminate=_flag(env, "_terminate_when_unhealthy"),
        z_range=_range(env, "_healthy_z_range"),
    )


def _swimmer(env) -> dict:
    return dict(segments=_positions(env, 2))


def _half_cheetah(env) -> dict:
    return dict(segments=_positions(env, 1))


def _planar_walker(env, check_state: bool) -> dict:
    """Hopper and Walker2d: qvel clipped to +-10 in the observation, healthy by height and angle (Hopper: and state)."""
    position, velocity = _positions(env, 1)
    return dict(
        segments=[position, (QVEL, 0, env.model.nv, (-10.0, 10.0))],
        **_falls(env, HEALTHY_PLANAR),
        angle_range=_range(env, "_healthy_angle_range"),
        state_range=_range(env, "_healthy_state_range") if check_state else np.zeros(0),
    )


def _hopper(env) -> dict:
    return _planar_walker(env, check_state=True)


def _walker2d(env) -> dict:
    return _planar_walker(env, check_state=False)


def _ant(env) -> dict:
    main_body = getattr(env, "_main_body", None)
    try:
        body_id = env.data.body(main_body).id
    except (KeyError, TypeError, IndexError, ValueError):
        raise NotFollowed(f"env._main_body is {main_body!r}, not a body of the model") from None
    contact_range = _range(env, "_contact_force_range")
    segments = _positions(env, 2)
    if _flag(env, "_include_cfrc_ext_in_observation"):
        segments.append((CFRC_EXT, 6, 6 * env.model.nbody, tuple(contact_range)))
    return dict(
        segments=segments,
        position=POSITION_BODY,
        main_body=int(body_id),
        **_falls(env, HEALTHY_ANT),
        contact=CONTACT_CLIPPED_FORCES,
        contact_weight=_float(env, "_contact_cost_weight"),
        contact_range=contact_range,
        post_constraint=True,
    )


def _humanoid(env) -> dict:
    nbody, nv = env.model.nbody, env.model.nv
    segments = _positions(env, 2)
    for flag, source, start, stop in (
        ("_include_cinert_in_observation", CINERT, 10, 10 * nbody),
        ("_include_cvel_in_observation", CVEL, 6, 6 * nbody),
        ("_include_qfrc_actuator_in_observation", QFRC_ACTUATOR, 6, nv),
        ("_include_cfrc_ext_in_observation", CFRC_EXT, 6, 6 * nbody),
    ):
        if _flag(env, flag):
            segments.append((source, start, stop, NO_CLIP))
    return dict(
        segments=segments,
        position=POSITION_MASS_CENTRE,
        **_falls(env, HEALTHY_HUMANOID),
        contact=CONTACT_CLIPPED_COST,
        contact_weight=_float(env, "_contact_cost_weight"),
        contact_range=_range(env, "_contact_cost_range"),
        post_constraint=True,
    )


# Gymnasium's v5 class (module, class name) -> what differs; every other class runs the Python loop.
BODIES = {
    ("swimmer_v5", "SwimmerEnv"): _swimmer,
    ("half_cheetah_v5", "HalfCheetahEnv"): _half_cheetah,
    ("hopper_v5", "HopperEnv"): _hopper,
    ("walker2d_v5", "Walker2dEnv"): _walker2d,
    ("ant_v5", "AntEnv"): _ant,
    ("humanoid_v5", "HumanoidEnv"): _humanoid,
}


def gymnasium_class(module: str, name: str):
    """Gymnasium's class `name` of gymnasium.envs.mujoco.`module`, or None if this Gymnasium has none."""
    try:
        return getattr(importlib.import_module(f"gymnasium.envs.mujoco.{module}"), name, None)
    except Exception:  # an import of a private module of a future release may fail in any way
        return None


def known_body(env) -> tuple[str, str] | None:
    """The BODIES key of env's class when it is exactly that Gymnasium class (a subclass may change step), else None."""
    for key in BODIES:
        if type(env).__name__ == key[1] and type(env) is gymnasium_class(*key):
            return key
    return None


def body_of(env) -> tuple[Body | None, str | None]:
    """(the env's Body, None), or (None, why the compiled episode cannot follow this env)."""
    key = known_body(env)
    if key is None:
        return None, f"the env is {type(env).__module__}.{type(env).__qualname__}, not one of Gymnasium's v5 bodies"
    model = env.model
    if max(6 * model.nbody, model.nu) > LONGEST_SUM:
        return (
            None,
            f"the model has {model.nbody} bodies and {model.nu} controls: sums over {LONGEST_SUM} values",
        )
    try:
        terms = dict(
            position=POSITION_QPOS,
            main_body=0,
            forward_weight=_float(env, "_forward_reward_weight"),
            ctrl_weight=_float(env, "_ctrl_cost_weight"),
            healthy=HEALTHY_ALWAYS,
            healthy_weight=0.0,
            terminate=False,
            z_range=np.zeros(2),
            angle_range=np.zeros(2),
            state_range=np.zeros(0),
            contact=CONTACT_NONE,
            contact_weight=0.0,
            contact_range=np.zeros(2),
            post_constraint=False,
        )
        terms.update(BODIES[key](env))
    except NotFollowed as reason:
        return None, str(reason)
    segments = terms.pop("segments")
    size = sum(stop - start for _, start, stop, _ in segments)
    shape = getattr(getattr(env, "observation_space", None), "shape", None)
    if shape != (size,):
        return None, f"the observation space has shape {shape}, not the ({size},) of v5's observation"
    body = Body(
        segments=np.array([(source, start, stop) for source, start, stop, _ in segments], dtype=np.int64),
        clips=np.array([clip for *_, clip in segments], dtype=np.float64),
        **terms,
    )
    return body, None
