"""The package's modules form layers: each imports only modules below it (no import loop).

From the bottom: what a policy is, the running scaler, the
policy's compiled step, MPI launcher checks and
progress display, reading HDF5 input as plain data, the config, the tasks
mpiswim makes, the pool's state, the environment loop, the learning update,
random search, the stall watch, the pool protocol, the checkpoint file,
reading runs, rendering, what a run says (info, evaluate), training,
benchmarking, and the CLI on top. Imports inside functions count too: a lazy import is still a
dependency.

A package (`checkpoint/`, `analysis/`) is one layer to the rest: importing any of its modules
imports the package. Inside it, its modules form layers of their own (PACKAGES); its
`__init__` re-exports them and sits on top, and none of its modules imports the package itself
(that would run the `__init__`, which imports them: a loop).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mpiswim"
LAYERS = (
    "jit",
    "policy",
    "normalise",
    "kernels",
    "launcher",
    "progress",
    "plain_hdf5",
    "config",
    "tasks",
    "state",
    "bodies",
    "compiled",
    "env",
    "learn",
    "search",
    "stall",
    "pool",
    "checkpoint",
    "analysis",
    "render",
    "report",
    "trained",
    "live",
    "train",
    "bench",
    "cli",
)
# The modules of each package, bottom to top.
PACKAGES = {
    "checkpoint": ("format", "lock", "place", "reader", "check", "writer"),
    "analysis": ("reading", "statistics", "tables", "plots", "command"),
}


def imported_paths(path: Path) -> set[tuple[str, ...]]:
    """What a file imports from mpiswim anywhere in it: ("pool",) for a module, ("checkpoint", "reader") for a
    package's module, ("checkpoint",) for the package itself.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mpiswim":
            parts = tuple(node.module.split(".")[1:3])
            if not parts:  # from mpiswim import x
                found.update((alias.name,) for alias in node.names if alias.name in LAYERS)
            elif len(parts) == 1 and parts[0] in PACKAGES:  # from mpiswim.checkpoint import x: x a module or a name
                modules = {alias.name for alias in node.names} & set(PACKAGES[parts[0]])
                found.update({(parts[0], name) for name in modules} or {parts})
            else:
                found.add(parts)
        elif isinstance(node, ast.Import):
            found.update(tuple(alias.name.split(".")[1:3]) for alias in node.names if alias.name.startswith("mpiswim."))
    return found


def imported_modules(path: Path) -> set[str]:
    """The mpiswim modules and packages a file imports anywhere in it (`from mpiswim.x import`, `from mpiswim import x`,
    `import mpiswim.x`).
    """
    return {parts[0] for parts in imported_paths(path)}


def layer_files(module: str) -> dict[str, Path]:
    """The files of a layer: the module's one file, or every module of a package (its __init__ included), by name."""
    if module not in PACKAGES:
        return {module: PACKAGE / f"{module}.py"}
    return {f"{module}.{path.stem}": path for path in sorted((PACKAGE / module).glob("*.py"))}


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    modules |= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert modules == set(LAYERS), (
        f"add {sorted(modules - set(LAYERS))} to LAYERS, or remove {sorted(set(LAYERS) - modules)}"
    )
    for package, layers in PACKAGES.items():
        inside = {path.stem for path in (PACKAGE / package).glob("*.py")} - {"__init__"}
        assert inside == set(layers), (
            f"add {sorted(inside - set(layers))} to PACKAGES[{package!r}], or remove {sorted(set(layers) - inside)}"
        )


def test_no_module_imports_one_above_it():
    upward = []
    for module in LAYERS:
        for name, path in layer_files(module).items():
            for imported in imported_paths(path):
                if imported[0] != module:
                    if LAYERS.index(imported[0]) >= LAYERS.index(module):
                        upward.append(f"{name} imports {'.'.join(imported)}")
                    continue
                inner, own = PACKAGES.get(module, ()), name.removeprefix(f"{module}.")
                if own == "__init__":
                    continue  # the package's top: it re-exports its modules
                if len(imported) == 1 or inner.index(imported[1]) >= inner.index(own):
                    upward.append(f"{name} imports {'.'.join(imported)}")
    assert not upward, upward


def test_the_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import mpiswim.pool\n\ndef f():\n    from mpiswim import train\n    from mpiswim.cli import main\n"
    )
    assert imported_modules(sample) == {"pool", "train", "cli"}


def test_the_check_sees_a_package_s_modules(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from mpiswim.checkpoint.reader import read_raw\nfrom mpiswim.checkpoint import lock\n"
        "from mpiswim.checkpoint import CheckpointError\nimport mpiswim.checkpoint.writer\n"
    )
    assert imported_paths(sample) == {
        ("checkpoint", "reader"),
        ("checkpoint", "lock"),
        ("checkpoint",),
        ("checkpoint", "writer"),
    }
