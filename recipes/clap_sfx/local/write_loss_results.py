#!/usr/bin/env python3
"""Stage 17 of clap_sfx: RESULTS_losses.md (the loss variants and the compositional
test) from the files stages 3-4 and 13-16 wrote.

Every number comes from a file of the run: each seed's ``command.txt``,
``train_summary.json``, ``train_seconds`` and ``eval/*.json`` under
``exp/<variant>/seed<N>/``, and the stage times in ``exp/clap_sfx/timings.tsv``.
Means and sample standard deviations (n - 1) are over the seeds found; a
difference from CLIP is called larger than the seed spread when
``|mean_v - mean_clip| > std_v + std_clip``.

    python local/write_loss_results.py --data data --exp exp --out RESULTS_losses.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_results import (  # noqa: E402
    _json,
    _last_json_line,
    commands_as_run,
    mean_std,
    seed_dirs,
    train_seconds,
)

#: exp/<name> -> (short name, what it is)
VARIANTS = {
    "clap_sfx": ("CLIP", "InfoNCE, the default (`conf/train.yaml`, stage 3)"),
    "loss_siglip": ("SigLIP", "sigmoid loss with a learnable bias, t = 10 and b = -10 at the start as in the paper "
                              "(`conf/train_loss_siglip.yaml`, model `conf/model_aisfx_siglip.yaml`)"),
    "loss_dcl": ("DCL", "decoupled contrastive loss, the positive out of the denominator (`conf/train_loss_dcl.yaml`)"),
    "loss_multipos": ("multi-positive", "every caption of a clip a positive; a caption several clips of the batch "
                                        "share (same label) is a positive of each (`conf/train_loss_multipos.yaml`)"),
    "loss_clip_au": ("CLIP + align/unif", "CLIP + alignment + uniformity, weights 1, s = 2 (`conf/train_loss_clip_au.yaml`)"),
    "loss_cwcl": ("CWCL", "weights (1 + cos) / 2 from the frozen MiniLM text embeddings (`conf/train_loss_cwcl.yaml`)"),
}
COMPA = {"compa_clip": "CLIP, no hard negatives", "compa_hardneg": "hard-negative InfoNCE (2 swapped captions a clip)"}

#: (row label, file under seedN/, keys into its JSON, scale)
ROWS = [
    ("held-out classes, zero-shot top-1 %", "eval/zeroshot_heldout.json", ("top1",), 100),
    ("held-out classes, zero-shot top-5 %", "eval/zeroshot_heldout.json", ("top5",), 100),
    ("test split (seen classes), zero-shot top-1 %", "eval/zeroshot_test_seen.json", ("top1",), 100),
    ("ESC-50 sample, zero-shot top-1 %", "eval/zeroshot_esc50_sample.json", ("top1",), 100),
    ("text-to-audio R@1 %", "eval/retrieval_test.json", ("text_to_audio", "R@1"), 100),
    ("text-to-audio R@10 %", "eval/retrieval_test.json", ("text_to_audio", "R@10"), 100),
    ("text-to-audio mAP@10 %", "eval/retrieval_test.json", ("text_to_audio", "mAP@10"), 100),
    ("audio-to-text R@10 %", "eval/retrieval_test.json", ("audio_to_text", "R@10"), 100),
    ("modality gap ‖μ_audio − μ_text‖ (test)", "eval/diagnostics_test.json", ("pairs", "audio|text", "gap"), 1),
    ("alignment E‖a − t‖² (test, lower = closer)", "eval/diagnostics_test.json", ("pairs", "audio|text", "alignment"), 1),
    ("uniformity, audio (test, lower = more uniform)", "eval/diagnostics_test.json", ("uniformity", "audio"), 1),
    ("uniformity, text (test)", "eval/diagnostics_test.json", ("uniformity", "text"), 1),
]
COMPA_ROWS = [
    ("caption choice among 3, all clips %", ("accuracy",), ("chance",)),
    ("sequence clips (A followed by B) %", ("per_kind", "sequence", "accuracy"), ("per_kind", "sequence", "chance")),
    ("overlap clips (A and B at the same time) %", ("per_kind", "overlap", "accuracy"), ("per_kind", "overlap", "chance")),
    ("order only: right order vs reversed, sequence clips %", ("order", "accuracy"), ("order", "chance")),
]


def _get(d, keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def values(exp: Path, name: str, rel: str, keys: tuple[str, ...], scale: float) -> list[float]:
    out = []
    for d in seed_dirs(exp, name):
        v = _get(_json(d / rel), keys)
        if v is not None:
            out.append(scale * float(v))
    return out


def _ms(xs: list[float]) -> tuple[float, float] | None:
    if len(xs) < 2:
        return None
    return statistics.mean(xs), statistics.stdev(xs)


def cell(xs: list[float], digits: int) -> str:
    """write_results.mean_std, then the per-seed values."""
    text = mean_std(xs, digits)
    return text + " (" + " / ".join(f"{x:.{digits}f}" for x in xs) + ")" if len(xs) > 1 else text


def beyond_spread(a: list[float], b: list[float]) -> bool | None:
    ma, mb = _ms(a), _ms(b)
    if ma is None or mb is None:
        return None
    return abs(ma[0] - mb[0]) > ma[1] + mb[1]


def write(data: Path, exp: Path, out: Path) -> str:
    from audiocl.plots import seed_bars

    present = [n for n in VARIANTS if seed_dirs(exp, n)]
    compa = [n for n in COMPA if seed_dirs(exp, n)]
    L = ["# clap_sfx: the loss family and the compositional test\n",
         "Written by `local/write_loss_results.py` (stage 17) from the files of the run; "
         "`./run.sh --stage 13 --stop-stage 17` (after stages 0-4) redoes it.\n"]
    L.append("## Commands\n")
    L.append("```\ncd recipes/clap_sfx\n./run.sh --stop-stage 4               # corpus, store, CLIP (the default), its evaluation\n"
             "./run.sh --stage 13 --stop-stage 17  # loss variants, compositional test, this file\n```\n")
    L.append("Each training, as run (`exp/<variant>/seedN/command.txt`); evaluation: stage 4's `evaluate()` "
             "(held-out-class and seen-class zero-shot, ESC-50 sample, retrieval on the test split) and "
             "`audiocl eval diagnostics --manifest data/manifests/test.jsonl` per seed (`diagnose()` in `run.sh`); "
             "the compositional test: `local/eval_compositional.py` on `data/compa/test.jsonl`.\n")
    L.append("```")
    L += commands_as_run(exp, present + compa)
    L.append("```\n")

    L.append("## Which loss (test splits; nothing chosen on them)\n")
    L.append("Same model (frozen aisfx + frozen MiniLM, the trained 2-layer audio MLP and temperature), data, "
             "optimiser, 10 epochs and seeds 0, 1, 2 for every loss; only the loss differs. Each run exports "
             "its checkpoint with the lowest val loss of its own objective. No loss hyperparameter was tuned: "
             "the papers' or the loss's defaults are used. Losses: "
             + "; ".join(f"**{VARIANTS[n][0]}**: {VARIANTS[n][1]}" for n in present) + ".\n")
    L.append("Cells: mean ± sample std over the seeds (then seed 0 / 1 / 2).\n")
    L.append("| metric | " + " | ".join(VARIANTS[n][0] for n in present) + " |")
    L.append("|---|" + "---|" * len(present))
    vals = {}
    for label, rel, keys, scale in ROWS:
        row = [values(exp, n, rel, keys, scale) for n in present]
        vals[label] = dict(zip(present, row))
        if any(row):
            digits = 1 if scale == 100 else 3
            L.append(f"| {label} | " + " | ".join(cell(x, digits) for x in row) + " |")
    L.append("")
    zs = _json(seed_dirs(exp, "clap_sfx")[0] / "eval" / "zeroshot_heldout.json") if present else None
    if zs:
        L.append(f"Held-out classes: {zs['n_items']} clips of {zs['n_classes']} classes never trained on "
                 f"(chance {100 / zs['n_classes']:.1f} %); the ESC-50 sample is 14 clips (one clip is 7 points).\n")
    # which differences from CLIP exceed the seed spread
    if "clap_sfx" in present:
        found = []
        for label, *_ in ROWS:
            base = vals[label].get("clap_sfx") or []
            for n in present[1:]:
                xs = vals[label].get(n) or []
                if beyond_spread(xs, base):
                    sign = "higher" if statistics.mean(xs) > statistics.mean(base) else "lower"
                    found.append(f"{VARIANTS[n][0]} {sign} on {label.split(' (')[0].split(' %')[0]} "
                                 f"({statistics.mean(xs):.3g} vs {statistics.mean(base):.3g})")
        L.append("Differences from CLIP larger than the seed spread (|Δ mean| > std + std_CLIP): "
                 + ("; ".join(found) + ". Every other difference from CLIP in the table is within it.\n" if found
                    else "none: every difference from CLIP in the table is within the seed spread.\n"))
    res_dir = out.parent / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    plot_rows = ["held-out classes, zero-shot top-1 %", "test split (seen classes), zero-shot top-1 %",
                 "text-to-audio R@10 %", "ESC-50 sample, zero-shot top-1 %",
                 "modality gap ‖μ_audio − μ_text‖ (test)", "uniformity, audio (test, lower = more uniform)"]
    runs = {VARIANTS[n][0]: {r: vals[r][n] for r in plot_rows if r in vals} for n in present}
    if present and seed_bars(runs, res_dir / "losses.png", plot_rows,
                             title="loss variants: mean over 3 seeds (bar), ± 1 std, each seed (dot)"):
        L.append("![loss variants](results/losses.png)\n")

    L.append("## Compositional test (CompA-style)\n")
    L.append("Two-event clips made by `audiocl.data.compose` (`local/build_compositions.py`, stage 15) from the "
             "single-label clips of each split: `A followed by B` (A's loudest 1 s window, then B's; 2 s) and "
             "`A and B at the same time` (the two windows summed; 1 s), events at -20 dBFS RMS, labels A ≠ B; "
             "kinds alternate. Each clip's hard negatives swap the composition: a sequence's are the reversed "
             "order and the overlap, an overlap's are both orders. 1500 training clips from the train split, "
             "200 val clips (checkpoint choice), 400 test clips from the test split (recordings never trained on). "
             "Both models are trained on the same clips from the same start (CLIP sees each clip's right caption "
             "only; the hard-negative loss also puts the clip's two swapped captions into its audio-to-text "
             "softmax) and are evaluated by picking the right caption among the clip's three "
             "(chance 1/3; order alone 1/2), as CompA does.\n")
    if compa:
        L.append("| metric | " + " | ".join(COMPA[n] for n in compa) + " | chance |")
        L.append("|---|" + "---|" * (len(compa) + 1))
        cvals = {}
        for label, keys, ckeys in COMPA_ROWS:
            row = [values(exp, n, "eval/caption_choice_test.json", keys, 100) for n in compa]
            ch = values(exp, compa[0], "eval/caption_choice_test.json", ckeys, 100)
            cvals[label] = row
            if any(row):
                L.append(f"| {label} | " + " | ".join(cell(x, 1) for x in row) + (f" | {ch[0]:.1f} |" if ch else " | - |"))
        L.append("")
        if len(compa) == 2:
            found = [f"{label.split(' %')[0]} ({statistics.mean(r[1]):.1f} vs {statistics.mean(r[0]):.1f} %)"
                     for label, r in cvals.items() if beyond_spread(r[1], r[0])]
            L.append("Hard negatives vs CLIP, differences larger than the seed spread: "
                     + ("; ".join(found) if found else "none") + ".\n")

    L.append("## Wall time\n")
    # every row of stages 13-17, not only each stage's latest: the variants may be run in several
    # invocations (--loss-variants, --seeds), each appending its own row
    tsv = exp / "clap_sfx" / "timings.tsv"
    rows = [r.split("\t") for r in tsv.read_text().splitlines()] if tsv.is_file() else []
    rows = [r for r in rows if len(r) == 4 and r[0].isdigit() and 13 <= int(r[0]) <= 17]
    if rows:
        L.append("Each `run.sh` invocation of stages 13-17, in order (`exp/clap_sfx/timings.tsv`):\n")
        L.append("| stage | what | seconds | load average at the end (2 cores) |")
        L.append("|---|---|---|---|")
        for r in rows:
            L.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
        L.append("\nThe machine was shared with other jobs; a load above 2 means a stage got part of the two "
                 "cores, so these are upper bounds.\n")
    secs = [t for n in present + compa if n != "clap_sfx" for d in seed_dirs(exp, n) if (t := train_seconds(d))]
    if secs:
        L.append(f"The {len(secs)} trainings of stages 13 and 16 took {sum(secs):.0f} s wall together "
                 "(each one's `train_seconds`, below; some ran side by side).\n")
    L.append("| variant | seed | steps | best val loss (own objective) | training wall s |")
    L.append("|---|---|---|---|---|")
    for n in present + compa:
        for d in seed_dirs(exp, n):
            t = _last_json_line(d / "train_summary.json") or {}
            secs, best = train_seconds(d), t.get("best_metric")
            name = VARIANTS[n][0] if n in VARIANTS else COMPA[n]
            L.append(f"| {name} | {d.name[4:]} | {t.get('steps', '-')} | "
                     f"{f'{best:.3f}' if best is not None else '-'} | {f'{secs:.0f}' if secs is not None else '-'} |")
    L.append("")
    text = "\n".join(L).rstrip() + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write RESULTS_losses.md for clap_sfx")
    ap.add_argument("--data", default="data")
    ap.add_argument("--exp", default="exp")
    ap.add_argument("--out", default="RESULTS_losses.md")
    args = ap.parse_args(argv)
    write(Path(args.data), Path(args.exp), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
