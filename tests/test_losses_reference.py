"""Reference parity: Symile against the `symile` package (0.1.0), GRAM against the
authors' volumes and losses stored in ../shared/reference/gram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiocl.losses import build_loss
from audiocl.losses.gram import gram_determinant, gram_loss, gram_volume
from audiocl.losses.symile import draw_permutations, symile_loss_n, symile_loss_n_squared

symile = pytest.importorskip("symile")


def _unit(n: int, d: int, m: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1) for _ in range(m)]


def _grads(loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("m", [3, 4])
@pytest.mark.parametrize("scale", [5.0, 100.0])
def test_symile_n_squared_equals_package(m: int, scale: float) -> None:
    xs = [x.requires_grad_() for x in _unit(9, 6, m, seed=m)]
    t = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    ref = symile.Symile("n_squared")(xs, t)
    ref_g = _grads(ref, [*xs, t])
    # chunk sizes that split the anchors unevenly, and one block for everything
    for chunk_elements in (1, 100, 1 << 20):
        ours = symile_loss_n_squared(xs, t, chunk_elements=chunk_elements)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(_grads(ours, [*xs, t]), ref_g):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_symile_n_squared_float32_large_scale_uses_exact_path() -> None:
    # t = 100 on float32 makes exp(T - max) underflow for whole rows: the exact path must take over
    xs = [x.float().requires_grad_() for x in _unit(16, 8, 3, seed=3)]
    t = torch.tensor(400.0, requires_grad=True)
    with torch.no_grad():  # the fast path's sums do underflow here
        T = t * torch.einsum("id,jd,kd->ijk", *xs)
        assert float(torch.exp(T - T.max()).sum(dim=(1, 2)).min()) < 1e-30
    ref = symile.Symile("n_squared")(xs, t)
    ours = symile_loss_n_squared(xs, t, chunk_elements=1 << 20)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(ours, [*xs, t]), _grads(ref, [*xs, t])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("m", [3, 4])
def test_symile_n_equals_package_given_same_permutations(m: int) -> None:
    xs = [x.requires_grad_() for x in _unit(10, 5, m, seed=10 + m)]
    t = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(2024)
    ref = symile.Symile("n")(xs, t)
    ref_g = _grads(ref, [*xs, t])
    # 1) the same global-RNG state: we draw in the package's order
    torch.manual_seed(2024)
    ours = symile_loss_n(xs, t)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(ours, [*xs, t]), ref_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # 2) the permutations passed explicitly
    torch.manual_seed(2024)
    perms = draw_permutations(10, m)
    torch.testing.assert_close(symile_loss_n(xs, t, perms), ref, rtol=1e-12, atol=1e-12)
    # and different permutations give a different value (the test can fail)
    other = draw_permutations(10, m, generator=torch.Generator().manual_seed(1))
    assert abs(float(symile_loss_n(xs, t, other).detach()) - float(ref.detach())) > 1e-6


def test_symile_m2_is_clip_and_module_matches_functional() -> None:
    from audiocl.losses.clip import clip_loss

    x, y = _unit(8, 4, 2, seed=5)
    torch.testing.assert_close(symile_loss_n_squared([x, y], 3.0), clip_loss(x, y, 3.0))
    xs = _unit(6, 4, 3, seed=6)
    out = {"embeddings": dict(zip("abc", xs)), "logit_scale": torch.tensor(4.0, dtype=torch.float64)}
    loss = build_loss("symile", modalities=("a", "b", "c"))
    torch.testing.assert_close(loss(out), symile.Symile("n_squared")(xs, torch.tensor(4.0)).double())


def _gram_ref(shared_dir: Path):
    path = shared_dir / "reference" / "gram" / "volumes.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return np.load(path)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_gram_volume_and_loss_equal_reference(shared_dir: Path, k: int) -> None:
    z = _gram_ref(shared_dir)
    xs = [torch.from_numpy(z[f"k{k}_m{i}"]) for i in range(k)]
    vol = gram_volume(xs[0], xs[1:])
    torch.testing.assert_close(vol, torch.from_numpy(z[f"k{k}_volume"]), rtol=0, atol=1e-5)
    loss = gram_loss(xs[0], xs[1:], 0.07)
    assert abs(float(loss) - float(z[f"k{k}_loss_tau0.07"])) < 1e-5
    # the module with the model's logit scale 1/tau
    out = {"embeddings": {f"m{i}": x for i, x in enumerate(xs)}, "logit_scale": torch.tensor(1 / 0.07)}
    mod = build_loss("gram", modalities=[f"m{i}" for i in range(k)])
    assert abs(float(mod(out)) - float(z[f"k{k}_loss_tau0.07"])) < 1e-5


def test_gram_k3_closed_form_and_batched_det() -> None:
    t, v, a = _unit(5, 7, 3, seed=8)
    det = gram_determinant(t, [v, a])
    for i in range(5):
        for j in range(5):
            p, q, r = float(t[i] @ v[j]), float(t[i] @ a[j]), float(v[j] @ a[j])
            assert abs(float(det[i, j]) - (1 + 2 * p * q * r - p * p - q * q - r * r)) < 1e-12
    # general k against LU determinants of explicitly stacked Gram matrices
    xs = _unit(4, 9, 6, seed=9)
    det = gram_determinant(xs[0], xs[1:])
    for i in range(4):
        for j in range(4):
            vecs = torch.stack([xs[0][i]] + [x[j] for x in xs[1:]])
            assert abs(float(det[i, j]) - float(torch.linalg.det(vecs @ vecs.T))) < 1e-12


def test_gram_degenerate_positive_has_finite_gradient(shared_dir: Path) -> None:
    z = _gram_ref(shared_dir)
    assert bool(z["degenerate_reference_grad_has_nan"])
    xs = [torch.from_numpy(z[f"degenerate_m{i}"]).requires_grad_() for i in range(3)]
    vol = gram_volume(xs[0], xs[1:])
    torch.testing.assert_close(vol, torch.from_numpy(z["degenerate_volume"]), rtol=0, atol=1e-5)
    loss = gram_loss(xs[0], xs[1:], 0.07)
    loss.backward()
    for x in xs:
        assert torch.isfinite(x.grad).all()
    # the reference formulation (sqrt of |LU det|) really is NaN here
    ys = [x.detach().clone().requires_grad_() for x in xs]
    G = torch.stack([y[None, :, :].expand(4, 4, -1) if i else y[:, None, :].expand(4, 4, -1) for i, y in enumerate(ys)], 2)
    ref_vol = torch.linalg.det(G @ G.transpose(-1, -2)).abs().sqrt()
    ref_loss = 0.5 * (
        F.cross_entropy(-ref_vol / 0.07, torch.arange(4), label_smoothing=0.1)
        + F.cross_entropy(-ref_vol.T / 0.07, torch.arange(4), label_smoothing=0.1)
    )
    ref_loss.backward()
    assert not all(torch.isfinite(y.grad).all() for y in ys)


def test_gram_k3_fused_backward_matches_autograd() -> None:
    from audiocl.losses.gram import sqrt_abs

    g = torch.Generator().manual_seed(4)
    xs = [
        (F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=1) * (0.5 + torch.rand(5, 1, generator=g, dtype=torch.float64))).requires_grad_()
        for _ in range(3)
    ]
    assert torch.autograd.gradcheck(lambda a, b, c: gram_volume(a, [b, c]), xs)
    w = torch.randn(5, 5, generator=g, dtype=torch.float64)
    fused = torch.autograd.grad((gram_volume(xs[0], xs[1:]) * w).sum(), xs)
    general = torch.autograd.grad((sqrt_abs(gram_determinant(xs[0], xs[1:])) * w).sum(), xs)
    for a, b in zip(fused, general):
        torch.testing.assert_close(a, b)


def test_fused_losses_under_bf16_autocast() -> None:
    xs32 = [x.float() for x in _unit(12, 8, 3, seed=12)]
    xs16 = [x.bfloat16().requires_grad_() for x in xs32]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = symile_loss_n_squared(xs16, 10.0)
        g = gram_loss(xs16[0], xs16[1:], 0.07)
    (s + g).backward()
    assert s.dtype == torch.float32 and g.dtype == torch.float32
    assert all(torch.isfinite(x.grad).all() for x in xs16)
    ref16 = [x.float() for x in xs16]  # the same (rounded) inputs in float32
    torch.testing.assert_close(s, symile_loss_n_squared(ref16, 10.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, gram_loss(ref16[0], ref16[1:], 0.07), rtol=1e-5, atol=1e-5)
