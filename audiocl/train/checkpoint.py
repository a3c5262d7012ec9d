"""Atomic, resumable, safe-to-load training checkpoints.

Layout of one checkpoint folder ``<output>/checkpoints/step_00000120/``::

    model.safetensors   model weights (safetensors: no code runs on load)
    state.pt            optimiser state, step, epoch, data position, best metric
                        (tensors and plain containers only: weights_only=True)
    rng_rank{r}.pt      RNG states of rank r: python, numpy, torch CPU (+ CUDA),
                        all stored as tensors
    COMPLETE            written last; a folder without it is ignored

The folder is assembled under a temporary name and renamed into place with
``os.replace``, so a crash (SIGKILL) mid-save leaves either the previous
checkpoints or the new complete one, never a half-written folder that
``--resume`` would pick. Before writing, every parameter and optimiser tensor
is checked to be finite: a checkpoint never contains NaN or inf.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiocl.errors import AudioclError

__all__ = [
    "NonFiniteError",
    "best_files",
    "capture_rng",
    "find_latest",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

_STEP_RE = re.compile(r"^step_(\d{8,})$")


class NonFiniteError(AudioclError):
    """A loss, gradient or parameter became NaN/inf; training stopped."""


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def capture_rng(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """RNG states of python, numpy and torch, every one as a tensor.

    Tensors only, so the file loads with ``torch.load(weights_only=True)``
    and nothing is unpickled.
    """
    version, internal, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python_state": torch.tensor(internal, dtype=torch.int64),
        "python_meta": torch.tensor(
            [version, gauss is not None, 0.0 if gauss is None else gauss], dtype=torch.float64
        ),
        "numpy_key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    assert kind == "MT19937"
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    version, has_gauss, gauss = state["python_meta"].tolist()
    random.setstate(
        (int(version), tuple(int(v) for v in state["python_state"].tolist()), gauss if has_gauss else None)
    )
    pos, np_has_gauss, cached = state["numpy_meta"].tolist()
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, int(pos), int(np_has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_finite_tree(obj: Any, where: str) -> None:
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            raise NonFiniteError(f"refusing to write a checkpoint: {where} contains NaN/inf")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite_tree(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite_tree(v, f"{where}[{i}]")


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir/checkpoints``, sorted by step."""
    root = Path(output_dir) / "checkpoints"
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and (p / "COMPLETE").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def find_latest(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1][1] if ckpts else None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Model state as contiguous CPU tensors, shared storages de-duplicated by copy."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in unwrap(model).state_dict().items()}


def write_folder_atomically(final: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a fresh temp folder beside ``final`` then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, data in files.items():
        _fsync_write(tmp / name, data)
    _fsync_write(tmp / "COMPLETE", b"ok\n")
    if final.exists():
        # replacing an existing folder: move it aside first (rename is atomic)
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    try:
        fd = os.open(final.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    return final


def checkpoint_files(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng_by_rank: dict[int, dict[str, torch.Tensor]],
) -> dict[str, bytes]:
    """Serialise a checkpoint; raises NonFiniteError before anything is written."""
    from safetensors.torch import save

    tensors = model_tensors(model)
    _check_finite_tree(tensors, "model")
    opt_state = optimizer.state_dict()
    _check_finite_tree(opt_state["state"], "optimizer")
    files = {
        "model.safetensors": save(tensors),
        "state.pt": _torch_bytes({**state, "optimizer": opt_state}),
        "meta.json": json.dumps({k: v for k, v in state.items() if isinstance(v, (int, float, str))}).encode(),
    }
    for r, rng in rng_by_rank.items():
        files[f"rng_rank{r}.pt"] = _torch_bytes(rng)
    return files


def best_files(model: nn.Module, meta: dict[str, Any]) -> dict[str, bytes]:
    """Weights (safetensors) + ``meta.json`` for the best-so-far model folder."""
    from safetensors.torch import save

    tensors = model_tensors(model)
    _check_finite_tree(tensors, "model")
    plain = {k: v for k, v in meta.items() if isinstance(v, (int, float, str)) or v is None}
    return {"model.safetensors": save(tensors), "meta.json": json.dumps(plain, indent=2).encode()}


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng_by_rank: dict[int, dict[str, torch.Tensor]],
    *,
    keep: int = 2,
    protect: Path | None = None,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically and prune to the ``keep`` newest."""
    files = checkpoint_files(model, optimizer, state, rng_by_rank)
    final = Path(output_dir) / "checkpoints" / f"step_{step:08d}"
    write_folder_atomically(final, files)
    for _s, p in list_checkpoints(output_dir)[:-keep]:
        if protect is None or p.resolve() != protect.resolve():
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, *, rank: int = 0) -> dict[str, Any]:
    """Load a checkpoint folder safely: safetensors + ``torch.load(weights_only=True)``.

    Returns ``{"model": {name: tensor}, "state": {...}, "rng": {...} | None}``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "COMPLETE").is_file():
        raise AudioclError(f"{path}: not a complete checkpoint (no COMPLETE marker)")
    model = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    rng_path = path / f"rng_rank{rank}.pt"
    rng = torch.load(rng_path, map_location="cpu", weights_only=True) if rng_path.is_file() else None
    return {"model": model, "state": state, "rng": rng}
