"""Checkpoint file: the HDF5 layout, created once and appended to in place after every iteration.

Rank 0 creates the run's file at the start with room for many iterations
(every dataset preallocated, so the file's HDF5 structure never changes
afterwards) and keeps it open and locked for the whole run. After each
iteration it writes, with plain `pwrite`s at fixed offsets:

1. the iteration's row of every `/pool` dataset and the agents into the spare
   one of two agent slots, then fsync;
2. a commit record (iterations done, which slot, the pool's counters, a hash
   chain over every row, a SHA-256 checksum), into the spare one of two
   record places, then fsync.

A reader (and a resume) takes the newest commit record whose checksum holds,
and reads that many rows. A kill at any instant therefore leaves the last
complete iteration readable: until step 2 completes, the previous record and
its agent slot are untouched. Writing iteration k costs the same whatever k
is. Only when the preallocated rows run out is the file rebuilt, bigger, under
a new unpredictable name and renamed over the old one (also when a run ends:
the file is then compacted to exactly the rows it holds).

A lock on the file itself (mpiswim.checkpoint.lock) keeps a second job off it,
naming the holder (host, PID, start time, stored in `/writer`).

Layout (docs/checkpoint.md has the full description; R rows allocated, k done):

    / attrs: format, format_version = 3, world_size, capacity = R, config_toml, run_name, env_id, versions
    /commit              compound [2]: iterations_done, iterations_planned, agent_slot, best_iteration,
                         since_improvement, degenerate_streak, best_score, rows_digest, checksum
    /pool/<name>         [R, ...]: one row per iteration (rows 0..k-1 are valid), a dataset per field of
                         mpiswim.state.IterationRecord (its schema: RECORD_FIELDS), and checkpoint_seconds
    /hyperparameters/<name>  float64 [P]
    /agent/{current,best}/{policy,baseline}  [2, ...]: slot 0 and slot 1
    /writer              uint8 [256]: the job holding the file (JSON, NUL-padded)

Files of format_version 1 (rewritten whole after every iteration, before
2026-11-26) and 2 (without /pool/steps) are still read and checked, their steps
as not recorded; a resume turns them into version 3.

The package, one module per concern, each importing only the ones above it:

    format   the constants and layout, the errors, the hashing, a record or an agent as stored
    lock     the lock and liveness: one writer per file, who holds it, whether a run is being written
    place    atomic placement: a whole file under a new name, synced, moved to its path
    reader   the two readers and their typed result (RawCheckpoint), the stored config
    check    the layout, value and task checks, and the loaded result (Checkpoint)
    writer   CheckpointWriter (create, continue a resume, append, compact, rescue) and save_checkpoint

Everything public is importable from mpiswim.checkpoint itself.
"""

from mpiswim.checkpoint.check import (
    Checkpoint,
    check_checkpoint,
    check_task_fits,
    checkpoint_summary,
    load_checkpoint,
)
from mpiswim.checkpoint.format import (
    AGENT_DESCRIPTIONS,
    AGENT_PARTS,
    AGENTS,
    CHECKSUM,
    COMMIT_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    INITIAL_BYTES,
    READABLE_VERSIONS,
    ROW_PHASES,
    SLOTS,
    WRITER_BYTES,
    CheckpointBusy,
    CheckpointError,
    ChecksumMismatch,
    FileImage,
    chain_row,
    commit_checksum,
    file_size,
    header_digest,
    initial_capacity,
    package_versions,
    pool_record,
    pool_table,
    row_bytes,
    row_layout,
    stored_agent_datasets,
)
from mpiswim.checkpoint.lock import (
    FLOCK,
    NO_LOCKS,
    claim,
    finished_cleanly,
    holder,
    is_being_written,
    lock_is_held,
    read_writer,
    writer_identity,
    writer_may_be_alive,
)
from mpiswim.checkpoint.place import (
    check_space,
    place_image,
)
from mpiswim.checkpoint.reader import (
    RawCheckpoint,
    content_digest,
    is_checkpoint,
    read_raw,
    stored_config,
)
from mpiswim.checkpoint.writer import (
    CheckpointWriter,
    build_image,
    save_checkpoint,
)

__all__ = [
    "AGENTS",
    "AGENT_DESCRIPTIONS",
    "AGENT_PARTS",
    "CHECKSUM",
    "COMMIT_DTYPE",
    "Checkpoint",
    "CheckpointBusy",
    "CheckpointError",
    "CheckpointWriter",
    "ChecksumMismatch",
    "FLOCK",
    "FORMAT",
    "FORMAT_VERSION",
    "FileImage",
    "INITIAL_BYTES",
    "NO_LOCKS",
    "READABLE_VERSIONS",
    "ROW_PHASES",
    "RawCheckpoint",
    "SLOTS",
    "WRITER_BYTES",
    "build_image",
    "chain_row",
    "check_checkpoint",
    "check_space",
    "check_task_fits",
    "checkpoint_summary",
    "claim",
    "commit_checksum",
    "content_digest",
    "file_size",
    "finished_cleanly",
    "header_digest",
    "holder",
    "initial_capacity",
    "is_being_written",
    "is_checkpoint",
    "load_checkpoint",
    "lock_is_held",
    "package_versions",
    "place_image",
    "pool_record",
    "pool_table",
    "read_raw",
    "read_writer",
    "row_bytes",
    "row_layout",
    "save_checkpoint",
    "stored_agent_datasets",
    "stored_config",
    "writer_identity",
    "writer_may_be_alive",
]
