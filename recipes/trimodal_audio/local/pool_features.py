#!/usr/bin/env python3
"""Stage 2 of trimodal_audio: one fixed vector per clip from its stored log-mel.

For each clip of a manifest, the log-mel ``[frames, n_mels]`` is read from the
feature store that ``audiocl extract`` wrote, the quietest ``drop_quiet``
fraction of frames is dropped (espeak-ng's leading/trailing silence and a
note's decayed tail carry no class information but dominate plain means), and
the clip becomes

    [mean_t x, std_t x, mean_t |dx|, std_t dx]        (4 * n_mels values)

where ``dx`` is the frame-to-frame difference (a crude modulation / envelope
statistic: articulation rate for speech, attack and vibrato for notes). These
vectors are the frozen "encoder" outputs on which the recipe's MLP towers are
trained, as Symile-M3 trains on frozen pretrained-encoder features.

Writes ``<out>`` (.npz) with ``<name>`` [N, 4 * n_mels] float32 and ``labels``
[N] (the clip's class), the layout ``audiocl eval probe --embeddings <out>
--tower <name>`` reads, and beside it ``<out stem>.meta.npz`` with ``ids`` and
``split`` [N] (strings, manifest order).

    python local/pool_features.py --manifest data/corpus/speech.jsonl --store data/store_speech \
        --name speech --out data/features/speech.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from audiocl.data.manifest import read_manifest
from audiocl.data.store import FeatureStore
from audiocl.errors import AudioclError


def pool_logmel(x: np.ndarray, drop_quiet: float = 0.2) -> np.ndarray:
    """``[4 * n_mels]`` statistics of one clip's log-mel ``x [frames, n_mels]`` (see module doc)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise AudioclError(f"log-mel of shape {x.shape}: need [frames >= 3, n_mels]")
    energy = x.mean(axis=1)
    keep = energy >= np.quantile(energy, drop_quiet)
    # keep at least 3 frames so that differences exist even for a flat clip
    if keep.sum() < 3:
        keep = np.argsort(energy)[-3:]
    k = x[keep]
    d = np.diff(k, axis=0)
    out = np.concatenate([k.mean(0), k.std(0), np.abs(d).mean(0), d.std(0)])
    if not np.all(np.isfinite(out)):
        raise AudioclError("non-finite pooled features")
    return out.astype(np.float32)


def pool_store(manifest: str, store: str, drop_quiet: float) -> dict[str, np.ndarray]:
    items = list(read_manifest(manifest))
    st = FeatureStore(store)
    have = set(st.ids())
    missing = [it.id for it in items if it.id not in have]
    if missing:
        raise AudioclError(f"{len(missing)} clips of {manifest} are not in {store} (first: {missing[0]}); "
                           "see the store's errors.jsonl")  # fmt: skip
    x = np.stack([pool_logmel(st[it.id], drop_quiet) for it in items])
    return {
        "features": x,
        "labels": np.array([it.labels[0] for it in items]),
        "ids": np.array([it.id for it in items]),
        "split": np.array([it.split or "" for it in items]),
    }


def meta_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name.removesuffix(".npz") + ".meta.npz")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--name", required=True, help="array name of the pooled vectors (the tower: speech or note)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--drop-quiet", type=float, default=0.2, help="fraction of quietest frames left out")
    args = ap.parse_args(argv)
    try:
        res = pool_store(args.manifest, args.store, args.drop_quiet)
    except AudioclError as e:
        print(f"pool_features: error: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    x = res.pop("features")
    np.savez(args.out, **{args.name: x}, labels=res["labels"])
    np.savez(meta_path(args.out), ids=res["ids"], split=res["split"])
    print(f"{args.name}: {x.shape[0]} clips x {x.shape[1]} values -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
