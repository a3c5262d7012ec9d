"""The results table of a zero-shot fold-protocol recipe (esc50_zeroshot, urbansound8k_zeroshot).

Reads the JSON written by `audiocl eval zeroshot` and writes
``results.json`` (per-fold top-1/top-5, their mean and standard deviation
over folds, accuracy over all items) and ``results.md`` (the same as a
Markdown table). Every number is copied from the evaluator's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build(ev: dict, dataset: str, n_folds: int, command: str) -> dict:
    folds = ev.get("folds")
    if not isinstance(folds, dict) or not folds:
        raise SystemExit("the evaluation has no per-fold results: the manifest's items lack custom['fold']")
    missing = [str(f) for f in range(1, n_folds + 1) if str(f) not in folds]
    keys = ("top1", "top5")
    return {
        "dataset": dataset,
        "protocol": f"{n_folds}-fold (zero-shot: each fold's accuracy on its own items, then the mean)",
        "model": ev.get("model"),
        "n_items": ev.get("n_items"),
        "n_classes": ev.get("n_classes"),
        "folds": {f: {k: folds[f][k] for k in keys if k in folds[f]} for f in sorted(folds, key=int)},
        "folds_missing": missing,
        "mean": {k: ev["fold_mean"][k] for k in keys if k in ev.get("fold_mean", {})},
        "std": {k: ev["fold_std"][k] for k in keys if k in ev.get("fold_std", {})},
        "all_items": {k: ev[k] for k in keys if k in ev},
        "command": command,
    }


def markdown(res: dict) -> str:
    lines = [
        f"# {res['dataset']} zero-shot ({res['protocol']})",
        "",
        f"Model: `{res['model']}`; {res['n_items']} clips, {res['n_classes']} classes.",
        "",
        "| fold | top-1 (%) | top-5 (%) |",
        "|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    for f, v in res["folds"].items():
        lines.append(f"| {f} | {pct(v.get('top1'))} | {pct(v.get('top5'))} |")
    m, s = res["mean"], res["std"]
    lines.append(
        f"| **mean ± std** | **{pct(m.get('top1'))} ± {pct(s.get('top1'))}** "
        f"| **{pct(m.get('top5'))} ± {pct(s.get('top5'))}** |"
    )
    if res["folds_missing"]:
        lines += ["", f"Folds with no items (incomplete copy of the dataset?): {', '.join(res['folds_missing'])}"]
    lines += ["", f"Command: `{res['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", required=True, help="JSON written by audiocl eval zeroshot")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--folds", type=int, required=True, help="number of folds of the protocol")
    ap.add_argument("--command", default="", help="the recipe command line, recorded in the results")
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    a = ap.parse_args(argv)
    res = build(json.loads(Path(a.eval).read_text()), a.dataset, a.folds, a.command)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
