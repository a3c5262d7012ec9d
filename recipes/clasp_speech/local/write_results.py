#!/usr/bin/env python3
"""Stage 7 of clasp_speech: RESULTS.md from the measured outputs.

Every number comes from a file the earlier stages wrote: corpus statistics
(stage 0), per-stage timings and load averages (run.sh), training summaries
(stages 3-5, 10-11) and evaluation JSONs (stages 6, 12). Missing inputs are reported as
missing, never filled in. The development log (how often FSDD was evaluated
while the recipe was designed) is read from ``fsdd_dev_log.md`` beside run.sh.

    python local/write_results.py --data data --exp exp --out RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
from stage_timings import read_timings  # noqa: E402

MODELS = {"en_clip": "English, InfoNCE (clip)", "en_cwcl": "English, CWCL", "ml_clip": "multilingual, InfoNCE",
          "wh_clip": "Whisper tiny.en (frozen) + MiniLM, InfoNCE", "wh_cwcl": "Whisper tiny.en (frozen) + MiniLM, CWCL"}


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    return None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _speech_block(ret: dict[str, Any]) -> dict[str, Any] | None:
    """Speech-to-text HITS@1, MRR, meanR of an `audiocl eval retrieval --speech` JSON."""
    a2t = ret.get("audio_to_text")
    return a2t if isinstance(a2t, dict) and "HITS@1" in a2t else None


def write(data: Path, exp: Path, out: Path) -> str:
    stats = _json(data / "corpus" / "corpus_stats.json") or {}
    timings = read_timings(exp / "timings.tsv")  # each stage's latest row
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    L: list[str] = []
    L.append("# clasp_speech results\n")
    L.append("Written by `local/write_results.py` (stage 7) from the files the run produced; "
             "re-running `./run.sh` rewrites it. Training data: synthetic speech only (espeak-ng, flite). "
             "FSDD (`../shared/data/fsdd-dev`, 2000 real recordings of 0-9, 8 kHz) is a test set only.\n")
    L.append("## Command\n")
    L.append("The whole recipe (stages already done are skipped; `--force true` redoes them):\n")
    L.append("```\ncd recipes/clasp_speech && ./run.sh\n```\n")
    if (exp / "commands.log").is_file():
        L.append("The invocations that made the outputs below (stages already done are skipped):\n")
        L.append("```\n" + (exp / "commands.log").read_text().strip() + "\n```\n")
    L.append(f"Machine: {platform.machine()}, {platform.system()}, {os.cpu_count()} CPU cores (shared), "
             f"CPU only; commit {rev or 'unknown'}.\n")

    L.append("## Zero-shot spoken digits on real human speech (FSDD)\n")
    L.append("Prompt `{}` with the class names `zero`..`nine`; 10 classes, chance 10 %. "
             "Per-speaker numbers: top-1 % over each speaker's clips.\n")
    fsdd = {m: _json(exp / m / "eval" / "zeroshot_fsdd.json") for m in MODELS}
    synth = {m: _json(exp / m / "eval" / "zeroshot_synth_digits.json") for m in MODELS}
    speakers = sorted({s for r in fsdd.values() if r for s in r.get("per_speaker", {})})
    head = "| model | FSDD top-1 % | top-5 % | speaker mean % | worst speaker % | " + \
        " | ".join(speakers) + " | synthetic held-out voices top-1 % (proxy) |"
    L.append(head)
    L.append("|" + "---|" * (6 + len(speakers)))
    for m, name in MODELS.items():
        r, s = fsdd[m], synth[m]
        if r is None and s is None:
            continue
        if r is None:
            L.append(f"| {name} | missing | | | | " + " | ".join("" for _ in speakers) +
                     f" | {_pct(s['top1']) if s else '-'} |")
            continue
        ps = r.get("per_speaker", {})
        cells = " | ".join(_pct(ps[sp]["accuracy"]) if sp in ps else "-" for sp in speakers)
        L.append(f"| {name} | **{_pct(r['top1'])}** | {_pct(r.get('top5'))} | {_pct(r['speaker_mean'])} | "
                 f"{_pct(r['speaker_min'])} | {cells} | {_pct(s['top1']) if s else '-'} |")
    L.append("")
    n_per = {sp: next(r["per_speaker"][sp]["n"] for r in fsdd.values() if r and sp in r["per_speaker"])
             for sp in speakers}
    if n_per:
        L.append("Clips per speaker: " + ", ".join(f"{k} {v}" for k, v in n_per.items()) + ".\n")
    for m, name in MODELS.items():
        r = fsdd[m]
        if r and r.get("per_class"):
            L.append(f"Per class, {name}: " + ", ".join(
                f"{c} {_pct(v['accuracy'])}" for c, v in r["per_class"].items()) + ".\n")

    cw = _json(exp / "en_cwcl" / "eval" / "cwcl_weights.json")
    if cw:
        L.append(f"Why CWCL trails InfoNCE here (measured by `local/cwcl_weight_stats.py` on {cw['batches']} "
                 f"training batches of {cw['batch_size']}): MiniLM's similarities between unrelated short texts "
                 f"are high, so the mean off-diagonal weight `w_ij = (1 + <t_i, t_j>)/2` is "
                 f"{cw['mean_offdiag_weight']:.2f} and after row normalisation a clip's own text gets "
                 f"{_pct(cw['mean_own_pair_target_share'])} % of the target mass (uniform: "
                 f"{_pct(cw['uniform_share'])} %, InfoNCE: 100 %). The targets are nearly uniform and the "
                 f"speech tower gets little signal to tell `one` from `nine`. A batch also holds "
                 f"{cw['mean_duplicate_texts_per_batch']:.0f} repeated texts on average (digit words), "
                 f"which InfoNCE treats as negatives. This is CWCL as specified (no sharpening of the weights); "
                 f"a sharper weighting was not tried.\n")

    L.append("## Speech-to-text retrieval on held-out synthetic voices\n")
    L.append("Each clip's own text among all distinct test texts (one clip per text); "
             "held-out voices = espeak-ng variants and a flite voice never spoken in training.\n")
    L.append("| model | clips (= texts) | HITS@1 % | MRR | meanR | text-to-speech R@1 % |")
    L.append("|---|---|---|---|---|---|")
    for m, name in MODELS.items():
        ret = _json(exp / m / "eval" / "retrieval_synth.json")
        if ret is None:
            continue
        sp = _speech_block(ret) or {}
        t2a = ret.get("text_to_audio", {})
        L.append(f"| {name} | {ret.get('n_audio', '-')} | {_pct(sp.get('HITS@1'))} | "
                 f"{sp.get('MRR', float('nan')):.3f} | {sp.get('meanR', float('nan')):.1f} | {_pct(t2a.get('R@1'))} |")
    L.append("")

    cl = _json(exp / "ml_clip" / "eval" / "crosslingual.json")
    if cl:
        L.append("## Cross-language digit retrieval (multilingual model)\n")
        L.append("Query: a digit word spoken in language A (held-out voices); gallery: the ten digit words "
                 "written in language B; HITS@1 % (chance 10). Trained pairs: A = B, and any A to English "
                 "(de/fr/es digit clips also carry the English word). **Never paired in training**: "
                 "between two of de/fr/es, and English speech to de/fr/es text.\n")
        langs = cl["languages"]
        L.append("| speech \\ text | " + " | ".join(langs) + " |")
        L.append("|---|" + "---|" * len(langs))
        for a in langs:
            row = []
            for b in langs:
                p = cl["pairs"].get(f"{a}->{b}")
                cell = _pct(p["hits1"]) if p else "-"
                row.append(cell if p is None or p["kind"].startswith("never") is False else f"*{cell}*")
            n = next((cl["pairs"][f"{a}->{b}"]["n"] for b in langs if f"{a}->{b}" in cl["pairs"]), 0)
            L.append(f"| {a} ({n} clips) | " + " | ".join(row) + " |")
        L.append("")
        L.append("Italic: never paired in training. Mean HITS@1 by kind: " + ", ".join(
            f"{k} {_pct(v)} %" for k, v in cl["mean_hits1_by_kind"].items()) + ".\n")

    L.append("## Corpus (stage 0)\n")
    if stats:
        L.append(f"{stats['n_items']} clips ({stats['hours']} h) kept of {stats['n_planned']} planned "
                 f"({stats['dropped']} dropped: longer than 1.5 s after augmentation, or empty); "
                 f"synthesis took {stats['seconds']} s.\n")
        L.append("| | " + " | ".join(stats["by_split"]) + " |")
        L.append("|---|" + "---|" * len(stats["by_split"]))
        L.append("| clips | " + " | ".join(str(v) for v in stats["by_split"].values()) + " |")
        L.append("| distinct speakers (engine:voice+variant) | " + " | ".join(
            str(stats["n_speakers"].get(s, "-")) for s in stats["by_split"]) + " |")
        L.append("")
        L.append("By language: " + ", ".join(f"{k} {v}" for k, v in stats["by_language"].items()) +
                 "; by kind: " + ", ".join(f"{k} {v}" for k, v in stats["by_kind"].items()) +
                 "; by engine: " + ", ".join(f"{k} {v}" for k, v in stats["by_engine"].items()) + ".\n")
        L.append(f"Held-out espeak-ng variants: val {', '.join(stats['variants']['val'])}; "
                 f"test {', '.join(stats['variants']['test'])}. flite voices: "
                 + "; ".join(f"{k} {', '.join(v)}" for k, v in stats["flite_voices"].items())
                 + f". {stats['espeak_version']}.\n")

    L.append("## Training\n")
    L.append("| model | config | steps | best val loss (selects the checkpoint) |")
    L.append("|---|---|---|---|")
    for m, name in MODELS.items():
        ts = _json(exp / m / "train_summary.json")
        cmd = (exp / m / "command.txt").read_text().strip() if (exp / m / "command.txt").is_file() else ""
        if ts:
            L.append(f"| {name} | `{cmd}` | {ts.get('steps')} | {ts.get('best_metric', float('nan')):.4f} |")
    L.append("")

    if timings:
        L.append("## Wall time (this run)\n")
        L.append("| stage | what | seconds | 1-min load average at its end |")
        L.append("|---|---|---|---|")
        total, train_secs = 0, []
        for t in timings:
            L.append(f"| {t.stage} | {t.name} | {t.seconds} | {t.load} |")
            if t.stage in (3, 4, 5):
                train_secs.append(t.seconds)
            else:
                total += t.seconds
        wall = total + (max(train_secs) if train_secs else 0)
        L.append(f"| | **wall time** (stages 3-5 run side by side: their longest counts) | "
                 f"**{wall}** ({wall / 60:.1f} min) | |")
        L.append("")
        L.append("The machine (2 cores) was shared with other jobs during the run; the load averages say how "
                 "much. Stage 0 of this run was started by hand with run.sh's default arguments "
                 "(`local/build_corpus.py --out data/corpus --n-en 10000 --n-ml 1500 --jobs 2`) while run.sh "
                 "was being written; its time is the script's own measurement.\n")

    dev_log = out.parent / "fsdd_dev_log.md"
    if dev_log.is_file():
        L.append(dev_log.read_text().strip() + "\n")
    text = "\n".join(L)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="RESULTS.md for clasp_speech")
    ap.add_argument("--data", default="data")
    ap.add_argument("--exp", default="exp")
    ap.add_argument("--out", default="RESULTS.md")
    a = ap.parse_args(argv)
    write(Path(a.data), Path(a.exp), Path(a.out))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
