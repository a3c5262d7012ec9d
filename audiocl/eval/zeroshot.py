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
"""

from __future__ import annotations

import json
import os
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
    "zeroshot_metrics",
    "run_zeroshot",
]

DEFAULT_PROMPT = "This is a sound of {}."


def class_name(label: str) -> str:
    """The text a label stands for in a prompt: underscores become spaces."""
    return " ".join(str(label).replace("_", " ").split())


def _check_template(t: str, where: str) -> str:
    if not isinstance(t, str) or t.count("{}") != 1:
        raise AudioclError(f"{where}: a prompt template needs exactly one '{{}}' for the class name, got {t!r}")
    return t


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
            if s.count("{}") != 1:
                raise InputError(str(p), f"template needs exactly one '{{}}': {s!r}", line=n)
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
    return {
        "top1": M.topk_accuracy(scores, targets, 1),
        "top5": M.topk_accuracy(scores, targets, k5),
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


def zeroshot_metrics(
    scores: torch.Tensor,
    labels: Sequence[Sequence[str]],
    classes: Sequence[str],
    *,
    folds: Sequence[Any] | None = None,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero-shot results from scores ``[N, C]`` (item x class) and each item's labels.

    Returns at least ``{"top1", "top5", "n_items", "n_classes", "per_class",
    "task"}``; single-label adds ``"confusion_matrix"`` (``[C][C]`` counts),
    multi-label adds ``"mAP"``; with ``folds`` (one value per item, none
    missing) adds ``"folds": {fold: {...}}`` and ``"fold_mean"``/``"fold_std"``.
    """
    scores = M.as_tensor(scores).float()
    M.check_finite(scores, "zero-shot scores")
    n, c = scores.shape
    if len(labels) != n:
        raise AudioclError(f"{len(labels)} label lists for {n} scored items")
    if c != len(classes):
        raise AudioclError(f"{c} score columns for {len(classes)} classes")
    index = {cl: i for i, cl in enumerate(classes)}
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    y = torch.zeros(n, c, dtype=torch.bool)
    for i, labs in enumerate(labels):
        if not labs:
            raise AudioclError(f"item {ids[i]!r} has no label; zero-shot classification needs one")
        for lab in labs:
            if lab not in index:
                raise AudioclError(f"item {ids[i]!r} has label {lab!r}, which is not in the class list")
            y[i, index[lab]] = True
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
        fold_res: dict[str, Any] = {}
        for f in sorted(set(folds), key=lambda v: (str(type(v)), v)):
            rows = torch.tensor([i for i, g in enumerate(folds) if g == f], dtype=torch.long)
            if multi:
                fold_res[str(f)] = _multi_label_block(scores[rows], y[rows], k5)
            else:
                fold_res[str(f)] = _single_label_block(scores[rows], y[rows].float().argmax(dim=1), k5)
        res["folds"] = fold_res
        keys = [k for k in ("top1", "top5", "mAP") if all(k in v for v in fold_res.values())]
        res["fold_mean"] = {k: float(np.mean([v[k] for v in fold_res.values()])) for k in keys}
        res["fold_std"] = {k: float(np.std([v[k] for v in fold_res.values()])) for k in keys}
    return res


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
) -> tuple[dict[str, Any], torch.Tensor]:
    """Load a model folder and a manifest, embed, score; returns ``(results, scores [N, C])``."""
    from audiocl.data.manifest import read_manifest
    from audiocl.eval.embed import embed_items_audio, embed_strings
    from audiocl.models import load_model

    items = [it for it in read_manifest(manifest) if split is None or it.split == split]
    if not items:
        raise AudioclError(f"no items in {manifest}" + (f" with split {split!r}" if split else ""))
    classes = (
        read_class_list(classes_file)
        if classes_file is not None
        else sorted({lab for it in items for lab in it.labels})
    )
    if not classes:
        raise AudioclError(f"no labels in {manifest}; zero-shot classification needs labelled items")
    model = load_model(model_dir)
    templates = resolve_prompts(prompt, prompts_file, getattr(model, "prompts", None))
    names = [class_name(c) for c in classes]
    cls_emb = class_embeddings(lambda t: embed_strings(model, t, tower=text_tower), names, templates)
    audio = embed_items_audio(model, items, store=store, tower=audio_tower, batch_size=batch_size)
    scores = F.normalize(audio.float(), dim=-1) @ cls_emb.T
    folds = [it.custom.get("fold") for it in items]
    use_folds = all(f is not None for f in folds)
    res = zeroshot_metrics(
        scores, [it.labels for it in items], classes, folds=folds if use_folds else None,
        ids=[it.id for it in items],
    )
    res.update(
        {
            "eval": "zeroshot",
            "model": str(model_dir),
            "manifest": str(manifest),
            "split": split,
            "prompts": templates,
            "class_names": names,
            "audio_source": "store" if store is not None else "files",
            "long_audio": "evenly spaced clip-length windows averaged and re-normalised "
            "(fusion models: crops seeded by item id)",
        }
    )
    return res, scores
