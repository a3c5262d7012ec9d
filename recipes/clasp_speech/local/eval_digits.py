#!/usr/bin/env python3
"""Zero-shot spoken-digit classification, overall, per speaker and per class.

Wraps :func:`audiocl.eval.zeroshot.run_zeroshot` (the library's protocol: class
names ``zero``..``nine`` put into the prompt templates, text embeddings averaged
over templates, cosine against the clip embedding, arg-max) and adds what the
library result lacks: top-1 accuracy per speaker (the manifest's ``speaker``),
with the mean and the worst speaker.

    python local/eval_digits.py --model exp/en_clip/train/model \
        --manifest data/fsdd/manifest.jsonl --classes data/manifests/digit_classes.txt \
        --prompt "{}" --out exp/en_clip/eval/zeroshot_fsdd.json

Without ``--store`` the audio files are decoded with the model's front-end
(FSDD's 8 kHz recordings are resampled to 16 kHz by audiocl).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from audiocl.errors import AudioclError


def per_speaker(pred: list[int], target: list[int], speakers: list[str | None]) -> dict[str, dict[str, float]]:
    """``{speaker: {"accuracy", "n"}}`` from predicted and true class indices."""
    hit: dict[str, list[int]] = defaultdict(list)
    for p, t, s in zip(pred, target, speakers):
        hit[s or "unknown"].append(int(p == t))
    return {s: {"accuracy": sum(h) / len(h), "n": len(h)} for s, h in sorted(hit.items())}


def evaluate(model: str, manifest: str, classes: str, prompts: list[str], store: str | None) -> dict:
    from audiocl.data.manifest import read_manifest
    from audiocl.eval.zeroshot import read_class_list, run_zeroshot

    items = list(read_manifest(manifest))
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        res, scores = run_zeroshot(model, manifest, store=store, prompts_file=prompts_file, classes_file=classes)
    cls = read_class_list(classes)
    index = {c: i for i, c in enumerate(cls)}
    target = [index[it.labels[0]] for it in items]
    pred = scores.argmax(dim=1).tolist()
    spk = per_speaker(pred, target, [it.speaker for it in items])
    accs = [v["accuracy"] for v in spk.values()]
    res["per_speaker"] = spk
    res["speaker_mean"] = sum(accs) / len(accs)
    res["speaker_min"] = min(accs)
    res["n_speakers"] = len(spk)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="zero-shot digit classification with per-speaker accuracy")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--prompt", action="append", help="template with {} (repeatable: an ensemble)")
    ap.add_argument("--store", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        res = evaluate(a.model, a.manifest, a.classes, a.prompt or ["{}"], a.store)
    except AudioclError as e:
        print(f"eval_digits: error: {e}", file=sys.stderr)
        return 2
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({"manifest": a.manifest, "top1": res["top1"], "speaker_mean": res["speaker_mean"],
                      "speaker_min": res["speaker_min"], "n_items": res["n_items"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
