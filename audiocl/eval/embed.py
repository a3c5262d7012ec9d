"""Embedding manifest items for evaluation, deterministically.

The same item always gives the same embedding: the work is done by
:mod:`audiocl.models.embed` (the model's own front-end, ``frontend.json``, then
the one clip rule of :mod:`audiocl.audio.length` in the mel domain: short
clips padded by the front-end's policy with the valid length "padding is not
signal", clips longer than the model's clip length cut into evenly spaced
windows, embedded separately and averaged, then re-normalised; fusion models
use crops seeded by the item id). Nothing here draws random numbers without a
fixed key, and the store and file sources give the same embedding.

Sources of audio, in order of preference:

* a feature store holding waveforms (``--store`` made with ``--store-waveform``):
  decoded from the store's FLAC shards;
* a feature store holding log-mels only: its front-end must equal the model's
  (same hash);
* otherwise the audio files named by the manifest (``path``, ``start``,
  ``duration``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError

__all__ = [
    "embed_arrays",
    "embed_items_all_towers",
    "embed_items_audio",
    "embed_strings",
    "embed_vectors",
    "gather_embeddings",
    "load_embeddings_npz",
]


def _group(seq: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


def embed_items_audio(
    model: Any,
    items: Sequence[Any],
    *,
    store: str | os.PathLike | None = None,
    tower: str | None = None,
    batch_size: int = 16,
    group: int = 64,
    long_clips: str = "windows",
) -> torch.Tensor:
    """Embed the audio of manifest ``items`` (``AudioItem``): ``Tensor[N, d]`` on CPU, unit rows.

    ``long_clips`` (see :data:`audiocl.models.embed.LONG_CLIPS`): ``"windows"``
    averages evenly spaced windows; ``"policy"`` takes the front-end's own
    truncation (the ``rand_trunc`` crop seeded by the item id).
    """
    from audiocl.models.embed import embed_store, embed_waveforms
    from audiocl.progress import progress

    if not items:
        raise AudioclError("no items to embed")
    fe = getattr(model, "frontend", None)
    if fe is None:
        raise AudioclError("the model folder has no frontend.json; cannot embed audio")
    if store is not None:
        from audiocl.data.store import FeatureStore

        fs = FeatureStore(store)
        missing = [it.id for it in items if it.id not in fs]
        if missing:
            raise AudioclError(
                f"{len(missing)} manifest item(s) are not in the store {store} (first: {missing[0]!r})"
            )
        out = []
        with progress(len(items), f"embed {tower or 'audio'}", unit="clip") as bar:
            for sub in _group(list(items), group):
                out.append(embed_store(model, fs, [it.id for it in sub], tower=tower, batch_size=batch_size,
                                       long_clips=long_clips))  # fmt: skip
                bar.update(len(sub))
        return F.normalize(torch.cat(out), dim=-1)

    from audiocl.data.sources import load_item_mono

    out = []
    with progress(len(items), f"embed {tower or 'audio'}", unit="clip") as bar:
        for sub in _group(list(items), group):
            wavs = [load_item_mono(it, fe.sample_rate) for it in sub]
            out.append(
                embed_waveforms(model, wavs, fe.sample_rate, batch_size=batch_size, tower=tower,
                                keys=[it.id for it in sub], long_clips=long_clips)
            )
            bar.update(len(sub))
    return F.normalize(torch.cat(out), dim=-1)


def embed_strings(model: Any, texts: Sequence[str], *, tower: str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Embed strings with the model's text tower: ``Tensor[N, d]`` on CPU, unit rows."""
    from audiocl.models.embed import embed_texts
    from audiocl.progress import progress

    if not texts:
        raise AudioclError("no texts to embed")
    texts = list(texts)
    # chunks of whole batches: the batches embed_texts forms are the same as in one call
    step = batch_size * 8
    out = []
    with progress(len(texts), f"embed {tower or 'text'}", unit="text") as bar:
        for i in range(0, len(texts), step):
            out.append(embed_texts(model, texts[i : i + step], batch_size=batch_size, tower=tower))
            bar.update(len(texts[i : i + step]))
    return F.normalize(torch.cat(out), dim=-1)


def embed_items_all_towers(
    model: Any,
    items: Sequence[Any],
    *,
    store: str | os.PathLike | None = None,
    towers: Sequence[str] | None = None,
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Embeddings of every tower (or ``towers``) for the same items: ``{name: [N, d]}``.

    Audio/speech towers embed the item's audio; text towers its first text;
    vector towers the numbers in ``item.custom[<tower input key>]`` (a list,
    or a ``.npy`` path relative to the working folder).
    """
    names = list(towers) if towers else list(model.towers.keys())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name not in model.towers:
            raise AudioclError(f"no tower named '{name}'; towers: {list(model.towers.keys())}")
        mod = model.towers[name].modality
        if mod in ("audio", "speech"):
            out[name] = embed_items_audio(model, items, store=store, tower=name, batch_size=batch_size)
        elif mod == "text":
            missing = [it.id for it in items if not it.texts]
            if missing:
                raise AudioclError(f"{len(missing)} item(s) have no text for tower '{name}' (first: {missing[0]!r})")
            out[name] = embed_strings(model, [it.texts[0] for it in items], tower=name)
        else:
            key = model.input_key(name)
            rows = []
            for it in items:
                v = it.custom.get(key)
                if v is None:
                    raise AudioclError(f"item {it.id!r} has no field '{key}' for vector tower '{name}'")
                arr = np.load(v) if isinstance(v, str) else np.asarray(v, dtype=np.float32)
                rows.append(torch.as_tensor(np.asarray(arr, dtype=np.float32)))
            out[name] = embed_vectors(model, name, torch.stack(rows), batch_size=256)
    return out


def embed_vectors(model: Any, tower: str, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Embed ``x: [N, ...]`` with one (vector) tower in eval mode: ``Tensor[N, d]`` on CPU, unit rows."""
    from audiocl.models.embed import embed_vectors as _embed_vectors

    return F.normalize(_embed_vectors(model, tower, x, batch_size=batch_size), dim=-1)


def embed_arrays(
    model: Any,
    arrays: dict[str, np.ndarray],
    *,
    towers: Sequence[str] | None = None,
    inputs: dict[str, str] | None = None,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Embed paired arrays with the model's towers: ``{tower: Tensor[N, d]}``, unit rows.

    Tower ``t`` reads the array ``inputs[t]`` if given, else the array named
    ``t``, else the one named by its input key. Without ``towers``, every
    tower that finds its array is embedded. String arrays go to text towers
    as strings; numeric ones to the tower as ``Tensor[B, ...]`` float32.
    """
    inputs = dict(inputs or {})
    names = list(towers) if towers else list(model.towers.keys())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name not in model.towers:
            raise AudioclError(f"no tower named '{name}'; towers: {list(model.towers.keys())}")
        key = inputs.get(name) or (name if name in arrays else model.input_key(name))
        if key not in arrays:
            if towers or name in inputs:
                raise AudioclError(f"no array {key!r} for tower '{name}'; arrays: {sorted(arrays)} (map one with --inputs {name}=ARRAY)")
            continue
        arr = arrays[key]
        if arr.dtype.kind == "U":
            out[name] = embed_strings(model, [str(v) for v in arr], tower=name)
            continue
        x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        out[name] = embed_vectors(model, name, x, batch_size=batch_size)
    if not out:
        raise AudioclError(
            f"none of the towers {names} found an array among {sorted(arrays)}; map them with --inputs TOWER=ARRAY"
        )
    return out


def load_embeddings_npz(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str] | None, list[Any] | None]:
    """Precomputed embeddings: an ``.npz`` with one ``[N, d]`` float array per modality
    and optional ``labels`` (``[N]`` strings) and ``fold`` (``[N]``) arrays."""
    from audiocl.errors import InputError

    p = str(path)
    try:
        data = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(p, "embeddings file not found") from None
    except (ValueError, OSError) as e:
        raise InputError(p, f"not a readable .npz without pickles: {e}") from None
    emb: dict[str, torch.Tensor] = {}
    labels = folds = None
    for key in data.files:
        arr = data[key]
        if key == "labels":
            labels = [str(v) for v in arr.tolist()]
        elif key == "fold":
            folds = arr.tolist()
        else:
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
                raise InputError(p, f"array '{key}' must be a float [N, d] matrix, got {arr.dtype} {arr.shape}", field=key)
            emb[key] = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if not emb:
        raise InputError(p, "no embedding arrays in file")
    return emb, labels, folds


def gather_embeddings(
    *,
    embeddings: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    split: str | None = None,
    towers: Sequence[str] | None = None,
    batch_size: int = 16,
    arrays: str | os.PathLike | None = None,
    inputs: dict[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str] | None, list[Any] | None, dict[str, Any]]:
    """Embeddings for multiway/probe/diagnostics from an ``.npz`` of embeddings, from a
    model + manifest, or from a model + ``arrays`` (paired tower inputs, see
    :mod:`audiocl.data.arrays`; ``inputs`` maps tower -> array name).

    Returns ``(embeddings {name: [N, d]}, labels or None, folds or None, meta)``;
    from a manifest, ``labels`` is each item's first label (None if any item
    has none) and ``folds`` its ``custom["fold"]`` (None if any item has none);
    from arrays, the ``labels`` and ``fold`` arrays when present.
    """
    if arrays is not None:
        if embeddings is not None or manifest is not None or model_dir is None:
            raise AudioclError("give --arrays with --model (and without --embeddings or --manifest)")
        from audiocl.data.arrays import load_arrays
        from audiocl.models import load_model

        data = load_arrays(arrays)
        model = load_model(model_dir)
        emb = embed_arrays(model, data, towers=towers, inputs=inputs)
        labels = [str(v) for v in data["labels"]] if "labels" in data else None
        folds = data["fold"].tolist() if "fold" in data else None
        return emb, labels, folds, {"model": str(model_dir), "arrays": str(arrays)}
    if embeddings is not None:
        if model_dir is not None or manifest is not None:
            raise AudioclError("give --embeddings, or --model with --manifest, not both")
        emb, labels, folds = load_embeddings_npz(embeddings)
        if towers:
            missing = [t for t in towers if t not in emb]
            if missing:
                raise AudioclError(f"{embeddings} has no array named {missing[0]!r}; arrays: {list(emb)}")
            emb = {t: emb[t] for t in towers}
        return emb, labels, folds, {"embeddings": str(embeddings)}
    if model_dir is None or manifest is None:
        raise AudioclError("give --embeddings FILE.npz, or --model DIR with --manifest FILE or --arrays FILE.npz")
    from audiocl.data.manifest import read_manifest
    from audiocl.models import load_model

    items = [it for it in read_manifest(manifest) if split is None or it.split == split]
    if not items:
        raise AudioclError(f"no items in {manifest}" + (f" with split {split!r}" if split else ""))
    model = load_model(model_dir)
    emb = embed_items_all_towers(model, items, store=store, towers=towers, batch_size=batch_size)
    labels = [it.labels[0] for it in items] if all(it.labels for it in items) else None
    folds = [it.custom.get("fold") for it in items]
    meta = {"model": str(model_dir), "manifest": str(manifest), "split": split}
    return emb, labels, (folds if all(f is not None for f in folds) else None), meta
