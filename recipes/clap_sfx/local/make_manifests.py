#!/usr/bin/env python3
"""Stage 1 of clap_sfx: per-split manifests from the stage-0 corpus.

Writes ``<out>/{all,train,val,test,zeroshot}.jsonl`` with audiocl's manifest
writer, ``<out>/zeroshot_classes.txt`` (the held-out labels, one a line) and
``<out>/prompts.txt`` (zero-shot prompt templates). Refuses a corpus in which
a source file or a recording group (numbered takes of one sound) reaches two
splits, or a held-out label reaches training.

    python local/make_manifests.py --corpus data/corpus --out data/manifests
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from audiocl.data.manifest import read_manifest, write_manifest
from audiocl.errors import AudioclError

SPLITS = ("train", "val", "test", "zeroshot")


def make(corpus: Path, out: Path) -> dict[str, int]:
    items = list(read_manifest(corpus / "corpus.jsonl", resolve_paths=False))
    stats = json.loads((corpus / "corpus_stats.json").read_text())
    heldout = set(stats["heldout"])
    split_of_file: dict[str, set[str]] = defaultdict(set)
    split_of_group: dict[str, set[str]] = defaultdict(set)
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for it in items:
        if it.split not in by_split:
            raise AudioclError(f"{it.id}: unknown split {it.split!r}")
        split_of_file[it.custom["source_file"]].add(it.split)
        split_of_group[it.custom.get("group", it.custom["source_file"])].add(it.split)
        if it.split != "zeroshot" and heldout & set(it.labels):
            raise AudioclError(f"{it.id}: held-out label {it.labels} in split {it.split}")
        by_split[it.split].append(it)
    leaks = sorted(f for f, s in split_of_file.items() if len(s) > 1)
    if leaks:
        raise AudioclError(f"source files in two splits: {leaks[:5]}")
    leaks = sorted(g for g, s in split_of_group.items() if len(s) > 1)
    if leaks:
        raise AudioclError(f"recording groups in two splits: {leaks[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"all": write_manifest(items, out / "all.jsonl")}
    for s in SPLITS:
        counts[s] = write_manifest(by_split[s], out / f"{s}.jsonl")
    present = sorted({lab for it in by_split["zeroshot"] for lab in it.labels})
    (out / "zeroshot_classes.txt").write_text("".join(f"{c}\n" for c in present))
    prompts = json.loads((corpus / "prompts.json").read_text())
    (out / "prompts.txt").write_text("".join(f"{p}\n" for p in prompts))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="per-split manifests from the clap_sfx corpus")
    ap.add_argument("--corpus", required=True, help="stage-0 folder (corpus.jsonl, corpus_stats.json)")
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
