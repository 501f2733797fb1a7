"""Runs inside every rank of the MPI tests: `python mpi_driver.py MODE OUTDIR [mpiswim args...]`.

Modes:
  cli        run `mpiswim ARGS`; each rank writes its exit code to OUTDIR/rc.<rank>
  scores     as cli, and each rank also logs the evaluation scores it computed to OUTDIR/scores.<rank>
  fail       as cli, but rank 1 raises inside its episode loop in iteration 2
  fault      as cli, with a fault inside rank FAULT_RANK's episode loop (environment variables):
             FAULT=raise (write OUTDIR/raised.<rank>, raise an exception) or pause (write
             OUTDIR/paused.<rank> with its pid, then sleep until OUTDIR/release.<rank> exists,
             this rank notes a stop signal (SIGINT, SIGTERM, SIGUSR1) or FAULT_SECONDS pass,
             default 600) when that rank finishes its FAULT_EPISODE-th episode (default 6;
             1-based, counting training and evaluation episodes); every cli-like mode writes
             OUTDIR/pid.<rank>. A pause ends on an event the test makes or waits for, not on a
             guess at how long the test needs on a loaded machine.
  broadcast  each rank proposes a different agent; check Bcast gives all ranks root's exact bytes
  pool       one real pool_iteration; every rank's new agent must equal the winner's branch bit for bit
  search     one random-search pool_iteration: the record holds every rank's exploration, every rank
             computes the same step, and every rank ends with the winner's step along it
"""
# ruff: noqa: I001  (mpiswim is imported before numpy on purpose)

import hashlib
import os
import sys
import time
from pathlib import Path

import mpiswim  # noqa: F401  (first: sets the thread limits before numpy loads)
import numpy as np
from mpi4py import MPI

from mpiswim import learn, pool, search, train
from mpiswim.cli import main as cli_main
from mpiswim.policy import initial_agent, pack_agent
from mpiswim.state import initial_state

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
mode, outdir, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]


def digest(agent) -> str:
    return hashlib.sha256(pack_agent(agent).tobytes()).hexdigest()


def run_cli() -> None:
    (outdir / f"pid.{rank}").write_text(str(os.getpid()))
    code = cli_main(args)
    (outdir / f"rc.{rank}").write_text(str(code))
    sys.exit(code)


if mode == "cli":
    run_cli()

elif mode == "scores":
    real_evaluate = pool.evaluate_branch

    def logged_evaluate(*a, **k):
        score, degenerate = real_evaluate(*a, **k)
        with open(outdir / f"scores.{rank}", "a") as log:
            log.write(f"{float(score)!r}\n")
        return score, degenerate

    pool.evaluate_branch = logged_evaluate
    run_cli()

elif mode == "fail":
    real_learner = pool.learner

    def failing_learner(name):
        improve = real_learner(name)

        def failing_improve(agent, *a, **k):
            iteration = failing_learner.calls
            failing_learner.calls += 1
            if rank == 1 and iteration == 2:
                raise RuntimeError("injected failure inside the episode loop")
            return improve(agent, *a, **k)

        return failing_improve

    failing_learner.calls = 0
    pool.learner = failing_learner
    run_cli()

elif mode == "fault":
    real_episode = pool.run_episode
    episodes = 0

    def faulty_episode(*a, **k):
        global episodes
        result = real_episode(*a, **k)
        episodes += 1
        if rank == int(os.environ.get("FAULT_RANK", "1")) and episodes == int(os.environ.get("FAULT_EPISODE", "6")):
            if os.environ["FAULT"] == "raise":
                (outdir / f"raised.{rank}").write_text(str(os.getpid()))
                raise RuntimeError(f"injected failure inside rank {rank}'s episode loop")
            # Written aside and renamed: a test that sees paused.<rank> must never read it half-written.
            (outdir / f".paused.{rank}").write_text(str(os.getpid()))
            os.replace(outdir / f".paused.{rank}", outdir / f"paused.{rank}")
            until = time.monotonic() + float(os.environ.get("FAULT_SECONDS", "600"))
            while not (signalled or (outdir / f"release.{rank}").exists()) and time.monotonic() < until:
                time.sleep(0.01)
        return result

    signalled = []  # the stop signals this rank's handler has noted
    real_note = train.StopRequests.note

    def noting(self, signum, frame):
        real_note(self, signum, frame)
        signalled.append(signum)

    train.StopRequests.note = noting  # before the run creates its StopRequests, which installs self.note
    for module in (pool, learn, search):  # evaluation, REINFORCE and random-search episodes alike
        module.run_episode = faulty_episode
    run_cli()

elif mode == "broadcast":
    agent = initial_agent(8, 2, "signed")
    rng = np.random.default_rng(rank)
    agent.policy[:] = rng.normal(size=agent.policy.shape)
    agent.baseline[:] = rng.normal(size=agent.baseline.shape)
    root = comm.Get_size() - 1
    root_digest = comm.bcast(digest(agent) if rank == root else None, root=root)
    received = pool.broadcast_agent(comm, agent, root=root)
    digests = comm.gather(digest(received), root=0)
    if rank == 0:
        assert all(d == root_digest for d in digests), digests
        (outdir / "broadcast.ok").write_text(root_digest)

elif mode == "pool":
    from mpiswim.config import parse_config
    from mpiswim.env import Trajectory, task_for

    cfg = parse_config((outdir / "config.toml").read_text(), comm.Get_size())
    task = task_for(cfg)
    branches = []
    real_learner = pool.learner

    def remembering_learner(name):
        improve = real_learner(name)

        def remember_branch(*a, **k):
            result = improve(*a, **k)
            branches.append(result[0])
            return result

        return remember_branch

    pool.learner = remembering_learner
    state = initial_state(
        initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    )
    state, record = pool.pool_iteration(comm, cfg, task, state, Trajectory.empty(cfg.T, task.obs_dim, task.action_dim))
    branch_digests = comm.gather(digest(branches[0]), root=0)
    new_digests = comm.gather(digest(state.agent), root=0)
    if rank == 0:
        winner = record.winner
        assert winner == int(np.argmax(record.scores)), (winner, record.scores)
        assert len(set(branch_digests)) == comm.Get_size(), "branches should differ before the merge"
        assert all(d == branch_digests[winner] for d in new_digests), (winner, branch_digests, new_digests)
        (outdir / "pool.ok").write_text(f"{winner}")

elif mode == "third-learner":
    from mpiswim.config import LEARNERS, parse_config
    from mpiswim.env import Trajectory, task_for

    LEARNERS["shift"] = "third_learner:shift"  # the one registry line (tests/third_learner.py is the module)
    cfg = parse_config((outdir / "config.toml").read_text(), comm.Get_size())
    task = task_for(cfg)
    start = initial_state(initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_feature))
    state, record = pool.pool_iteration(comm, cfg, task, start, Trajectory.empty(cfg.T, task.obs_dim, task.action_dim))
    agents = comm.gather(digest(state.agent), root=0)
    if rank == 0:
        P = comm.Get_size()
        assert np.all(record.train_returns == P * (P + 1) / 2), record.train_returns  # every rank saw every row
        winner = record.winner
        assert winner == int(np.argmax(record.scores)) and len(set(agents)) == 1, (record.scores, agents)
        np.testing.assert_array_equal(state.agent.policy, start.agent.policy + cfg.alpha[winner])
        (outdir / "third.ok").write_text(str(winner))

elif mode == "search":
    from mpiswim.config import parse_config
    from mpiswim.env import Trajectory, make_task

    cfg = parse_config((outdir / "config.toml").read_text(), comm.Get_size())
    task = make_task(cfg.env_id, cfg.features)
    explored, steps = [], []
    real_explore, real_step = search.explore, search.search_step

    def remember_explore(*a, **k):
        explored.append(real_explore(*a, **k))
        return explored[-1]

    def remember_step(*a, **k):
        steps.append(real_step(*a, **k))
        return steps[-1]

    search.explore, search.search_step = remember_explore, remember_step
    state = initial_state(initial_agent(task.obs_dim, task.action_dim, cfg.features))
    start = state.agent
    state, record = pool.pool_iteration(comm, cfg, task, state, Trajectory.empty(cfg.T, task.obs_dim, task.action_dim))
    mine = comm.gather(explored[0][0], root=0)  # explore's returns (then lengths and state statistics)
    step_digests = comm.gather(hashlib.sha256(steps[0].tobytes()).hexdigest(), root=0)
    new_digests = comm.gather(digest(state.agent), root=0)
    if rank == 0:
        np.testing.assert_array_equal(record.train_returns, np.array(mine))  # the record holds what each rank explored
        assert len(set(step_digests)) == 1, "every rank must compute the same pooled step"
        assert np.any(steps[0] != 0.0)
        winner = record.winner
        assert winner == int(np.argmax(record.scores)), (winner, record.scores)
        branch = search.nudge(start, steps[0], cfg.alpha[winner])
        assert all(d == digest(branch) for d in new_digests), "every rank must hold the winner's step"
        (outdir / "search.ok").write_text(f"{winner}")
