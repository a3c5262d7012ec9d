#!/usr/bin/env python3
"""Stage 5 of clap_sfx: RESULTS.md (tables + plots) from the measured outputs.

Every number comes from a file the earlier stages wrote: the corpus statistics
(stage 0), per-stage timings (run.sh), the training log and model weights
(stage 3) and the evaluation JSONs (stage 4). Missing inputs are reported as
missing, never filled in.

    python local/write_results.py --data data --exp exp/clap_sfx --out RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
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


def plot_loss(log_csv: Path, out_png: Path) -> bool:
    if not log_csv.is_file():
        return False
    rows = list(csv.DictReader(log_csv.open()))
    rows = [r for r in rows if r.get("loss")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("CLIP loss (train)")
    ax.set_title("clap_sfx training loss")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return True


def plot_confusion(res: dict[str, Any], out_png: Path) -> bool:
    cm = res.get("confusion_matrix")
    if not cm:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(cm, dtype=float)
    names = res.get("class_names") or [str(i) for i in range(len(m))]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(m)):
        for j in range(len(m)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (held-out class)")
    ax.set_title("zero-shot on held-out classes")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
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


def write(data: Path, exp: Path, out: Path) -> str:
    res_dir = out.parent / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    stats = _json(data / "corpus" / "corpus_stats.json")
    ev = exp / "eval"
    zs = _json(ev / "zeroshot_heldout.json")
    seen = _json(ev / "zeroshot_test_seen.json")
    ret = _json(ev / "retrieval_test.json")
    esc = _json(ev / "zeroshot_esc50_sample.json")
    train_sum = _last_json_line(exp / "train_summary.json")
    extract_sum = _last_json_line(exp / "extract_summary.json")
    timings = read_timings(exp / "timings.tsv")  # each stage's latest row
    command = (exp / "command.txt").read_text().strip() if (exp / "command.txt").is_file() else "./run.sh"
    L: list[str] = []
    L.append("# clap_sfx results\n")
    L.append("Written by `local/write_results.py` (stage 5) from the files the run produced; "
             "re-running `./run.sh` rewrites it.\n")
    L.append("## Command\n")
    L.append(f"```\ncd recipes/clap_sfx && {command}\n```\n")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    L.append(f"Machine: {platform.machine()}, {platform.system()}, CPU only; commit {rev or 'unknown'}.\n")

    L.append("## Main numbers\n")
    L.append("| evaluation | items | classes | metric | value | chance |")
    L.append("|---|---|---|---|---|---|")
    if zs:
        ch = 1 / zs["n_classes"]
        L.append(f"| zero-shot, held-out classes (never trained on) | {zs['n_items']} | {zs['n_classes']} | top-1 % | "
                 f"**{_pct(zs['top1'])}** ({zs['top1'] / ch:.1f}x chance) | {_pct(ch)} |")
        L.append(f"| | | | top-5 % | {_pct(zs['top5'])} | {_pct(min(1.0, 5 * ch))} |")
    else:
        L.append("| zero-shot, held-out classes | missing | | | | |")
    if seen:
        ch = 1 / seen["n_classes"]
        L.append(f"| zero-shot, test split, seen classes | {seen['n_items']} | {seen['n_classes']} | top-1 % | "
                 f"{_pct(seen['top1'])} | {_pct(ch)} |")
    if ret:
        t2a, a2t = ret["text_to_audio"], ret["audio_to_text"]
        L.append(f"| text-to-audio retrieval, test split | {ret['n_audio']} clips, {ret['n_text']} captions | | "
                 f"R@1 / R@10 / mAP@10 % | {_pct(t2a['R@1'])} / {_pct(t2a['R@10'])} / {_pct(t2a['mAP@10'])} | "
                 f"{_pct(1 / ret['n_audio'])} / {_pct(min(1, 10 / ret['n_audio']))} / - |")
        L.append(f"| audio-to-text retrieval, test split | | | R@1 / R@10 / mAP@10 % | "
                 f"{_pct(a2t['R@1'])} / {_pct(a2t['R@10'])} / {_pct(a2t['mAP@10'])} | |")
    if esc:
        ch = 1 / esc["n_classes"]
        L.append(f"| zero-shot, ESC-50 sample (`../shared/data/esc50-sample`) | {esc['n_items']} | {esc['n_classes']} | "
                 f"top-1 % | {_pct(esc['top1'])} | {_pct(ch)} |")
    L.append("")
    ceil = caption_ceiling(data / "manifests" / "test.jsonl")
    if ret and ceil is not None:
        L.append(f"Captions here are made from labels, so several test clips share each caption; the "
                 f"caption's own clip can then be ranked first for only one of them. The best "
                 f"text-to-audio R@1 any model could reach on this test split is {_pct(ceil)} %.\n")

    if zs and zs.get("per_class"):
        L.append("### Held-out classes (zero-shot split)\n")
        L.append("| class | clips | top-1 % |")
        L.append("|---|---|---|")
        for c, v in zs["per_class"].items():
            L.append(f"| {c} | {v['n']} | {_pct(v['accuracy'])} |")
        L.append("")
        L.append(f"Prompts (ensemble): {', '.join('`' + p + '`' for p in zs.get('prompts', []))}\n")
        if plot_confusion(zs, res_dir / "zeroshot_heldout_confusion.png"):
            L.append("![held-out confusion](results/zeroshot_heldout_confusion.png)\n")

    variants = sorted((exp.parent / "variants").glob("*/eval/zeroshot_heldout.json"))
    if variants:
        L.append("### Variants (same data; `local/run_variant.sh NAME key=value ...`)\n")
        L.append("Other trainings of `conf/train.yaml` with the overrides shown, evaluated the same way. "
                 "They show how much the held-out number moves with the seed and the design.\n")
        L.append("| variant | command | held-out top-1 % | held-out top-5 % | seen-class test top-1 % |")
        L.append("|---|---|---|---|---|")
        if zs:
            L.append(f"| main run (above) | `./run.sh` | {_pct(zs['top1'])} | {_pct(zs['top5'])} | "
                     f"{_pct(seen['top1']) if seen else '-'} |")
        for p in variants:
            d = p.parent.parent
            v = _json(p)
            vs = _json(d / "eval" / "zeroshot_test_seen.json")
            cmd = (d / "command.txt").read_text().strip() if (d / "command.txt").is_file() else "?"
            L.append(f"| {d.name} | `{cmd}` | {_pct(v['top1'])} | {_pct(v['top5'])} | "
                     f"{_pct(vs['top1']) if vs else '-'} |")
        L.append("")
        seeds = [zs["top1"]] if zs else []
        seeds += [_json(p)["top1"] for p in variants if re.fullmatch(r"seed\d+", p.parent.parent.name)]
        if len(seeds) > 1:
            import statistics

            mean = statistics.mean(seeds)
            L.append(f"Held-out top-1 over {len(seeds)} seeds of `conf/train.yaml` (the main run and the "
                     f"`seedN` variants): mean {_pct(mean)} % ({mean * zs['n_classes']:.1f}x chance), "
                     f"min {_pct(min(seeds))}, max {_pct(max(seeds))}.\n")

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

    L.append("## Model\n")
    model_dir = exp / "train" / "model"
    if (model_dir / "model.safetensors").is_file():
        pc = param_counts(model_dir)
        total = sum(pc.values())
        L.append("| part | parameters |")
        L.append("|---|---|")
        for k, v in sorted(pc.items()):
            L.append(f"| {k} | {v:,} |")
        L.append(f"| total in model.safetensors | {total:,} |")
        trainable = sum(v for k, v in pc.items() if not k.startswith("towers.text.encoder"))
        L.append(f"\nTrainable (everything but the frozen MiniLM text encoder): {trainable:,}. "
                 f"Model folder: `{model_dir}` (use it with `audiocl eval zeroshot --model`).\n")
    else:
        L.append("missing (stage 3 has not run)\n")
    if train_sum:
        L.append(f"Training: {train_sum.get('steps')} steps, {train_sum.get('epochs')} epochs, "
                 f"last train loss {train_sum.get('last_loss'):.3f}, best val loss {train_sum.get('best_metric'):.3f}.\n")
    if plot_loss(exp / "train" / "train_log.csv", res_dir / "train_loss.png"):
        L.append("![training loss](results/train_loss.png)\n")

    L.append("## Time per stage (wall clock, this run)\n")
    if timings:
        L.append("| stage | what | seconds | load average at the end (2 cores) |")
        L.append("|---|---|---|---|")
        for t in timings:
            L.append(f"| {t.stage} | {t.name} | {t.seconds} | {t.load} |")
        L.append("")
        L.append(f"Total of the stages above: {sum(t.seconds for t in timings)} s.\n")
        L.append("The machine was shared with other jobs; a load average above 2 means the stage "
                 "got only part of the two cores, so these times are upper bounds.\n")
    if extract_sum:
        L.append(f"Extraction: {extract_sum.get('done')} clips, {extract_sum.get('failed')} failed, "
                 f"{extract_sum.get('clips_per_second')} clips/s with {extract_sum.get('workers')} Ray workers.\n")
    text = "\n".join(L).rstrip() + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write RESULTS.md for clap_sfx")
    ap.add_argument("--data", default="data")
    ap.add_argument("--exp", default="exp/clap_sfx")
    ap.add_argument("--out", default="RESULTS.md")
    args = ap.parse_args(argv)
    write(Path(args.data), Path(args.exp), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
