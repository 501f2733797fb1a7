"""The checkpoint's schema, declared once (the fields of mpiswim.state.IterationRecord), and what follows it:
the file's layout and attributes, the readers, docs/checkpoint.md, and the config every reader gets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic import ALPHA, SCORES, WINNERS, timings, write_synthetic_checkpoint

from mpiswim.checkpoint import check_checkpoint, load_checkpoint, pool_table, read_raw, row_layout, stored_config
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


def test_a_row_is_laid_out_and_hashed_as_format_version_2_says():
    """The rows digest hashes a row in this order and these types: changing them needs a new format_version."""
    layout = [(name, shape, dtype.str) for name, (shape, dtype) in row_layout(3, 5).items()]
    assert layout == [
        ("scores", (3,), "<f8"),
        ("winner", (), "<i8"),
        ("train_returns", (3, 5), "<f8"),
        ("timings", (3, 3), "<f8"),
        ("degenerate", (3,), "|b1"),
        ("fell_back", (), "|b1"),
        ("best_score", (), "<f8"),
    ]


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
