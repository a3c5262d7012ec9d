"""Inputs to embeddings, one way: the only module that runs a tower for inference.

Everything that embeds for evaluation or the public API comes here:

* :func:`inference` — eval mode and no gradients for a block, the training mode
  restored after it (also on an exception).
* :func:`device_of` — the device a module's parameters live on.
* :func:`embed_pieces` — batch clip pieces, run the tower, average per clip,
  renormalise::

      e_c = sum_{p in pieces(c)} tower(x_p, len_p) / |pieces(c)|     [N, d]
      e_c = e_c / ||e_c||         (when the tower normalises its outputs)

* sources: :func:`embed_waveforms` (mono waveforms at any rate),
  :func:`embed_logmels` (full-length log-mels, e.g. from a feature store),
  :func:`embed_store` (store items by id), :func:`embed_vectors` (a vector tower)
  and :func:`embed_texts` (strings or token ids).

Audio follows the one clip rule of :mod:`audiocl.audio.length`: the model's
front-end (``model.frontend``) runs on the whole clip, the log-mel is then fitted
in the mel domain (short clips by the front-end's pad policy, with the valid
length "padding is not signal"; long clips as evenly spaced windows by default),
so a clip gives the same embedding whether it arrives as a file, a waveform or a
store's log-mel. Fusion front-ends take the 4-view input (crops seeded by the
clip's key); ``clip_samples=None`` embeds the whole clip in one pass.

One exception, for parity with the systems its weights come from: an encoder
with ``fit_domain = "waveform"`` (HTSAT: LAION-CLAP and ``ClapFeatureExtractor``
tile and pad the waveform) gets each clip fitted as a waveform, then the
log-mel of each piece (valid frames ``num_frames(valid samples)``); such a
model needs waveforms, so a log-mel-only store is refused for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError

if TYPE_CHECKING:
    from audiocl.audio.length import Piece
    from audiocl.models.model import MultiTowerModel
    from audiocl.models.towers import Tower

__all__ = [
    "LONG_CLIPS",
    "audio_tower",
    "device_of",
    "embed_logmels",
    "embed_pieces",
    "embed_store",
    "embed_texts",
    "embed_vectors",
    "embed_waveforms",
    "inference",
    "logmel_pieces",
]

#: What a clip longer than the model's clip length becomes at inference (see
#: :func:`audiocl.audio.length.clip_pieces`): evenly spaced windows, averaged, or
#: the front-end's own truncation (``trunc``, or the ``rand_trunc`` crop seeded by
#: the clip's key: the crop training collation takes with seed 0).
LONG_CLIPS = ("windows", "policy")


@contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block in eval mode without gradients; restore each module's mode after.

    Only the modules in training mode are switched (and switched back), so a model
    already in eval mode costs nothing here: a full ``eval()``/``train()`` walk of a
    CLAP with a 6-layer text tower sets ``training`` on ~3000 modules twice, about
    5 ms, more than the small CNN's forward pass for one clip.
    """
    switched = [m for m in model.modules() if m.training]
    for m in switched:
        m.training = False
    try:
        with torch.no_grad():
            yield model
    finally:
        for m in switched:
            m.training = True


def device_of(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def audio_tower(model: MultiTowerModel, tower: str | None = None) -> str:
    """The name of the audio tower (else the one speech tower), or ``tower`` checked."""
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


def _frontend(model: MultiTowerModel) -> Any:
    fe = getattr(model, "frontend", None)
    if fe is None:
        raise AudioclError("the model has no front-end (frontend.json); set model.frontend to a FrontendConfig")
    return fe


def _takes_waveform(model: MultiTowerModel, name: str) -> bool:
    return getattr(model.towers[name].encoder, "input_kind", "logmel") == "waveform"


def _fits_waveform(model: MultiTowerModel, name: str) -> bool:
    """True when tower ``name``'s clips are fitted as waveforms before the log-mel."""
    fe = model.frontend
    return not (fe is not None and fe.fusion) and getattr(model.towers[name].encoder, "fit_domain", "mel") == "waveform"


def _check_long(long_clips: str) -> None:
    if long_clips not in LONG_CLIPS:
        raise AudioclError(f"long_clips must be one of {', '.join(LONG_CLIPS)}, not {long_clips!r}")


def embed_pieces(
    model: MultiTowerModel,
    name: str,
    pieces: Sequence[Piece],
    owner: Sequence[int],
    n_clips: int,
    *,
    batch_size: int = 16,
    pad_value: float = 0.0,
) -> Tensor:
    """Embed clip pieces with tower ``name`` and average them per clip: ``Tensor[n_clips, d]`` on CPU.

    ``pieces[i]`` (a :class:`audiocl.audio.length.Piece`) belongs to clip
    ``owner[i]``. A batch is the pieces padded with ``pad_value`` to the longest,
    passed with their valid lengths (fusion pieces as ``{"features", "is_longer"}``).
    The mean over a clip's pieces is renormalised when the tower normalises.
    """
    if len(pieces) != len(owner):
        raise AudioclError(f"{len(pieces)} pieces but {len(owner)} owners")
    tw = model.towers[name]
    dev = device_of(model)
    outs: list[Tensor] = []
    with inference(model):
        for b in range(0, len(pieces), batch_size):
            chunk = pieces[b : b + batch_size]
            if chunk[0].is_longer is not None:
                feats = torch.stack([torch.from_numpy(np.ascontiguousarray(p.x, dtype=np.float32)) for p in chunk])
                longer = torch.tensor([bool(p.is_longer) for p in chunk])
                outs.append(tw({"features": feats.to(dev), "is_longer": longer.to(dev)}).float().cpu())
                continue
            n = max(int(p.x.shape[0]) for p in chunk)
            x = torch.full((len(chunk), n, *chunk[0].x.shape[1:]), float(pad_value), dtype=torch.float32)
            for j, p in enumerate(chunk):
                x[j, : p.x.shape[0]] = torch.from_numpy(np.ascontiguousarray(p.x, dtype=np.float32))
            lens = torch.tensor([p.length for p in chunk], dtype=torch.long)
            outs.append(tw(x.to(dev), lens.to(dev)).float().cpu())
    emb = torch.cat(outs) if outs else torch.empty(0, model.config.embed_dim)
    owner_t = torch.as_tensor(list(owner), dtype=torch.long)
    summed = torch.zeros(n_clips, emb.shape[1]).index_add_(0, owner_t, emb)
    counts = torch.bincount(owner_t, minlength=n_clips).clamp_min(1).unsqueeze(1)
    mean = summed / counts
    return F.normalize(mean, dim=-1) if tw.normalize else mean


def embed_logmels(
    model: MultiTowerModel,
    mels: Sequence[np.ndarray],
    *,
    keys: Sequence[str] | None = None,
    tower: str | None = None,
    batch_size: int = 16,
    long_clips: str = "windows",
) -> Tensor:
    """Embed full-length log-mels ``[frames, n_mels]`` made with the model's front-end:
    ``Tensor[N, d]`` on CPU.

    Each is fitted by the clip rule (:func:`audiocl.audio.length.clip_pieces`) with
    the front-end's clip length and policy; ``keys`` (default: the index) seed
    fusion and ``rand_trunc`` crops.
    """
    from audiocl.audio.frontend import log_floor

    fe = _frontend(model)
    name = audio_tower(model, tower)
    pieces, owner = logmel_pieces(model, mels, keys=keys, tower=name, long_clips=long_clips)
    return embed_pieces(model, name, pieces, owner, len(mels), batch_size=batch_size, pad_value=log_floor(fe))


def logmel_pieces(
    model: MultiTowerModel,
    mels: Sequence[np.ndarray],
    *,
    keys: Sequence[str] | None = None,
    tower: str | None = None,
    long_clips: str = "windows",
) -> tuple[list[Piece], list[int]]:
    """The model inputs :func:`embed_logmels` makes from full-length log-mels:
    ``(pieces, owner)``, ``owner[i]`` the clip of ``pieces[i]``."""
    from audiocl.audio.frontend import log_floor
    from audiocl.audio.length import clip_pieces

    fe = _frontend(model)
    name = audio_tower(model, tower)
    if _takes_waveform(model, name):
        raise AudioclError(f"tower '{name}' takes waveforms, not log-mels")
    _check_long(long_clips)
    keys = [str(i) for i in range(len(mels))] if keys is None else [str(k) for k in keys]
    floor = log_floor(fe)
    long = "fusion" if fe.fusion else long_clips
    pieces: list[Piece] = []
    owner: list[int] = []
    for i, mel in enumerate(mels):
        for p in clip_pieces(mel, fe.clip_frames, fe.length_policy, long=long, key=keys[i], pad_value=floor):
            pieces.append(p)
            owner.append(i)
    return pieces, owner


def embed_waveforms(
    model: MultiTowerModel,
    waveforms: Sequence[np.ndarray],
    sample_rate: int,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    tower: str | None = None,
    keys: Sequence[str] | None = None,
    long_clips: str = "windows",
) -> Tensor:
    """Embed mono waveforms ``[T]`` given at ``sample_rate``: ``Tensor[N, d]`` on CPU.

    Resampled to the front-end's rate, then: a log-mel tower gets the log-mel of
    the whole clip, fitted in the mel domain (:func:`embed_logmels`); a waveform
    tower gets the waveform fitted the same way in samples. ``keys`` (default: the
    index) seed fusion and ``rand_trunc`` crops, so they are reproducible.
    """
    from audiocl.audio.frontend import LogMel, log_floor
    from audiocl.audio.io import resample
    from audiocl.audio.length import clip_pieces

    fe = _frontend(model)
    name = audio_tower(model, tower)
    _check_long(long_clips)
    if device is not None:
        model.to(device)
    dev = device_of(model)
    keys = [str(i) for i in range(len(waveforms))] if keys is None else [str(k) for k in keys]
    wavs: list[np.ndarray] = []
    for i, w in enumerate(waveforms):
        x = np.asarray(w, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise AudioclError(f"waveform {keys[i]}: expected a non-empty mono array [T], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise AudioclError(f"waveform {keys[i]}: contains NaN or inf")
        wavs.append(resample(x, sample_rate, fe.sample_rate) if sample_rate != fe.sample_rate else x)
    takes_waveform = _takes_waveform(model, name)
    if takes_waveform or _fits_waveform(model, name):
        pieces: list[Piece] = []
        owner: list[int] = []
        for i, x in enumerate(wavs):
            for p in clip_pieces(x, fe.clip_samples, fe.length_policy, long=long_clips, key=keys[i]):
                pieces.append(p)
                owner.append(i)
        if takes_waveform:
            return embed_pieces(model, name, pieces, owner, len(wavs), batch_size=batch_size, pad_value=0.0)
        logmel = LogMel(fe).to(dev).eval()
        with torch.inference_mode():
            pieces = [_mel_piece(logmel, p, keys[o]) for p, o in zip(pieces, owner)]
        return embed_pieces(model, name, pieces, owner, len(wavs), batch_size=batch_size, pad_value=log_floor(fe))
    # one clip at a time at its full length: what extraction writes into a store
    logmel = LogMel(fe).to(dev).eval()
    mels = []
    with torch.inference_mode():
        for i, x in enumerate(wavs):
            try:
                mels.append(logmel(torch.from_numpy(x).to(dev)).cpu().numpy())
            except AudioclError as err:
                raise AudioclError(f"waveform {keys[i]}: {err}") from None
    return embed_logmels(model, mels, keys=keys, tower=name, batch_size=batch_size, long_clips=long_clips)


def _mel_piece(logmel: Any, piece: Piece, key: str) -> Piece:
    """The log-mel of a waveform piece, with its valid frames (``num_frames`` of the valid samples)."""
    from audiocl.audio.frontend import num_frames
    from audiocl.audio.length import Piece

    dev = logmel.window.device  # LogMel has buffers, no parameters
    try:
        mel = logmel(torch.from_numpy(np.ascontiguousarray(piece.x)).to(dev)).cpu().numpy()
    except AudioclError as err:
        raise AudioclError(f"waveform {key}: {err}") from None
    return Piece(mel, min(num_frames(piece.length, logmel.cfg), int(mel.shape[0])))


def embed_store(
    model: MultiTowerModel,
    store: Any,
    ids: Sequence[str],
    *,
    tower: str | None = None,
    batch_size: int = 16,
    long_clips: str = "windows",
) -> Tensor:
    """Embed store items by id (a :class:`~audiocl.data.store.FeatureStore`): ``Tensor[N, d]``.

    The store's waveforms when it holds them (through :func:`embed_waveforms`),
    else its log-mels, which must come from the model's own front-end (same hash);
    a frozen tower's outputs extracted into the store are projected instead of
    running the encoder again where they are the same values (:func:`stored_tower_outputs`).
    """
    fe = _frontend(model)
    missing = [i for i in ids if i not in store]
    if missing:
        raise AudioclError(f"{len(missing)} item(s) are not in the store {store.dir} (first: {missing[0]!r})")
    name = audio_tower(model, tower)
    if "waveform" in store.kinds:
        wavs = [np.asarray(store.waveform(i), dtype=np.float32) for i in ids]
        return embed_waveforms(model, wavs, store.sample_rate, batch_size=batch_size, tower=name, keys=list(ids),
                               long_clips=long_clips)
    if _takes_waveform(model, name):
        raise AudioclError(
            f"tower '{name}' takes waveforms and the store {store.dir} holds log-mels only: "
            "extract with --store-waveform or evaluate from the audio files (omit --store)"
        )
    if _fits_waveform(model, name):
        raise AudioclError(
            f"tower '{name}' fits clips as waveforms (LAION's rule) and the store {store.dir} holds log-mels "
            "only: extract with --store-waveform or evaluate from the audio files (omit --store)"
        )
    if store.config.hash() != fe.hash():
        raise AudioclError(
            f"the store {store.dir} has another front-end than the model's (frontend.json); "
            "re-extract with the model's front-end or evaluate from the audio files (omit --store)"
        )
    rows = stored_tower_outputs(model, store, name, ids)
    if rows is not None:
        # the frozen encoder's outputs were computed once at extraction: project them
        tw = cast("Tower", model.towers[name])  # ModuleDict values are typed as Module
        with inference(model):
            z = tw.projection(rows.to(device_of(model))).float().cpu()
        return F.normalize(z, dim=-1) if tw.normalize else z
    mels = [np.array(store[i], dtype=np.float32) for i in ids]  # a copy: store views are read-only
    return embed_logmels(model, mels, keys=list(ids), tower=name, batch_size=batch_size, long_clips=long_clips)


def stored_tower_outputs(model: MultiTowerModel, store: Any, name: str, ids: Sequence[str]) -> Tensor | None:
    """Tower ``name``'s encoder outputs for ``ids`` from the store's extracted tower features
    (:mod:`audiocl.data.tower_features`): ``Tensor[len(ids), encoder.output_dim]``, or None.

    Used only where they equal what the encoder would compute from the store's
    log-mels here: a frozen, cached tower (``frozen: true, cache: true``), the same
    weights (sha256) and front-end, and a front-end without a clip length (each
    clip goes through the encoder whole, as at extraction; no windows or crops).
    Otherwise (no features, other weights, a clip length) None: the caller runs the encoder.
    """
    from audiocl.data.tower_features import load_tower_features, store_tower_keys, tower_identity

    tw = cast("Tower", model.towers[name])
    if tw.cache is None or _frontend(model).clip_frames is not None or not store_tower_keys(store.dir):
        return None
    enc_cfg = {"type": tw.cfg.encoder.type, **tw.cfg.encoder.params}
    try:
        sids, rows = load_tower_features(store.dir, tower_identity(enc_cfg, tw.encoder))
    except AudioclError:
        return None
    pos = {k: i for i, k in enumerate(sids)}
    return torch.from_numpy(rows[[pos[i] for i in ids]])


def embed_vectors(model: MultiTowerModel, tower: str, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Embed ``x: [N, ...]`` with one tower (lengths none): ``Tensor[N, d]`` on CPU."""
    if tower not in model.towers:
        raise AudioclError(f"no tower named '{tower}'; towers: {model.tower_names}")
    dev = device_of(model)
    with inference(model):
        outs = [model.towers[tower](x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, model.config.embed_dim)


def embed_texts(
    model: MultiTowerModel,
    texts: Sequence[str] | dict[str, Any],
    *,
    tower: str | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Embed strings (or a dict of ``input_ids``/``attention_mask``) with the text tower:
    ``Tensor[N, d]`` on CPU (unit rows when the tower normalises)."""
    name = model._pick_tower(tower, ("text",))
    tw = model.towers[name]
    with inference(model):
        if isinstance(texts, dict):
            dev = device_of(model)
            return tw({k: v.to(dev) if isinstance(v, Tensor) else v for k, v in texts.items()}).float().cpu()
        items = list(texts)
        outs = [tw(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, model.config.embed_dim)
