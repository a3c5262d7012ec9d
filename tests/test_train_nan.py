"""A non-finite loss is caught, reported with its step and term, and never checkpointed."""

from __future__ import annotations

import math

import pytest
import torch
from train_store import build_store, model_config

from audiocl.train.checkpoint import (
    NonFiniteError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from audiocl.train.config import TrainingConfig
from audiocl.train.loop import Trainer
from audiocl.train.run import build_components


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


class CorruptItem(torch.utils.data.Dataset):
    """The real feature dataset with one item's log-mel overwritten by NaN
    (what a corrupt shard would hand the trainer)."""

    def __init__(self, dataset, bad_index: int) -> None:
        self.dataset, self.bad = dataset, bad_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if i == self.bad:
            item = {**item, "features": torch.full_like(item["features"], float("nan"))}
        return item


def _setup(store, tmp_path, on_nan: str, bad_step: int = 4):
    store_dir, manifest = store
    cfg = TrainingConfig.model_validate(
        {
            "model": {**model_config(), "logit_bias": {"init": -10.0}},
            "loss": {"terms": [{"name": "clip", "weight": 1.0}, {"name": "siglip", "weight": 0.5}]},
            "data": {"store": str(store_dir), "manifest": str(manifest), "batch_size": 16, "max_frames": 32},
            "train": {
                "epochs": 1, "ckpt_every": 1, "log_every": 1, "on_nan": on_nan,
                "output_dir": str(tmp_path / on_nan), "progress": False,
            },
        }
    )  # fmt: skip
    torch.set_num_threads(1)
    comp = build_components(cfg)
    trainer = Trainer(cfg, comp.model, comp.loss, comp.train_data, comp.val_data)
    # corrupt one item of the batch of step `bad_step` (1-based) of epoch 0
    perm = trainer.sampler.permutation()
    bad = int(perm[(bad_step - 1) * 16 + 5])
    comp.train_data.dataset = CorruptItem(comp.train_data.dataset, bad)
    return cfg, trainer, bad_step


def _all_finite(path) -> bool:
    ck = load_checkpoint(path)
    ok = all(bool(torch.isfinite(t).all()) for t in ck["model"].values())
    for st in ck["state"]["optimizer"]["state"].values():
        ok &= all(bool(torch.isfinite(v).all()) for v in st.values() if v.is_floating_point())
    return ok


def test_nan_loss_stops_with_step_and_term(store, tmp_path):
    cfg, trainer, bad_step = _setup(store, tmp_path, "error")
    with pytest.raises(NonFiniteError) as e:
        trainer.fit()
    msg = str(e.value)
    assert f"at step {bad_step} " in msg and "'clip'" in msg and "'siglip'" in msg
    steps = [s for s, _ in list_checkpoints(cfg.train.output_dir)]
    assert steps and max(steps) == bad_step - 1
    for _, p in list_checkpoints(cfg.train.output_dir):
        assert _all_finite(p)


def test_nan_loss_skip_mode_finishes_finite(store, tmp_path, capsys):
    cfg, trainer, bad_step = _setup(store, tmp_path, "skip")
    result = trainer.fit()
    assert result.step == 6 and math.isfinite(result.last_loss)
    assert f"at step {bad_step} " in capsys.readouterr().err
    logged = [r["step"] for r in result.history]
    assert bad_step not in logged and len(logged) == 5
    for _, p in list_checkpoints(cfg.train.output_dir):
        assert _all_finite(p)


def test_checkpoint_with_nan_parameter_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 1, model, opt, {"step": 1}, {})
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    with pytest.raises(NonFiniteError, match="model.weight"):
        save_checkpoint(tmp_path, 2, model, opt, {"step": 2}, {})
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
