"""Linear probe on frozen embeddings: multinomial logistic regression, k-fold CV.

Model: ``p(y = c | x) = softmax(W z + b)_c`` with ``z = (x - mu) / sigma``
standardised with the training fold's mean/std (``sigma`` floored at 1e-6).
Training minimises the mean cross-entropy plus ``l2 * ||W||_F^2 / 2`` over
the training fold with full-batch L-BFGS (strong-Wolfe line search) from
zeros, which is deterministic: the same embeddings and folds give the same
numbers. The loss is convex, so the optimum does not depend on the start.

Cross-validation: ``k`` folds from a fixed-seed, class-stratified shuffle
(item ``i`` of class ``c`` goes to fold ``rank_within_class % k``), or given
fold ids (e.g. ESC-50's ``fold``). Reported: accuracy per fold, mean and
(population) standard deviation over folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M

__all__ = ["fit_logistic", "predict_logistic", "stratified_folds", "linear_probe"]


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, *, l2: float = 1e-3, max_iter: int = 200
) -> dict[str, torch.Tensor]:
    """Fit ``W [C, d]``, ``b [C]``, ``mu [d]``, ``sigma [d]`` on ``x [N, d]``, ``y LongTensor[N]``."""
    x = M.as_tensor(x).double()
    y = M.as_tensor(y, torch.long)
    M.check_finite(x, "probe features")
    mu = x.mean(0)
    sigma = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mu) / sigma
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"W": w.detach(), "b": b.detach(), "mu": mu, "sigma": sigma}


def predict_logistic(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Class scores ``[N, C]`` (logits) for features ``x [N, d]``."""
    z = (M.as_tensor(x).double() - params["mu"]) / params["sigma"]
    return z @ params["W"].T + params["b"]


def stratified_folds(y: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Fold id ``[N]`` in ``0..k-1``: shuffle within each class (fixed seed), deal round-robin."""
    y = M.as_tensor(y, torch.long)
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty_like(y)
    offset = 0
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        fold[idx] = (torch.arange(idx.numel()) + offset) % k
        offset += idx.numel()  # keep folds balanced in size across classes
    return fold


def linear_probe(
    x: torch.Tensor,
    labels: Sequence[str],
    *,
    k: int = 5,
    folds: Sequence[Any] | None = None,
    l2: float = 1e-3,
    seed: int = 0,
    max_iter: int = 200,
) -> dict[str, Any]:
    """k-fold linear-probe accuracy of embeddings ``x [N, d]`` for single labels ``labels [N]``.

    Returns ``{"eval": "probe", "accuracy_mean", "accuracy_std", "per_fold":
    {fold: {"accuracy", "n_train", "n_test"}}, "n_items", "n_classes", "k", "l2"}``.
    """
    x = M.as_tensor(x).double()
    n = x.shape[0]
    if len(labels) != n:
        raise AudioclError(f"{len(labels)} labels for {n} embeddings")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise AudioclError("a linear probe needs at least two classes")
    cidx = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([cidx[v] for v in labels], dtype=torch.long)
    if folds is not None:
        if len(folds) != n or any(f is None for f in folds):
            raise AudioclError("given folds need one value per item")
        names = sorted(set(folds), key=lambda v: (str(type(v)), v))
        fold = torch.tensor([names.index(f) for f in folds], dtype=torch.long)
        fold_names = [str(f) for f in names]
    else:
        if k < 2 or k > n:
            raise AudioclError(f"k must be in [2, {n}], got {k}")
        fold = stratified_folds(y, k, seed)
        fold_names = [str(i + 1) for i in range(k)]
    per: dict[str, Any] = {}
    accs = []
    for f, name in enumerate(fold_names):
        test = fold == f
        train = ~test
        if not bool(test.any()) or not bool(train.any()):
            raise AudioclError(f"fold {name} leaves an empty train or test set")
        params = fit_logistic(x[train], y[train], len(classes), l2=l2, max_iter=max_iter)
        acc = M.topk_accuracy(predict_logistic(params, x[test]), y[test], 1)
        accs.append(acc)
        per[name] = {"accuracy": acc, "n_train": int(train.sum()), "n_test": int(test.sum())}
    return {
        "eval": "probe",
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "per_fold": per,
        "n_items": int(n),
        "n_classes": len(classes),
        "k": len(fold_names),
        "l2": l2,
        "folds_from": "given" if folds is not None else f"stratified, seed {seed}",
    }


def run_probe(
    *,
    embeddings: str | None = None,
    model_dir: str | None = None,
    manifest: str | None = None,
    store: str | None = None,
    split: str | None = None,
    tower: str | None = None,
    k: int = 5,
    use_folds: bool = True,
    l2: float = 1e-3,
    seed: int = 0,
    batch_size: int = 16,
    arrays: str | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Linear probe of one tower's embeddings from an ``.npz``, a model + manifest or a model + arrays.

    Uses the items' own folds (``custom["fold"]``, e.g. ESC-50) when every item
    has one and ``use_folds``; otherwise ``k`` stratified folds.
    """
    from audiocl.eval.embed import gather_embeddings

    towers = [tower] if tower else None
    if tower is None and model_dir is not None and arrays is None:
        from audiocl.models import load_model
        from audiocl.models.api import _audio_tower

        towers = [_audio_tower(load_model(model_dir), None)]
    emb, labels, folds, meta = gather_embeddings(
        embeddings=embeddings, model_dir=model_dir, manifest=manifest, store=store, split=split,
        towers=towers, batch_size=batch_size, arrays=arrays, inputs=inputs,
    )
    if labels is None:
        raise AudioclError("a linear probe needs one label per item (manifest labels or an npz 'labels' array)")
    if len(emb) != 1:
        raise AudioclError(f"several embeddings {list(emb)}; pick one with --tower")
    name, x = next(iter(emb.items()))
    res = linear_probe(x, labels, k=k, folds=folds if use_folds else None, l2=l2, seed=seed)
    res.update({"tower": name, **meta})
    return res
