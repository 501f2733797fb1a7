"""Which tasks mpiswim makes, making one, and whether a config fits it.

Only Gymnasium's registered MuJoCo tasks are made, and an id is looked up in
Gymnasium's registry before `gymnasium.make` sees it: `make` imports the module
of an id written 'module:name', and an id can come from a file someone else
wrote (a config, the stored config of a checkpoint). Importing this module
loads neither MuJoCo nor numba; making a task loads MuJoCo.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence

import numpy as np

from mpiswim.config import DEFAULT_CONFIG, MAX_SIGNED_OBS_DIM, Config, ConfigError, apply_overrides, quote

MUJOCO_ENTRY_POINT = "gymnasium.envs.mujoco."


def mujoco_ids() -> list[str]:
    """The ids of Gymnasium's MuJoCo tasks, as its registry lists them."""
    from gymnasium.envs.registration import registry

    return [env_id for env_id, spec in registry.items() if str(spec.entry_point).startswith(MUJOCO_ENTRY_POINT)]


def episode_limit(env_id: str) -> int | None:
    """Gymnasium's own episode limit of a registered MuJoCo task (its spec's max_episode_steps), without making it;
    None for an id mpiswim does not make or a task without one.
    """
    from gymnasium.envs.registration import registry

    return registry[env_id].max_episode_steps if env_id in mujoco_ids() else None


def embedded_config(overrides: Sequence[str] = ()) -> str:
    """The embedded default config with `--set` overrides (`mpiswim config --set`, `train` without --config).

    The default's T = 500 and name "swimmer-default" belong to its Swimmer-v5: when the overrides
    change [env] id, the task's own episode limit becomes T and "<task>-default" (e.g.
    "hopper-default") the name, unless the overrides set env.T or run.name themselves.
    Without an other id the text is the default's, so its runs do not change.
    """
    text = apply_overrides(DEFAULT_CONFIG, overrides) if overrides else DEFAULT_CONFIG
    given = {override.partition("=")[0].strip() for override in overrides}
    try:
        env_id = tomllib.loads(text)["env"]["id"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError):
        return text  # parse_config names what is wrong
    if (
        not isinstance(env_id, str)
        or env_id == tomllib.loads(DEFAULT_CONFIG)["env"]["id"]
        or env_id not in mujoco_ids()
    ):
        return text  # the default's own task, or an id that train refuses anyway (make_env names it)
    derived = []
    limit = episode_limit(env_id) if "env.T" not in given else None
    if limit:
        derived.append(f"env.T={limit}")
    if "run.name" not in given:
        derived.append(f'run.name="{re.sub(r"-v[0-9]+$", "", env_id).lower()}-default"')
    return apply_overrides(text, [*overrides, *derived]) if derived else text


def make_env(env_id: str):
    """gymnasium.make(env_id) for an id in Gymnasium's registry of MuJoCo tasks, else a ConfigError.

    The id is looked up before `make` is called: `make` would import the module of an
    id of the form 'module:name', so an id from a file someone hands us (a config, a
    stored config) could otherwise run code.
    """
    import gymnasium as gym

    if env_id not in mujoco_ids():
        close = difflib.get_close_matches(env_id, mujoco_ids(), n=1)
        example = f"'{close[0]}'" if close else "'Swimmer-v5', 'Hopper-v5' or 'HalfCheetah-v5'"
        raise ConfigError(
            f"config error: [env] id = {quote(env_id)}: not one of Gymnasium's registered MuJoCo tasks "
            f"(mpiswim makes only those, and imports nothing an id names). Fix: use a registered id such as {example}."
        )
    try:
        with quiet_settotalmass():
            return gym.make(env_id)
    except Exception as error:  # e.g. a MuJoCo that cannot load the model, or MuJoCo's OpenGL back-end
        raise ConfigError(cannot_make(env_id, error)) from None


# MuJoCo 4 deprecated the XML compiler attribute `settotalmass`, which Gymnasium's half_cheetah.xml still sets, and
# prints this warning (C's mju_warning, to stderr: not a Python warning) every time the model is compiled: once per rank
# and per start, about Gymnasium's file, with nothing for the user to fix. The model's masses are as before.
SETTOTALMASS_WARNING = "compiler attribute 'settotalmass' is deprecated"


@contextlib.contextmanager
def quiet_settotalmass() -> Iterator[None]:
    """While making a task, drop exactly MuJoCo's 'settotalmass' deprecation warning; any other MuJoCo warning is
    printed as MuJoCo prints it ("WARNING: ..." on stderr).
    """
    import mujoco

    def warn(message: str) -> None:
        if not message.startswith(SETTOTALMASS_WARNING):
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(warn)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def cannot_make(env_id: str, error: Exception) -> str:
    """The message for a registered task that Gymnasium failed to make: MUJOCO_GL named when it is set."""
    cause = f"Gymnasium cannot make it ({error.__class__.__name__}: {quote(str(error), 200)})"
    gl = os.environ.get("MUJOCO_GL")
    if gl is None:
        return f"config error: [env] id = {env_id!r}: {cause}. Fix: check that gymnasium[mujoco] installed and works."
    return (
        f"config error: [env] id = {env_id!r}: {cause}; the environment variable MUJOCO_GL = {quote(gl)} is the likely "
        "cause (MuJoCo loads that OpenGL back-end when Gymnasium's MuJoCo tasks are imported). Fix: unset MUJOCO_GL, "
        "or set MUJOCO_GL=egl (MUJOCO_GL=osmesa needs the libosmesa6 package)."
    )


def check_task(cfg: Config) -> tuple[int, int]:
    """Check that Gymnasium can make the config's task and that the config fits it; return (obs_dim, action_dim).

    The task must be one of Gymnasium's registered MuJoCo tasks (make_env), with a bounded
    1-D Box action space and a 1-D Box observation space; the signed coding must fit its
    observation size and a list observation_scale must have one entry per observation value.
    Any problem is a ConfigError.
    """
    import gymnasium as gym

    env_id, features, scale = cfg.env_id, cfg.features, cfg.observation_scale
    env = make_env(env_id)
    try:
        action_space, observation_space = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(
            f"config error: [env] id = {env_id!r}: action space {action_space} is not a 1-D Box. Fix: use a task with "
            "continuous actions."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(
            f"config error: [env] id = {env_id!r}: action space {action_space} is unbounded, but Beta actions need "
            "finite bounds. "
            "Fix: use a task with bounded actions (all Gymnasium MuJoCo tasks have them)."
        )
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(
            f"config error: [env] id = {env_id!r}: observation space {observation_space} is not a 1-D Box. Fix: use a "
            "task with vector observations."
        )
    obs_dim = observation_space.shape[0]
    if features == "signed" and obs_dim > MAX_SIGNED_OBS_DIM:
        raise ConfigError(
            f"config error: [policy] features = 'signed': {env_id} has {obs_dim} observation values, so the signed "
            "coding "
            f'would need 2^{obs_dim} blocks (at most 2^{MAX_SIGNED_OBS_DIM} allowed). Fix: set features = "linear" in '
            "[policy]."
        )
    if isinstance(scale, tuple) and len(scale) != obs_dim:
        raise ConfigError(
            f"config error: [policy] observation_scale = {list(scale)!r}: has {len(scale)} entries but {env_id} has "
            f"{obs_dim} observation values. "
            f"Fix: give exactly {obs_dim} numbers, or a single number for all."
        )
    return obs_dim, action_space.shape[0]
