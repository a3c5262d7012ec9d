#!/usr/bin/env python3
"""Stage 6 of trimodal_audio: RESULTS.md from the JSON the earlier stages wrote.

Every number in the file is read from a file under data/ or exp/; the command
that produced it is printed beside the table (or in exp/**/eval_command.txt).

    python local/write_results.py --data data --exp exp --out RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
from stage_timings import read_timings  # noqa: E402

TASKS = ("higher", "control")
LOSSES = ("symile", "gram", "pairwise")
LABEL = {"symile": "Symile (MIP)", "gram": "GRAM (volume)", "pairwise": "pairwise CLIP (cosine)"}
TARGETS = ("note", "speech", "text")


def _load(p: Path) -> Any:
    return json.loads(p.read_text()) if p.is_file() else None


def _runs(exp: Path, task: str, loss: str, miss: bool) -> list[Path]:
    pat = re.compile(rf"^{loss}_s\d+{'_miss' if miss else ''}$")
    return sorted(d for d in (exp / task).glob(f"{loss}_s*") if pat.match(d.name))


def _ms(vals: list[float]) -> str:
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}"


def classlevel(exp: Path, task: str, loss: str, miss: bool, set_name: str = "test") -> dict[str, list[float]]:
    """target -> accuracies over seeds (plus 'mean' = mean over the targets of each seed)."""
    out: dict[str, list[float]] = {}
    for d in _runs(exp, task, loss, miss):
        res = _load(d / "eval" / "classlevel.json")
        if res is None or set_name not in res["sets"]:
            continue
        tg = res["sets"][set_name]["targets"]
        for t, v in tg.items():
            out.setdefault(t, []).append(v["accuracy"])
        out.setdefault("mean", []).append(float(np.mean([v["accuracy"] for v in tg.values()])))
    return out


def _chance(exp: Path, task: str) -> dict[str, float]:
    """Chance per target on the complete test set, from any evaluated model (it does not depend on the model)."""
    for loss in LOSSES:
        for d in _runs(exp, task, loss, False):
            res = _load(d / "eval" / "classlevel.json")
            if res and "test" in res["sets"]:
                return {t: v["chance"] for t, v in res["sets"]["test"]["targets"].items()}
    return {}


def write(data: Path, exp: Path, out: Path) -> str:
    L: list[str] = []
    add = L.append
    corpus = _load(data / "corpus" / "corpus_stats.json") or {}
    info = _load(data / "arrays" / "arrays_info.json") or {}
    structure = _load(data / "arrays" / "structure.json") or {}

    add("# trimodal_audio: results")
    add("")
    add("Written by `local/write_results.py` from `data/` and `exp/` (do not edit by hand). "
        "Reproduce everything with `./run.sh` from this folder.")  # fmt: skip
    add("")

    # ------------------------------------------------------------ the task
    add("## Task and data")
    add("")
    langs, instr = corpus.get("languages", []), corpus.get("instruments", [])
    add(f"- languages (speech, espeak-ng): {', '.join(langs)}; instruments (one GM note, fluidsynth): "
        f"{', '.join(instr)}; {corpus.get('clips_per_class', '?')} clips per class, split by clip "
        f"(speech {corpus.get('speech', {}).get('splits')}, notes {corpus.get('notes', {}).get('splits')}).")  # fmt: skip
    add(f"- speech: {corpus.get('speech', {}).get('seconds', '?')} s of audio; notes: "
        f"{corpus.get('notes', {}).get('seconds', '?')} s.")  # fmt: skip
    files = info.get("files", {})
    if files:
        counts = "; ".join(
            f"{task}: " + ", ".join(f"{sp} {files.get(f'{task}_{sp}', {}).get('rows')}" for sp in ("train", "val", "test"))
            for task in TASKS
        )  # fmt: skip
        add(f"- tuples per task ({counts}); tower inputs {info.get('dims')} "
            "(pooled log-mel statistics; 5 slots x 384-d frozen MiniLM word vectors; last column = missingness flag).")  # fmt: skip
    add("- **higher**: text slot *l* (language of the speech) names the note's instrument *k*; the other slots "
        "name the other instruments in random order. **control**: slot *l* names *k*, the other slots are blank.")  # fmt: skip
    add("- a retrieval is right when the completed triple is valid (Symile-M3's class-level protocol, "
        "`local/evaluate.py`); the chance rows below are a random candidate's accuracy on the same test tuples.")  # fmt: skip
    add("")

    # ---------------------------------------------------- feature probe
    add("## Clip features (linear probe, 5-fold)")
    add("")
    add("| features | classes | accuracy | command |")
    add("|---|---|---|---|")
    for m, cls in (("speech", "language"), ("note", "instrument")):
        p = _load(exp / "probe" / f"{m}.json")
        if p:
            add(f"| pooled log-mel of {m} clips | {cls} | {100 * p['accuracy_mean']:.1f} ± {100 * p['accuracy_std']:.1f} | "
                f"`audiocl eval probe --embeddings data/features/{m}.npz --tower {m} --k 5 --out exp/probe/{m}.json` |")  # fmt: skip
    add("")

    # ---------------------------------------------------- structure
    n_train = int(files.get("higher_train", {}).get("rows") or 1)
    bias = 119 * 4 / (2 * n_train * np.log(2))
    if structure:
        add("## Is the task higher-order? (ground-truth classes, no model)")
        add("")
        add("Accuracy on the test tuples of the best predictor of each target's class from the *classes* of the "
            "given modalities (most frequent target class per given class, counted on the training tuples), "
            "from `data/arrays/structure.json` (`local/make_arrays.py`). Mutual information is the plug-in "
            "estimate on the training tuples (bits; its upward bias is about (|A|-1)(|B|-1) / (2 N ln 2): "
            f"{bias:.3f} here for 120 texts x 5 classes and N = {n_train}, so the higher task's values are "
            "bias, not information).")  # fmt: skip
        add("")
        add("| task | note <- speech | note <- text | note <- speech+text | speech <- note | speech <- text | "
            "speech <- note+text | text <- speech | text <- note | text <- speech+note | I(speech;text) | I(note;text) |")  # fmt: skip
        add("|---|" + "---|" * 11)
        for task in TASKS:
            s = structure.get(task)
            if not s:
                continue
            a = s["best_predictor_accuracy_test"]
            mi = s["mutual_information_bits_train"]
            cells = [a["note"]["speech"], a["note"]["text"], a["note"]["speech+text"], a["speech"]["note"],
                     a["speech"]["text"], a["speech"]["note+text"], a["text"]["speech"], a["text"]["note"],
                     a["text"]["speech+note"]]  # fmt: skip
            add(f"| {task} | " + " | ".join(f"{100 * c:.1f}" for c in cells)
                + f" | {mi['speech;text']:.3f} | {mi['note;text']:.3f} |")  # fmt: skip
        add("")

    # ---------------------------------------------------- main results
    add("## Zero-shot multi-way retrieval (class-level, test split)")
    add("")
    seeds = sorted({d.name.split("_s")[1] for t in TASKS for loss in LOSSES for d in _runs(exp, t, loss, False)})
    add(f"Top-1 accuracy (%), mean ± std over training seeds {', '.join(seeds)}; target <- the other two. "
        "Each model is scored with the similarity of its own objective.")  # fmt: skip
    add("")
    add("| task | model | note | speech | text | mean |")
    add("|---|---|---|---|---|---|")
    summary: dict[tuple[str, str], dict[str, list[float]]] = {}
    for task in TASKS:
        ch = _chance(exp, task)
        if ch:
            add(f"| {task} | chance (random candidate) | " + " | ".join(f"{100 * ch[t]:.1f}" for t in TARGETS)
                + f" | {100 * np.mean([ch[t] for t in TARGETS]):.1f} |")  # fmt: skip
        for loss in LOSSES:
            r = classlevel(exp, task, loss, False)
            summary[(task, loss)] = r
            if r:
                add(f"| {task} | {LABEL[loss]} | " + " | ".join(_ms(r.get(t, [])) for t in (*TARGETS, "mean")) + " |")
    add("")
    add("Commands (seed 0; the others differ only in `train.seed`), from `exp/<task>/<loss>_s<seed>/*_command.txt`:")
    add("")
    add("```")
    for task in TASKS:
        for loss in LOSSES:
            d = exp / task / f"{loss}_s{seeds[0] if seeds else 0}"
            for f in ("train_command.txt", "eval_command.txt"):
                if (d / f).is_file():
                    add((d / f).read_text().strip())
    add("```")
    add("")

    # ---------------------------------------------------- the claims
    def mean_of(task: str, loss: str, key: str = "mean") -> float | None:
        v = summary.get((task, loss), {}).get(key)
        return 100 * float(np.mean(v)) if v else None

    add("## What the numbers say")
    add("")
    for loss in ("symile", "gram"):
        a, b = mean_of("higher", loss), mean_of("higher", "pairwise")
        if a is not None and b is not None:
            verdict = "meets" if a - b >= 20 else "does NOT meet"
            add(f"- higher-order task: {LABEL[loss]} {a:.1f}% vs pairwise CLIP {b:.1f}% (mean over targets): "
                f"{a - b:+.1f} points, {verdict} the issue's bar of +20.")  # fmt: skip
            # seed by seed (the same seed trains both models on the same tuples)
            mine, base = summary.get(("higher", loss), {}).get("mean", []), summary.get(("higher", "pairwise"), {}).get("mean", [])
            if len(mine) == len(base) > 1:
                gaps = [100 * (x - y) for x, y in zip(mine, base)]
                add(f"  Per seed: {', '.join(f'{g:+.1f}' for g in gaps)} points (smallest {min(gaps):+.1f}).")
            if loss == "gram" and a - b < 20:
                add("  GRAM learns this task slowly and only from many distinct tuples; see README.md, "
                    "'GRAM investigation'.")  # fmt: skip
    ctl = [mean_of("control", loss) for loss in LOSSES]
    if all(v is not None for v in ctl):
        add(f"- control task: {', '.join(f'{LABEL[loss]} {v:.1f}%' for loss, v in zip(LOSSES, ctl))}; "
            f"spread {max(ctl) - min(ctl):.1f} points.")  # type: ignore[arg-type]  # fmt: skip
    add("")

    # ---------------------------------------------------- missingness
    add(f"## Missing modalities (trained with each modality dropped with p = {info.get('missing_prob', '?')})")
    add("")
    add("Symile's approach: a missing input is replaced by zeros (the training mean of the standardised "
        "features) and a missingness indicator column is set to 1 in the tower's input. Test sets: complete, "
        "or one modality missing from every tuple (that modality cannot be a target there). Top-1 %, seed "
        f"{seeds[0] if seeds else 0}.")  # fmt: skip
    add("")
    add("| task | model | complete: note / speech / text | no speech: note / text | no note: speech / text | "
        "no text: note / speech |")  # fmt: skip
    add("|---|---|---|---|---|---|")
    for task in TASKS:
        for loss in LOSSES:
            runs = _runs(exp, task, loss, True)
            res = _load(runs[0] / "eval" / "classlevel.json") if runs else None
            if not res:
                continue
            cells = []
            for set_name, tg in (("test", TARGETS), ("no_speech", ("note", "text")), ("no_note", ("speech", "text")),
                                 ("no_text", ("note", "speech"))):  # fmt: skip
                s = res["sets"].get(set_name, {}).get("targets", {})
                cells.append(" / ".join(f"{100 * s[t]['accuracy']:.1f}" if t in s else "n/a" for t in tg))
            add(f"| {task} | {LABEL[loss]} | " + " | ".join(cells) + " |")
    add("")
    add("Without one query modality the higher-order target is undetermined (chance is the right answer); "
        "in the control task the text alone still determines note and speech.")  # fmt: skip
    add("")

    # ---------------------------------------------------- item-level CLI
    add("## Item-level multi-way retrieval (`audiocl eval multiway`), seed 0")
    add("")
    add("The exact test clip among all N test candidates. About N/5 candidates share the right class, so "
        "even a perfect class-level model has R@1 of about 5/N (control texts: 1/25 of the candidates, many of "
        "them identical vectors, which rank pessimistically); shown as a check that the CLI path and "
        "`local/evaluate.py` agree on which models learned something (MRR, R@10).")  # fmt: skip
    add("")
    add("| task | model | target | R@1 | R@10 | MRR | command |")
    add("|---|---|---|---|---|---|---|")
    for task in TASKS:
        for loss in LOSSES:
            d = exp / task / f"{loss}_s{seeds[0] if seeds else 0}"
            res = _load(d / "eval" / "multiway_items.json")
            if not res:
                continue
            for t in TARGETS:
                v = res["targets"].get(t)
                if v:
                    cmd = (f"`audiocl eval multiway --model {d}/train/model --arrays data/arrays/{task}_test.npz "
                           f"--loss {loss} --out {d}/eval/multiway_items.json`")  # fmt: skip
                    add(f"| {task} | {LABEL[loss]} | {t} | {100 * v['R@1']:.2f} | {100 * v['R@10']:.2f} | "
                        f"{v['MRR']:.4f} | {cmd if t == 'note' else ''} |")  # fmt: skip
    add("")

    # ---------------------------------------------------- timings
    add("## Wall time")
    add("")
    last = read_timings(exp / "timings.tsv")  # each stage's latest row; "total" rows left out
    if last:
        add(f"Per stage, as `run.sh` logged them (`exp/timings.tsv`; last entry of each stage; 1-minute load "
            f"average when it ended; {platform.machine()}, 2 CPU cores shared with other jobs).")  # fmt: skip
        add("")
        add("| stage | what | seconds | load |")
        add("|---|---|---|---|")
        for t in last:
            add(f"| {t.stage} | {t.name} | {t.seconds} | {t.load} |")
        add(f"| {last[0].stage}-{last[-1].stage} | sum of the stages above | {sum(t.seconds for t in last)} | |")
    add("")
    text = "\n".join(L) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--exp", default="exp")
    ap.add_argument("--out", default="RESULTS.md")
    args = ap.parse_args(argv)
    write(Path(args.data), Path(args.exp), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
