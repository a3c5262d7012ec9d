"""Export to WebDataset tars in the layout LAION-CLAP's and open_clip's audio loaders read.

Each sample is two tar members with the same key: ``<key>.flac`` (mono, 16-bit,
48 kHz by default) and ``<key>.json`` with ``text`` (list of captions), ``tag``
(list of labels), the original ``id`` and the manifest's other fields under
``original_data``. Tars are ``000000.tar``, ``000001.tar``, ... with
``sizes.json`` (tar name -> number of samples) beside them.

Written with the standard library's ``tarfile`` (no webdataset dependency);
member metadata (mtime, owner, mode) is fixed so the same input gives the same
bytes, and every tar is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_open, atomic_write_text

_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")
#: longest key: ``<key>.flac`` must fit the 100-byte name field of a ustar header
#: (Clotho ids run past 95 characters)
MAX_KEY = 80
_HASH_CHARS = 16


def sample_key(item_id: str) -> str:
    """The readable WebDataset key of ``item_id``: loaders split a member name at its
    first dot and treat slashes as folders, so everything but ``[A-Za-z0-9_-]``
    becomes ``_``; a key over :data:`MAX_KEY` characters is shortened and ends in
    ``-`` plus 16 hex digits of the id's sha256. Distinct ids can share this form
    (``a/b`` and ``a_b``): :func:`sample_keys` resolves that."""
    clean = _KEY_BAD.sub("_", item_id).strip("_") or "item"
    return clean if len(clean) <= MAX_KEY else _hashed_key(item_id, clean)


def _hashed_key(item_id: str, clean: str) -> str:
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    stem = clean[: MAX_KEY - _HASH_CHARS - 1].rstrip("_-") or "item"
    return f"{stem}-{digest}"


def sample_keys(ids: list[str], where: str = "the manifest") -> dict[str, str]:
    """Collision-free keys for all ``ids`` of one export, independent of their order.

    Each id gets :func:`sample_key`; the ids that share one (``a/b``, ``a_b``) each get
    the hashed form instead (``a_b-<16 hex>``), so ``a_b_2``, ``a/b`` and ``a_b`` become
    ``a_b_2``, ``a_b-…``, ``a_b-…``. The full id is always in the sample's ``.json``.
    A hashed key that equals another id's key (an id spelled like a hash) is refused,
    naming both ids.
    """
    by_key: dict[str, list[str]] = {}
    for i in ids:
        by_key.setdefault(sample_key(i), []).append(i)
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for key, group in by_key.items():
        for i in group:
            k = key if len(group) == 1 else _hashed_key(i, _KEY_BAD.sub("_", i).strip("_"))
            out[i] = k
    for i, k in out.items():
        if k in owner:
            raise AudioclError(
                f"{where}: ids {owner[k]!r} and {i!r} both map to the WebDataset key "
                f"{k!r}; rename one of them"
            )
        owner[k] = i
    return out


def _flac_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_tars(out: Path, samples: Iterator[tuple[str, bytes, dict[str, Any]]], per_tar: int) -> dict[str, int]:
    """Write ``(key, flac, meta)`` samples into ``000000.tar``, ``000001.tar``, ... of
    ``per_tar`` samples each; each tar is written atomically (:func:`audiocl.fsutil.atomic_open`:
    an error, in the samples or the disk, leaves no partial tar). Returns ``{tar name: samples}``."""
    sizes: dict[str, int] = {}
    for first in samples:
        name = f"{len(sizes):06d}.tar"
        n = 0
        with atomic_open(out / name) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, flac, meta in itertools.chain([first], itertools.islice(samples, per_tar - 1)):
                _add(tar, f"{key}.flac", flac)
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())
                n += 1
        sizes[name] = n
    return sizes


def export_webdataset(
    store_dir: str | os.PathLike | None,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    samples_per_tar: int = 1000,
    sample_rate: int = 48000,
    text_template: str | None = None,
) -> dict[str, Any]:
    """Write the manifest's items as WebDataset tars; returns a summary dict.

    With a store, only the items it holds are exported (failed extractions are
    skipped), and their audio comes from the store's waveform part when it has
    one (resampled if the store's rate is not ``sample_rate``); otherwise each
    item is decoded from its file again (decode -> mono -> resample). Without a
    store every manifest item is decoded; items that fail are counted and
    listed in the summary, not exported. ``text_template`` (e.g. ``"This is a
    sound of {}."``) makes a caption from the labels of items without texts.
    """
    from audiocl.audio.io import AudioDecodeError, resample
    from audiocl.data.manifest import read_manifest
    from audiocl.data.sources import item_name, load_item_mono
    from audiocl.data.store import FeatureStore

    if samples_per_tar < 1:
        raise AudioclError(f"samples per tar must be >= 1, not {samples_per_tar}")
    if text_template is not None:
        from audiocl.eval.zeroshot import check_template

        # the same rule as zero-shot prompts: exactly one {} (a "{0} {1}" was an IndexError)
        check_template(text_template, "--text-template")
    store = None if store_dir is None else FeatureStore(store_dir)
    out = Path(out_dir)
    if out.exists() and any(out.glob("*.tar")):
        raise AudioclError(f"{out} already holds tars; choose an empty --out")
    # keys are made (and checked) before anything is written
    keys = sample_keys(
        [it.id for it in read_manifest(Path(manifest), resolve_paths=False)
         if store is None or it.id in store],
        str(manifest),
    )
    out.mkdir(parents=True, exist_ok=True)
    skipped = 0
    failed: list[dict[str, str]] = []
    from_store = 0

    def samples() -> Iterator[tuple[str, bytes, dict[str, Any]]]:
        nonlocal skipped, from_store
        for item in read_manifest(Path(manifest)):
            if store is not None and item.id not in store:
                skipped += 1
                continue
            try:
                if store is not None and "waveform" in store.kinds:
                    wav = store.waveform(item.id)
                    wav = resample(wav, store.sample_rate, sample_rate)
                    from_store += 1
                else:
                    wav = load_item_mono(item, sample_rate)
                    if not np.isfinite(wav).all():
                        raise AudioDecodeError(item_name(item), "nonfinite")
            except AudioDecodeError as err:
                failed.append({"id": item.id, "reason": err.reason, "message": err.detail})
                continue
            texts = list(item.texts)
            if not texts and text_template and item.labels:
                texts = [text_template.replace("{}", ", ".join(item.labels))]
            meta = {
                "id": item.id,
                "text": texts,
                "tag": list(item.labels),
                "original_data": {k: v for k, v in item.to_dict().items()
                                  if k not in ("id", "path", "texts", "labels", "ref") and v is not None},
            }
            yield keys[item.id], _flac_bytes(wav, sample_rate), meta

    sizes = _write_tars(out, samples(), samples_per_tar)
    atomic_write_text(out / "sizes.json", json.dumps(sizes, indent=1, sort_keys=True) + "\n")
    return {
        "out": str(out),
        "tars": len(sizes),
        "samples": sum(sizes.values()),
        "audio_from_store": from_store,
        "skipped_not_in_store": skipped,
        "failed": failed,
        "sample_rate": sample_rate,
    }


def expand_shards(pattern: str, field: str = "data.webdataset", *, recursive: bool = False) -> list[str]:
    """The tar files of ``pattern``: a folder (its ``*.tar``, sorted), a brace pattern
    (webdataset's ``shards/{000000..000099}.tar``, expanded with ``braceexpand``,
    every file must exist), a glob (sorted), or one ``.tar`` file.

    ``recursive`` (``audiocl prepare webdataset``): a folder's tars are searched in
    its sub-folders too (not hidden ones), ``.tar.gz``/``.tgz`` included so the
    caller can refuse them by name, and a glob's ``**`` crosses folders. Errors
    start with ``field``."""
    p = os.path.expanduser(pattern)
    if os.path.isdir(p):
        if recursive:
            root = Path(p)
            paths = sorted(
                str(x) for x in root.rglob("*")
                if x.is_file() and x.name.endswith((".tar", ".tar.gz", ".tgz"))
                and not any(part.startswith(".") for part in x.relative_to(root).parts)
            )
        else:
            paths = sorted(glob.glob(os.path.join(glob.escape(p), "*.tar")))
        if not paths:
            raise AudioclError(f"{field}: the folder {pattern} holds no .tar files")
        return paths
    if "{" in p:
        from audiocl.extras import require

        brace = require("braceexpand", "webdataset", feature=f"{field} brace patterns")
        paths = list(brace.braceexpand(p))
        missing = [x for x in paths if not os.path.isfile(x)]
        if missing:
            raise AudioclError(
                f"{field}: {len(missing)} of the {len(paths)} shards of {pattern} do not exist "
                f"(first: {missing[0]})"
            )
        return paths
    if any(c in p for c in "*?["):
        paths = sorted(x for x in glob.glob(p, recursive=recursive) if os.path.isfile(x))
        if not paths:
            raise AudioclError(f"{field}: {pattern} matches no files")
        return paths
    if os.path.isfile(p):
        return [p]
    raise AudioclError(f"{field}: {pattern} is not a folder, a .tar file, a glob or a brace pattern of shards")
