"""Zero-shot classification: class names turned into text prompts, scored against audio.

Protocol

* Classes: the sorted set of labels in the manifest (or a given class list,
  one label a line, so a subset of a dataset is still scored against all of
  its classes). A label's class name replaces underscores with spaces
  (``chirping_birds`` -> ``chirping birds``).
* Prompts: one template (``"This is a sound of {}."``, LAION-CLAP's) or an
  ensemble. With ``K`` templates the class embedding is
  ``normalize(mean_k normalize(text(template_k % name)))``: the mean of the
  L2-normalised text embeddings, re-normalised. Without ``--prompt`` the
  model folder's ``prompts.json`` (chosen by the recipe that trained it) is used.
* Scores: ``S = A @ C^T`` with ``A`` ``[N, d]`` unit audio embeddings and
  ``C`` ``[n_classes, d]`` unit class embeddings (cosine similarity).
* Single-label manifests (every item has exactly one label): top-1 and top-5
  accuracy (pessimistic ties, :mod:`audiocl.eval.metrics`), per-class
  accuracy, a confusion matrix (rows: true class, columns: predicted).
* Multi-label manifests (some item has several labels): ``mAP`` = mean over
  classes with a positive item of the average precision of ranking all items
  by that class's score; ``top1`` = fraction of items whose best class is one
  of their labels; ``top5`` = fraction with at least one label in the top 5.
* Folds (ESC-50's 5-fold protocol, items with ``custom["fold"]``): zero-shot
  trains nothing, so each fold's numbers are those of its items, reported per
  fold with the mean (and standard deviation) over folds, besides the
  numbers over all items.
* Groups (``group_by``: ``speaker``, ``language``, ``split``, ``source``,
  ``fold`` or any other manifest field): the same item-level numbers on each
  group's items (the class set stays the whole one), with the mean, standard
  deviation, minimum and maximum over groups. Every item must have the field.
* Refused (``AudioclError``, one line naming the place): fewer than 2 classes
  (one class would score top-1 1.0 whatever the model does), an empty label,
  a template that is not text with exactly one ``{}`` slot, ``batch_size < 1``.

Object-first: :func:`zeroshot` takes a loaded model, a list of manifest items
(or their audio embeddings) and the classes; :func:`run_zeroshot` reads a
model folder and a manifest and calls it.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError, InputError
from audiocl.eval import metrics as M

__all__ = [
    "DEFAULT_PROMPT",
    "class_name",
    "read_prompts_file",
    "read_class_list",
    "resolve_prompts",
    "class_embeddings",
    "check_template",
    "item_field",
    "group_values",
    "read_items",
    "grouped_blocks",
    "zeroshot_metrics",
    "zeroshot",
    "run_zeroshot",
]

DEFAULT_PROMPT = "This is a sound of {}."


def class_name(label: str) -> str:
    """The text a label stands for in a prompt: underscores become spaces."""
    return " ".join(str(label).replace("_", " ").split())


def check_template(t: str, where: str) -> str:
    """Return ``t`` if it is text with exactly one ``{}`` slot and no other ``{...}`` field.

    ``"{0} {1}"``, ``"{label}"``, ``"{:>5}"``, ``"{} and {}"`` and unbalanced
    braces are refused with ``AudioclError`` naming ``where``: the class
    name is put in with ``str.replace("{}", name)``, so any other field would
    reach the text tower as literal braces.
    """
    msg = f"{where}: a prompt template needs exactly one '{{}}' for the class name (and no other {{...}}), got {t!r}"
    if not isinstance(t, str):
        raise AudioclError(msg)
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(t) if name is not None]
    except ValueError:
        raise AudioclError(msg) from None
    if fields != [("", "", None)]:
        raise AudioclError(msg)
    return t


_check_template = check_template


def read_prompts_file(path: str | os.PathLike) -> list[str]:
    """Templates from a JSON list or a text file (one a line; blank and ``#`` lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "prompts file not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(str(p), f"not valid JSON: {e.msg}", line=e.lineno) from None
        if not isinstance(data, list) or not data:
            raise InputError(str(p), "expected a non-empty JSON list of templates")
        return [_check_template(t, f"{p}[{i}]") for i, t in enumerate(data)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            try:
                check_template(s, "template")
            except AudioclError:
                raise InputError(str(p), f"template needs exactly one '{{}}' (and no other {{...}}): {s!r}", line=n) from None
            out.append(s)
    if not out:
        raise InputError(str(p), "no templates in file")
    return out


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class labels, one a line (blank lines skipped), in file order; duplicates refused."""
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "class list not found")
    out: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s in seen:
            raise InputError(str(p), f"class {s!r} repeats line {seen[s]}", line=n)
        seen[s] = n
        out.append(s)
    if not out:
        raise InputError(str(p), "no classes in file")
    return out


def resolve_prompts(prompt: str | None, prompts_file: str | os.PathLike | None, model_prompts: Sequence[str] | None) -> list[str]:
    """``--prompt`` wins, then ``--prompts-file``, then the model's ``prompts.json``, then LAION's."""
    if prompt is not None and prompts_file is not None:
        raise AudioclError("give --prompt or --prompts-file, not both")
    if prompt is not None:
        return [_check_template(prompt, "--prompt")]
    if prompts_file is not None:
        return read_prompts_file(prompts_file)
    if model_prompts:
        return [_check_template(t, "model prompts.json") for t in model_prompts]
    return [DEFAULT_PROMPT]


def class_embeddings(
    embed_text: Callable[[list[str]], torch.Tensor], class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Prompt-ensemble class embeddings ``[C, d]``.

    ``E_k = normalize(embed_text([template_k with name_c for c]))`` (``[C, d]``
    per template), ``class_emb = normalize(mean_k E_k)``. One template gives
    its normalised embedding unchanged.
    """
    if not templates:
        raise AudioclError("no prompt templates")
    acc = None
    for t in templates:
        _check_template(t, "template")
        e = F.normalize(embed_text([t.replace("{}", n) for n in class_names]).float(), dim=-1)
        acc = e if acc is None else acc + e
    assert acc is not None
    return F.normalize(acc / len(templates), dim=-1)


def _single_label_block(scores: torch.Tensor, targets: torch.Tensor, k5: int) -> dict[str, Any]:
    # ranks of the true class among the classes (1-based, pessimistic ties);
    # MRR and mean rank are CLASP's MRR and meanR
    r = M.ranks_from_similarity(scores, targets)
    return {
        "top1": M.recall_at_k(r, 1),
        "top5": M.recall_at_k(r, k5),
        "MRR": M.mrr(r),
        "mean_rank": M.mean_rank(r),
        "n_items": int(targets.numel()),
    }


def _multi_label_block(scores: torch.Tensor, y: torch.Tensor, k5: int) -> dict[str, Any]:
    # a label counts as found at k if its pessimistic rank is <= k
    n, c = y.shape
    best_rank = torch.full((n,), c + 1, dtype=torch.long)
    for j in range(c):
        rows = y[:, j].nonzero().squeeze(1)
        if rows.numel():
            r = M.ranks_from_similarity(scores[rows], torch.full((rows.numel(),), j, dtype=torch.long))
            best_rank[rows] = torch.minimum(best_rank[rows], r)
    out: dict[str, Any] = {
        "top1": float((best_rank <= 1).double().mean()),
        "top5": float((best_rank <= k5).double().mean()),
        "n_items": int(n),
    }
    if bool(y.any()):
        out["mAP"] = M.mean_average_precision(scores, y)[0]
    return out


def _label_matrix(labels: Sequence[Sequence[str]], classes: Sequence[str], ids: Sequence[str]) -> torch.Tensor:
    index = {cl: i for i, cl in enumerate(classes)}
    y = torch.zeros(len(labels), len(classes), dtype=torch.bool)
    for i, labs in enumerate(labels):
        if not labs:
            raise AudioclError(f"item {ids[i]!r} has no label; zero-shot classification needs one")
        for lab in labs:
            if lab not in index:
                raise AudioclError(f"item {ids[i]!r} has label {lab!r}, which is not in the class list")
            y[i, index[lab]] = True
    return y


def grouped_blocks(
    scores: torch.Tensor, y: torch.Tensor, values: Sequence[Any], *, multi: bool, k5: int
) -> dict[str, dict[str, Any]]:
    """``{str(value): metrics of the rows whose value it is}``, values in sorted order.

    ``scores`` ``[N, C]``, ``y`` ``[N, C]`` bool, ``values`` one group value
    per row (none missing). Each block is the single- or multi-label block of
    the whole result (top1, top5, ..., n_items) restricted to those rows.
    """
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(set(values), key=lambda v: (str(type(v)), v)):
        rows = torch.tensor([i for i, v in enumerate(values) if v == g], dtype=torch.long)
        if multi:
            out[str(g)] = _multi_label_block(scores[rows], y[rows], k5)
        else:
            out[str(g)] = _single_label_block(scores[rows], y[rows].float().argmax(dim=1), k5)
    return out


def _over_groups(blocks: dict[str, dict[str, Any]], stats: Sequence[str]) -> dict[str, dict[str, float]]:
    keys = [k for k in ("top1", "top5", "mAP", "MRR", "mean_rank") if all(k in v for v in blocks.values())]
    fns: dict[str, Callable[..., Any]] = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}
    return {st: {k: float(fns[st]([v[k] for v in blocks.values()])) for k in keys} for st in stats}


def zeroshot_metrics(
    scores: torch.Tensor,
    labels: Sequence[Sequence[str]],
    classes: Sequence[str],
    *,
    folds: Sequence[Any] | None = None,
    ids: Sequence[str] | None = None,
    groups: dict[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """Zero-shot results from scores ``[N, C]`` (item x class) and each item's labels.

    Returns at least ``{"top1", "top5", "n_items", "n_classes", "per_class",
    "task"}``; single-label adds ``"MRR"``, ``"mean_rank"`` (of the true
    class, pessimistic ties) and ``"confusion_matrix"`` (``[C][C]`` counts),
    multi-label adds ``"mAP"``; with ``folds`` (one value per item, none
    missing) adds ``"folds": {fold: {...}}`` and ``"fold_mean"``/``"fold_std"``;
    with ``groups`` (``{field: one value per item}``) adds ``"groups": {field:
    {"per_group": {value: {...}}, "n_groups", "mean", "std", "min", "max"}}``.
    """
    scores = M.as_tensor(scores).float()
    M.check_finite(scores, "zero-shot scores")
    n, c = scores.shape
    if len(labels) != n:
        raise AudioclError(f"{len(labels)} label lists for {n} scored items")
    if c != len(classes):
        raise AudioclError(f"{c} score columns for {len(classes)} classes")
    if c < 2:
        raise AudioclError(
            f"zero-shot classification needs at least 2 classes, got {c} ({', '.join(map(repr, classes))}): "
            "with one class every item is 'right'"
        )
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    y = _label_matrix(labels, classes, ids)
    multi = any(len(set(labs)) != 1 for labs in labels)
    k5 = min(5, c)
    res: dict[str, Any] = {"task": "multi-label" if multi else "single-label"}
    if multi:
        res.update(_multi_label_block(scores, y, k5))
        _, per_ap = M.mean_average_precision(scores, y)
        res["per_class"] = {
            cl: {"AP": per_ap[j], "n_positive": int(y[:, j].sum())} for j, cl in enumerate(classes)
        }
    else:
        targets = y.float().argmax(dim=1)
        res.update(_single_label_block(scores, targets, k5))
        # prediction = best class; ties go to the lowest class index (argmax)
        pred = scores.argmax(dim=1)
        acc = M.per_class_accuracy(pred, targets, c)
        counts = torch.bincount(targets, minlength=c)
        res["per_class"] = {cl: {"accuracy": acc[j], "n": int(counts[j])} for j, cl in enumerate(classes)}
        res["confusion_matrix"] = M.confusion_matrix(pred, targets, c).tolist()
    res["n_items"] = int(n)
    res["n_classes"] = int(c)
    res["top5_k"] = k5
    if folds is not None:
        if len(folds) != n or any(f is None for f in folds):
            raise AudioclError("fold protocol needs a fold for every item")
        fold_res = grouped_blocks(scores, y, folds, multi=multi, k5=k5)
        res["folds"] = fold_res
        keys = [k for k in ("top1", "top5", "mAP") if all(k in v for v in fold_res.values())]
        res["fold_mean"] = {k: float(np.mean([v[k] for v in fold_res.values()])) for k in keys}
        res["fold_std"] = {k: float(np.std([v[k] for v in fold_res.values()])) for k in keys}
    if groups:
        res["groups"] = {}
        for field_name, values in groups.items():
            if len(values) != n or any(v is None for v in values):
                raise AudioclError(f"group-by '{field_name}' needs a value for every item")
            blocks = grouped_blocks(scores, y, values, multi=multi, k5=k5)
            res["groups"][field_name] = {
                "per_group": blocks, "n_groups": len(blocks), **_over_groups(blocks, ("mean", "std", "min", "max")),
            }
    return res


# fields of AudioItem a group can be read from; anything else comes from item.custom
_ITEM_FIELDS = ("split", "language", "speaker", "source", "license", "sampling_rate", "channels")


def item_field(item: Any, name: str) -> Any:
    """The value of manifest field ``name`` on an item: an ``AudioItem`` attribute or ``custom[name]``."""
    if name in _ITEM_FIELDS:
        return getattr(item, name)
    custom = getattr(item, "custom", None) or {}
    v = custom.get(name)
    if isinstance(v, (list, dict)):
        raise AudioclError(f"item {item.id!r}: field '{name}' is a {type(v).__name__}; group-by needs a single value")
    return v


def group_values(items: Sequence[Any], name: str, source: str | None) -> list[Any]:
    values = [item_field(it, name) for it in items]
    missing = [it.id for it, v in zip(items, values) if v is None]
    if missing:
        where = f"{source}: " if source else ""
        raise AudioclError(
            f"{where}--group-by {name}: {len(missing)} of {len(items)} item(s) have no '{name}' "
            f"(first: {missing[0]!r})"
        )
    return values


def _line_of(manifest: str | os.PathLike, item_id: str) -> str:
    """``"<manifest>:<line>"`` of the item ``item_id`` (looked up only to name a bad item)."""
    import gzip

    p = Path(manifest)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    if json.loads(line).get("id") == item_id:
                        return f"{p}:{n}"
                except (json.JSONDecodeError, AttributeError):
                    continue
    except OSError:
        pass
    return str(p)


def _check_labels(items: Sequence[Any], source: str | None) -> None:
    for it in items:
        for lab in it.labels:
            if not isinstance(lab, str) or not lab.strip():
                where = _line_of(source, it.id) if source and Path(source).is_file() else (source or "items")
                raise AudioclError(
                    f"{where}: item {it.id!r} has an empty label {lab!r}; a class needs a name "
                    "(drop the label or name it)"
                )


def zeroshot(
    model: Any,
    items: Sequence[Any],
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    *,
    group_by: str | Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    audio: torch.Tensor | None = None,
    store: str | os.PathLike | None = None,
    audio_tower: str | None = None,
    text_tower: str | None = None,
    batch_size: int = 16,
    source: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Zero-shot classification of loaded manifest ``items`` with a loaded ``model``.

    ``classes``: the labels to choose from (default: the sorted labels of the
    items); ``names``: the text put into the templates for each class
    (default :func:`class_name` of the label, e.g. another language's word);
    ``templates``: default the model's ``prompts.json``, else LAION's.
    ``audio``: the items' audio embeddings ``[N, d]`` if already computed
    (otherwise embedded from ``store`` or the files). ``group_by``: manifest
    field(s) for per-group results; ``fold`` also gives the fold protocol's
    ``folds`` block (as it does whenever every item has a fold).
    ``source`` (the manifest, a classes file) names the place in errors.

    Returns ``(results, scores [N, C])`` with ``scores = normalize(A) @ C^T``.
    """
    from audiocl.eval.embed import embed_items_audio, embed_strings

    src = None if source is None else str(source)
    if batch_size < 1:
        raise AudioclError(f"batch size must be >= 1, got {batch_size}")
    items = list(items)
    if not items:
        raise AudioclError(f"{src}: no items to classify" if src else "no items to classify")
    _check_labels(items, src)
    if classes is None:
        classes = sorted({lab for it in items for lab in it.labels})
        if not classes:
            raise AudioclError(f"{src or 'items'}: no labels; zero-shot classification needs labelled items")
    classes = list(classes)
    if any(not isinstance(c, str) or not c.strip() for c in classes):
        raise AudioclError(f"{src or 'classes'}: an empty class name in the class list")
    if len(classes) < 2:
        raise AudioclError(
            f"{src or 'classes'}: zero-shot classification needs at least 2 classes, got {len(classes)} "
            f"({', '.join(map(repr, classes))}); with one class every item would be 'right'"
        )
    if names is None:
        names = [class_name(c) for c in classes]
    elif len(names) != len(classes):
        raise AudioclError(f"{len(names)} class names for {len(classes)} classes")
    if templates is None:
        templates = resolve_prompts(None, None, getattr(model, "prompts", None))
    templates = [check_template(t, "template") for t in templates]
    if not templates:
        raise AudioclError("no prompt templates")
    fields = [group_by] if isinstance(group_by, str) else list(group_by or [])
    groups: dict[str, Sequence[Any]] = {f: group_values(items, f, src) for f in fields}
    if audio is None:
        audio = embed_items_audio(model, items, store=store, tower=audio_tower, batch_size=batch_size)
    elif audio.shape[0] != len(items):
        raise AudioclError(f"{audio.shape[0]} audio embeddings for {len(items)} items")
    cls_emb = class_embeddings(lambda t: embed_strings(model, t, tower=text_tower), list(names), templates)
    scores = F.normalize(audio.float(), dim=-1) @ cls_emb.T
    folds = [it.custom.get("fold") for it in items]
    use_folds = all(f is not None for f in folds)
    res = zeroshot_metrics(
        scores, [it.labels for it in items], classes, folds=folds if use_folds else None,
        ids=[it.id for it in items], groups=groups or None,
    )
    res.update(
        {
            "prompts": list(templates),
            "class_names": list(names),
            "audio_source": "store" if store is not None else "files",
            "long_audio": "evenly spaced clip-length windows averaged and re-normalised "
            "(fusion models: crops seeded by item id)",
        }
    )
    return res, scores


def read_items(manifest: str | os.PathLike, split: str | None = None) -> list[Any]:
    """The items of ``manifest`` (of ``split`` if given); refuses an empty selection naming the file."""
    from audiocl.data.manifest import read_manifest

    items = [it for it in read_manifest(manifest) if split is None or it.split == split]
    if not items:
        raise AudioclError(f"no items in {manifest}" + (f" with split {split!r}" if split else ""))
    return items


def run_zeroshot(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    prompt: str | None = None,
    prompts_file: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
    split: str | None = None,
    audio_tower: str | None = None,
    text_tower: str | None = None,
    batch_size: int = 16,
    group_by: str | Sequence[str] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Load a model folder and a manifest and call :func:`zeroshot`; returns ``(results, scores [N, C])``.

    Everything the user gave is checked before the model is loaded.
    """
    from audiocl.models import load_model

    if batch_size < 1:
        raise AudioclError(f"--batch-size must be >= 1, got {batch_size}")
    if prompt is not None:
        check_template(prompt, "--prompt")
    items = read_items(manifest, split)
    _check_labels(items, str(manifest))
    classes = read_class_list(classes_file) if classes_file is not None else None
    if classes is not None and len(classes) < 2:
        raise AudioclError(f"{classes_file}: zero-shot classification needs at least 2 classes, got {len(classes)}")
    if classes is None and len({lab for it in items for lab in it.labels}) == 1:
        only = items[0].labels[0]
        raise AudioclError(
            f"{manifest}: every item has the label {only!r}; zero-shot classification needs at least 2 classes "
            "(give --classes with the other classes)"
        )
    templates_given = resolve_prompts(prompt, prompts_file, None) if (prompt or prompts_file) else None
    fields = [group_by] if isinstance(group_by, str) else list(group_by or [])
    for f in fields:
        group_values(items, f, str(manifest))
    model = load_model(model_dir)
    templates = templates_given or resolve_prompts(None, None, getattr(model, "prompts", None))
    res, scores = zeroshot(
        model, items, classes, templates, group_by=fields, store=store, audio_tower=audio_tower,
        text_tower=text_tower, batch_size=batch_size, source=manifest,
    )
    meta = {"eval": "zeroshot", "model": str(model_dir), "manifest": str(manifest), "split": split}
    # keep the key order of earlier versions: metrics first, then what was evaluated
    tail = {k: res.pop(k) for k in ("prompts", "class_names", "audio_source", "long_audio")}
    res.update(meta)
    res.update(tail)
    return res, scores
