"""Paired arrays in one ``.npz`` as a training or evaluation set.

For towers fed precomputed inputs rather than audio: frozen-encoder features
with trainable projections (the Symile-M3 set-up), toy data such as Symile's
XOR bits, or pooled clip statistics. Row ``i`` of every array is item ``i``.

* numeric arrays ``[N, ...]`` become ``Tensor[B, ...]`` float32 in a batch;
* string arrays ``[N]`` become ``list[str]`` (text towers tokenise them);
* an optional ``ids`` string array names the items (default ``"0"``,
  ``"1"``, ...), which a frozen tower's cache may key on.

Arrays are checked once, when the file is opened: equal first dimension, a
numeric or string dtype, and no NaN or inf (a non-finite input would surface
later as a NaN loss, far from its cause). Errors name the file, the array
(as the field) and, for a bad value, the first bad row (as the line, 1-based).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from audiocl.errors import InputError

__all__ = ["ArrayDataset", "collate_arrays", "load_arrays"]


def load_arrays(path: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read ``names`` (default: all arrays) from an ``.npz`` and validate them.

    Returns ``{name: array}`` with numeric arrays as float32 and string arrays
    as ``str`` arrays. Raises :class:`InputError` for a missing file or array,
    pickled objects, mismatched lengths, other dtypes and non-finite values.
    """
    p = str(path)
    try:
        data = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(p, "arrays file not found") from None
    except (ValueError, OSError) as e:
        raise InputError(p, f"not a readable .npz (pickled objects are refused): {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(p, "expected an .npz archive of named arrays, got a single array")
    wanted = list(names) if names is not None else list(data.files)
    # ids travel with the rows when present, whatever was asked for
    if "ids" in data.files and "ids" not in wanted:
        wanted.append("ids")
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    first: str | None = None
    for name in wanted:
        if name not in data.files:
            raise InputError(p, f"no array named {name!r}; arrays: {sorted(data.files)}", field=name)
        try:
            arr = data[name]
        except ValueError as e:  # an object array needs pickle
            raise InputError(p, f"array {name!r} cannot be read without pickle: {e}", field=name) from None
        if arr.ndim == 0:
            raise InputError(p, f"array {name!r} is a scalar; expected one row per item", field=name)
        if arr.dtype.kind in "US":
            arr = arr.astype(str)
        elif arr.dtype.kind in "biuf":
            arr = np.asarray(arr, dtype=np.float32)
            bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
            if bad.any():
                row = int(np.argmax(bad))
                raise InputError(p, f"array {name!r} has NaN or inf values (first in row {row})", line=row + 1, field=name)
        else:
            raise InputError(p, f"array {name!r} has dtype {arr.dtype}; expected numbers or strings", field=name)
        if n is None:
            n, first = arr.shape[0], name
        elif arr.shape[0] != n:
            raise InputError(
                p, f"array {name!r} has {arr.shape[0]} rows but {first!r} has {n}; rows must pair up", field=name
            )
        out[name] = arr
    if n == 0:
        raise InputError(p, "the arrays have no rows")
    return out


class ArrayDataset(torch.utils.data.Dataset):
    """Items ``{"id": str, <name>: row, ...}`` from paired arrays (see module doc)."""

    def __init__(self, path: str | os.PathLike, names: Sequence[str] | None = None) -> None:
        self.path = str(path)
        self.arrays = load_arrays(path, names)
        self.names = [k for k in self.arrays if k != "ids"]
        self._n = len(next(iter(self.arrays.values())))
        ids = self.arrays.get("ids")
        self.item_ids = [str(v) for v in ids] if ids is not None else [str(i) for i in range(self._n)]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.item_ids[index]}
        for name in self.names:
            item[name] = self.arrays[name][index]
        return item


def collate_arrays(items: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Stack items: numeric fields -> ``Tensor[B, ...]`` float32, strings -> ``list[str]``.

    ``seed`` is accepted for the trainer's collate signature; nothing here is random.
    """
    out: dict[str, Any] = {"ids": [it["id"] for it in items]}
    for name in items[0]:
        if name == "id":
            continue
        values = [it[name] for it in items]
        if isinstance(values[0], str) or (isinstance(values[0], np.ndarray) and values[0].dtype.kind == "U"):
            out[name] = [str(v) for v in values]
        else:
            out[name] = torch.from_numpy(np.stack(values).astype(np.float32, copy=False))
    return out
