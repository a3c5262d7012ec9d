"""Export a manifest as a Hugging Face ``save_to_disk`` folder with an ``Audio`` column.

One ``DatasetDict`` split per manifest ``split`` (items without one go to
``train``). Columns: ``id``, ``audio`` (``Audio(decode=False)``: the encoded
bytes embedded, so the folder stands alone), ``texts`` and ``labels`` (lists
of strings), ``speaker``, ``language``, ``source``, ``license`` and the
manifest's custom fields that hold plain values (strings, numbers, bools;
each such field must have one type across the items). A whole file, tar
member or arrow row is embedded as it is (its own bytes: no re-encoding); a
segment (``start``/``duration``) is decoded and written as 32-bit float WAV,
so its samples are exact. ``audiocl prepare hf`` reads the folder back.

The ``Audio`` column is written as ``{bytes, path}`` structs and cast, which
is how ``datasets`` stores embedded audio, without its encoder (which needs
``torchcodec``).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError
from audiocl.extras import require

FEATURE = "audiocl export hf"
_COLUMNS = ("id", "audio", "texts", "labels", "speaker", "language", "source", "license")


def _audio_bytes(item: Any) -> tuple[bytes, str]:
    """The item's encoded audio and a file name for the cell's ``path``."""
    import soundfile as sf

    from audiocl.data.sources import item_name, item_source, load_item

    whole = not item.start and item.duration is None or (
        not item.start and item.duration is not None and item.sampling_rate and item.num_samples is not None
        and abs(item.duration - item.num_samples / item.sampling_rate) < 0.5 / item.sampling_rate
    )
    name = os.path.basename(item_name(item).split(":")[-1]) or "audio"
    if whole:
        src = item_source(item)
        if isinstance(src, bytes):
            return src, name
        with open(src, "rb") as f:
            return f.read(), os.path.basename(src)
    x, sr = load_item(item)
    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue(), os.path.splitext(name)[0] + ".wav"


def export_hf(manifest: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the manifest's items to ``out_dir`` (``DatasetDict.save_to_disk``); a summary."""
    datasets = require("datasets", "hf", feature=FEATURE)
    from audiocl.audio.io import AudioDecodeError
    from audiocl.data.manifest import read_manifest

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AudioclError(f"export hf: {out} is not empty; choose a new --out")
    splits: dict[str, dict[str, list[Any]]] = {}
    extra: dict[str, type] = {}
    items = list(read_manifest(manifest))
    if not items:
        raise AudioclError(f"export hf: {manifest} has no items")
    for it in items:
        for k, v in it.custom.items():
            if isinstance(v, (str, int, float, bool)) and k not in _COLUMNS:
                if extra.setdefault(k, type(v)) is not type(v):
                    raise AudioclError(f"export hf: custom field {k!r} is a {extra[k].__name__} in "
                                       f"some items and a {type(v).__name__} in {it.id!r}")
    for it in items:
        try:
            blob, fname = _audio_bytes(it)
        except (AudioDecodeError, OSError) as err:
            raise AudioclError(f"export hf: item {it.id!r}: {err}") from None
        cols = splits.setdefault(it.split or "train", {c: [] for c in (*_COLUMNS, *extra)})
        cols["id"].append(it.id)
        cols["audio"].append({"bytes": blob, "path": fname})
        cols["texts"].append(list(it.texts))
        cols["labels"].append(list(it.labels))
        for c in ("speaker", "language", "source", "license"):
            cols[c].append(getattr(it, c))
        for k in extra:
            v = it.custom.get(k)
            cols[k].append(v if isinstance(v, extra[k]) else None)
    parts = {}
    for split, cols in splits.items():
        ds = datasets.Dataset.from_dict(cols)
        parts[split] = ds.cast_column("audio", datasets.Audio(decode=False))
    from audiocl.fsutil import tmp_path

    # written beside the destination and renamed into place: a failure leaves no half folder
    tmp = tmp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "items": len(items), "splits": {k: len(v["id"]) for k, v in splits.items()}}
