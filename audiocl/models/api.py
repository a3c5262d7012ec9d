"""Three-line API: load a model folder, embed audio files / waveforms, embed texts.

    model = load_model("exp/clap/best")
    a = embed_audio_files(model, ["dog.wav", "rain.flac"])   # [2, d], unit rows
    t = embed_texts(model, ["a dog barks", "rain falls"])    # [2, d]

Audio goes through the model's own front-end (``model.frontend``, saved as
``frontend.json``): decode -> mono -> resample (soxr) -> log-mel of the whole
clip, then the one clip rule of :mod:`audiocl.audio.length` in the mel domain,
so the same file always gives the same embedding, and the same one as its
log-mel from a feature store:

- clips shorter than the front-end's clip length: its pad policy
  (``repeatpad`` for ``laion_clap``, ``pad`` for ``speech16k``), with the valid
  length "padding is not signal";
- longer clips: ``ceil(frames / clip_frames)`` full windows with evenly spaced
  starts (first at 0, last ending at the clip's end), embedded separately; the
  clip's embedding is the mean of the window embeddings, re-normalised;
- fusion front-ends (LAION fusion models): the 4-view fusion input with crops
  seeded by the file path, instead of windows;
- ``clip_samples = None``: the whole clip in one pass (lengths masked).

The work is done in :mod:`audiocl.models.embed`; these are its public names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiocl.audio.length import window_starts
from audiocl.errors import AudioclError
from audiocl.models import embed as _embed
from audiocl.models.embed import audio_tower as _audio_tower  # noqa: F401  (old name; eval/probe.py uses it)
from audiocl.models.model import MultiTowerModel

__all__ = ["embed_audio_files", "embed_texts", "embed_waveforms", "load_model", "window_starts"]


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultiTowerModel:
    """Load a saved model folder (config.json + model.safetensors + frontend.json ...)."""
    return MultiTowerModel.from_pretrained(directory, device=device)


def embed_waveforms(
    model: MultiTowerModel,
    waveforms: Sequence[np.ndarray],
    sample_rate: int,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    tower: str | None = None,
    keys: Sequence[str] | None = None,
) -> Tensor:
    """Embed mono waveforms ``[T]`` given at ``sample_rate``: ``Tensor[N, d]`` on CPU.

    ``keys`` (default: the index) seed the fusion crops, so they are reproducible.
    """
    return _embed.embed_waveforms(
        model, waveforms, sample_rate, batch_size=batch_size, device=device, tower=tower, keys=keys
    )


def embed_audio_files(
    model: MultiTowerModel,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    tower: str | None = None,
) -> Tensor:
    """Decode, resample, log-mel and embed audio files: ``Tensor[len(paths), d]`` on CPU.

    Decode failures raise ``AudioDecodeError`` naming the file.
    """
    from audiocl.audio.io import load_mono

    fe = model.frontend
    if fe is None:
        raise AudioclError("the model has no front-end (frontend.json); set model.frontend to a FrontendConfig")
    out = []
    # decode a bounded group at a time so memory does not grow with the file list
    group = max(batch_size, 64)
    for g in range(0, len(paths), group):
        sub = list(paths[g : g + group])
        wavs = [load_mono(p, fe.sample_rate) for p in sub]
        out.append(
            _embed.embed_waveforms(
                model, wavs, fe.sample_rate, batch_size=batch_size, device=device, tower=tower,
                keys=[str(Path(p)) for p in sub],
            )
        )
    return torch.cat(out) if out else torch.empty(0, model.config.embed_dim)


def embed_texts(
    model: MultiTowerModel,
    texts: Sequence[str] | dict[str, Any],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    tower: str | None = None,
) -> Tensor:
    """Embed strings (or a dict of ``input_ids``/``attention_mask``): ``Tensor[N, d]`` on CPU."""
    if device is not None:
        model.to(device)
    return _embed.embed_texts(model, texts, tower=tower, batch_size=batch_size)
