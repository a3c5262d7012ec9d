"""Frozen text tower (LiT) with and without FrozenEmbeddingCache.

Workload: a frozen all-MiniLM-L6-v2 tower + trainable linear projection; 30
steps of 64 captions drawn from 200 unique ones (ESC-50-like: many clips share
a caption). Both arms compute the same embeddings; the cached arm runs the
encoder once per unique caption. Prints one JSON object (last line).

    python benchmarks/frozen_text_cache.py
"""

from __future__ import annotations

import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from audiocl.models import MultiTowerModel  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    rng = random.Random(0)
    unique = [f"This is a sound of class number {i} in the corpus." for i in range(200)]
    batches = [[rng.choice(unique) for _ in range(64)] for _ in range(30)]

    def build(cache: bool) -> MultiTowerModel:
        torch.manual_seed(0)
        cfg = {
            "embed_dim": 128,
            "towers": {"text": {"modality": "text", "encoder": {"type": "hf_text"}, "frozen": True, "cache": cache}},
        }
        return MultiTowerModel.from_config(cfg).train()

    results = {}
    outs = {}
    for name, cache in (("uncached", False), ("cached", True)):
        m = build(cache)
        m({"text": batches[0][:2]})  # warm-up outside the timing
        if cache:
            m.towers.text.cache.clear()
        t0 = time.perf_counter()
        last = None
        for b in batches:
            out = m({"text": b})["embeddings"]["text"]
            out.sum().backward()  # the projection trains in both arms
            last = out.detach()
        results[name] = time.perf_counter() - t0
        outs[name] = last
    diff = float((outs["cached"] - outs["uncached"]).abs().max())
    print(
        json.dumps(
            {
                "benchmark": "frozen_text_cache",
                "steps": len(batches),
                "batch": 64,
                "unique_captions": len(unique),
                "uncached_s": round(results["uncached"], 3),
                "cached_s": round(results["cached"], 3),
                "speedup": round(results["uncached"] / results["cached"], 2),
                "max_abs_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
