"""Gradient caching keeps the whole accumulated batch in the contrastive loss.

4 micro-batches of 32 must give the loss and the gradients of one batch of
128. Run in float64 so the only difference is summation order: tolerance
1e-10 absolute on the loss and 1e-8 relative on gradients (far tighter than
the 1e-5 asked for).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audiocl.losses import build_loss
from audiocl.train.accumulate import forward_backward


class VectorTower(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0, bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(d_in, 32)]
        if bn:
            layers.append(nn.BatchNorm1d(32))
        layers += [nn.GELU(), nn.Dropout(dropout), nn.Linear(32, d_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


class SmallMultiTower(nn.Module):
    """Real multi-tower model shaped like audiocl.models' output dict."""

    def __init__(self, towers: dict[str, int], d: int = 8, dropout: float = 0.0, bn: bool = False):
        super().__init__()
        self.towers = nn.ModuleDict({k: VectorTower(v, d, dropout, bn) for k, v in towers.items()})
        self.log_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, inputs: dict) -> dict:
        return {
            "embeddings": {k: t(inputs[k]) for k, t in self.towers.items()},
            "logit_scale": self.log_scale.exp().clamp(max=100.0),
            "logit_bias": None,
        }


def _data(n: int, towers: dict[str, int], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return {
        k: torch.cat([base, 0.5 * torch.randn(n, d - 4, generator=g, dtype=torch.float64)], 1)
        for k, d in towers.items()
    }


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _run(model, loss_fn, inputs, micro):
    model.zero_grad(set_to_none=True)
    out = forward_backward(model, loss_fn, inputs, None, micro_batch_size=micro)
    return out.loss.item(), _grads(model)


@pytest.mark.parametrize(
    "loss_name,towers",
    [("clip", {"audio": 12, "text": 10}), ("symile", {"audio": 12, "text": 10, "video": 6})],
)
def test_four_micro_batches_equal_one_batch(loss_name, towers):
    torch.manual_seed(0)
    model = SmallMultiTower(towers).double()
    loss_fn = build_loss(loss_name, modalities=list(towers))
    inputs = _data(128, towers)
    loss_full, g_full = _run(model, loss_fn, inputs, None)
    loss_acc, g_acc = _run(model, loss_fn, inputs, 32)
    assert loss_acc == pytest.approx(loss_full, abs=1e-10)
    assert g_full.keys() == g_acc.keys() and "log_scale" in g_full
    for name in g_full:
        torch.testing.assert_close(g_acc[name], g_full[name], rtol=1e-8, atol=1e-10)
    # ordinary accumulation (mean of per-micro-batch losses) is NOT the same
    model.zero_grad(set_to_none=True)
    naive = 0.0
    for s in range(0, 128, 32):
        part = {k: v[s : s + 32] for k, v in inputs.items()}
        loss = loss_fn(model(part), None) / 4
        loss.backward()
        naive += loss.item()
    assert abs(naive - loss_full) > 1e-3


def test_float32_tolerance():
    towers = {"audio": 12, "text": 10}
    torch.manual_seed(1)
    model = SmallMultiTower(towers)
    loss_fn = build_loss("clip")
    inputs = {k: v.float() for k, v in _data(128, towers, seed=3).items()}
    loss_full, g_full = _run(model, loss_fn, inputs, None)
    loss_acc, g_acc = _run(model, loss_fn, inputs, 32)
    assert loss_acc == pytest.approx(loss_full, abs=1e-5)
    for name in g_full:
        torch.testing.assert_close(g_acc[name], g_full[name], rtol=1e-5, atol=1e-5)


def test_dropout_masks_replayed():
    """With dropout, the re-forward must draw the masks of the cached forward.

    Reference: the same micro-batches forwarded WITH autograd one after the
    other from the same RNG state, concatenated, one loss, one backward.
    """
    towers = {"audio": 12, "text": 10}
    torch.manual_seed(2)
    model = SmallMultiTower(towers, dropout=0.3).double().train()
    loss_fn = build_loss("clip")
    inputs = _data(64, towers, seed=5)

    torch.manual_seed(123)
    model.zero_grad(set_to_none=True)
    outs = [model({k: v[s : s + 16] for k, v in inputs.items()}) for s in range(0, 64, 16)]
    full = {
        "embeddings": {k: torch.cat([o["embeddings"][k] for o in outs]) for k in towers},
        "logit_scale": outs[0]["logit_scale"],
        "logit_bias": None,
    }
    ref_loss = loss_fn(full, None)
    ref_loss.backward()
    g_ref = _grads(model)
    rng_after_ref = torch.get_rng_state()

    torch.manual_seed(123)
    loss_acc, g_acc = _run(model, loss_fn, inputs, 16)
    assert loss_acc == pytest.approx(ref_loss.item(), abs=1e-10)
    for name in g_ref:
        torch.testing.assert_close(g_acc[name], g_ref[name], rtol=1e-8, atol=1e-10)
    assert torch.equal(torch.get_rng_state(), rng_after_ref)


def test_batchnorm_running_stats_updated_once():
    towers = {"audio": 12, "text": 10}
    torch.manual_seed(3)
    model = SmallMultiTower(towers, bn=True).double().train()
    ref = SmallMultiTower(towers, bn=True).double().train()
    ref.load_state_dict(model.state_dict())
    inputs = _data(64, towers, seed=7)
    _run(model, build_loss("clip"), inputs, 16)
    with torch.no_grad():
        for s in range(0, 64, 16):
            ref({k: v[s : s + 16] for k, v in inputs.items()})
    for (name, b), (_, b_ref) in zip(model.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, b_ref, rtol=0, atol=1e-12, msg=name)


def test_bf16_autocast_accumulation_close():
    """Under bf16 autocast the cached path still matches the full batch (bf16 tolerance)."""
    import contextlib

    towers = {"audio": 12, "text": 10}
    torch.manual_seed(4)
    model = SmallMultiTower(towers)
    loss_fn = build_loss("clip")
    inputs = {k: v.float() for k, v in _data(64, towers, seed=9).items()}

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    results = []
    for micro in (None, 16):
        model.zero_grad(set_to_none=True)
        out = forward_backward(model, loss_fn, inputs, None, micro_batch_size=micro, autocast=bf16)
        assert out.outputs["embeddings"]["audio"].dtype == torch.float32
        results.append((out.loss.item(), _grads(model)))
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, abs=2e-2)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=5e-2, atol=5e-2)
