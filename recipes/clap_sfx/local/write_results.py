#!/usr/bin/env python3
"""Stages 5 and 12 of clap_sfx: RESULTS.md (tables + plots) from the measured outputs.

Every number comes from a file the earlier stages wrote: the corpus statistics
(stage 0), per-stage timings (run.sh), each seed's command, training summary,
log and model weights (stages 3, 7, 10: ``exp/<model>/seed<N>/``) and the
evaluation JSONs that ``audiocl eval`` wrote (stages 4, 8, 11). Missing inputs
are reported as missing, never filled in. Means and standard deviations are
over the seeds found (sample std, n - 1).

    python local/write_results.py --data data --exp exp --out RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
from stage_timings import read_timings  # noqa: E402


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _runner(summary: dict) -> str:
    """How the extraction's workers ran, as words: "worker processes" or "Ray workers"
    (summaries written before the runner was recorded ran on Ray)."""
    return {"ray": "Ray workers", None: "Ray workers", "processes": "worker processes"}.get(
        summary.get("runner"), f"{summary.get('runner')} workers")


def _last_json_line(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def param_counts(model_dir: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts: Counter[str] = Counter()
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for k in f.keys():
            n = 1
            for d in f.get_slice(k).get_shape():
                n *= d
            parts = k.split(".")
            group = ".".join(parts[:3]) if parts[0] == "towers" else parts[0]
            counts[group] += n
    return dict(counts)


def plot_loss(run_dir: Path, out_png: Path) -> bool:
    """The run's training curves, drawn by the library (audiocl.plots.training_curves)."""
    from audiocl.plots import training_curves

    return training_curves(run_dir, out_png) is not None


def plot_confusion(res: dict[str, Any], out_png: Path) -> bool:
    """The zero-shot confusion PNG, drawn by the library (audiocl.plots.confusion)."""
    if not res.get("confusion_matrix") or not res.get("per_class"):
        return False
    from audiocl.plots import confusion

    confusion(res["confusion_matrix"], list(res["per_class"]), out_png, title="zero-shot on held-out classes")
    return True


def caption_ceiling(manifest: Path) -> float | None:
    """Best text-to-audio R@1 any model can reach when k test clips share a caption:
    the caption's own clip can be first for at most one of them, 1/k on average."""
    if not manifest.is_file():
        return None
    share: Counter[str] = Counter()
    caps = []
    for line in manifest.open():
        d = json.loads(line)
        for t in d["texts"]:
            share[t] += 1
            caps.append(t)
    return sum(1 / share[t] for t in caps) / len(caps) if caps else None


#: exp/<name>: the models RESULTS.md compares, in table order, with what they are.
MODELS = {
    "clap_sfx": "pretrained aisfx (frozen) + MiniLM (frozen), trained projection: `conf/train.yaml` (default)",
    "whisper": "pretrained Whisper tiny.en encoder (frozen) + MiniLM (frozen): `conf/train_whisper.yaml`",
    "scratch": "CNN10-tiny from scratch + MiniLM (frozen): `conf/train_scratch.yaml`",
}
SHORT = {"clap_sfx": "aisfx (default)", "whisper": "Whisper tiny.en", "scratch": "from scratch"}


def seed_dirs(exp: Path, name: str) -> list[Path]:
    return sorted((p for p in (exp / name).glob("seed*") if re.fullmatch(r"seed\d+", p.name)),
                  key=lambda p: int(p.name[4:]))


def _get(d: dict[str, Any] | None, *keys: str) -> float | None:
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d  # type: ignore[return-value]


#: (row label, file under seedN/, keys into its JSON, scale to %)
TEST_METRICS = [
    ("held-out classes, zero-shot top-1 %", "eval/zeroshot_heldout.json", ("top1",)),
    ("held-out classes, zero-shot top-5 %", "eval/zeroshot_heldout.json", ("top5",)),
    ("test split (seen classes), zero-shot top-1 %", "eval/zeroshot_test_seen.json", ("top1",)),
    ("text-to-audio R@1 %", "eval/retrieval_test.json", ("text_to_audio", "R@1")),
    ("text-to-audio R@10 %", "eval/retrieval_test.json", ("text_to_audio", "R@10")),
    ("text-to-audio mAP@10 %", "eval/retrieval_test.json", ("text_to_audio", "mAP@10")),
    ("audio-to-text R@1 %", "eval/retrieval_test.json", ("audio_to_text", "R@1")),
    ("audio-to-text R@10 %", "eval/retrieval_test.json", ("audio_to_text", "R@10")),
    ("ESC-50 sample, zero-shot top-1 %", "eval/zeroshot_esc50_sample.json", ("top1",)),
]
VAL_METRICS = [
    ("val split (seen classes), zero-shot top-1 %", "val/zeroshot_val.json", ("top1",)),
    ("val text-to-audio R@10 %", "val/retrieval_val.json", ("text_to_audio", "R@10")),
    ("val text-to-audio mAP@10 %", "val/retrieval_val.json", ("text_to_audio", "mAP@10")),
    ("val audio-to-text R@10 %", "val/retrieval_val.json", ("audio_to_text", "R@10")),
]


def metric_values(dirs: list[Path], rel: str, keys: tuple[str, ...]) -> list[float]:
    out = []
    for d in dirs:
        v = _get(_json(d / rel), *keys)
        if v is not None:
            out.append(100 * float(v))
    return out


def mean_std(xs: list[float], digits: int = 1) -> str:
    import statistics

    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f} (1 seed)"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def comparison_table(exp: Path, names: list[str], metrics: list[tuple[str, str, tuple[str, ...]]]) -> list[str]:
    """Mean ± std over seeds, then the per-seed values, one column a model."""
    dirs = {n: seed_dirs(exp, n) for n in names}
    L = ["| metric | " + " | ".join(f"{SHORT[n]}: mean ± std | per seed" for n in names) + " |",
         "|---|" + "---|---|" * len(names)]
    for label, rel, keys in metrics:
        cells = []
        for n in names:
            xs = metric_values(dirs[n], rel, keys)
            cells += [mean_std(xs), " / ".join(f"{x:.1f}" for x in xs) or "-"]
        if any(c != "-" for c in cells):
            L.append(f"| {label} | " + " | ".join(cells) + " |")
    return L


def val_loss_row(exp: Path, names: list[str]) -> str:
    cells = []
    for n in names:
        xs = [float(t["best_metric"]) for d in seed_dirs(exp, n)
              if (t := _last_json_line(d / "train_summary.json")) and t.get("best_metric") is not None]
        cells += [mean_std(xs, 3), " / ".join(f"{x:.3f}" for x in xs) or "-"]
    return "| best val loss (CLIP, lower is better) | " + " | ".join(cells) + " |"


def commands_as_run(exp: Path, names: list[str]) -> list[str]:
    """Each seed's ``command.txt`` of ``exp/<name>/seedN/``, one line a training, in order."""
    out = []
    for n in names:
        for d in seed_dirs(exp, n):
            c = d / "command.txt"
            out.append(c.read_text().strip() if c.is_file() else f"{d}: command.txt missing")
    return out


def train_seconds(seed_dir: Path) -> float | None:
    """Wall seconds of `audiocl train` for one seed, as run.sh measured it (``train_seconds``)."""
    p = seed_dir / "train_seconds"
    return float(p.read_text().strip()) if p.is_file() else None


def write(data: Path, exp: Path, out: Path) -> str:
    res_dir = out.parent / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    stats = _json(data / "corpus" / "corpus_stats.json")
    main_dirs = seed_dirs(exp, "clap_sfx")
    main = main_dirs[0] if main_dirs else exp / "clap_sfx" / "seed0"
    zs = _json(main / "eval" / "zeroshot_heldout.json")
    timings = read_timings(exp / "clap_sfx" / "timings.tsv")  # each stage's latest row
    present = [n for n in MODELS if seed_dirs(exp, n)]
    L: list[str] = []
    L.append("# clap_sfx results\n")
    L.append("Written by `local/write_results.py` (stages 5 and 12) from the files the run produced; "
             "re-running `./run.sh` rewrites it.\n")
    L.append("## Commands\n")
    L.append("```\ncd recipes/clap_sfx\n./run.sh                              # stages 0-5: the default model, "
             "3 seeds\n./run.sh --stage 6 --stop-stage 12     # Whisper candidate on val, from-scratch model, "
             "this file again\n```\n")
    L.append("Each training, as run (from `exp/<model>/seedN/command.txt`):\n")
    L.append("```")
    L += commands_as_run(exp, present)
    L.append("```\n")
    L.append("Extraction (stages 2, 6, 9; `extract()` in `run.sh`): `audiocl extract --manifest "
             "data/manifests/all.jsonl --out data/store_aisfx --preset aisfx --frozen-tower audio --model-config "
             "conf/model_aisfx.yaml --workers 2`; the same with `--out data/store_whisper --preset whisper "
             "--model-config conf/model_whisper.yaml` after `audiocl convert whisper-ct2 --out data/whisper_tiny_en`; "
             "for the from-scratch model `--out data/store_scratch --preset laion_clap --set sample_rate=16000 "
             "--set n_fft=512 --set win_length=512 --set hop_length=160 --set f_max=8000 --set clip_samples=null` "
             "(no tower).\n")
    L.append("Evaluation: `audiocl eval zeroshot` (held-out classes with `--classes "
             "data/manifests/zeroshot_classes.txt`; the test split over its own classes; the ESC-50 sample) "
             "and `audiocl eval retrieval` (test split), all with `--prompts-file data/manifests/prompts.txt`; "
             "the exact lines are `evaluate()` and `validate()` in `run.sh`.\n")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    L.append(f"Machine: {platform.machine()}, {platform.system()}, CPU only; commit {rev or 'unknown'}.\n")

    L.append("## Pretrained vs from scratch (test splits, never used for any choice)\n")
    L.append(f"Over {len(main_dirs)} seeds (mean ± sample std, then each seed). Models: "
             + "; ".join(f"**{SHORT[n]}**: {MODELS[n]}" for n in present) + ".\n")
    if main_dirs:
        L += comparison_table(exp, [n for n in present if n != "whisper"], TEST_METRICS)
        L.append("")
        if zs:
            L.append(f"Held-out classes: {zs['n_items']} clips of {zs['n_classes']} classes no training clip has "
                     f"(chance {_pct(1 / zs['n_classes'])} % top-1). ")
        esc = _json(main / "eval" / "zeroshot_esc50_sample.json")
        if esc:
            L.append(f"The ESC-50 sample (`../shared/data/esc50-sample`) is {esc['n_items']} clips of "
                     f"{esc['n_classes']} classes (chance {_pct(1 / esc['n_classes'])} %): a smoke check, "
                     "never trained or tuned on; one clip is 7 points.")
        L.append("")
        ceil = caption_ceiling(data / "manifests" / "test.jsonl")
        if ceil is not None:
            L.append(f"Captions here are made from labels, so several test clips share each caption; the "
                     f"caption's own clip can then be ranked first for only one of them. The best "
                     f"text-to-audio R@1 any model could reach on this test split is {_pct(ceil)} %.\n")
    else:
        L.append("missing (stages 3-4 have not run)\n")

    val_names = [n for n in present if any((d / "val").is_dir() for d in seed_dirs(exp, n))]
    if val_names:
        L.append("## Choosing the audio tower (val split only)\n")
        L.append("Both pretrained towers trained the same way (a projection fit on their frozen outputs, "
                 "same loss, optimiser, epochs and seeds), then evaluated on the val split (stage 8; "
                 "97 clips of classes seen in training). The default is the tower that is better here; "
                 "the choice rests on these val numbers only (the Whisper model is never evaluated on the "
                 "test, held-out or ESC-50 splits).\n")
        L += comparison_table(exp, val_names, VAL_METRICS)
        L.append(val_loss_row(exp, val_names))
        L.append("")

    if zs and zs.get("per_class"):
        L.append(f"### Held-out classes, default model, seed {main.name[4:]}\n")
        L.append("| class | clips | top-1 % |")
        L.append("|---|---|---|")
        for c, v in zs["per_class"].items():
            L.append(f"| {c} | {v['n']} | {_pct(v['accuracy'])} |")
        L.append("")
        L.append(f"Prompts (ensemble): {', '.join('`' + p + '`' for p in zs.get('prompts', []))}\n")
        if plot_confusion(zs, res_dir / "zeroshot_heldout_confusion.png"):
            L.append("![held-out confusion](results/zeroshot_heldout_confusion.png)\n")

    L.append("## Corpus\n")
    if stats:
        groups = f" in {stats['groups']} recording groups" if "groups" in stats else ""
        per_split = stats.get("per_split")
        splits = ", ".join(
            f"{k} {v}" + (f" ({per_split[k]['seconds']:.0f} s)" if per_split else "") for k, v in stats["splits"].items())
        L.append(f"{stats['items']} clips from {stats['files']} source files{groups}, {stats['labels']} labels; "
                 f"splits by recording group: {splits}. Held-out classes: {', '.join(stats['heldout'])}. "
                 "Per class and split: `data/corpus/corpus_report.md`.\n")
        L.append("| source (Debian package or PyPI wheel) | files | clips | audio (s) | licence |")
        L.append("|---|---|---|---|---|")
        for pkg, s in stats["per_source"].items():
            L.append(f"| {pkg} | {s['files']} | {s['clips']} | {s['seconds']} | {'; '.join(s['license'])} |")
        L.append(f"\n{len(stats['skipped'])} files skipped or cut (too short, unreadable, excluded by the label map, "
                 "a byte-identical copy, or clips of silence; "
                 "reasons in `data/corpus/corpus_stats.json`).\n")
    else:
        L.append("missing (stage 0 has not run)\n")

    L.append("## Models: size and training\n")
    L.append("| model | part | parameters | trained |")
    L.append("|---|---|---|---|")
    for n in present:
        model_dir = seed_dirs(exp, n)[0] / "train" / "model"
        if not (model_dir / "model.safetensors").is_file():
            continue
        pc = param_counts(model_dir)
        frozen = ("towers.text.encoder",) if n == "scratch" else ("towers.text.encoder", "towers.audio.encoder")
        for k, v in sorted(pc.items()):
            L.append(f"| {SHORT[n]} | {k} | {v:,} | {'no (frozen)' if k in frozen else 'yes'} |")
        trainable = sum(v for k, v in pc.items() if k not in frozen)
        L.append(f"| {SHORT[n]} | **total** | {sum(pc.values()):,} | {trainable:,} trained |")
    L.append("")
    L.append("| model | seed | steps | epochs | last train loss | best val loss | training wall s |")
    L.append("|---|---|---|---|---|---|---|")
    for n in present:
        for d in seed_dirs(exp, n):
            t = _last_json_line(d / "train_summary.json") or {}
            secs = train_seconds(d)
            last = t.get("last_loss")
            best = t.get("best_metric")
            L.append(f"| {SHORT[n]} | {d.name[4:]} | {t.get('steps', '-')} | {t.get('epochs', '-')} | "
                     f"{f'{last:.3f}' if last is not None else '-'} | {f'{best:.3f}' if best is not None else '-'} | "
                     f"{f'{secs:.0f}' if secs is not None else '-'} |")
    L.append("")
    L.append(f"Default model folder: `{main / 'train' / 'model'}` (use it with `audiocl eval zeroshot --model`); "
             "it carries the towers' licences and attributions in `LICENSES.md`.\n")
    if plot_loss(main / "train", res_dir / "train_loss.png"):
        L.append("![training curves](results/train_loss.png)\n")

    L.append("## Time per stage (wall clock, this run)\n")
    if timings:
        L.append("| stage | what | seconds | load average at the end (2 cores) |")
        L.append("|---|---|---|---|")
        for t in timings:
            L.append(f"| {t.stage} | {t.name} | {t.seconds} | {t.load} |")
        L.append("")
        default = [t for t in timings if t.stage <= 5]
        L.append(f"Stages 0-5 (the default `./run.sh`, what `make demo` runs): {sum(t.seconds for t in default)} s; "
                 f"all stages listed: {sum(t.seconds for t in timings)} s.\n")
        L.append("The machine was shared with other jobs; a load average above 2 means the stage "
                 "got only part of the two cores, so these times are upper bounds.\n")
    for n in present:
        es = _last_json_line(exp / n / "extract_summary.json")
        if not es:
            continue
        towers = "".join(f"; tower `{t['key']}`: {t['items']} clips, {t['cpu_ms_per_clip']} ms CPU a clip, "
                         f"{t['wall_seconds']} s wall" for t in es.get("towers", []))
        L.append(f"Extraction for {SHORT[n]}: {es.get('done')} clips, {es.get('failed')} failed, "
                 f"{es.get('clips_per_second')} clips/s with {es.get('workers')} {_runner(es)}{towers}.\n")
    text = "\n".join(L).rstrip() + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write RESULTS.md for clap_sfx")
    ap.add_argument("--data", default="data")
    ap.add_argument("--exp", default="exp", help="the folder holding clap_sfx/, whisper/, scratch/")
    ap.add_argument("--out", default="RESULTS.md")
    args = ap.parse_args(argv)
    write(Path(args.data), Path(args.exp), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
