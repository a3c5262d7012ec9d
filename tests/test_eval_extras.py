"""Multi-way retrieval, linear probe, diagnostics and reports (audiocl.eval)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError
from audiocl.eval.diagnostics import alignment, diagnostics, modality_gap, pca_2d, uniformity
from audiocl.eval.multiway import multiway_all, multiway_metrics
from audiocl.eval.probe import fit_logistic, linear_probe, predict_logistic, stratified_folds
from audiocl.eval.report import (
    compare_experiments,
    flatten_metrics,
    render_from_json,
    write_results,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(x):
    return F.normalize(x, dim=1)


# ---------------------------------------------------------------- multiway


def test_multiway_mip_perfect_for_symile_structure():
    # c_i is the normalised elementwise product a_i * b_i: MIP(a_i, b_i, c_j) =
    # <a_i * b_i, c_j> is then a cosine-like score, maximal at j = i
    gen = torch.Generator().manual_seed(0)
    a = _unit(torch.randn(300, 16, generator=gen))
    b = _unit(torch.randn(300, 16, generator=gen))
    c = _unit(a * b)
    r = multiway_metrics({"a": a, "b": b, "c": c}, "c", "mip")
    assert r["accuracy"] == 1.0 and r["MRR"] == 1.0
    # random third modality: accuracy about 1/N
    rnd = multiway_metrics({"a": a, "b": b, "c": _unit(torch.randn(300, 16, generator=gen))}, "c", "mip")
    assert rnd["R@10"] < 0.1


def test_multiway_volume_and_cosine_find_shared_content():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(200, 16, generator=gen)
    emb = {m: _unit(base + 0.3 * torch.randn(200, 16, generator=gen)) for m in ("audio", "text", "image")}
    for method in ("volume", "cosine"):
        res = multiway_all(emb, method)
        assert set(res["targets"]) == {"audio", "text", "image"}
        assert res["accuracy_mean"] > 0.9, method
    # target z_i = x_i makes the matching volume 0 (two equal vectors), others > 0
    same = _unit(torch.randn(50, 8, generator=gen))
    other = _unit(torch.randn(50, 8, generator=gen))
    assert multiway_metrics({"x": same, "y": other, "z": same.clone()}, "z", "volume")["accuracy"] == 1.0
    # chunking changes nothing
    r1 = multiway_metrics(emb, "text", "volume")
    r2 = multiway_metrics(emb, "text", "volume", chunk=7)
    assert r1 == r2
    with pytest.raises(AudioclError):
        multiway_all(emb, "dot")
    with pytest.raises(AudioclError):
        multiway_metrics({"x": same, "y": same[:10]}, "x", "cosine")


def test_multiway_gallery_permutation_invariance():
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(80, 8, generator=gen)
    emb = {m: _unit(base + torch.randn(80, 8, generator=gen)) for m in "abc"}
    perm = torch.randperm(80, generator=gen)
    # permuting all items together relabels queries and gallery alike
    permuted = {m: e[perm] for m, e in emb.items()}
    for method in ("mip", "volume", "cosine"):
        assert multiway_metrics(emb, "a", method) == pytest.approx(multiway_metrics(permuted, "a", method))


# ---------------------------------------------------------------- probe


def test_probe_separable_and_chance():
    gen = torch.Generator().manual_seed(3)
    n = 240
    y = torch.arange(n) % 4
    centers = 4 * torch.randn(4, 12, generator=gen)
    x = centers[y] + torch.randn(n, 12, generator=gen)
    labels = [f"k{i}" for i in y.tolist()]
    res = linear_probe(x, labels, k=4)
    assert res["accuracy_mean"] > 0.95 and res["k"] == 4 and res["n_classes"] == 4
    assert sum(v["n_test"] for v in res["per_fold"].values()) == n
    # deterministic
    assert linear_probe(x, labels, k=4) == res
    # labels independent of the features: about 1/4
    shuffled = [labels[i] for i in torch.randperm(n, generator=gen).tolist()]
    ch = linear_probe(torch.randn(n, 12, generator=gen), shuffled, k=4)
    assert abs(ch["accuracy_mean"] - 0.25) < 0.12
    # given folds (ESC-50 style) are used as they are
    folds = [1 + i % 3 for i in range(n)]
    given = linear_probe(x, labels, folds=folds)
    assert sorted(given["per_fold"]) == ["1", "2", "3"] and given["folds_from"] == "given"


def test_logistic_regression_matches_known_optimum():
    # two points per class on a line, symmetric: the optimum puts the boundary at 0
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 1, 1])
    p = fit_logistic(x, y, 2, l2=1e-2)
    scores = predict_logistic(p, torch.tensor([[0.0], [-0.5], [0.5]]))
    assert float(scores[0, 0]) == pytest.approx(float(scores[0, 1]), abs=1e-6)
    assert scores[1].argmax() == 0 and scores[2].argmax() == 1
    # gradient of the objective is ~0 at the returned optimum
    w = p["W"].clone().requires_grad_(True)
    b = p["b"].clone().requires_grad_(True)
    z = (x.double() - p["mu"]) / p["sigma"]
    loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * 1e-2 * (w * w).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-5 and b.grad.abs().max() < 1e-5


def test_stratified_folds_balance_classes():
    y = torch.tensor([0] * 10 + [1] * 5)
    f = stratified_folds(y, 5, seed=0)
    for k in range(5):
        assert int(((f == k) & (y == 0)).sum()) == 2
        assert int(((f == k) & (y == 1)).sum()) == 1


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_hand_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 2.0], [0.0, 3.0]])  # normalised to (0, 1)
    g = modality_gap(x, y)
    assert g["gap"] == pytest.approx(math.sqrt(2))
    assert g["centroid_norm_x"] == pytest.approx(1.0)
    assert alignment(x, y) == pytest.approx(2.0)  # ||(1,-1)||^2
    assert uniformity(x) == pytest.approx(0.0)  # identical points: log exp(0)
    # two antipodal points: log exp(-2 * 4)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)


def test_pca_projection_recovers_dominant_axis():
    gen = torch.Generator().manual_seed(4)
    t = torch.randn(500, generator=gen)
    direction = _unit(torch.randn(1, 10, generator=gen))[0]
    x = 5 * t[:, None] * direction[None] + 0.1 * torch.randn(500, 10, generator=gen)
    xy = pca_2d(x)
    corr = np.corrcoef(xy[:, 0].numpy(), t.numpy())[0, 1]
    assert abs(corr) > 0.99
    assert xy[:, 0].var() > 50 * xy[:, 1].var()


def test_diagnostics_report_and_plot(tmp_path):
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(40, 6, generator=gen)
    res = diagnostics({"audio": a, "text": a + 1.0}, [f"l{i % 3}" for i in range(40)])
    assert len(res["projection"]["x"]) == 80
    assert set(res["projection"]["modality"]) == {"audio", "text"}
    jp, md = write_results(res, tmp_path / "diag.json")
    assert json.loads(jp.read_text())["pairs"]["audio|text"]["gap"] > 0
    assert (tmp_path / "diag.projection.png").read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "projection.png" in text and "## uniformity" in text
    # the pair name's "|" is escaped so the Markdown table keeps its columns
    row = next(line for line in text.splitlines() if line.startswith("| audio\\|text"))
    assert row.count(" | ") == 4


# ---------------------------------------------------------------- reports


def test_reports_json_first_and_side_by_side(tmp_path):
    r1 = {"eval": "retrieval", "text_to_audio": {"R@1": 0.25, "MRR": 0.5}, "audio_to_text": {"R@1": 0.5},
          "n_audio": 4, "n_text": 20}
    r2 = {"eval": "retrieval", "text_to_audio": {"R@1": 0.75, "MRR": 0.8}, "audio_to_text": {"R@1": 1.0},
          "n_audio": 4, "n_text": 20}
    write_results(r1, tmp_path / "e1" / "retrieval.json")
    write_results(r2, tmp_path / "e2" / "retrieval.json")
    (tmp_path / "e2" / "notes.json").write_text('{"not": "results"}')
    assert flatten_metrics(r1) == {"text_to_audio/R@1": 0.25, "text_to_audio/MRR": 0.5, "audio_to_text/R@1": 0.5}
    table = compare_experiments([tmp_path / "e1", tmp_path / "e2"])
    lines = table.splitlines()
    assert lines[0] == "| metric | e1 | e2 |"
    assert "| retrieval/text_to_audio/R@1 | 0.2500 | 0.7500 |" in lines
    assert not any("not" in line for line in lines)
    # the Markdown is re-made from the JSON alone
    md = tmp_path / "e1" / "retrieval.md"
    md.unlink()
    render_from_json(tmp_path / "e1" / "retrieval.json")
    assert "| text_to_audio | 0.2500 | 0.5000 |" in md.read_text()
    with pytest.raises(AudioclError):
        write_results(r1, tmp_path / "x.txt")
    with pytest.raises(ValueError):  # never write a NaN silently
        write_results({"eval": "x", "v": float("nan")}, tmp_path / "nan.json")
    with pytest.raises(AudioclError):
        compare_experiments([tmp_path / "missing"])
