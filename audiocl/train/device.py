"""What the trainer does differently on a CUDA device: placement, prefetch to the device, compile.

* :func:`setup_device` makes the training device the current CUDA device of
  the process. NCCL object collectives (``all_gather_object``,
  ``broadcast_object_list``, used for checkpoints) run on the *current*
  device, so a Ray Train rank placed on ``cuda:k`` must select it before any
  of them, or every rank would talk through ``cuda:0``.
* :class:`CudaPrefetcher` wraps a loader iterator: while step ``k`` computes on
  the default stream, batch ``k+1`` is copied host-to-device on a side stream
  (``non_blocking``; the loader pins its batches, so the copy is a real DMA
  that overlaps the compute). The default stream waits for the copy before the
  batch is used, and every copied tensor is ``record_stream``-ed on it so the
  caching allocator does not hand its memory to the next copy while kernels
  still read it. Only used on CUDA; elsewhere :func:`device_batches` returns
  the plain iterator, and batches move in the step as before.
* :func:`compile_towers` applies ``torch.compile`` in place to each tower's
  encoder (``nn.Module.compile``, so parameter names and therefore checkpoints
  are unchanged). Text towers that tokenise inside ``forward`` get their
  transformer compiled, not the tokeniser.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.train.data import to_device

__all__ = ["CudaPrefetcher", "compile_towers", "device_batches", "pick_device", "setup_device", "tensors_of"]


def pick_device(name: str) -> torch.device:
    """``train.device`` -> a device: ``auto`` is CUDA when there is one, else the CPU.

    ``cuda`` without a usable CUDA device is the user's mistake, said in one line
    (a CPU build of torch, or no GPU visible to this process).
    """
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device is visible"
            raise AudioclError(f"train.device=cuda: {why} (torch {torch.__version__}); use train.device=cpu or auto")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup_device(device: torch.device) -> None:
    """Select ``device`` as this process's current CUDA device (no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def tensors_of(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a nested batch (dicts, lists, tuples)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_of(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_of(v)


class CudaPrefetcher:
    """Iterator over ``batches`` that yields them already on ``device`` (CUDA).

    One batch is kept in flight: ``next()`` hands out the batch copied during
    the previous step and starts the copy of the following one (the first
    call reads two). Every wait on the loader therefore happens inside some
    ``next()``, so the trainer's data-wait timer still measures it.
    """

    def __init__(self, batches: Iterable[Any], device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"CudaPrefetcher needs a CUDA device, got {device}")
        self.it = iter(batches)
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self._next: Any = None
        self._done = False
        # the first batch is read on the first next(), inside the trainer's data-wait timer
        self._started = False

    def _preload(self) -> None:
        try:
            batch = next(self.it)
        except StopIteration:
            self._done = True
            self._next = None
            return
        with torch.cuda.stream(self.stream):
            self._next = to_device(batch, self.device)

    def __iter__(self) -> CudaPrefetcher:
        return self

    def __next__(self) -> Any:
        if not self._started:
            self._started = True
            self._preload()
        if self._done:
            raise StopIteration
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        batch = self._next
        for t in tensors_of(batch):
            if t.device.type == "cuda":
                t.record_stream(current)
        self._preload()
        return batch


def device_batches(loader: Iterable[Any], device: torch.device) -> Iterator[Any]:
    """``iter(loader)``, prefetched to the device on CUDA."""
    if device.type == "cuda":
        return CudaPrefetcher(loader, device)
    return iter(loader)


def compile_towers(model: nn.Module, **options: Any) -> list[str]:
    """``torch.compile`` each tower's encoder in place; returns what was compiled.

    A model without ``towers`` (a user's own module) is compiled whole. Text
    encoders that tokenise strings in ``forward`` (``hf_text``, ``small_text``)
    would graph-break on every call there, so their inner network is compiled
    when they expose it as ``.model``.
    """
    towers = getattr(model, "towers", None)
    if not isinstance(towers, nn.ModuleDict):
        model.compile(**options)
        return ["model"]
    done: list[str] = []
    for name, tower in towers.items():
        enc = getattr(tower, "encoder", None)
        if not isinstance(enc, nn.Module):
            continue
        if getattr(tower, "modality", None) == "text":
            inner = getattr(enc, "model", None)
            if isinstance(inner, nn.Module):
                inner.compile(**options)
                done.append(f"towers.{name}.encoder.model")
            continue
        enc.compile(**options)
        done.append(f"towers.{name}.encoder")
    return done
