"""Atomic, resumable, safe-to-load training checkpoints.

Layout of one checkpoint folder ``<output>/checkpoints/step_00000120/``::

    model.safetensors   model weights (safetensors: no code runs on load)
    state.pt            optimiser state, step, epoch, data position, best metric
                        (tensors and plain containers only: weights_only=True)
    rng_rank{r}.pt      RNG states of rank r: python, numpy, torch CPU (+ CUDA),
                        all stored as tensors
    meta.json           step, epoch, ... as plain JSON
    config.json         the run's TrainingConfig (a resume with another config is refused)
    COMPLETE            written last: JSON {file: size in bytes}; a folder without it is ignored

The folder is assembled under a temporary name and renamed into place with
``os.replace``, so a crash (SIGKILL) mid-save leaves either the previous
checkpoints or the new complete one, never a half-written folder that
``--resume`` would pick. Before writing, every parameter and optimiser tensor
is checked to be finite: a checkpoint never contains NaN or inf. A write that
fails (disk full, file too large) removes its temporary folder and raises
:class:`AudioclError` naming the file; the temporary folders of a killed
process are removed by the next run (:func:`clean_leftovers`).

Before use, :func:`check_checkpoint` compares each file's size with the
``COMPLETE`` record and reads the safetensors header (cheap: a stat per file
and a few kB read); loading then parses every file, so any damage found on
``--resume`` makes the trainer fall back to the previous complete checkpoint.

The output folder of a run (:func:`prepare_output_dir`) is refused when it
already holds a run, unless the caller resumes it or overwrites it.
"""

from __future__ import annotations

import errno
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
from audiocl.fsutil import atomic_write_bytes

__all__ = [
    "NonFiniteError",
    "best_files",
    "capture_rng",
    "check_checkpoint",
    "clean_leftovers",
    "clear_run",
    "find_latest",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_output_dir",
    "restore_rng",
    "save_checkpoint",
]

_STEP_RE = re.compile(r"^step_(\d{8,})$")


class NonFiniteError(AudioclError):
    """A loss, gradient or parameter became NaN/inf; training stopped."""


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


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_error(err: OSError, what: str) -> AudioclError:
    """One line for a write that failed for lack of room (ENOSPC, EDQUOT, EFBIG)."""
    where = err.filename or what
    return AudioclError(f"{where}: cannot write {what}: {err.strerror or err} (disk full or file size limit)")


def write_folder_atomically(final: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a fresh temp folder beside ``final`` then rename it into place.

    ``COMPLETE`` (written last) records each file's size. On any failure the
    temporary folder is removed; a full disk raises :class:`AudioclError`.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        sizes = {name: len(data) for name, data in files.items()}
        atomic_write_bytes(tmp / "COMPLETE", (json.dumps(sizes, sort_keys=True) + "\n").encode())
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
            raise disk_error(err, f"checkpoint {final}") from None
        raise
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
    config: dict[str, Any] | None = None,
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
    if config is not None:
        files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
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
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically and prune to the ``keep`` newest."""
    files = checkpoint_files(model, optimizer, state, rng_by_rank, config)
    final = Path(output_dir) / "checkpoints" / f"step_{step:08d}"
    write_folder_atomically(final, files)
    for _s, p in list_checkpoints(output_dir)[:-keep]:
        if protect is None or p.resolve() != protect.resolve():
            shutil.rmtree(p, ignore_errors=True)
    return final


def _safetensors_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors file's JSON header and check the data size it implies."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AudioclError(f"{path}: not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100 * 1024 * 1024):
            raise AudioclError(f"{path}: not a safetensors file (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise AudioclError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise AudioclError(f"{path}: not a safetensors file (its header is not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise AudioclError(f"{path}: safetensors header entry {name!r} has no valid data_offsets") from None
    if 8 + n + end != size:
        raise AudioclError(f"{path}: truncated or padded safetensors file ({size} bytes, header says {8 + n + end})")
    return header


def check_safetensors(path: str | Path) -> None:
    """Cheap check of a safetensors file (header parses, sizes agree); AudioclError naming it."""
    _safetensors_header(Path(path))


def check_checkpoint(path: str | Path) -> None:
    """Cheap integrity check (sizes against ``COMPLETE``, safetensors header).

    Raises :class:`AudioclError` naming the file that is missing or damaged.
    A ``COMPLETE`` marker without sizes (older checkpoints) only checks that
    the model and state files exist.
    """
    path = Path(path)
    marker = path / "COMPLETE"
    if not marker.is_file():
        raise AudioclError(f"{path}: not a complete checkpoint (no COMPLETE marker)")
    try:
        sizes = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError):
        sizes = None
    if not isinstance(sizes, dict):
        sizes = {"model.safetensors": None, "state.pt": None}
    for name, size in sizes.items():
        f = path / name
        if not f.is_file():
            raise AudioclError(f"{f}: missing from the checkpoint")
        if size is not None and f.stat().st_size != int(size):
            raise AudioclError(f"{f}: {f.stat().st_size} bytes, the checkpoint recorded {size}")
    _safetensors_header(path / "model.safetensors")


def load_checkpoint(path: str | Path, *, rank: int = 0) -> dict[str, Any]:
    """Load a checkpoint folder safely: safetensors + ``torch.load(weights_only=True)``.

    Returns ``{"model": {name: tensor}, "state": {...}, "rng": {...} | None,
    "config": dict | None}``. A missing, truncated or garbled file raises
    :class:`AudioclError` naming it; nothing is ever unpickled.
    """
    import pickle
    import zipfile

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_checkpoint(path)

    def _load(name: str, fn: Any) -> Any:
        f = path / name
        try:
            return fn(f)
        except AudioclError:
            raise
        except pickle.UnpicklingError:
            raise AudioclError(
                f"{f}: cannot be loaded (it holds objects other than tensors and plain containers; "
                "torch.load(weights_only=True) refused them and audiocl never unpickles code)"
            ) from None
        except (OSError, RuntimeError, EOFError, ValueError, SafetensorError,
                zipfile.BadZipFile) as err:  # fmt: skip
            msg = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
            raise AudioclError(f"{f}: cannot be loaded ({msg[:200]})") from None

    model = _load("model.safetensors", lambda f: load_file(str(f)))
    state = _load("state.pt", lambda f: torch.load(f, map_location="cpu", weights_only=True))
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise AudioclError(f"{path / 'state.pt'}: not a training state (no step/optimizer)")
    rng_path = path / f"rng_rank{rank}.pt"
    rng = (
        _load(rng_path.name, lambda f: torch.load(f, map_location="cpu", weights_only=True))
        if rng_path.is_file() else None
    )  # fmt: skip
    config = None
    if (path / "config.json").is_file():
        config = _load("config.json", lambda f: json.loads(f.read_text()))
    return {"model": model, "state": state, "rng": rng, "config": config}


# ------------------------------------------------------------ output folder
# what a training run writes into its output folder (and --overwrite removes)
RUN_ENTRIES = (
    "checkpoints", "best", "model", "train_log.csv", "val_log.csv", "tensorboard",
    "config.resolved.json", "ray", "ray.log",
)  # fmt: skip


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LEFTOVER_RE = re.compile(r"^\.(?:tmp|old)-.+-(\d+)$|^\.model\.\w+$|^\.model\.old$|^\..+\.tmp-(\d+)$|^.+_log\.tmp$")


def clean_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove temporary files of interrupted writers (a SIGKILL or full disk):
    ``checkpoints/.tmp-*``/``.old-*`` of processes no longer running, and the
    model export's ``.model.*`` folders. Returns what was removed."""
    out = Path(output_dir)
    removed = []
    for folder in (out, out / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _LEFTOVER_RE.match(p.name)
            if not m:
                continue
            pid = m.group(1) or m.group(2)
            if pid is not None and _pid_alive(int(pid)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _describe_run(out: Path) -> str | None:
    """What marks ``out`` as holding a run: checkpoints, a best or exported
    model, or logged steps (a run that failed before its first step does not count)."""
    ckpts = list_checkpoints(out)
    if ckpts:
        return f"{len(ckpts)} checkpoint(s), the latest at step {ckpts[-1][0]}"
    used = []
    root = out / "checkpoints"
    if root.is_dir() and any(_STEP_RE.match(p.name) for p in root.iterdir()):
        used.append("incomplete checkpoints")
    used += [f"{name}/" for name in ("best", "model") if (out / name).is_dir()]
    log = out / "train_log.csv"
    if log.is_file():
        with open(log, "rb") as f:
            if sum(1 for _ in f) > 1:
                used.append("train_log.csv")
    return ", ".join(used) if used else None


def prepare_output_dir(output_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Check a run's output folder before training starts.

    A path that is a file is refused. A folder that holds a previous run
    (checkpoints, an exported model, logs) is refused unless ``resume`` (continue
    it) or ``overwrite`` (replace it: see :func:`clear_run`) is given; without
    this a new run's checkpoints would be pruned in favour of the old run's
    higher step numbers, and the old model exported. Leftovers of interrupted
    writers are removed either way.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise AudioclError(f"train.output_dir {out} is a file, not a folder")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise AudioclError(f"train.output_dir {out}: {parent} is a file, not a folder")
            break
    if resume and overwrite:
        raise AudioclError("--resume and --overwrite exclude each other")
    if not out.is_dir():
        return
    clean_leftovers(out)
    used = _describe_run(out)
    if used and not resume and not overwrite:
        raise AudioclError(
            f"train.output_dir {out} already holds a run ({used}); "
            "pass --resume to continue it or --overwrite to replace it"
        )


def clear_run(output_dir: str | Path) -> list[str]:
    """Remove what a previous run wrote into ``output_dir`` (only the entries a
    run writes, :data:`RUN_ENTRIES`; other files stay). Checkpoints go first,
    renamed aside in one atomic step, so an interrupted clear never leaves a
    half-deleted checkpoint that ``--resume`` could pick."""
    out = Path(output_dir)
    removed = []
    for name in RUN_ENTRIES:
        p = out / name
        if not p.exists() and not p.is_symlink():
            continue
        if p.is_dir() and not p.is_symlink():
            aside = out / f".old-{name}-{os.getpid()}"
            os.replace(p, aside)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            p.unlink()
        removed.append(name)
    for p in out.glob(".attempt-*"):
        p.unlink(missing_ok=True)
    return removed
