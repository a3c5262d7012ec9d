#!/usr/bin/env python3
"""Cross-language digit retrieval for the multilingual model.

For every (speech language A, text language B): the held-out-voice clips of a
digit word spoken in A are queries; the gallery is the ten digit words written
in B (``sieben`` vs ``seven``, ``sept``, ``siete``...). A query is right when
its nearest text (cosine) is the same digit. Reported per pair: HITS@1, MRR and
mean rank over the 10 candidates (chance: HITS@1 0.10, MRR 0.29, meanR 5.5).
Each pair is the library's zero-shot classification
(:func:`audiocl.eval.zeroshot.zeroshot`, template ``{}``, class names the digit
words of B): HITS@1 = its ``top1``, MRR and meanR its ``MRR``/``mean_rank``,
with ties counted against the model (a text scoring the same as the right one
ranks above it).

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

from audiocl.errors import AudioclError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import DIGITS  # noqa: E402


def pair_kind(a: str, b: str) -> str:
    if a == b:
        return "same language (trained)"
    if b == "en":
        return "to English pivot (trained)"
    return "never paired (transfer)"


def evaluate(model_dir: str, manifests: Path, store: str | None) -> dict:
    from audiocl.eval.embed import embed_items_audio
    from audiocl.eval.zeroshot import read_items, zeroshot
    from audiocl.models import load_model

    model = load_model(model_dir)
    langs = sorted(p.stem.removeprefix("test_digits_") for p in manifests.glob("test_digits_*.jsonl"))
    if not langs:
        raise AudioclError(f"no test_digits_<lang>.jsonl in {manifests}")
    pairs = {}
    for a in langs:
        path = manifests / f"test_digits_{a}.jsonl"
        if not path.read_text(encoding="utf-8").strip():
            continue
        items = read_items(path)
        audio = embed_items_audio(model, items, store=store)  # once per speech language
        for b in langs:
            res, _ = zeroshot(model, items, DIGITS["en"], ["{}"], names=DIGITS[b], audio=audio, source=path)
            pairs[f"{a}->{b}"] = {"hits1": res["top1"], "mrr": res["MRR"], "meanR": res["mean_rank"],
                                  "n": res["n_items"], "speech": a, "text": b, "kind": pair_kind(a, b)}
    groups: dict[str, list[float]] = {}
    for v in pairs.values():
        groups.setdefault(v["kind"], []).append(v["hits1"])
    return {"eval": "crosslingual_digits", "model": model_dir, "languages": langs, "pairs": pairs,
            "tie_rule": "pessimistic (a text scoring the same as the right one ranks above it)",
            "mean_hits1_by_kind": {k: sum(x) / len(x) for k, x in groups.items()},
            "chance": {"hits1": 0.1, "mrr": sum(1 / r for r in range(1, 11)) / 10, "meanR": 5.5}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cross-language digit retrieval")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifests", required=True, help="folder with test_digits_<lang>.jsonl")
    ap.add_argument("--store", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from audiocl.eval.report import write_json

    try:
        res = evaluate(a.model, Path(a.manifests), a.store)
        write_json(res, a.out)
    except AudioclError as e:
        print(f"eval_crosslingual: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res["mean_hits1_by_kind"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
