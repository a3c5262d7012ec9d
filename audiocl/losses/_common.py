"""Helpers shared by the loss modules: reading the model's output dict and checking shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from audiocl.errors import AudioclError


def get_embeddings(
    outputs: Mapping[str, Any], names: Sequence[str], *, same_shape: bool = True
) -> list[Tensor]:
    """Return ``outputs["embeddings"][name]`` for each name, checking they line up
    (``same_shape=False`` for losses whose modalities have different row counts,
    e.g. several captions per clip).

    A missing name is a configuration mistake (the loss names a tower the model
    does not have), so it raises :class:`AudioclError` listing what is there.
    """
    if "embeddings" not in outputs:
        raise AudioclError("loss expects the model output dict to have an 'embeddings' entry")
    embs = outputs["embeddings"]
    out = []
    for name in names:
        if name not in embs:
            raise AudioclError(
                f"loss uses modality '{name}' but the model produced {sorted(embs)}"
            )
        x = embs[name]
        if x.dim() != 2:
            raise AudioclError(f"embeddings['{name}'] must be [N, d], got shape {tuple(x.shape)}")
        out.append(x)
    if same_shape:
        check_same_shape(out, names)
    return out


def check_same_shape(xs: Sequence[Tensor], names: Sequence[str] | None = None) -> None:
    """All embeddings of one loss must share [N, d]: the i-th rows form the positive tuple."""
    if not xs:
        return
    ref = tuple(xs[0].shape)
    for k, x in enumerate(xs[1:], start=1):
        if tuple(x.shape) != ref:
            a = names[0] if names else "0"
            b = names[k] if names else str(k)
            raise AudioclError(
                f"embeddings '{a}' {ref} and '{b}' {tuple(x.shape)} must have the same shape"
            )


def get_logit_scale(outputs: Mapping[str, Any], default: float | None = None) -> Tensor | float:
    """The exp'd temperature multiplier ``t`` (logits = t * similarity)."""
    t = outputs.get("logit_scale")
    if t is None:
        if default is None:
            raise AudioclError("loss needs outputs['logit_scale'] (the exp'd temperature)")
        return default
    return t


def as_scale(t: Tensor | float, like: Tensor) -> Tensor:
    """Turn a float or 0-d tensor into a 0-d tensor on ``like``'s device and dtype."""
    if isinstance(t, Tensor):
        return t.to(device=like.device, dtype=like.dtype)
    return torch.tensor(float(t), device=like.device, dtype=like.dtype)


def upcast(x: Tensor) -> Tensor:
    """Half-precision tensors to float32 (loss arithmetic in fp32); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def no_autocast(like: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``like``'s device (fused kernels use ``out=``)."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def two_modalities(modalities: Sequence[str], loss: str) -> tuple[str, str]:
    """Check a two-modality loss's ``modalities`` option (a config value, so a
    user mistake: :class:`AudioclError`, one line naming ``loss.kwargs.modalities``)."""
    if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
        raise AudioclError(
            f"loss '{loss}': loss.kwargs.modalities must be a list of two tower names, got {modalities!r}"
        )
    names = tuple(modalities)
    if len(names) != 2:
        raise AudioclError(
            f"loss '{loss}' takes exactly two modality names in loss.kwargs.modalities, got {list(names)} "
            "(for three or more use symile, gram, mvinfonce or pairwise)"
        )
    return names[0], names[1]
