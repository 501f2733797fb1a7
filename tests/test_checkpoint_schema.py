"""The checkpoint's schema, declared once (the fields of mpiswim.state.IterationRecord), and what follows it:
the file's layout and attributes, the readers, docs/checkpoint.md, and the config every reader gets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic import ALPHA, SCORES, WINNERS, steps, timings, write_synthetic_checkpoint

from mpiswim.checkpoint import (
    FORMAT_VERSION,
    check_checkpoint,
    load_checkpoint,
    pool_table,
    read_raw,
    row_layout,
    stored_config,
)
from mpiswim.config import LEGACY_DEFAULTS
from mpiswim.state import CHECKPOINT_SECONDS, PHASES, RECORD_FIELDS, IterationRecord

ROOT = Path(__file__).parents[1]
COMMITTED = sorted((ROOT / "results").rglob("*.h5"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("schema") / "synthetic.h5")


def test_docs_checkpoint_md_holds_the_pool_table_made_from_the_schema():
    doc = (ROOT / "docs" / "checkpoint.md").read_text()
    assert pool_table() in doc, (
        "docs/checkpoint.md's /pool table is not the schema's; replace it with:\n" + pool_table()
    )


def test_every_field_of_the_record_is_declared_with_shape_type_unit_and_meaning():
    assert [field.name for field in RECORD_FIELDS] == [field.name for field in dataclasses.fields(IterationRecord)]
    for field in (*RECORD_FIELDS, CHECKPOINT_SECONDS):
        assert set(field.shape) <= {"P", "E", "phases"} and field.unit and field.meaning, field
        assert np.dtype(field.dtype).kind in "fib", field


FORMAT_2_ROW = [
    ("scores", (3,), "<f8"),
    ("winner", (), "<i8"),
    ("train_returns", (3, 5), "<f8"),
    ("timings", (3, 3), "<f8"),
    ("degenerate", (3,), "|b1"),
    ("fell_back", (), "|b1"),
    ("best_score", (), "<f8"),
]


def test_a_row_is_laid_out_and_hashed_as_its_format_version_says():
    """The rows digest hashes a row in this order and these types: changing them needs a new format_version. Format 3
    added each rank's steps, format 4 the winner's fresh score; older files' rows are still hashed as they were
    written."""
    layout = {version: [(name, shape, dtype.str) for name, (shape, dtype) in row_layout(3, 5, version).items()]
              for version in (2, 3, 4)}  # fmt: skip
    format_3 = [*FORMAT_2_ROW, ("steps", (3,), "<i8")]
    assert layout == {2: FORMAT_2_ROW, 3: format_3, 4: [*format_3, ("fresh_score", (), "<f8")]}
    assert FORMAT_VERSION == 4


def test_the_file_carries_each_fields_type_meaning_and_unit(synthetic):
    with h5py.File(synthetic, "r", locking=False) as f:
        for field in (*RECORD_FIELDS, CHECKPOINT_SECONDS):
            dataset = f["pool"][field.name]
            assert (dataset.dtype, dataset.attrs["description"], dataset.attrs["units"]) == (
                np.dtype(field.dtype),
                field.meaning,
                field.unit,
            )
        assert list(f["pool/timings"].attrs["phases"]) == list(PHASES[:-1])


def test_records_read_back_as_they_were_written_with_python_scalars(synthetic):
    records = load_checkpoint(synthetic).records
    assert [r.winner for r in records] == WINNERS
    for k, record in enumerate(records):
        np.testing.assert_array_equal(record.scores, SCORES[k])
        np.testing.assert_array_equal(record.timings, timings(k))  # the checkpoint phase back in its column
        np.testing.assert_array_equal(record.steps, steps(k))
        assert record.steps.dtype == np.int64
        assert type(record.winner) is int and type(record.fell_back) is bool and type(record.best_score) is float


def test_the_checkpoint_carries_the_config_that_stored_config_reads(synthetic):
    loaded, raw = load_checkpoint(synthetic), read_raw(synthetic)
    assert loaded.config == stored_config(raw.attrs, raw.hyperparameters)
    assert loaded.config.toml_text == loaded.config_toml and loaded.config.alpha == tuple(ALPHA)


def test_a_checkpoint_written_before_0_2_0_keeps_the_defaults_of_its_time():
    """seed-12340.h5 (mpiswim 0.1.0) leaves keys out that had other defaults then; they keep their old values."""
    loaded = check_checkpoint(ROOT / "results" / "seed-12340.h5")
    given = tomllib.loads(loaded.config_toml)
    left_out = [
        (key, value)
        for section, table in LEGACY_DEFAULTS.items()
        for key, value in table.items()
        if key not in given.get(section, {})
    ]
    assert left_out and all(getattr(loaded.config, key) == value for key, value in left_out)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: str(path.relative_to(ROOT / "results")))
def test_every_committed_checkpoint_checks_with_its_config(path):
    loaded = check_checkpoint(path)
    assert loaded.config.world_size == loaded.world_size and len(loaded.records) == loaded.state.iteration


def test_checking_and_reading_a_checkpoint_imports_neither_jax_nor_numba(synthetic):
    probe = (
        "import sys; from mpiswim.cli import main; from mpiswim.analysis import read_run; "
        f"main(['check', {str(synthetic)!r}]); main(['info', {str(synthetic)!r}]); read_run({str(synthetic)!r}); "
        "sys.exit([m for m in ('jax', 'numba', 'mpi4py', 'mpiswim.pool') if m in sys.modules] or None)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "rows, problem",
    [
        ({2: [200, -1, 220]}, "/pool/steps[2, 1] = -1"),  # not recorded on one rank only
        ({3: [300, 5001, 320]}, "/pool/steps[3, 1] = 5001, outside 0..5000"),  # more than (5 + 5) episodes x T = 500
        ({0: [-1, -1, -1], 1: [-1, -1, -1], 4: [-1, -1, -1]}, "/pool/steps[4] is not recorded, but iteration 3"),
    ],
)
def test_check_refuses_steps_no_run_can_have_written(tmp_path, rows, problem):
    """Steps within each rank's episodes' limit, and "not recorded" only on every rank of iterations before the first
    recorded one (a format 2 file that a resume rebuilt) pass; anything else is named."""
    from synthetic import steps

    from mpiswim.checkpoint import CheckpointError, save_checkpoint

    loaded = load_checkpoint(write_synthetic_checkpoint(tmp_path / "run.h5"))
    records = [dataclasses.replace(r, steps=np.array(rows.get(k, steps(k)))) for k, r in enumerate(loaded.records)]
    save_checkpoint(tmp_path / "bad.h5", loaded.config, loaded.state, records)
    with pytest.raises(CheckpointError, match=re.escape(problem)):
        check_checkpoint(tmp_path / "bad.h5")
    # only the rows before the first recorded one lack them: what a resume of a format 2 file writes
    records = [dataclasses.replace(r, steps=np.full(3, -1) if k < 2 else r.steps) for k, r in enumerate(loaded.records)]
    save_checkpoint(tmp_path / "rebuilt.h5", loaded.config, loaded.state, records)
    assert [r.steps[0] for r in check_checkpoint(tmp_path / "rebuilt.h5").records] == [-1, -1, 300, 400, 500, 600]
