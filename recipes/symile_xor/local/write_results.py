#!/usr/bin/env python3
"""Stage 3 of symile_xor: RESULTS.md (tables + plot) from the measured outputs.

Every number comes from a file the earlier stages wrote: ``exp/xor8/<loss>/seed*/eval/*.json``
and ``exp/xor3/d<d_v>_p*/<loss>/seed*/eval/*.json`` (local/eval_candidates.py),
their ``done.json`` (commands and wall times) and ``exp/timings.tsv`` (run.sh).
Missing runs are reported as missing, never filled in.

    python local/write_results.py --exp exp --d-v 1 --out RESULTS.md --plots results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
from stage_timings import read_timings  # noqa: E402

LOSSES = ("symile", "pairwise", "gram")
LABEL = {"symile": "Symile (mip)", "pairwise": "pairwise CLIP (cosine)", "gram": "GRAM (volume)"}


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def runs(folder: Path) -> list[dict[str, Any]]:
    """Finished seed runs below ``folder`` (a loss folder): their done.json + eval JSONs."""
    out = []
    for seed_dir in sorted(folder.glob("seed*")):
        done = _json(seed_dir / "eval" / "done.json")
        if done is None:
            continue
        evals = {p.stem: _json(p) for p in (seed_dir / "eval").glob("*.json") if p.stem != "done"}
        meta = _json(seed_dir / "train" / "best" / "meta.json") or {}
        out.append({"dir": seed_dir, "done": done, "evals": evals, "best_epoch": meta.get("epoch")})
    return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs: list[float], n: bool = False) -> str:
    """``mean ± std`` in percent; with ``n``, the number of seeds too."""
    if not xs:
        return "missing"
    m, s = mean_std(xs)
    return f"{100 * m:.1f} ± {100 * s:.1f}" + (f" ({len(xs)})" if n else "")


def xor8_table(exp: Path) -> tuple[list[str], dict[str, list[float]]]:
    lines = [
        "| objective (score) | seeds | predict a from b..h | predict h from a..g | mean over the 8 targets | worst target | best epoch (val loss) | logit scale t | train s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    acc_a: dict[str, list[float]] = {}
    for loss in LOSSES:
        rs = runs(exp / "xor8" / loss)
        if not rs:
            lines.append(f"| {LABEL[loss]} | 0 | missing | missing | missing | missing | | | |")
            continue
        a = [r["evals"]["a"]["accuracy"] for r in rs]
        h = [r["evals"]["h"]["accuracy"] for r in rs]
        mean8 = [statistics.fmean(e["accuracy"] for e in r["evals"].values()) for r in rs]
        worst = min(e["accuracy"] for r in rs for e in r["evals"].values())
        acc_a[loss] = a
        epochs = ", ".join(str(r["best_epoch"]) for r in rs)
        secs = statistics.fmean(r["done"]["seconds"]["train"] for r in rs)
        scales = ", ".join(f"{r['evals']['a']['logit_scale']:.1f}" for r in rs)
        lines.append(f"| {LABEL[loss]} | {len(rs)} | {fmt(a)} | {fmt(h)} | {fmt(mean8)} | {100 * worst:.1f} | {epochs} | {scales} | {secs:.0f} |")
    return lines, acc_a


def sweep(exp: Path, d_v: int) -> dict[float, dict[str, Any]]:
    out: dict[float, dict[str, Any]] = {}
    for pdir in sorted((exp / "xor3").glob(f"d{d_v}_p*")):
        p = float(pdir.name.split("_p")[1])
        row: dict[str, Any] = {"bayes": [], "chance": None}
        for loss in LOSSES:
            rs = runs(pdir / loss)
            row[loss] = [r["evals"]["b"]["accuracy"] for r in rs]
            row[f"{loss}_a"] = [r["evals"]["a"]["accuracy"] for r in rs]
            row[f"{loss}_c"] = [r["evals"]["c"]["accuracy"] for r in rs]
            for r in rs:
                row["chance"] = r["evals"]["b"]["chance"]
                if loss == "symile":
                    row["bayes"].append(r["evals"]["b"]["bayes_accuracy"])
        out[p] = row
    return out


def sweep_table(rows: dict[float, dict[str, Any]]) -> list[str]:
    lines = [
        "| p = P(c = a XOR b) | Symile (mip) (seeds) | pairwise CLIP (cosine) | GRAM (volume) | Bayes-optimal (same test rows) | chance |",
        "|---|---|---|---|---|---|",
    ]
    for p, row in rows.items():
        bayes = fmt(row["bayes"]) if row["bayes"] else "missing"
        chance = f"{100 * row['chance']:.1f}" if row["chance"] else "?"
        lines.append(f"| {p:.2f} | {fmt(row['symile'], True)} | {fmt(row['pairwise'], True)} | {fmt(row['gram'], True)} | {bayes} | {chance} |")
    return lines


def sweep_other_targets(rows: dict[float, dict[str, Any]]) -> list[str]:
    lines = [
        "| p | target | Symile | pairwise CLIP | GRAM |",
        "|---|---|---|---|---|",
    ]
    for p, row in rows.items():
        for t in ("a", "c"):
            lines.append(f"| {p:.2f} | {t} | {fmt(row[f'symile_{t}'])} | {fmt(row[f'pairwise_{t}'])} | {fmt(row[f'gram_{t}'])} |")
    return lines


def plot(acc8: dict[str, list[float]], rows: dict[float, dict[str, Any]], d_v: int, out_png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    colors = {"symile": "tab:blue", "pairwise": "tab:orange", "gram": "tab:green"}
    names = [loss for loss in LOSSES if acc8.get(loss)]
    ms = [100 * mean_std(acc8[n])[0] for n in names]
    ss = [100 * mean_std(acc8[n])[1] for n in names]
    ax1.bar(range(len(names)), ms, yerr=ss, color=[colors[n] for n in names], capsize=4)
    ax1.axhline(50, color="gray", ls="--", lw=1, label="chance")
    ax1.set_xticks(range(len(names)), [LABEL[n].split(" (")[0] for n in names])
    ax1.set_ylim(0, 105)
    ax1.set_ylabel("zero-shot accuracy (%)")
    ax1.set_title("8 bits: predict a from b..h (h = XOR a..g)")
    ax1.legend(loc="lower right")
    ps = sorted(rows)
    for loss in LOSSES:
        pts = [(p, mean_std(rows[p][loss])) for p in ps if rows[p][loss]]
        if pts:
            ax2.errorbar([x for x, _ in pts], [100 * m for _, (m, _) in pts], yerr=[100 * s for _, (_, s) in pts],
                         marker="o", capsize=3, color=colors[loss], label=LABEL[loss].split(" (")[0])  # fmt: skip
    bayes = [(p, statistics.fmean(rows[p]["bayes"])) for p in ps if rows[p]["bayes"]]
    if bayes:
        ax2.plot([x for x, _ in bayes], [100 * y for _, y in bayes], "k:", label="Bayes-optimal")
    if ps and rows[ps[0]]["chance"]:
        ax2.axhline(100 * rows[ps[0]]["chance"], color="gray", ls="--", lw=1, label="chance")
    ax2.set_xlabel("p = P(c = a XOR b)  (else c = a)")
    ax2.set_ylabel("accuracy predicting b from (a, c) (%)")
    ax2.set_title(f"3 variables, d_v = {d_v}: sweep over p")
    ax2.set_ylim(0, 105)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def timings(exp: Path) -> list[str]:
    rows = read_timings(exp / "timings.tsv")  # each stage's latest row
    if not rows:
        return ["(no exp/timings.tsv)"]
    lines = ["| stage | what | wall s | 1-min load average at the end |", "|---|---|---|---|"]
    lines += [f"| {t.stage} | {t.name} | {t.seconds} | {t.load} |" for t in rows]
    return lines


def span(exp: Path) -> list[str]:
    """Wall clock from the first job's start to the last job's end, and summed job times."""
    dones = list(exp.glob("xor*/**/seed*/eval/done.json"))
    if not dones:
        return []
    import datetime as dt

    t0 = min(p.stat().st_ctime for p in exp.glob("xor*/**/seed*"))  # the done files' own job folders at least
    t1 = max(p.stat().st_mtime for p in dones)
    busy = sum(sum(_json(p)["seconds"].values()) for p in dones)
    def hms(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S")

    return [f"{len(dones)} jobs; their train + eval times sum to {busy:.0f} s.",
            f"Earliest job-folder change (ctime; the runs started earlier) at {hms(t0)} UTC, last job done at "
            f"{hms(t1)} UTC: {t1 - t0:.0f} s or more of wall time for stages 1-2."]  # fmt: skip


def first_cmds(exp: Path, pattern: str) -> list[str]:
    for done in sorted(exp.glob(pattern)):
        d = _json(done)
        if d:
            return [d["train_cmd"], d["eval_cmd"]]
    return []


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", type=Path, default=Path("exp"))
    ap.add_argument("--d-v", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("RESULTS.md"))
    ap.add_argument("--plots", type=Path, default=Path("results"))
    args = ap.parse_args()
    exp = args.exp
    t8, acc8 = xor8_table(exp)
    rows = sweep(exp, args.d_v)
    png = args.plots / "symile_xor.png"
    have_plot = plot(acc8, rows, args.d_v, png)
    cmd = "`, `".join((exp / "command.txt").read_text().strip().splitlines()) if (exp / "command.txt").is_file() else "./run.sh"
    cfg8 = first_cmds(exp, "xor8/symile/seed*/eval/done.json")
    cfg3 = first_cmds(exp, f"xor3/d{args.d_v}_p1.00/symile/seed*/eval/done.json")
    md = [
        "# symile_xor results",
        "",
        f"Written by `local/write_results.py` from the outputs of `{cmd}` (audiocl {git_rev()},",
        f"{platform.machine()}, {platform.python_version()}, CPU, one thread per training). Re-run `./run.sh` to reproduce;",
        "every number below is read from `exp/` (the exact commands of every run are in",
        "`exp/xor8/<loss>/seed<s>/eval/done.json` and `exp/xor3/d<d_v>_p<p>/<loss>/seed<s>/eval/done.json`).",
        "",
        "Zero-shot accuracy (%), mean ± std over seeds (each seed draws new data and new initial",
        "weights). The candidates are all possible values of the target variable (2 for a bit), as in",
        "the authors' repository; the score is the one matching each objective (see README.md).",
        "",
        "## 8 bits: h = a XOR b XOR ... XOR g (the authors' `examples/binary_xor.py`)",
        "",
        "Every bit is the XOR of the other seven, and any seven bits are independent: chance is 50%.",
        "",
        *t8,
        "",
        "## 3 variables: c = a XOR b with probability p, else c = a (paper Section 5.1)",
        "",
        f"Predict b from (a, c); d_v = {args.d_v} bit(s) per variable. b is independent of a and of c",
        "for every p, so only the joint of (a, c) tells b: the Bayes-optimal accuracy is",
        "2^-d_v + p (1 - 2^-d_v) (computed on the same test rows below).",
        "",
        *sweep_table(rows),
        "",
        "![accuracy](results/symile_xor.png)" if have_plot else "(matplotlib missing: no plot)",
        "",
        "Other targets of the sweep (a from (b, c); c from (a, b)):",
        "",
        *sweep_other_targets(rows),
        "",
        "## Commands (seed 0; the other runs differ only in seed and data folder)",
        "",
        "```",
        *cfg8,
        *cfg3,
        "```",
        "",
        "## Wall time",
        "",
        *timings(exp),
        "",
        *span(exp),
        "",
        "The machine is shared (2 cores, several jobs): the load average says how busy it was.",
        "",
    ]
    args.out.write_text("\n".join(md))
    print(f"wrote {args.out}" + (f" and {png}" if have_plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
