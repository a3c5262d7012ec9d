#!/usr/bin/env python3
"""Zero-shot spoken-digit classification, overall, per speaker and per class.

Calls :func:`audiocl.eval.zeroshot.zeroshot` (the library's protocol: class
names ``zero``..``nine`` put into the prompt templates, text embeddings averaged
over templates, cosine against the clip embedding, pessimistic ties) grouped by
the manifest's ``speaker``, and copies the library's per-speaker top-1 under the
names RESULTS.md reads (``per_speaker``, ``speaker_mean``, ``speaker_min``).

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

from audiocl.errors import AudioclError


def evaluate(model: str, manifest: str, classes: str, prompts: list[str], store: str | None) -> dict:
    from audiocl.eval.zeroshot import check_template, read_class_list, read_items, zeroshot
    from audiocl.models import load_model

    templates = [check_template(t, "--prompt") for t in prompts]
    items = read_items(manifest)
    res, _ = zeroshot(load_model(model), items, read_class_list(classes), templates, group_by="speaker",
                      store=store, source=manifest)
    g = res["groups"]["speaker"]
    res["per_speaker"] = {s: {"accuracy": v["top1"], "n": v["n_items"]} for s, v in g["per_group"].items()}
    res["speaker_mean"] = g["mean"]["top1"]
    res["speaker_min"] = g["min"]["top1"]
    res["n_speakers"] = g["n_groups"]
    res.update({"eval": "zeroshot", "model": model, "manifest": manifest, "split": None})
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
    from audiocl.eval.report import write_json

    try:
        res = evaluate(a.model, a.manifest, a.classes, a.prompt or ["{}"], a.store)
        write_json(res, a.out)
    except AudioclError as e:
        print(f"eval_digits: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"manifest": a.manifest, "top1": res["top1"], "speaker_mean": res["speaker_mean"],
                      "speaker_min": res["speaker_min"], "n_items": res["n_items"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
