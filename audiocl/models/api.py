"""Three-line API: load a model folder, embed audio files / waveforms, embed texts.

    model = load_model("exp/clap/best")
    a = embed_audio_files(model, ["dog.wav", "rain.flac"])   # [2, d], unit rows
    t = embed_texts(model, ["a dog barks", "rain falls"])    # [2, d]

Audio goes through the model's own front-end (``model.frontend``, saved as
``frontend.json``): decode -> mono -> resample (soxr) -> log-mel, with a
deterministic length policy, so the same file always gives the same embedding:

- clips shorter than the front-end's ``clip_samples``: its pad policy
  (``repeatpad`` for ``laion_clap``, ``pad`` for ``speech16k``);
- longer clips: ``ceil(T / clip_samples)`` full windows with evenly spaced
  starts (first at 0, last ending at the clip's end), embedded separately; the
  clip's embedding is the mean of the window embeddings, re-normalised;
- fusion front-ends (LAION fusion models): the 4-view fusion input with crops
  seeded by the file path, instead of windows;
- ``clip_samples = None``: the whole clip in one pass (lengths masked).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from audiocl.errors import AudioclError
from audiocl.models.model import MultiTowerModel


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultiTowerModel:
    """Load a saved model folder (config.json + model.safetensors + frontend.json ...)."""
    return MultiTowerModel.from_pretrained(directory, device=device)


def _device_of(model: MultiTowerModel) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def window_starts(n: int, win: int) -> list[int]:
    """Starts of ``ceil(n / win)`` windows of ``win`` covering ``[0, n)`` evenly."""
    if n <= win:
        return [0]
    k = math.ceil(n / win)
    return [round(i * (n - win) / (k - 1)) for i in range(k)]


def _audio_tower(model: MultiTowerModel, tower: str | None) -> str:
    if tower is not None:
        if tower not in model.towers:
            raise AudioclError(f"no tower named '{tower}'; towers: {model.tower_names}")
        return tower
    for modality in ("audio", "speech"):
        names = [n for n, t in model.towers.items() if t.modality == modality]
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            raise AudioclError(f"several {modality} towers {names}; pass tower=")
    raise AudioclError(f"model has no audio or speech tower; towers: {model.tower_names}")


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
    from audiocl.audio.frontend import LogMel, log_floor, num_frames, parse_length_policy
    from audiocl.audio.io import resample
    from audiocl.audio.length import apply_length_policy, fusion_views

    fe = model.frontend
    if fe is None:
        raise AudioclError("the model has no front-end (frontend.json); set model.frontend to a FrontendConfig")
    name = _audio_tower(model, tower)
    tw = model.towers[name]
    if device is not None:
        model.to(device)
    dev = _device_of(model)
    waveform_input = getattr(tw.encoder, "input_kind", "logmel") == "waveform"
    logmel = LogMel(fe).to(dev)
    pad_policy, _ = parse_length_policy(fe.length_policy)
    target = fe.clip_samples
    keys = [str(i) for i in range(len(waveforms))] if keys is None else [str(k) for k in keys]

    # Cut every clip into model inputs ("pieces"), remembering which clip each belongs to.
    pieces: list[np.ndarray] = []
    owner: list[int] = []
    for i, w in enumerate(waveforms):
        x = np.asarray(w, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise AudioclError(f"waveform {keys[i]}: expected a non-empty mono array [T], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise AudioclError(f"waveform {keys[i]}: contains NaN or inf")
        if sample_rate != fe.sample_rate:
            x = resample(x, sample_rate, fe.sample_rate)
        if target is None or fe.fusion:
            pieces.append(x)
            owner.append(i)
        elif x.size <= target:
            pieces.append(apply_length_policy(x, target, pad_policy))
            owner.append(i)
        else:
            for s in window_starts(x.size, target):
                pieces.append(x[s : s + target])
                owner.append(i)

    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    try:
        with torch.no_grad():
            for b in range(0, len(pieces), batch_size):
                chunk = pieces[b : b + batch_size]
                lens = torch.tensor([c.size for c in chunk], dtype=torch.long)
                wav = torch.zeros(len(chunk), int(lens.max()))
                for j, c in enumerate(chunk):
                    wav[j, : c.size] = torch.from_numpy(c)
                wav = wav.to(dev)
                if waveform_input:
                    outs.append(tw(wav, lens.to(dev)).float().cpu())
                    continue
                if fe.fusion:
                    views, longer = [], []
                    for j, c in enumerate(chunk):
                        mel = logmel(torch.from_numpy(c).to(dev)).cpu().numpy()
                        v, is_longer = fusion_views(
                            mel, fe.clip_frames, key=keys[owner[b + j]], pad_value=log_floor(fe)
                        )
                        views.append(torch.from_numpy(np.ascontiguousarray(v)))
                        longer.append(is_longer)
                    feats = torch.stack(views).to(dev)
                    outs.append(tw({"features": feats, "is_longer": torch.tensor(longer)}).float().cpu())
                    continue
                mel = logmel(wav)
                flen = torch.tensor([num_frames(int(n), fe) for n in lens], dtype=torch.long)
                outs.append(tw(mel, flen.clamp(max=mel.shape[1]).to(dev)).float().cpu())
    finally:
        model.train(was_training)

    emb = torch.cat(outs) if outs else torch.empty(0, model.config.embed_dim)
    owner_t = torch.tensor(owner, dtype=torch.long)
    summed = torch.zeros(len(waveforms), emb.shape[1]).index_add_(0, owner_t, emb)
    counts = torch.bincount(owner_t, minlength=len(waveforms)).clamp_min(1).unsqueeze(1)
    mean = summed / counts
    return F.normalize(mean, dim=-1) if tw.normalize else mean


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
            embed_waveforms(
                model,
                wavs,
                fe.sample_rate,
                batch_size=batch_size,
                device=device,
                tower=tower,
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
    if isinstance(texts, dict):
        name = model._pick_tower(tower, ("text",))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.towers[name](texts).float().cpu()
        finally:
            model.train(was_training)
    return model.embed_text(list(texts), tower, batch_size=batch_size).float().cpu()
