"""Results files: JSON first, then Markdown and PNGs made from the JSON.

Every evaluation writes its results dict with :func:`write_results`, which
serialises ``<out>.json`` and then, *from that JSON text*, makes ``<out>.md``
and any plots, drawn by :mod:`audiocl.plots` (``<out>.confusion.png`` for
single-label zero-shot, ``<out>.recall.png`` for retrieval,
``<out>.groups.png`` for ``--group-by``, ``<out>.projection.png`` for
diagnostics). A report can therefore always be
re-made from the JSON alone (:func:`render_from_json`).

Every file is written to a temporary name beside it (:mod:`audiocl.fsutil`)
and all of them are renamed into place only once every one was written, so a
full disk or a crash leaves the previous results (or none), never a 0-byte
PNG or a JSON without its Markdown; the error names the file that failed.

:func:`compare_experiments` reads the results JSON of several experiments
and puts them side by side in one Markdown table (``audiocl report EXP...``).
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError, InputError
from audiocl.fsutil import atomic_path, atomic_write_text

__all__ = [
    "write_json",
    "write_results",
    "render_from_json",
    "results_markdown",
    "flatten_metrics",
    "find_results",
    "compare_experiments",
]

# scalar keys never shown as metrics in the comparison table
_SKIP = {"n_items", "n_classes", "n_audio", "n_text", "n_audio_queries", "top5_k", "seed", "n_folds", "n_groups"}


def _json_text(obj: Any) -> str:
    # allow_nan=False: a NaN/inf result is a bug upstream (ValueError), never written silently
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _write_error(path: Path, err: OSError) -> AudioclError:
    what = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return AudioclError(f"cannot write {path}: {what}; no results file was changed")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    p = Path(path)
    text = _json_text(obj)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(p, text)
    except OSError as e:
        raise _write_error(p, e) from None


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
    handled = {"text_to_audio", "audio_to_text", "folds", "fold_mean", "fold_std", "per_class", "projection", "groups", "recall_curve"}
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
    for field_name, g in (res.get("groups") or {}).items():
        if not isinstance(g, dict) or not isinstance(g.get("per_group"), dict):
            continue
        per = g["per_group"]
        keys = sorted({k for v in per.values() if isinstance(v, dict) for k in v
                       if isinstance(v[k], (int, float)) or v[k] is None})
        rows = [[name, *[v.get(k) for k in keys]] for name, v in per.items()]
        for agg in ("mean", "std", "min", "max"):
            if isinstance(g.get(agg), dict):
                rows.append([f"**{agg}**", *[g[agg].get(k) for k in keys]])
        lines += [f"## Per {field_name} ({len(per)} groups)", ""] + _table([field_name, *keys], rows) + [""]
    if isinstance(res.get("per_class"), dict):
        pc = res["per_class"]
        keys = sorted({k for v in pc.values() for k in v})
        lines += ["## Per class", ""]
        lines += _table(["class", *keys], [[c, *[v.get(k) for k in keys]] for c, v in pc.items()]) + [""]
    if res.get("prompts"):
        lines += ["## Prompts", ""] + [f"- `{p}`" for p in res["prompts"]] + [""]
    for key, caption in _PLOTS:
        if res.get(key):
            lines += [f"![{caption}]({res[key]})", ""]
    return "\n".join(lines)


_PLOTS = (
    ("confusion_png", "Confusion matrix"),
    ("recall_png", "Recall@k"),
    ("groups_png", "Per group"),
    ("projection_png", "2-D projection"),
)


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix == ".json" else path


def _group_metrics(groups: dict[str, Any]) -> list[str]:
    """The metrics a per-group bar chart shows: top-1 for zero-shot, R@1 both ways for retrieval."""
    block: dict[str, Any] = next((b for g in groups.values() if isinstance(g, dict) for b in (g.get("per_group") or {}).values()), {})
    if isinstance(block.get("text_to_audio"), dict):
        return ["text_to_audio/R@1", "audio_to_text/R@1"]
    return ["top1"] if "top1" in block else ["mAP"]


def _render(res: dict[str, Any], stem: Path, stack: ExitStack, current: list[Path]) -> Path:
    """Write the Markdown and plots of ``res`` to temporary paths held by ``stack``."""
    from audiocl import plots

    res = dict(res)
    title = f"{res.get('eval', 'results')}: {stem.name}"

    def png(suffix: str) -> Path:
        p = stem.with_name(f"{stem.name}.{suffix}.png")
        current.append(p)
        return stack.enter_context(atomic_path(p))

    if res.get("confusion_matrix") and res.get("per_class"):
        plots.confusion(res["confusion_matrix"], list(res["per_class"].keys()), png("confusion"), title=title)
        res["confusion_png"] = f"{stem.name}.confusion.png"
    if isinstance(res.get("recall_curve"), dict):
        plots.recall_curves(res["recall_curve"], png("recall"), title=title)
        res["recall_png"] = f"{stem.name}.recall.png"
    groups = res.get("groups")
    if isinstance(groups, dict) and any(isinstance(g, dict) and g.get("per_group") for g in groups.values()):
        plots.group_bars(groups, png("groups"), _group_metrics(groups), title=title)
        res["groups_png"] = f"{stem.name}.groups.png"
    if res.get("projection") and isinstance(res["projection"], dict):
        plots.projection(res["projection"], png("projection"))
        res["projection_png"] = f"{stem.name}.projection.png"
    md = stem.with_name(stem.name + ".md")
    current.append(md)
    tmp = stack.enter_context(atomic_path(md))
    tmp.write_text(results_markdown(res, title=f"{res.get('eval', 'results')}: {stem.name}") + "\n", encoding="utf-8")
    return md


def render_from_json(json_path: str | os.PathLike) -> Path:
    """Make ``<stem>.md`` (and plots) from a results JSON file; returns the Markdown path."""
    jp = Path(json_path)
    try:
        res = json.loads(jp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(str(jp), f"not valid JSON: {e.msg}", line=e.lineno) from None
    current: list[Path] = [jp]
    try:
        with ExitStack() as stack:
            return _render(res, _stem(jp), stack, current)
    except OSError as e:
        raise _write_error(current[-1], e) from None


def write_results(res: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out`` (JSON), and the Markdown and PNGs made from that JSON; returns both paths.

    All files go to temporary names first and are renamed into place together
    (JSON last), only after every one was written.
    """
    p = Path(out)
    if p.suffix != ".json":
        raise AudioclError(f"--out must name a .json file, got {p}")
    text = _json_text(res)
    current: list[Path] = [p]
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        # ExitStack renames in reverse order of entry: the JSON is entered first,
        # so it lands last and a reader that sees it also sees its Markdown
        with ExitStack() as stack:
            tmp_json = stack.enter_context(atomic_path(p))
            tmp_json.write_text(text, encoding="utf-8")
            md = _render(json.loads(text), _stem(p), stack, current)
            current.append(p)
    except OSError as e:
        raise _write_error(current[-1], e) from None
    return p, md


def flatten_metrics(res: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a results dict as ``{"a/b/c": value}`` (per-class and per-item detail skipped)."""
    out: dict[str, float] = {}
    for k, v in res.items():
        if k in ("per_class", "confusion_matrix", "projection", "recall_curve", "folds", "fold_std", "per_fold", "per_group") or k in _SKIP:
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
