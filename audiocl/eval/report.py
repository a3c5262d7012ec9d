"""Results files: JSON first, then Markdown and PNGs made from the JSON.

Every evaluation writes its results dict with :func:`write_results`, which
writes ``<out>.json`` (atomically) and then, *from the JSON it just wrote*,
``<out>.md`` and any plots (``<out>.confusion.png`` for single-label
zero-shot, ``<out>.projection.png`` for diagnostics). A report can therefore
always be re-made from the JSON alone (:func:`render_from_json`).

:func:`compare_experiments` reads the results JSON of several experiments
and puts them side by side in one Markdown table (``audiocl report EXP...``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError, InputError

__all__ = [
    "write_json",
    "write_results",
    "render_from_json",
    "results_markdown",
    "plot_confusion",
    "flatten_metrics",
    "find_results",
    "compare_experiments",
]

# scalar keys never shown as metrics in the comparison table
_SKIP = {"n_items", "n_classes", "n_audio", "n_text", "n_audio_queries", "top5_k", "seed", "n_folds"}


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    # a "|" inside a cell (e.g. the pair "audio|text") would split the column
    out += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def results_markdown(res: dict[str, Any], title: str | None = None) -> str:
    """Markdown for one results dict (any ``eval`` kind); tables for known sections."""
    kind = res.get("eval", "results")
    lines = [f"# {title or kind}", ""]
    meta = [(k, res[k]) for k in ("model", "manifest", "split", "protocol", "tie_rule", "a2t_map", "method", "task")
            if res.get(k) is not None]
    if meta:
        lines += _table(["field", "value"], meta) + [""]
    scalars = [(k, v) for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if scalars:
        lines += ["## Summary", ""] + _table(["metric", "value"], scalars) + [""]
    dirs = [d for d in ("text_to_audio", "audio_to_text") if isinstance(res.get(d), dict)]
    if dirs:
        keys = list(res[dirs[0]].keys())
        lines += ["## Retrieval", ""]
        lines += _table(["direction", *keys], [[d, *[res[d].get(k) for k in keys]] for d in dirs]) + [""]
    # any other section: a dict of scalars, or a dict of dicts of scalars (multiway
    # targets, probe folds, diagnostics pairs/uniformity)
    handled = {"text_to_audio", "audio_to_text", "folds", "fold_mean", "fold_std", "per_class", "projection"}
    for section, block in res.items():
        if section in handled or not isinstance(block, dict) or not block:
            continue
        if all(isinstance(v, dict) for v in block.values()):
            keys = sorted({k for v in block.values() for k in v if isinstance(v[k], (int, float))})
            lines += [f"## {section}", ""]
            lines += _table(["", *keys], [[n, *[v.get(k) for k in keys]] for n, v in block.items()]) + [""]
        elif all(isinstance(v, (int, float)) or v is None for v in block.values()):
            lines += [f"## {section}", ""] + _table(["", "value"], list(block.items())) + [""]
    if isinstance(res.get("folds"), dict):
        folds = res["folds"]
        keys = sorted({k for v in folds.values() for k in v})
        rows = [[f, *[v.get(k) for k in keys]] for f, v in folds.items()]
        for agg in ("fold_mean", "fold_std"):
            if isinstance(res.get(agg), dict):
                rows.append([agg.replace("fold_", ""), *[res[agg].get(k) for k in keys]])
        lines += ["## Folds", ""] + _table(["fold", *keys], rows) + [""]
    if isinstance(res.get("per_class"), dict):
        pc = res["per_class"]
        keys = sorted({k for v in pc.values() for k in v})
        lines += ["## Per class", ""]
        lines += _table(["class", *keys], [[c, *[v.get(k) for k in keys]] for c, v in pc.items()]) + [""]
    if res.get("prompts"):
        lines += ["## Prompts", ""] + [f"- `{p}`" for p in res["prompts"]] + [""]
    for key, caption in (("confusion_png", "Confusion matrix"), ("projection_png", "2-D projection")):
        if res.get(key):
            lines += [f"![{caption}]({res[key]})", ""]
    return "\n".join(lines)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Confusion matrix PNG (rows: true class, columns: predicted), row-normalised colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(classes)
    size = max(4.0, 0.28 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = 8 if n <= 20 else 5
    ax.set_xticklabels(classes, rotation=90, fontsize=fs)
    ax.set_yticklabels(classes, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix == ".json" else path


def render_from_json(json_path: str | os.PathLike) -> Path:
    """Make ``<stem>.md`` (and plots) from a results JSON file; returns the Markdown path."""
    jp = Path(json_path)
    try:
        res = json.loads(jp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(str(jp), f"not valid JSON: {e.msg}", line=e.lineno) from None
    stem = _stem(jp)
    if res.get("confusion_matrix") and res.get("per_class"):
        png = plot_confusion(res["confusion_matrix"], list(res["per_class"].keys()),
                             stem.with_name(stem.name + ".confusion.png"), title=res.get("eval", ""))
        res["confusion_png"] = png.name
    if res.get("projection") and isinstance(res["projection"], dict):
        from audiocl.eval.diagnostics import plot_projection

        png = plot_projection(res["projection"], stem.with_name(stem.name + ".projection.png"))
        res["projection_png"] = png.name
    md = stem.with_name(stem.name + ".md")
    md.write_text(results_markdown(res, title=f"{res.get('eval', 'results')}: {stem.name}") + "\n", encoding="utf-8")
    return md


def write_results(res: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out`` (JSON) first, then the Markdown and PNGs made from it. Returns both paths."""
    p = Path(out)
    if p.suffix != ".json":
        raise AudioclError(f"--out must name a .json file, got {p}")
    write_json(res, p)
    return p, render_from_json(p)


def flatten_metrics(res: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a results dict as ``{"a/b/c": value}`` (per-class and per-item detail skipped)."""
    out: dict[str, float] = {}
    for k, v in res.items():
        if k in ("per_class", "confusion_matrix", "projection", "folds", "fold_std", "per_fold") or k in _SKIP:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(flatten_metrics(v, key + "/"))
    return out


def find_results(exp: str | os.PathLike) -> list[Path]:
    """Results JSON files of an experiment: the file itself, or every ``*.json`` under a
    folder whose top level has an ``"eval"`` key."""
    p = Path(exp)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise AudioclError(f"experiment {p} is neither a results JSON file nor a folder")
    found = []
    for f in sorted(p.rglob("*.json")):
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if isinstance(d, dict) and "eval" in d:
            found.append(f)
    return found


def compare_experiments(exps: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """One Markdown table: a row per metric (``<results file stem>/<metric>``), a column per experiment."""
    if not exps:
        raise AudioclError("give at least one experiment")
    cols = list(names) if names else [Path(e).name or str(e) for e in exps]
    if len(cols) != len(exps):
        raise AudioclError("one name per experiment")
    per_exp: list[dict[str, float]] = []
    for e in exps:
        files = find_results(e)
        if not files:
            raise AudioclError(f"no results JSON (with an 'eval' key) under {e}")
        merged: dict[str, float] = {}
        for f in files:
            try:
                d = json.loads(Path(f).read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise InputError(str(f), f"not valid JSON: {err.msg}", line=err.lineno) from None
            base = Path(e)
            rel = f.relative_to(base).with_suffix("") if base.is_dir() else Path(f.stem)
            merged.update(flatten_metrics(d, prefix=f"{rel.as_posix()}/"))
        per_exp.append(merged)
    keys: list[str] = []
    for m in per_exp:
        keys += [k for k in m if k not in keys]
    rows = [[k, *[m.get(k) for m in per_exp]] for k in keys]
    return "\n".join(_table(["metric", *cols], rows)) + "\n"
