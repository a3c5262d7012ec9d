#!/usr/bin/env python3
"""Cross-language digit retrieval for the multilingual model.

For every (speech language A, text language B): the held-out-voice clips of a
digit word spoken in A are queries; the gallery is the ten digit words written
in B (``sieben`` vs ``seven``, ``sept``, ``siete``...). A query is right when
its nearest text (cosine) is the same digit. Reported per pair: HITS@1, MRR and
mean rank over the 10 candidates (chance: HITS@1 0.10, MRR 0.29, meanR 5.5).

Which pairs were seen in training (stage 0): A == B (own transcripts) and
B == en for any A (digit clips in de/fr/es also carry the English word, the
pivot). Pairs between two of de/fr/es (A != B) and en speech with de/fr/es
text were *never* paired in training: they measure transfer through the pivot.

    python local/eval_crosslingual.py --model exp/ml_clip/train/model \
        --manifests data/manifests/ml --store data/store --out exp/ml_clip/eval/crosslingual.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import DIGITS  # noqa: E402


def pair_kind(a: str, b: str) -> str:
    if a == b:
        return "same language (trained)"
    if b == "en":
        return "to English pivot (trained)"
    return "never paired (transfer)"


def rank_metrics(scores: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``scores [N, C]``, ``target [N]`` -> HITS@1, MRR, mean rank (1 = best) of the true column."""
    true = scores.gather(1, target[:, None])
    rank = (scores > true).sum(1).float() + 1.0
    return {"hits1": float((rank == 1).float().mean()), "mrr": float((1.0 / rank).mean()),
            "meanR": float(rank.mean()), "n": int(len(target))}


def evaluate(model_dir: str, manifests: Path, store: str | None) -> dict:
    from audiocl.data.manifest import read_manifest
    from audiocl.eval.embed import embed_items_audio, embed_strings
    from audiocl.models import load_model

    model = load_model(model_dir)
    langs = sorted(p.stem.removeprefix("test_digits_") for p in manifests.glob("test_digits_*.jsonl"))
    if not langs:
        raise AudioclError(f"no test_digits_<lang>.jsonl in {manifests}")
    text_emb = {b: F.normalize(embed_strings(model, DIGITS[b]).float(), dim=-1) for b in langs}
    index = {w: i for i, w in enumerate(DIGITS["en"])}
    pairs = {}
    for a in langs:
        items = list(read_manifest(manifests / f"test_digits_{a}.jsonl"))
        if not items:
            continue
        audio = F.normalize(embed_items_audio(model, items, store=store).float(), dim=-1)
        target = torch.tensor([index[it.labels[0]] for it in items])
        for b in langs:
            m = rank_metrics(audio @ text_emb[b].T, target)
            pairs[f"{a}->{b}"] = m | {"speech": a, "text": b, "kind": pair_kind(a, b)}
    groups: dict[str, list[float]] = {}
    for v in pairs.values():
        groups.setdefault(v["kind"], []).append(v["hits1"])
    return {"eval": "crosslingual_digits", "model": model_dir, "languages": langs, "pairs": pairs,
            "mean_hits1_by_kind": {k: sum(x) / len(x) for k, x in groups.items()},
            "chance": {"hits1": 0.1, "mrr": sum(1 / r for r in range(1, 11)) / 10, "meanR": 5.5}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cross-language digit retrieval")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifests", required=True, help="folder with test_digits_<lang>.jsonl")
    ap.add_argument("--store", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        res = evaluate(a.model, Path(a.manifests), a.store)
    except AudioclError as e:
        print(f"eval_crosslingual: error: {e}", file=sys.stderr)
        return 2
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print(json.dumps(res["mean_hits1_by_kind"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
