"""Distributed equivalence: 2 Ray Train CPU workers (gloo, DDP) vs one process.

One Ray start runs every loss: each worker holds its share of a global batch
(uneven: 3 and 5 rows), embeds it with a small DDP-wrapped multi-tower model,
computes the loss (embeddings gathered with gradient inside the loss), and
back-propagates; DDP averages the parameter gradients. The loss values and the
averaged gradients must equal those of one process on the concatenated batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

SPLIT = (3, 5)  # rows on rank 0 and rank 1
IN_DIM, EMB_DIM = 6, 4

CASES = {
    "clip": ("clip", {"modalities": ("a", "b")}, False),
    "clip_local": ("clip", {"modalities": ("a", "b"), "local_loss": True}, False),
    "siglip": ("siglip", {"modalities": ("a", "b")}, True),
    "siglip_local": ("siglip", {"modalities": ("a", "b"), "local_loss": True}, True),
    "symile_n_squared": ("symile", {"modalities": ("a", "b", "c")}, False),
    "symile_n": ("symile", {"modalities": ("a", "b", "c"), "negatives": "n", "seed": 7}, False),
    "gram": ("gram", {"modalities": ("a", "b", "c")}, False),
}


class TinyTowers(nn.Module):
    """One linear tower per modality, L2-normalised, with a log temperature and optional bias."""

    def __init__(self, names: tuple[str, ...], bias: bool):
        super().__init__()
        self.towers = nn.ModuleDict({n: nn.Linear(IN_DIM, EMB_DIM) for n in names})
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        self.bias = nn.Parameter(torch.tensor(-1.0)) if bias else None

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        return {
            "embeddings": {n: F.normalize(t(inputs[n]), dim=-1) for n, t in self.towers.items()},
            "logit_scale": self.log_scale.exp(),
            "logit_bias": self.bias,
        }


def _setup(case: str):
    from audiocl.losses import build_loss

    name, kwargs, bias = CASES[case]
    torch.manual_seed(1234)
    model = TinyTowers(tuple(kwargs["modalities"]), bias)
    g = torch.Generator().manual_seed(99)
    data = {n: torch.randn(sum(SPLIT), IN_DIM, generator=g) for n in kwargs["modalities"]}
    return model, data, build_loss(name, **kwargs)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): p.grad.detach().clone() for k, p in model.named_parameters()}


def _worker(config: dict) -> None:
    import ray.train
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    assert dist.is_initialized() and dist.get_world_size() == 2
    lo = sum(SPLIT[:rank])
    out = {}
    for case in CASES:
        model, data, loss = _setup(case)
        ddp = DDP(model)
        local = {n: x[lo : lo + SPLIT[rank]] for n, x in data.items()}
        value = loss(ddp(local))
        value.backward()
        out[f"{case}/loss"] = value.detach()
        for k, g in _grads(ddp).items():
            out[f"{case}/grad/{k}"] = g
    torch.save(out, Path(config["out_dir"]) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ray_workers_match_one_process(tmp_path: Path) -> None:
    import ray
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # pytest imports this file under a name Ray workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"out_dir": str(tmp_path)},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
            run_config=RunConfig(name="losses_ddp", storage_path=str(tmp_path / "ray")),
        )
        trainer.fit()
    finally:
        ray.shutdown()

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for case in CASES:
        model, data, loss = _setup(case)
        ref = loss(model(data))
        ref.backward()
        ref_grads = _grads(model)
        local = case.endswith("_local")
        values = [r[f"{case}/loss"] for r in ranks]
        if local:  # each rank holds its share; their mean is the loss
            torch.testing.assert_close(sum(values) / 2, ref.detach(), atol=1e-5, rtol=0)
        else:
            for v in values:
                torch.testing.assert_close(v, ref.detach(), atol=1e-5, rtol=0)
        for k, g in ref_grads.items():
            assert g.abs().sum() > 0, f"{case}: reference gradient of {k} is zero"
            for r in ranks:
                torch.testing.assert_close(r[f"{case}/grad/{k}"], g, atol=1e-5, rtol=0, msg=f"{case} {k}")
