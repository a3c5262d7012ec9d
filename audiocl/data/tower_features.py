"""A frozen tower's encoder outputs, computed once per clip into a feature store.

A frozen pretrained tower (``frozen: true``) gives the same output for a clip
every time, so training need not run it every epoch: :func:`extract_tower_features`
runs its encoder once over every item of a finished store (a pool of worker
processes or Ray actors, one shard at a time each, see
:mod:`audiocl.data.shard_pool`; or in this process) and writes::

    towers/<type>-<sha12>/tower.json              identity: encoder config, weight sha256,
                                                  front-end hash, input rule, dim, items
    towers/<type>-<sha12>/shard-000012.npy        [items of the shard, dim] float32
    towers/<type>-<sha12>/shard-000012.ids.json   the shard's item ids, same order

and records the folder under ``"towers"`` in ``features.json`` (additive: the
store's parameters, index and :func:`~audiocl.data.store.content_hash` are not
touched). ``<sha12>`` starts the sha256 of the encoder's weights
(:func:`weights_sha256`), so towers with other weights never share a folder.

Input rule: the encoder sees each item's whole stored log-mel (``lengths`` =
its frames). :func:`prime_tower_cache` loads them into a frozen tower's
:class:`~audiocl.models.towers.FrozenEmbeddingCache`, keyed by item id, after
checking the weight hash and the front-end hash; a batch whose ids are known
then never runs the encoder. Training passes ids only under deterministic
length policies, and the cached value is the whole-clip output even when the
collate crops the clip (the value evaluation computes for that clip).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.data.store import FEATURES_JSON, FeatureStore, shard_name
from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_bytes, atomic_write_text

TOWERS_DIR = "towers"
FORMAT = "audiocl.tower-features/1"
INPUT_RULE = "whole clip: the store's log-mel, all frames valid"


def weights_sha256(module: Any) -> str:
    """sha256 over the module's state dict (names, dtypes, shapes, bytes), in key order."""
    import torch

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tower_identity(encoder_cfg: dict[str, Any], encoder: Any) -> dict[str, Any]:
    """What names a frozen tower's outputs: its encoder config and weight hash."""
    return {
        "encoder": dict(encoder_cfg),
        "weights_sha256": weights_sha256(encoder),
        "dim": int(encoder.output_dim),
    }


def tower_key(identity: dict[str, Any]) -> str:
    return f"{identity['encoder']['type']}-{identity['weights_sha256'][:12]}"


def _frozen_encoder(model_config: Any, tower: str) -> tuple[dict[str, Any], Any]:
    from audiocl.models.config import load_model_config
    from audiocl.models.encoders import build_encoder

    cfg = load_model_config(model_config)
    if tower not in cfg.towers:
        raise AudioclError(f"model config has no tower '{tower}' (towers: {', '.join(cfg.towers)})")
    tc = cfg.towers[tower]
    if not tc.frozen:
        raise AudioclError(f"towers.{tower} is not frozen: its encoder outputs change while training")
    enc_cfg = {"type": tc.encoder.type, **tc.encoder.params}
    enc = build_encoder(tc.encoder, where=f"towers.{tower}.encoder").eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc_cfg, enc


class TowerShardWorker:
    """Computes one shard's outputs (in a pool's worker process or Ray actor, or in-process)."""

    def __init__(self, store_dir: str, model_config: Any, tower: str, expect_sha: str,
                 batch_size: int = 16, single_thread: bool = True) -> None:
        import torch

        if single_thread:
            torch.set_num_threads(1)
        self.store = FeatureStore(store_dir)
        self.enc_cfg, self.encoder = _frozen_encoder(model_config, tower)
        ident = tower_identity(self.enc_cfg, self.encoder)
        if ident["weights_sha256"] != expect_sha:
            # e.g. another aisfx version installed on a worker node
            raise AudioclError(f"tower '{tower}' has other weights on this worker than on the driver")
        self.dir = Path(store_dir) / TOWERS_DIR / tower_key(ident)
        self.batch_size = batch_size
        self.on_item: Any = None  # set by a pool that shows per-item progress

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for shard in batch["shard"]:
            t0 = time.process_time()
            try:
                n = self.process(int(shard))
                out.append((int(shard), n, time.process_time() - t0, ""))
            except Exception as err:  # reported by the driver, never a lost shard
                out.append((int(shard), 0, 0.0, f"{type(err).__name__}: {err}"))
        return {k: np.asarray([r[i] for r in out]) for i, k in enumerate(("shard", "n", "cpu", "error"))}

    def process(self, shard: int) -> int:
        import io

        import torch

        all_ids = self.store.ids()
        ids = [all_ids[r] for r in np.flatnonzero(self.store.shard_array == shard)]
        # longest clips first keeps padding (wasted compute) low within a batch
        order = sorted(range(len(ids)), key=lambda j: -self.store.num_frames(ids[j]))
        rows = np.zeros((len(ids), int(self.encoder.output_dim)), dtype=np.float32)
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                part = order[b : b + self.batch_size]
                mels = [np.asarray(self.store[ids[j]], dtype=np.float32) for j in part]
                lens = torch.tensor([m.shape[0] for m in mels])
                xn = np.zeros((len(mels), int(lens.max()), mels[0].shape[1]), dtype=np.float32)
                for k, m in enumerate(mels):
                    xn[k, : m.shape[0]] = m  # copied in numpy: the memory-mapped rows are read-only
                x = torch.from_numpy(xn)
                h = self.encoder(x, lens).float()
                if not torch.isfinite(h).all():
                    bad = [ids[part[k]] for k in range(len(part)) if not torch.isfinite(h[k]).all()]
                    raise AudioclError(f"tower output is not finite for item(s) {bad[:3]}")
                rows[part] = h.numpy()
                if self.on_item is not None:
                    for _ in part:
                        self.on_item()
        buf = io.BytesIO()
        np.save(buf, rows)
        stem = shard_name(shard)
        atomic_write_text(self.dir / f"{stem}.ids.json", json.dumps(ids) + "\n")
        atomic_write_bytes(self.dir / f"{stem}.npy", buf.getvalue())
        return len(ids)


def extract_tower_features(
    store_dir: str | os.PathLike,
    model_config: Any,
    tower: str,
    *,
    workers: int = 2,
    runner: str = "auto",
    address: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    progress_file: Any = None,
) -> dict[str, Any]:
    """Write the frozen ``tower``'s encoder output for every item of the store; returns a summary.

    ``model_config``: a ModelConfig, dict or YAML/JSON path (only ``tower`` is built).
    Shards already written with the same weights are kept (the run resumes).
    ``runner``/``address``: where the ``workers`` run, as for
    :func:`audiocl.data.extract.extract` (:func:`audiocl.data.shard_pool.shard_pool`);
    ``progress``/``progress_file`` as there too.
    """
    from audiocl.data.extract import _store_lock
    from audiocl.data.shard_pool import ShardProgress, shard_pool

    d = Path(store_dir)
    store = FeatureStore(d)
    if "logmel" not in store.kinds:
        raise AudioclError(f"store at {d} holds no log-mels (it holds {', '.join(store.kinds)})")
    t0 = time.perf_counter()
    enc_cfg, enc = _frozen_encoder(model_config, tower)
    ident = tower_identity(enc_cfg, enc)
    key = tower_key(ident)
    out = d / TOWERS_DIR / key
    out.mkdir(parents=True, exist_ok=True)
    shards = sorted(int(s) for s in np.unique(store.shard_array))
    todo = [s for s in shards if not (out / f"{shard_name(s)}.npy").is_file()]
    results: list[tuple[int, int, float]] = []
    failures: list[str] = []

    shard_ids = store.shard_array
    bar = ShardProgress({s: int((shard_ids == s).sum()) for s in todo}, f"tower {tower} -> {d.name}",
                        enabled=progress, file=progress_file)

    def record(row: dict[str, Any]) -> None:
        if row["error"]:
            failures.append(f"{shard_name(int(row['shard']))}: {row['error']}")
        else:
            results.append((int(row["shard"]), int(row["n"]), float(row["cpu"])))
        bar.shard_done(int(row["shard"]))

    kw = {"store_dir": str(d), "model_config": load_config_dict(model_config), "tower": tower,
          "expect_sha": ident["weights_sha256"], "batch_size": batch_size}
    with _store_lock(d):
        try:
            if todo:
                with shard_pool(TowerShardWorker, kw, min(int(workers), len(todo)),
                                runner=runner, address=address, on_tick=bar.tick) as pool:
                    pool.run([{"shard": s} for s in todo], record,
                             what="tower extraction", retry="run again to complete")
            bar.close()
        finally:
            bar.close(ok=False)  # no-op after the close above
        if failures:
            raise AudioclError(f"{len(failures)} shard(s) of tower '{tower}' failed: " + "; ".join(failures[:3]))
        doc = {
            "format": FORMAT,
            **ident,
            "tower": tower,
            "frontend_hash": store.config.hash(),
            "input": INPUT_RULE,
            "items": len(store),
            "shards": [shard_name(s) for s in shards],
        }
        atomic_write_text(out / "tower.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
        fj = d / FEATURES_JSON
        features = json.loads(fj.read_text(encoding="utf-8"))
        features.setdefault("towers", {})[key] = {
            "dir": f"{TOWERS_DIR}/{key}", "encoder": enc_cfg["type"], "weights_sha256": ident["weights_sha256"],
            "dim": ident["dim"], "frontend_hash": doc["frontend_hash"], "input": INPUT_RULE,
        }
        atomic_write_text(fj, json.dumps(features, indent=2, sort_keys=True) + "\n")
    done = sum(n for _, n, _ in results)
    summary = {
        "store": str(d), "tower": tower, "key": key, "items": len(store), "shards": len(shards),
        "shards_resumed": len(shards) - len(todo), "computed_this_run": done,
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "cpu_ms_per_clip": round(1000 * sum(c for _, _, c in results) / done, 2) if done else 0.0,
    }
    return summary


def load_config_dict(model_config: Any) -> dict[str, Any]:
    """A model config as a plain dict (what travels to Ray actors)."""
    from audiocl.models.config import load_model_config

    return load_model_config(model_config).to_dict()


def load_tower_features(store_dir: str | os.PathLike, identity: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """``(ids, Tensor-ready [N, dim] float32)`` of a tower with this identity; AudioclError if absent or stale."""
    d = Path(store_dir)
    store = FeatureStore(d)
    key = tower_key(identity)
    folder = d / TOWERS_DIR / key
    meta = folder / "tower.json"
    if not meta.is_file():
        raise AudioclError(
            f"{d}: no embeddings of encoder {identity['encoder']['type']} with weights "
            f"{identity['weights_sha256'][:12]} (run tower extraction for this store)"
        )
    doc = json.loads(meta.read_text(encoding="utf-8"))
    if doc.get("weights_sha256") != identity["weights_sha256"]:
        raise AudioclError(f"{meta}: weight hash differs from the tower's")
    if doc.get("frontend_hash") != store.config.hash():
        raise AudioclError(f"{meta}: made from log-mels of another front-end than the store's")
    ids: list[str] = []
    parts = []
    for stem in doc["shards"]:
        try:
            sid = json.loads((folder / f"{stem}.ids.json").read_text(encoding="utf-8"))
            arr = np.load(folder / f"{stem}.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise AudioclError(f"{folder / stem}: unreadable tower shard ({e})") from None
        if arr.ndim != 2 or arr.shape != (len(sid), doc["dim"]):
            raise AudioclError(f"{folder / stem}.npy: shape {arr.shape}, expected ({len(sid)}, {doc['dim']})")
        ids += sid
        parts.append(arr)
    if len(ids) != len(store) or set(ids) != set(store.ids()):
        raise AudioclError(f"{folder}: holds {len(ids)} items, the store {len(store)} (stale: extract again)")
    return ids, np.concatenate(parts).astype(np.float32, copy=False)


def prime_tower_cache(tower: Any, store_dir: str | os.PathLike) -> int:
    """Fill a frozen, cached tower's cache from the store's tower features; returns the rows loaded."""
    import torch

    if getattr(tower, "cache", None) is None:
        raise AudioclError(f"tower '{tower.name}' has no cache (needs frozen: true and cache: true)")
    enc_cfg = {"type": tower.cfg.encoder.type, **tower.cfg.encoder.params}
    ids, rows = load_tower_features(store_dir, tower_identity(enc_cfg, tower.encoder))
    tower.cache.preload(ids, torch.from_numpy(rows))
    return len(ids)


def store_tower_keys(store_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``towers`` entries of a store's ``features.json`` ({} when none)."""
    doc = json.loads((Path(store_dir) / FEATURES_JSON).read_text(encoding="utf-8"))
    return dict(doc.get("towers", {}))


__all__ = [
    "extract_tower_features",
    "load_tower_features",
    "prime_tower_cache",
    "store_tower_keys",
    "tower_identity",
    "weights_sha256",
]
