#!/usr/bin/env python3
"""Stage 21 of clap_sfx: RESULTS_student.md (the tinyCLAP-style students) from the files
stages 3-4, 10-11 and 18-20 wrote.

Every number comes from a file of the run: each seed's ``command.txt``,
``train_summary.json``, ``train_seconds`` and ``eval/*.json``, ``val/*.json`` under
``exp/<model>/seed<N>/``, ``exp/student/speed_test.json`` (``audiocl eval speed``)
and the stage times in ``exp/clap_sfx/timings.tsv``. Means and sample standard
deviations are over the seeds found; a difference is called larger than the seed
spread when ``|mean_a - mean_b| > std_a + std_b``.

    python local/write_student_results.py --data data --exp exp --out RESULTS_student.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_timings import read_timings  # noqa: E402
from write_loss_results import ROWS, beyond_spread, cell, values  # noqa: E402
from write_results import (  # noqa: E402
    _json,
    _last_json_line,
    commands_as_run,
    param_counts,
    seed_dirs,
    train_seconds,
)

#: exp/<name> -> (short name, what it is)
MODELS = {
    "clap_sfx": ("teacher", "the default model: pretrained aisfx (frozen) + trained projection, MiniLM text "
                            "(`conf/train.yaml`, stage 3); the student's teacher is its seed with the lowest val loss"),
    "scratch": ("CNN from scratch", "CNN10-tiny trained contrastively (CLIP loss) on the captions "
                                    "(`conf/train_scratch.yaml`, stage 10)"),
    "student_cos": ("student (tinyCLAP)", "the same CNN10-tiny trained towards the teacher's audio embeddings "
                                          "with tinyCLAP's loss, 1 - cos (stage 18)"),
    "student_sim": ("student (tinyCLAP + similarity)", "the same, plus the KL between the teacher's and the "
                                                       "student's in-batch audio-caption similarity distributions"),
}
VAL_ROWS = [
    ("val split (seen classes), zero-shot top-1 %", "val/zeroshot_val.json", ("top1",), 100),
    ("val text-to-audio R@10 %", "val/retrieval_val.json", ("text_to_audio", "R@10"), 100),
]
#: ROWS of write_loss_results without the diagnostics (not computed for these models)
TEST_ROWS = [r for r in ROWS if not r[1].startswith("eval/diagnostics")]


def _audio_params(exp: Path, name: str) -> int | None:
    dirs = seed_dirs(exp, name)
    if not dirs or not (dirs[0] / "train/model/model.safetensors").is_file():
        return None
    counts = param_counts(dirs[0] / "train/model")
    return sum(v for k, v in counts.items() if k.startswith("towers.audio."))


def write(data: Path, exp: Path, out: Path) -> str:
    present = [n for n in MODELS if seed_dirs(exp, n)]
    L = ["# clap_sfx: tinyCLAP-style students of the from-scratch CNN\n",
         "Written by `local/write_student_results.py` (stage 21) from the files of the run; "
         "`./run.sh --stage 18 --stop-stage 21` (after stages 0-4 and 9-11) redoes it.\n"]
    L.append("## Commands\n")
    L.append("```\ncd recipes/clap_sfx\n./run.sh --stop-stage 4                # corpus, stores, the teacher (default model)\n"
             "./run.sh --stage 9 --stop-stage 11   # the CNN from scratch\n"
             "./run.sh --stage 18 --stop-stage 21  # the students, their evaluation and timing, this file\n```\n")
    L.append("Each training, as run (`exp/<model>/seedN/command.txt`); evaluation: `evaluate()` and `validate()` "
             "in `run.sh`; timing: `exp/student/speed_test.log`.\n")
    L.append("```")
    L += commands_as_run(exp, present)
    speed = _json(exp / "student" / "speed_test.json")
    if speed is not None:
        names = " ".join(f"--model {k}={v['folder']}" for k, v in speed["models"].items())
        L.append(f"audiocl eval speed {names} --baseline {speed.get('baseline')} --manifest {speed['manifest']} "
                 f"--clips {speed['clips']} --threads 1 --repeats 3 --out exp/student/speed_test.json")
    L.append("```\n")

    L.append("## What was followed from the paper\n")
    L.append(
        "tinyCLAP (Paissan & Farella, Interspeech 2024) distils a CLAP's audio encoder into a small one with "
        "audio alone: the student's audio embedding, projected into the teacher's shared space, is pulled "
        "towards the teacher's embedding of the same clip by the negative cosine similarity (their Eq. 7; "
        "`tinyCLAP_loss` in their code), and the teacher's text encoder is kept as is, so the student is "
        "zero-shot without ever being trained on text. Here: the student is the from-scratch model's CNN10-tiny "
        "+ MLP projection into the 384-d space, the text side is the teacher's own (the frozen MiniLM, identity "
        "projection), and the loss is `1 - cos` (`loss.name=distill`, the same gradient as `-cos`). The "
        "teacher embeds each clip whole, once (`distill` section: `audiocl.train.teacher`), the student sees "
        "the random 2 s crops the from-scratch model trains on. Not followed: their pruning of the shared "
        "space (the embedding stays 384-d) and their PhiNet students (the CNN is the from-scratch model's, "
        "so the comparison is the same network trained two ways). The second variant adds **similarity "
        "distillation** (the KL between the teacher's and the student's in-batch audio-to-caption softmax, "
        "both directions, each at its own temperature), which tinyCLAP does not use; weights 1 and 1, not tuned.\n")
    L.append("Models: " + "; ".join(f"**{MODELS[n][0]}**: {MODELS[n][1]}" for n in present) + ".\n")
    teachers = sorted({m.group(1) for n in present if n.startswith("student_") for d in seed_dirs(exp, n)
                       if (c := d / "command.txt").is_file()
                       and (m := re.search(r"distill\.teacher=(\S+)", c.read_text()))})
    if teachers:
        L.append(f"Teacher of every student: `{'`, `'.join(teachers)}` (chosen on the val split's loss; its "
                 "numbers are that seed's in the teacher column).\n")

    L.append("## Size and CPU time per clip\n")
    if speed is not None:
        L.append(f"`audiocl eval speed` on the first {speed['clips']} clips of the test split "
                 f"(mean {next(iter(speed['models'].values()))['mean_clip_seconds']:.2f} s a clip), one clip a call, "
                 "one torch thread, CPU time of the process; median of 3 passes (range in brackets), the models "
                 "timed in turn in one process. The student variants share one network: `student` is "
                 "`student_cos` seed 0.\n")
        L.append("| model | audio parameters | front-end ms | audio tower ms | total ms | tower / teacher's | total / teacher's |")
        L.append("|---|---|---|---|---|---|---|")
        for k, r in speed["models"].items():
            L.append(f"| {k} | {r['audio_params']:,} | {r['frontend_ms']:.2f} | {r['tower_ms']:.2f} "
                     f"[{r['tower_ms_range'][0]:.2f}-{r['tower_ms_range'][1]:.2f}] | {r['total_ms']:.2f} | "
                     f"{r.get('ratio_tower', float('nan')):.3f} | {r.get('ratio_total', float('nan')):.3f} |")
        st = speed["models"].get("student")
        if st is not None and "ratio_tower" in st:
            ok = "meets" if st["ratio_tower"] <= 0.1 else "does not meet"
            L.append(f"\nThe student's audio tower takes {st['ratio_tower']:.3f} of the teacher's CPU time a clip "
                     f"({ok} the target of at most 0.1); with each model's front-end, {st['ratio_total']:.3f}.\n")
    else:
        L.append("(stage 20 has not run: no `exp/student/speed_test.json`)\n")
    sizes = {n: _audio_params(exp, n) for n in present}
    L.append("Audio tower size in the exported `model.safetensors` (`towers.audio.*`, parameters and "
             "BatchNorm statistics, float32): "
             + ", ".join(f"{MODELS[n][0]} {v:,} values ({4 * v / 1e6:.2f} MB)" for n, v in sizes.items()
                         if v is not None) + ".\n")

    L.append("## Zero-shot and retrieval (test splits; nothing chosen on them)\n")
    L.append("Every CNN model: the same network, store (16 kHz, 64 mels), optimiser, 12 epochs and seeds; each "
             "exports its checkpoint with the lowest val loss of its own objective. Cells: mean ± sample std "
             "over the seeds (then each seed).\n")
    L.append("| metric | " + " | ".join(MODELS[n][0] for n in present) + " |")
    L.append("|---|" + "---|" * len(present))
    vals: dict[tuple[str, str], list[float]] = {}
    for label, rel, keys, scale in TEST_ROWS + VAL_ROWS:
        row = []
        for n in present:
            xs = values(exp, n, rel, keys, scale)
            vals[(label, n)] = xs
            row.append(cell(xs, 1) if xs else "-")
        if any(c != "-" for c in row):
            L.append(f"| {label} | " + " | ".join(row) + " |")
    L.append("")
    notes = []
    for n in ("student_cos", "student_sim"):
        if n not in present:
            continue
        for other in ("scratch", "clap_sfx"):
            if other not in present:
                continue
            for label, *_ in TEST_ROWS[:4]:  # the zero-shot rows
                a, b = vals.get((label, n), []), vals.get((label, other), [])
                big = beyond_spread(a, b)
                if big:
                    d = sum(a) / len(a) - sum(b) / len(b)
                    notes.append(f"{MODELS[n][0]} vs {MODELS[other][0]}, {label}: {d:+.1f} points")
    L.append("Differences larger than the seed spread (zero-shot rows): " + ("; ".join(notes) if notes else "none")
             + ".\n")

    L.append("## Training\n")
    L.append("| model | seed | steps | best val loss (its own objective) | training wall s |")
    L.append("|---|---|---|---|---|")
    for n in present:
        for d in seed_dirs(exp, n):
            t = _last_json_line(d / "train_summary.json") or {}
            b = t.get("best_metric")
            s = train_seconds(d)
            L.append(f"| {MODELS[n][0]} | {d.name[4:]} | {t.get('steps', '-')} | "
                     f"{'-' if b is None else f'{b:.4f}'} | {'-' if s is None else f'{s:.0f}'} |")
    stages = [t for t in read_timings(exp / "clap_sfx" / "timings.tsv") if 18 <= t.stage <= 21]
    if stages:
        L.append(f"\nAdded wall time (stages 18-21, `exp/clap_sfx/timings.tsv`): {sum(t.seconds for t in stages)} s ("
                 + ", ".join(f"stage {t.stage} {t.seconds} s, load {t.load} at its end" for t in stages)
                 + "; a load above 2 means the 2-core machine was shared and the stage got part of it).\n")
    out.write_text("\n".join(L) + "\n")
    return str(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(f"wrote {write(args.data, args.exp, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
