"""Embedding-space diagnostics: modality gap, alignment, uniformity, a 2-D projection.

Definitions (``x`` ``[N, d]`` and ``y`` ``[N, d]`` paired embeddings of two
modalities, row ``i`` of each describing the same item; rows are
L2-normalised first):

* **Modality gap** (Liang et al. 2022): ``gap = mu_x - mu_y`` with
  ``mu = mean of the rows``; reported as its Euclidean norm ``||gap||`` and
  the norms of both centroids (a centroid norm near 1 means the modality
  occupies a narrow cone).
* **Alignment** (Wang & Isola 2020): ``mean_i ||x_i - y_i||^alpha``,
  ``alpha = 2``; lower is better aligned.
* **Uniformity** (Wang & Isola 2020): ``log mean_{i<j} exp(-t ||u_i - u_j||^2)``,
  ``t = 2``, per modality; lower (more negative) is more uniform. Computed on
  at most ``max_pairs_items`` rows (a fixed-seed subset) to bound the
  ``O(N^2)`` pairwise distances.
* **Projection**: PCA to 2-D of the rows of all modalities together
  (centred, top-2 right singular vectors from ``torch.linalg.svd``; no
  random projection, so the plot is deterministic up to the sign of each
  axis, which is fixed by making the largest-magnitude loading positive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M

__all__ = ["modality_gap", "alignment", "uniformity", "pca_2d", "diagnostics"]


def _unit(x: torch.Tensor, what: str) -> torch.Tensor:
    x = M.as_tensor(x).double()
    if x.dim() != 2 or x.shape[0] == 0:
        raise AudioclError(f"{what}: expected a non-empty [N, d] matrix, got {tuple(x.shape)}")
    M.check_finite(x, what)
    return F.normalize(x, dim=1)


def modality_gap(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``{"gap": ||mean(x) - mean(y)||, "centroid_norm_x", "centroid_norm_y"}`` on unit rows.

    ``x``: ``[N, d]``, ``y``: ``[M, d]`` (need not be paired).
    """
    xu, yu = _unit(x, "x"), _unit(y, "y")
    mx, my = xu.mean(0), yu.mean(0)
    return {
        "gap": float(torch.linalg.vector_norm(mx - my)),
        "centroid_norm_x": float(torch.linalg.vector_norm(mx)),
        "centroid_norm_y": float(torch.linalg.vector_norm(my)),
    }


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """``mean_i ||x_i - y_i||_2^alpha`` of paired unit rows; ``x``, ``y``: ``[N, d]``."""
    xu, yu = _unit(x, "x"), _unit(y, "y")
    if xu.shape != yu.shape:
        raise AudioclError(f"alignment needs paired rows; got {tuple(xu.shape)} and {tuple(yu.shape)}")
    return float(torch.linalg.vector_norm(xu - yu, dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0, *, max_items: int = 4096, seed: int = 0) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` of unit rows ``x`` ``[N, d]`` (N >= 2).

    With more than ``max_items`` rows a fixed-seed random subset is used.
    """
    xu = _unit(x, "x")
    if xu.shape[0] < 2:
        raise AudioclError("uniformity needs at least 2 rows")
    if xu.shape[0] > max_items:
        g = torch.Generator().manual_seed(seed)
        xu = xu[torch.randperm(xu.shape[0], generator=g)[:max_items]]
    d2 = torch.pdist(xu).pow(2)
    # log-mean-exp, stable
    return float(torch.logsumexp(-t * d2, dim=0) - torch.log(torch.tensor(float(d2.numel()), dtype=torch.float64)))


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` ``[N, d]`` projected on their top-2 principal axes: ``[N, 2]``.

    ``x_c = x - mean(x)``; ``x_c = U S V^T``; returns ``x_c V[:, :2]`` with each
    axis's sign chosen so that its largest-magnitude loading is positive.
    """
    x = M.as_tensor(x).double()
    M.check_finite(x, "embeddings")
    xc = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    v = vh[:2].T.clone()  # [d, 2]
    if v.shape[1] < 2:
        v = torch.cat([v, torch.zeros(v.shape[0], 2 - v.shape[1], dtype=v.dtype)], 1)
    for j in range(v.shape[1]):
        if v[v[:, j].abs().argmax(), j] < 0:
            v[:, j] = -v[:, j]
    return xc @ v


def diagnostics(
    embeddings: dict[str, torch.Tensor],
    labels: Sequence[str] | None = None,
    *,
    max_plot_points: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """All diagnostics for named modality embeddings (each ``[N, d]``, rows paired).

    Returns ``{"eval": "diagnostics", "modalities", "n_items", "uniformity": {m: u},
    "pairs": {"a|b": {"gap", "centroid_norm_x", "centroid_norm_y", "alignment"}},
    "projection": {"x", "y", "modality", "label"}}``; the projection holds at
    most ``max_plot_points`` items (fixed-seed subset) per modality.
    """
    names = list(embeddings)
    if not names:
        raise AudioclError("no embeddings given")
    n = M.as_tensor(embeddings[names[0]]).shape[0]
    for m in names:
        if M.as_tensor(embeddings[m]).shape[0] != n:
            raise AudioclError("every modality needs the same number of rows (paired items)")
    if labels is not None and len(labels) != n:
        raise AudioclError(f"{len(labels)} labels for {n} items")
    res: dict[str, Any] = {"eval": "diagnostics", "modalities": names, "n_items": int(n)}
    res["uniformity"] = {m: uniformity(embeddings[m], seed=seed) for m in names}
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p = modality_gap(embeddings[a], embeddings[b])
            p["alignment"] = alignment(embeddings[a], embeddings[b])
            pairs[f"{a}|{b}"] = p
    res["pairs"] = pairs
    idx = torch.arange(n)
    if n > max_plot_points:
        idx = torch.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_plot_points]).values
    stacked = torch.cat([F.normalize(M.as_tensor(embeddings[m]).double()[idx], dim=1) for m in names])
    xy = pca_2d(stacked)
    res["projection"] = {
        "method": "pca",
        "x": [round(float(v), 6) for v in xy[:, 0]],
        "y": [round(float(v), 6) for v in xy[:, 1]],
        "modality": [m for m in names for _ in range(idx.numel())],
        "label": None if labels is None else [str(labels[int(i)]) for _ in names for i in idx],
    }
    return res
