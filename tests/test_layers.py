"""The package's modules form layers: each imports only modules below it (no import loop).

From the bottom: what a policy is, the running scaler, MPI launcher checks and
progress display, reading HDF5 input as plain data, the config, the tasks
mpiswim makes, the pool's state, the environment loop, the learning update,
random search, the stall watch, the pool protocol, the checkpoint file,
reading runs, rendering, what a run says (info, evaluate), training,
benchmarking, and the CLI on top. Imports inside functions count too: a lazy import is still a
dependency.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mpiswim"
LAYERS = (
    "policy",
    "normalise",
    "launcher",
    "progress",
    "plain_hdf5",
    "config",
    "tasks",
    "state",
    "swimmer",
    "env",
    "learn",
    "search",
    "stall",
    "pool",
    "checkpoint",
    "analysis",
    "render",
    "report",
    "train",
    "bench",
    "cli",
)


def imported_modules(path: Path) -> set[str]:
    """The mpiswim modules a file imports anywhere in it (`from mpiswim.x import`, `from mpiswim import x`, `import
    mpiswim.x`).
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mpiswim"):
            if node.module == "mpiswim":
                found.update(alias.name for alias in node.names if alias.name in LAYERS)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("mpiswim."))
    return found


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(LAYERS), (
        f"add {sorted(modules - set(LAYERS))} to LAYERS, or remove {sorted(set(LAYERS) - modules)}"
    )


def test_no_module_imports_one_above_it():
    upward = []
    for module in LAYERS:
        for imported in imported_modules(PACKAGE / f"{module}.py"):
            if LAYERS.index(imported) >= LAYERS.index(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, upward


def test_the_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import mpiswim.pool\n\ndef f():\n    from mpiswim import train\n    from mpiswim.cli import main\n"
    )
    assert imported_modules(sample) == {"pool", "train", "cli"}
