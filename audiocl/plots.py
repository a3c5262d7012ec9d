"""Every PNG the library draws: training curves and evaluation plots.

One place so the plots look alike and are written the same way: matplotlib
imported only when a plot is made (``audiocl --help`` and training without
plots never pay for it), figures made with :class:`matplotlib.figure.Figure`
on the Agg canvas (no pyplot global state, no display, no backend switch in
the caller's process), saved atomically through :mod:`audiocl.fsutil` so a
reader never sees half a PNG.

* :func:`training_curves` - ``curves.png`` of a run folder from its own
  ``train_log.csv`` / ``val_log.csv``: train and validation loss, learning
  rate, the validation metric(s).
* :func:`confusion` - a confusion matrix with counts up to
  :data:`MATRIX_MAX_CLASSES` classes; beyond that (labels would be
  unreadable) the most frequent confusions as a bar chart with counts.
* :func:`recall_curves` - recall@k against k for each retrieval direction.
* :func:`group_bars` - one bar per group value of a grouped evaluation.
* :func:`projection` - the 2-D PCA scatter of ``audiocl eval diagnostics``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiocl.fsutil import atomic_path

__all__ = [
    "MATRIX_MAX_CLASSES",
    "MAX_GROUPS",
    "TOP_CONFUSIONS",
    "confusion",
    "group_bars",
    "projection",
    "recall_curves",
    "seed_bars",
    "training_curves",
]

# above this many classes a matrix's tick labels overlap at any sane figure size
MATRIX_MAX_CLASSES = 30
# bars in the top-confusions chart
TOP_CONFUSIONS = 30
# groups shown per field in a per-group chart (the lowest ones beyond this)
MAX_GROUPS = 60


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp:
        # format given: the temporary name may not end in .png
        fig.savefig(tmp, dpi=dpi, format="png")
    return p


# ------------------------------------------------------------------ training


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows whose ``key`` is a finite number."""
    xs, ys = [], []
    for r in rows:
        try:
            x, y = int(r["step"]), float(r.get(key) or "nan")
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def training_curves(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, metric: str | None = None,
    best_mode: str = "max",
) -> Path | None:
    """Draw ``<run_dir>/curves.png`` from the run's ``train_log.csv`` and ``val_log.csv``.

    Panels: train loss (line) with validation loss (markers) against step;
    learning rate against step; the validation metric ``metric`` (default:
    every ``val_*`` column but ``val_loss``) against step, its best value
    marked (highest, or lowest with ``best_mode="min"``). The top axis of the loss panel gives the (1-based) epoch of the
    logged steps. Returns the PNG path, or None while no training row exists.
    """
    run = Path(run_dir)
    train = _read_csv(run / "train_log.csv")
    val = _read_csv(run / "val_log.csv")
    steps, loss = _series(train, "loss")
    if not steps:
        return None
    val_cols = [k for k in (val[0].keys() if val else []) if k.startswith("val_")]
    if metric is not None and metric != "val_loss" and metric in val_cols:
        shown = [metric]
    else:
        shown = [k for k in val_cols if k != "val_loss"]
    fig = _figure(6.0 + 3.0 * bool(shown), 3.6)
    axes = fig.subplots(1, 3 if shown else 2)
    ax = axes[0]
    ax.plot(steps, loss, lw=1.2, label="train loss")
    vs, vl = _series(val, "val_loss")
    if vs:
        ax.plot(vs, vl, "o-", ms=4, lw=1, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ep = {}
    for r in train:
        try:
            ep.setdefault(int(r["epoch"]), int(r["step"]))
        except (KeyError, TypeError, ValueError):
            continue
    if len(ep) > 1:
        top = ax.secondary_xaxis("top")
        top.set_xticks(list(ep.values()), [str(e) for e in ep], fontsize=7)
        top.set_xlabel("epoch (first logged step)", fontsize=8)
    ls, lr = _series(train, "lr")
    axes[1].plot(ls, lr, color="tab:green", lw=1.2)
    axes[1].set_xlabel("step")
    axes[1].set_title("learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[1].grid(alpha=0.3)
    if shown:
        ax = axes[2]
        for k in shown:
            xs, ys = _series(val, k)
            if xs:
                ax.plot(xs, ys, "o-", ms=4, lw=1, label=k)
                if k == metric:
                    pick = min if best_mode == "min" else max
                    i = pick(range(len(ys)), key=ys.__getitem__)
                    ax.annotate(f"best {ys[i]:.3f}", (xs[i], ys[i]), fontsize=7,
                                xytext=(0, 6), textcoords="offset points", ha="center")  # fmt: skip
        vals = [v for k in shown for v in _series(val, k)[1]]
        if vals and max(vals) - min(vals) < 0.02:
            # a flat metric: do not zoom into float noise
            mid = (max(vals) + min(vals)) / 2
            ax.set_ylim(max(0.0, mid - 0.05) if min(vals) >= 0 else mid - 0.05, mid + 0.05)
        ax.set_xlabel("step")
        ax.set_title("validation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: step {steps[-1]}", fontsize=10)
    return _save(fig, Path(out) if out is not None else run / "curves.png")


# ---------------------------------------------------------------- evaluation


def confusion(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Confusion PNG (rows: true class, columns: predicted).

    Up to :data:`MATRIX_MAX_CLASSES` classes: the matrix, colours normalised
    per row (recall), every non-zero cell with its count. More classes: the
    :data:`TOP_CONFUSIONS` most frequent off-diagonal pairs ``true -> predicted``
    as horizontal bars with their count and the share of the true class's
    items, so 100+ classes stay readable.
    """
    import numpy as np

    m = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    if m.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {m.shape} for {n} classes")
    rows = m.sum(axis=1)
    acc = float(np.trace(m) / max(int(m.sum()), 1))
    head = f"{title + ': ' if title else ''}{n} classes, {int(m.sum())} items, accuracy {acc:.3f}"
    if n <= MATRIX_MAX_CLASSES:
        norm = m / np.maximum(rows[:, None], 1)
        size = max(4.5, 0.42 * n + 2.5)
        fig = _figure(size, size)
        ax = fig.subplots()
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), list(classes), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), [f"{c} ({int(k)})" for c, k in zip(classes, rows)], fontsize=8)
        for i, j in zip(*np.nonzero(m)):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (items)")
        fig.colorbar(im, ax=ax, shrink=0.7, label="share of the true class")
        ax.set_title(head, fontsize=9)
        return _save(fig, path)
    off = m.copy()
    np.fill_diagonal(off, 0)
    share = off / np.maximum(rows[:, None], 1)
    # most items first; among equal counts the larger share of the true class
    order = np.lexsort((-share.ravel(), -off.ravel()))[:TOP_CONFUSIONS]
    pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
    n_rows = max(len(pairs), TOP_CONFUSIONS)
    fig = _figure(13.0, max(3.0, 0.27 * n_rows + 1.8))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.6, 1])
    # right: the classes recognised worst (recall, items), the rows a reader looks up next
    seen = np.nonzero(rows > 0)[0]
    recall = np.diag(m)[seen] / rows[seen]
    worst = seen[np.argsort(recall, kind="stable")[:TOP_CONFUSIONS]]
    y2 = list(range(len(worst)))[::-1]
    r_w = [float(m[i, i] / rows[i]) for i in worst]
    ax2.barh(y2, r_w, color="tab:blue", alpha=0.75)
    ax2.set_yticks(y2, [f"{classes[i]} ({int(rows[i])})" for i in worst], fontsize=8)
    for yy, i, r in zip(y2, worst, r_w):
        ax2.text(r, yy, f" {r:.2f} ({int(m[i, i])}/{int(rows[i])})", va="center", fontsize=7)
    ax2.set_xlim(0, 1.25)
    ax2.set_xlabel("recall of the class (right / items)")
    ax2.set_title(f"{len(worst)} lowest-recall classes", fontsize=9)
    if pairs:
        counts = [int(off[i, j]) for i, j in pairs]
        y = list(range(len(pairs)))[::-1]
        ax.barh(y, counts, color="tab:red", alpha=0.75)
        ax.set_yticks(y, [f"{classes[i]} -> {classes[j]}" for i, j in pairs], fontsize=8)
        for yy, (i, _j), c in zip(y, pairs, counts):
            ax.text(c, yy, f" {c} ({c / max(int(rows[i]), 1):.0%} of {classes[i]})", va="center", fontsize=7)
        ax.set_xlim(0, max(counts) * 1.35)
        ax.set_xlabel("items (true -> predicted)")
    else:
        ax.text(0.5, 0.5, "no confusions: every item predicted right", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"{head}\ntop {len(pairs)} confusions", fontsize=9)
    return _save(fig, path)


def recall_curves(curve: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Recall@k against k (log axis, ticks at the k values) for each direction of
    ``curve``: ``{direction: {"k": [...], "recall": [...]}}`` (as
    :func:`audiocl.eval.retrieval.recall_curve` gives); each curve ends at its
    gallery size, R@1 and R@10 are in the legend."""
    from matplotlib.ticker import NullFormatter

    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    all_k: set[int] = set()
    for name, c in curve.items():
        ks, ys = list(c["k"]), list(c["recall"])
        all_k.update(ks)
        at = {k: v for k, v in zip(ks, ys)}
        marks = ", ".join(f"R@{k} {at[k]:.2f}" for k in (1, 10) if k in at)
        ax.plot(ks, ys, "o-", ms=3, lw=1.2, label=f"{name.replace('_', ' ')} ({marks}; {ks[-1]} in gallery)")
    ax.set_xscale("log")
    ticks = sorted(all_k)
    ax.set_xticks(ticks, [str(k) for k in ticks], fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "retrieval: recall@k", fontsize=9)
    return _save(fig, path)


def _metric_of(block: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` of a per-group block: a key (``top1``) or ``direction/key`` (``text_to_audio/R@1``)."""
    node: Any = block
    for part in metric.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


def group_bars(
    groups: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, metrics: Sequence[str], title: str = ""
) -> Path | None:
    """One panel per grouped field: a bar per group value for each of ``metrics``
    (e.g. ``["top1"]``, or ``["text_to_audio/R@1", "audio_to_text/R@1"]``), the
    mean over groups (all of them) as a dashed line, the items of each group
    (``n_items`` or ``n_audio``) under its name; beyond :data:`MAX_GROUPS`
    groups only the lowest on the first metric are drawn. Groups are ``{field: {"per_group":
    {value: block}, ...}}`` as zero-shot and retrieval write them; None when no
    group has any of the metrics."""
    fields = [(f, g["per_group"]) for f, g in groups.items() if isinstance(g, Mapping) and g.get("per_group")]
    metrics = [mt for mt in metrics if any(_metric_of(b, mt) is not None for _, per in fields for b in per.values())]
    if not fields or not metrics:
        return None
    widest = min(max(len(per) for _, per in fields), MAX_GROUPS)
    fig = _figure(max(5.0, 0.35 * widest * len(metrics) + 2.0), 3.2 * len(fields))
    axes = fig.subplots(len(fields), 1, squeeze=False)[:, 0]
    width = 0.8 / len(metrics)
    for ax, (field_name, per) in zip(axes, fields):
        names = list(per)
        means = {}
        for mt in metrics:
            done = [v for g in names if (v := _metric_of(per[g], mt)) is not None]
            means[mt] = sum(done) / len(done) if done else None
        if len(names) > MAX_GROUPS:
            first = metrics[0]
            names = sorted(names, key=lambda g: _metric_of(per[g], first) or 0.0)[:MAX_GROUPS]
        for mi, mt in enumerate(metrics):
            vals = [_metric_of(per[g], mt) for g in names]
            xs = [i + (mi - (len(metrics) - 1) / 2) * width for i in range(len(names))]
            ys = [v if v is not None else 0.0 for v in vals]
            bars = ax.bar(xs, ys, width=width, label=mt)
            if means[mt] is not None:
                ax.axhline(means[mt], color=bars.patches[0].get_facecolor(), ls="--", lw=1)
            if len(names) <= 40:
                for x, v in zip(xs, vals):
                    if v is not None:
                        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6)
        sizes = [per[g].get("n_items", per[g].get("n_audio")) for g in names]
        ticks = [f"{g} ({n})" if n is not None else g for g, n in zip(names, sizes)]
        ax.set_xticks(range(len(names)), ticks, rotation=60 if len(names) > 8 else 0,
                      ha="right" if len(names) > 8 else "center", fontsize=7)  # fmt: skip
        ax.set_ylim(0, 1.1)
        ax.set_ylabel(metrics[0] if len(metrics) == 1 else " / ".join(sorted({m.split("/")[-1] for m in metrics})))
        shown = f"lowest {len(names)} of {len(per)}" if len(names) < len(per) else f"{len(per)}"
        ax.set_title(f"per {field_name} ({shown} groups, items in brackets; dashed: mean over groups)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        if len(metrics) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def seed_bars(
    runs: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    metrics: Sequence[str],
    title: str = "",
    chance: Mapping[str, float] | None = None,
) -> Path | None:
    """One panel per metric: a bar per run (variant) at the mean over its seeds, an
    error bar of one sample std (n - 1), and each seed's value as a dot.
    ``runs = {variant: {metric: [value per seed]}}``; ``chance`` (per metric) is
    drawn as a dotted line. None when no run has any of the metrics."""
    metrics = [m for m in metrics if any(runs[r].get(m) for r in runs)]
    if not metrics:
        return None
    import statistics

    names = list(runs)
    fig = _figure(max(4.0, 0.55 * len(names) + 1.5) * min(len(metrics), 3), 3.4 * -(-len(metrics) // 3))
    axes = fig.subplots(-(-len(metrics) // 3), min(len(metrics), 3), squeeze=False).ravel()
    for ax, m in zip(axes, metrics):
        for i, r in enumerate(names):
            vals = list(runs[r].get(m) or [])
            if not vals:
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ax.bar(i, statistics.mean(vals), yerr=sd, capsize=3, color=f"C{i % 10}", alpha=0.7)
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        if chance and m in chance:
            ax.axhline(chance[m], color="k", ls=":", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def projection(proj: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Scatter of a ``projection`` dict (``x``, ``y``, ``modality``, optional ``label``
    lists): colour by label (or modality), marker by modality."""
    from matplotlib import colormaps

    xs, ys, mods = proj["x"], proj["y"], proj["modality"]
    labels = proj.get("label") or mods
    markers = ["o", "^", "s", "D", "v", "P"]
    mod_names = list(dict.fromkeys(mods))
    lab_names = list(dict.fromkeys(labels))
    cmap = colormaps["tab20" if len(lab_names) > 10 else "tab10"]
    fig = _figure(7.0, 6.0)
    ax = fig.subplots()
    for mi, m in enumerate(mod_names):
        for li, lab in enumerate(lab_names):
            pts = [(x, y) for x, y, mm, ll in zip(xs, ys, mods, labels) if mm == m and ll == lab]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.7,
                       marker=markers[mi % len(markers)], color=cmap(li % cmap.N),
                       label=f"{m}: {lab}" if len(lab_names) <= 12 else (m if li == 0 else None))  # fmt: skip
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "2-D PCA projection")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="best", markerscale=1.2)
    return _save(fig, path)
