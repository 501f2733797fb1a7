"""The checks: layout and shapes, values and the merge bookkeeping, the task; a read result as a Checkpoint.

`load_checkpoint` checks what reading needs (the layout, and that the stored task can be made
here and fits the agent); `check_checkpoint` (`mpiswim check`, and before a resume) adds every
value check. A file that fails one is refused with one message naming the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.checkpoint.format import AGENTS, CHECKSUM, CheckpointError, _damaged, pool_record
from mpiswim.checkpoint.reader import RawCheckpoint, read_raw, stored_config
from mpiswim.config import Config, ConfigError, quote
from mpiswim.policy import feature_blocks, scaler_shape
from mpiswim.state import NOT_RECORDED, PHASES, RECORD_FIELDS, IterationRecord, PoolState, winner_rank


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, as loaded."""

    config_toml: str
    world_size: int
    iterations_planned: int
    hyperparameters: dict[str, np.ndarray]
    state: PoolState
    records: list[IterationRecord]
    attrs: dict
    config: Config  # the run's config as stored_config reads it


def _check_layout(raw: RawCheckpoint, path: Path) -> Config:
    """Schema and shapes: every dataset present with the shape the root attributes imply; returns the stored Config."""
    attrs = raw.attrs
    for name in ("world_size", "iterations_done", "iterations_planned"):
        if not isinstance(attrs.get(name), (int, np.integer)):
            raise _damaged(path, f"root attribute {name} is {attrs.get(name)!r}, not an integer")
    P, k = int(attrs["world_size"]), int(attrs["iterations_done"])
    if P < 1 or k < 0:
        raise _damaged(path, f"world_size = {P}, iterations_done = {k}")
    if not isinstance(attrs.get("config_toml"), str):
        raise _damaged(path, "root attribute config_toml is missing or not text")
    for name, values in raw.hyperparameters.items():
        if values.shape != (P,) or values.dtype.kind != "f":
            raise _damaged(
                path,
                f"/hyperparameters/{name} has shape {values.shape} and type {values.dtype}, expected float64 ({P},)",
            )
    try:
        cfg = stored_config(attrs, raw.hyperparameters)
    except ConfigError as error:
        raise _damaged(path, f"its config_toml is not a valid config ({error})") from None

    sizes = {"P": P, "E": cfg.iterate_episodes, "phases": len(PHASES)}  # as read: timings with the checkpoint phase
    for field in RECORD_FIELDS:
        data, shape, kind = raw.pool[field.name], (k, *field.row_shape(sizes)), np.dtype(field.dtype).kind
        if k == 0 and data.size == 0:
            continue
        if data.shape != shape or data.dtype.kind not in (kind + "u" if kind == "i" else kind):  # any integer will do
            raise _damaged(
                path,
                f"/pool/{field.name} has shape {data.shape} and type {data.dtype}, expected {shape} for {k} iterations "
                f"of {P} ranks",
            )

    policy, baseline = raw.current.policy, raw.current.baseline
    blocks = feature_blocks(policy.shape[-1] - 1, cfg.features) if policy.ndim == 4 else None
    if (
        policy.ndim != 4
        or policy.shape[:2] != (blocks, 2)
        or baseline.shape != (blocks, policy.shape[3] + cfg.time_feature)
    ):
        raise _damaged(
            path,
            f"/agent/current has policy shape {policy.shape} and baseline shape {baseline.shape}, which do not fit "
            f"{cfg.features} features",
        )
    if raw.best.policy.shape != policy.shape or raw.best.baseline.shape != baseline.shape:
        raise _damaged(
            path,
            f"/agent/best has shapes {raw.best.policy.shape}, {raw.best.baseline.shape}, unlike /agent/current's "
            f"{policy.shape}, {baseline.shape}",
        )
    obs_dim = policy.shape[3] - 1
    scalers = (0, 0) if cfg.scaler is None else scaler_shape(obs_dim, *cfg.scaler)
    for name in AGENTS:
        agent = raw.agent(name)
        if any(part.dtype.kind != "f" for part in agent):
            raise _damaged(path, f"/agent/{name} is not stored as floating point")
        for part in ("policy_scaler", "baseline_scaler"):
            if getattr(agent, part).shape != scalers:
                raise _damaged(
                    path,
                    f"/agent/{name}/{part} has shape {getattr(agent, part).shape}, but the config's normalisation "
                    f"needs {scalers}",
                )
        if agent.baseline_eta.shape != ((1,) if cfg.eta_travels else (0,)):
            raise _damaged(
                path,
                f"/agent/{name}/baseline_eta has shape {agent.baseline_eta.shape}, but eta_travels = "
                f"{str(cfg.eta_travels).lower()}",
            )
    return cfg


def _check_values(raw: RawCheckpoint, path: Path, cfg: Config) -> None:
    """Values: finite where they must be, and the merge bookkeeping consistent row by row.

    Legal non-finite values: -inf scores of degenerate branches (and a -inf best
    score before any branch won), NaN training returns after a branch broke.
    """
    pool, k = raw.pool, int(raw.attrs["iterations_done"])
    for name, values in raw.hyperparameters.items():
        smallest = 0.0 if name == "eta" else np.nextafter(0.0, 1.0)  # eta = 0: random-search branches train no baseline
        if not (np.all(np.isfinite(values)) and np.all(values >= smallest)):
            raise _damaged(
                path,
                f"/hyperparameters/{name} = {values.tolist()} holds a step size that is "
                f"{'negative' if name == 'eta' else 'not positive'} or not finite",
            )
    for name in ("current", "best"):
        for part, values in raw.agent(name)._asdict().items():
            if not np.all(np.isfinite(values)):
                raise _damaged(
                    path, f"/agent/{name}/{part} holds {np.count_nonzero(~np.isfinite(values))} non-finite values"
                )
    if k == 0:
        return
    scores, degenerate, winner = pool["scores"], pool["degenerate"], pool["winner"]
    rows = np.arange(k)
    bad = (
        np.isnan(scores)
        | np.isposinf(scores)
        | (degenerate & (scores != -np.inf))
        | (~degenerate & ~np.isfinite(scores))
    )
    if bad.any():
        row, rank = np.argwhere(bad)[0]
        raise _damaged(
            path,
            f"/pool/scores[{row}, {rank}] = {scores[row, rank]} with degenerate = {degenerate[row, rank]} (a score is "
            "finite, or -inf for a degenerate branch)",
        )
    expected_winner = np.array([-1 if (w := winner_rank(row)) is None else w for row in scores])
    if (winner != expected_winner).any():
        row = int(np.argmax(winner != expected_winner))
        raise _damaged(
            path,
            f"/pool/winner[{row}] = {winner[row]}, "
            f"but the argmax of that row of /pool/scores is {expected_winner[row]}",
        )
    if np.isinf(pool["train_returns"]).any():
        raise _damaged(path, "/pool/train_returns holds infinite returns")
    if not (np.all(np.isfinite(pool["timings"])) and np.all(pool["timings"] >= 0)):
        raise _damaged(path, "/pool/timings holds negative or non-finite times")
    _check_steps(pool["steps"], path, cfg)
    if cfg.best_by == "fresh":  # the best score is the highest fresh score played so far
        best_so_far = np.maximum.accumulate(np.where(np.isnan(pool["fresh_score"]), -np.inf, pool["fresh_score"]))
        which = "fresh score (/pool/fresh_score)"
    else:
        best_so_far = np.maximum.accumulate(np.where(winner >= 0, scores[rows, np.maximum(winner, 0)], -np.inf))
        which = "winner score"
    if not np.array_equal(pool["best_score"], best_so_far):
        row = int(np.argmax(pool["best_score"] != best_so_far))
        raise _damaged(
            path,
            f"/pool/best_score[{row}] = {pool['best_score'][row]}, but the best {which} up to that iteration is "
            f"{best_so_far[row]}",
        )
    best_iteration, best_score = raw.best_iteration, raw.best_score
    if (
        best_score != best_so_far[-1]
        or not (-1 <= best_iteration < k)
        or (best_iteration == -1) != (best_score == -np.inf)
    ):
        raise _damaged(
            path,
            f"/agent/best has score {best_score} from iteration {best_iteration}, but /pool/best_score ends with "
            f"{best_so_far[-1]}",
        )
    streak = k - 1 - int(np.flatnonzero(winner >= 0)[-1]) if (winner >= 0).any() else k
    if raw.degenerate_streak != streak or not 0 <= raw.since_improvement <= k:
        raise _damaged(
            path,
            f"/pool attributes {raw.pool_attributes} disagree with /pool/winner (last {streak} iterations without a "
            "winner)",
        )


def _check_steps(steps: np.ndarray, path: Path, cfg: Config) -> None:
    """/pool/steps: each rank's steps within its episodes' limit; an iteration without them (NOT_RECORDED on every rank)
    only before the first that has them (rows written before format_version 3, whose file a resume rebuilt).
    """
    ranks = steps.shape[1] if steps.ndim == 2 and steps.shape[1] else 1
    fresh = -(-cfg.target_episodes // ranks) if cfg.best_by == "fresh" else 0  # a rank's share of the fresh episodes
    most = (cfg.iterate_episodes + cfg.evaluate_episodes + fresh) * cfg.T
    unrecorded = (steps == NOT_RECORDED).all(axis=1)
    bad = (steps < 0) & ~unrecorded[:, None] | (steps > most)
    if bad.any():
        row, rank = np.argwhere(bad)[0]
        raise _damaged(
            path,
            f"/pool/steps[{row}, {rank}] = {steps[row, rank]}, outside 0..{most} (iterate_episodes + evaluate_episodes "
            f"(+ a share of the fresh episodes) episodes of at most T = {cfg.T} steps), and not {NOT_RECORDED} (not "
            "recorded) on every rank",
        )
    if unrecorded.any() and not unrecorded.all():
        first = int(np.argmin(unrecorded))
        if unrecorded[first:].any():
            row = first + int(np.argmax(unrecorded[first:]))
            raise _damaged(
                path,
                f"/pool/steps[{row}] is not recorded, but iteration {first + 1} before it has steps (only iterations "
                "written before format_version 3 lack them)",
            )


def _to_checkpoint(raw: RawCheckpoint, cfg: Config) -> Checkpoint:
    attrs, done = raw.attrs, raw.iterations_done
    records = [pool_record(raw.pool, k) for k in range(done)]
    state = PoolState(
        iteration=done,
        agent=raw.current,
        best_agent=raw.best,
        best_score=raw.best_score,
        best_iteration=raw.best_iteration,
        since_improvement=raw.since_improvement,
        degenerate_streak=raw.degenerate_streak,
    )
    return Checkpoint(
        config_toml=str(attrs["config_toml"]),
        world_size=int(attrs["world_size"]),
        iterations_planned=int(attrs["iterations_planned"]),
        hyperparameters=raw.hyperparameters,
        state=state,
        records=records,
        attrs=attrs,
        config=cfg,
    )


def check_task_fits(raw: RawCheckpoint, cfg: Config, path: Path) -> None:
    """The stored [env] id must be a registered MuJoCo task (mpiswim.tasks.make_env) whose spaces fit the stored
    agent.
    """
    from mpiswim.tasks import check_task

    try:
        obs_dim, action_dim = check_task(cfg)
    except ConfigError as error:
        raise CheckpointError(
            f"'{path}': its stored config cannot run here: {str(error).removeprefix('config error: ')} "
            "The file was left untouched."
        ) from None
    stored = raw.current.policy.shape  # (blocks, 2, actions, 1 + observation values)
    if stored[2:] != (action_dim, obs_dim + 1):
        raise _damaged(
            path,
            f"its agent is for {stored[2]} actions and {stored[3] - 1} observation values, but its task "
            f"{quote(cfg.env_id)} has {action_dim} and {obs_dim}",
        )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raise CheckpointError naming the problem if it is unreadable, damaged, malformed, or its
    task cannot be made here or does not fit its agent.
    """
    path = Path(path)
    raw = read_raw(path)
    cfg = _check_layout(raw, path)
    check_task_fits(raw, cfg, path)
    return _to_checkpoint(raw, cfg)


def check_checkpoint(path: str | Path) -> Checkpoint:
    """load_checkpoint plus every value check (`mpiswim check`, and before a resume)."""
    path = Path(path)
    raw = read_raw(path)
    cfg = _check_layout(raw, path)
    _check_values(raw, path, cfg)
    check_task_fits(raw, cfg, path)
    return _to_checkpoint(raw, cfg)


def checkpoint_summary(path: str | Path, checkpoint: Checkpoint) -> str:
    """One line: what a valid checkpoint holds."""
    state, attrs = checkpoint.state, checkpoint.attrs
    best = (
        f"best score {state.best_score:.2f} (iteration {state.best_iteration + 1})"
        if state.best_iteration >= 0
        else "no winner yet"
    )
    degenerate = sum(int(r.degenerate.sum()) for r in checkpoint.records)
    checksum = (
        "checksum verified"
        if CHECKSUM in attrs or int(attrs.get("format_version", 1)) >= 2
        else "no checksum (written by an older mpiswim)"
    )
    return (
        f"OK: {path}: run '{attrs.get('run_name', '')}' on {attrs.get('env_id', '')}, {checkpoint.world_size} ranks, "
        f"{state.iteration} of {checkpoint.iterations_planned} iterations, {best}, {degenerate} degenerate branches, "
        f"{checksum}"
    )
