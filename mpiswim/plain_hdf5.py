"""HDF5 files a user hands to mpiswim, read as plain data and nothing else.

A hyperparameter file or a checkpoint can come from anyone on a shared
cluster. HDF5 can make a dataset read bytes from another file (external raw
storage, virtual datasets, external links), follow a name elsewhere (soft
links), load a compression plugin (a shared library), or declare far more
elements than the file holds. `refuse_unplain` walks a file's links without
following them and refuses all of that, naming the object; `read_plain` checks
a dataset's shape and type before a byte of it is read.
"""

from __future__ import annotations

import h5py
import numpy as np

# HDF5's own filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset) and h5py's lzf: compiled in. A dataset
# that needs any other is refused before it is read, so HDF5 never looks for a plugin (a shared library) to load.
BUILT_IN_FILTERS = {1, 2, 3, 4, 5, 6, 32000}
KIND_NAMES = {"fiu": "numbers", "u": "bytes", "V": "records"}  # numpy dtype kinds, as a message names them
LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}


class UnplainData(ValueError):
    """An HDF5 object mpiswim will not read; the message names it and says why."""


def _dataset_problem(dataset: h5py.Dataset, all_bytes_in_file: bool) -> str | None:
    if dataset.is_virtual:
        return "is a virtual dataset (its values live in other files)"
    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        return "has external raw storage (its values live in another file)"
    layout = plist.get_layout()
    if layout not in LAYOUTS:
        return f"has HDF5 layout {layout}, not contiguous, compact or chunked"
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if filters - BUILT_IN_FILTERS:
        return f"needs HDF5 filter plugin(s) {sorted(filters - BUILT_IN_FILTERS)}"
    if all_bytes_in_file and filters:
        return "is stored through HDF5 filters (compressed), which mpiswim never writes"
    if all_bytes_in_file and dataset.id.get_storage_size() < dataset.nbytes:
        return f"declares {dataset.size} elements of shape {dataset.shape} that the file does not store"
    return None


def refuse_unplain(f: h5py.File, all_bytes_in_file: bool = False) -> None:
    """Raise UnplainData unless every object of `f` is a group or a plain dataset reached by a hard link.

    Links are looked at, never followed. all_bytes_in_file (checkpoints, which mpiswim
    writes uncompressed) also requires every declared byte to be stored in the file,
    so no read can be larger than the file itself.
    """
    problems: list[str] = []

    def visit(name: str, link) -> int | None:
        if isinstance(link, h5py.SoftLink):
            problems.append(f"'/{name}' is a soft link to '{link.path}'")
        elif isinstance(link, h5py.ExternalLink):
            problems.append(f"'/{name}' is an external link to '{link.filename}'")
        elif not isinstance(link, h5py.HardLink):
            problems.append(f"'/{name}' is a user-defined HDF5 link")
        else:
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                problem = _dataset_problem(obj, all_bytes_in_file)
                if problem:
                    problems.append(f"dataset '/{name}' {problem}")
            elif not isinstance(obj, h5py.Group):
                problems.append(f"'/{name}' is a {type(obj).__name__}, not a group or a dataset")
        return 1 if problems else None  # a non-None return stops the walk at the first problem

    f.visititems_links(visit)
    if problems:
        raise UnplainData(f"{problems[0]}; mpiswim reads only plain data stored in the file itself")


def read_plain(group: h5py.Group, name: str, shape: tuple[int, ...], kinds: str = "fiu") -> np.ndarray:
    """Dataset `name` of `group`, checked to be plain, of `shape` and of a numpy kind in `kinds` before it is read."""
    link = group.get(name, getlink=True)
    if link is None:
        raise UnplainData(f"there is no dataset '{name}'")
    if not isinstance(link, h5py.HardLink) or not isinstance(group.get(name), h5py.Dataset):
        raise UnplainData(f"'{name}' is not a dataset stored in the file")
    dataset = group[name]
    problem = _dataset_problem(dataset, all_bytes_in_file=False)
    if problem:
        raise UnplainData(f"dataset '{name}' {problem}")
    if dataset.shape != shape or dataset.dtype.kind not in kinds:
        raise UnplainData(
            f"dataset '{name}' has shape {dataset.shape} and type {dataset.dtype}, not shape {shape} of "
            f"{KIND_NAMES.get(kinds, repr(kinds))}"
        )
    return dataset[()]
