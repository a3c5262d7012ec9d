#!/usr/bin/env python3
"""Stage 1 of clasp_speech: manifests from the stage-0 synthetic corpus.

Writes under ``<out>``:

- ``all.jsonl``: every clip (for feature extraction);
- ``en/{train,val}.jsonl``: English clips for the MiniLM-aligned model;
- ``en/test_digits.jsonl``: English held-out-voice clips of a single digit word
  (or a phrase naming one digit), labelled ``zero``..``nine``: the synthetic
  zero-shot proxy on which design decisions are made;
- ``en/test_retrieval.jsonl``: English held-out-voice clips, one per distinct
  text (speech-to-text retrieval needs one true text per clip);
- ``ml/{train,val}.jsonl``: all languages (multilingual model);
- ``ml/test_retrieval.jsonl``: all languages, held-out voices, one clip per
  distinct text, own-language transcript only;
- ``ml/test_digits_<lang>.jsonl``: held-out-voice digit clips per language
  (cross-language retrieval);
- ``digit_classes.txt`` (``zero``..``nine``).

Refuses a corpus in which a held-out voice variant (or flite voice) of val or
test is also spoken in train, or an id/clip sits in two splits.

    python local/make_manifests.py --corpus data/corpus --out data/manifests
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from audiocl.data.manifest import AudioItem, read_manifest, write_manifest
from audiocl.errors import AudioclError

DIGITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def voice_key(it: AudioItem) -> str:
    """What the split holds out: the espeak variant or the flite voice (any language)."""
    c = it.custom
    return f"flite:{c['voice']}" if c["engine"] == "flite" else f"espeak-variant:{c['variant']}"


def check_heldout(items: list[AudioItem]) -> dict[str, set[str]]:
    """Voice keys per split; raises when a val/test voice key is also in train."""
    keys: dict[str, set[str]] = defaultdict(set)
    ids: set[str] = set()
    for it in items:
        if it.id in ids:
            raise AudioclError(f"duplicate id {it.id}")
        ids.add(it.id)
        keys[it.split or ""].add(voice_key(it))
    for s in ("val", "test"):
        leak = keys[s] & keys["train"]
        if leak:
            raise AudioclError(f"held-out {s} voices also in train: {sorted(leak)[:5]}")
    if keys["val"] & keys["test"]:
        raise AudioclError(f"voices in both val and test: {sorted(keys['val'] & keys['test'])[:5]}")
    return keys


def _unique_texts(items: list[AudioItem]) -> list[AudioItem]:
    seen: set[str] = set()
    out = []
    for it in items:
        t = it.texts[0]
        if t not in seen:
            seen.add(t)
            out.append(AudioItem.from_dict(it.to_dict() | {"texts": [t]}))
    return out


def make(corpus: Path, out: Path) -> dict[str, int]:
    items = list(read_manifest(corpus / "corpus.jsonl", resolve_paths=False))
    if not items:
        raise AudioclError(f"{corpus / 'corpus.jsonl'} holds no clips")
    check_heldout(items)
    # absolute audio paths: the manifests live in two folder depths (all.jsonl, en/, ml/)
    root = corpus.resolve()
    fixed = [AudioItem.from_dict(it.to_dict() | {"path": str(root / it.path)}) for it in items]
    en = [it for it in fixed if it.language == "en"]
    sets: dict[str, list[AudioItem]] = {
        "all": fixed,
        "en/train": [it for it in en if it.split == "train"],
        "en/val": [it for it in en if it.split == "val"],
        "en/test_digits": [it for it in en if it.split == "test" and it.labels],
        "en/test_retrieval": _unique_texts([it for it in en if it.split == "test"]),
        "ml/train": [it for it in fixed if it.split == "train"],
        "ml/val": [it for it in fixed if it.split == "val"],
        "ml/test_retrieval": _unique_texts([it for it in fixed if it.split == "test"]),
    }
    for lang in sorted({it.language for it in fixed} - {"en"}):
        sets[f"ml/test_digits_{lang}"] = [it for it in fixed if it.split == "test" and it.language == lang
                                          and it.custom["kind"] == "digit"]
    if sets["ml/train"] and len(sets["ml/train"]) > len(sets["en/train"]):
        sets["ml/test_digits_en"] = [it for it in en if it.split == "test" and it.custom["kind"] == "digit"]
    counts = {}
    for name, its in sets.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        counts[name] = write_manifest(its, out / f"{name}.jsonl")
    (out / "digit_classes.txt").write_text("".join(f"{c}\n" for c in DIGITS_EN))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="per-split manifests from the clasp_speech corpus")
    ap.add_argument("--corpus", required=True, help="stage-0 folder (corpus.jsonl)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        counts = make(Path(args.corpus), Path(args.out))
    except AudioclError as e:
        print(f"make_manifests: error: {e}", file=sys.stderr)
        return 2
    print("manifests: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
