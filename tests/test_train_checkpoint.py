"""Checkpoints: latest complete one wins, loading never unpickles objects, RNG round-trips."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from audiocl.errors import AudioclError
from audiocl.train.checkpoint import (
    capture_rng,
    find_latest,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from audiocl.train.config import TrainingConfig
from audiocl.train.loop import lr_at


def _save(tmp_path, step, keep=3):
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = {"step": step, "epoch": 0, "batch_in_epoch": step, "best": None}
    return model, save_checkpoint(tmp_path, step, model, opt, state, {0: capture_rng()}, keep=keep)


def test_latest_complete_checkpoint_is_picked(tmp_path):
    _save(tmp_path, 1)
    model, p2 = _save(tmp_path, 2)
    # a save killed half-way: folder without COMPLETE, and a temp folder
    (tmp_path / "checkpoints" / "step_00000009").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step_00000010-123").mkdir()
    assert find_latest(tmp_path) == p2
    ck = load_checkpoint(p2)
    assert ck["state"]["step"] == 2 and ck["state"]["batch_in_epoch"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v)
    assert ck["state"]["optimizer"]["state"][0]["exp_avg"].shape == (3, 4)


def test_pruning_keeps_newest(tmp_path):
    for s in range(1, 6):
        _save(tmp_path, s, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000004", "step_00000005"]


def test_arbitrary_objects_are_not_unpickled(tmp_path, capsys):
    _, p = _save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"step": 1, "x": Evil()}, p / "state.pt", _use_new_zipfile_serialization=True, pickle_module=pickle)
    # record the new size, so the size check passes and torch.load itself must refuse
    sizes = json.loads((p / "COMPLETE").read_text())
    sizes["state.pt"] = (p / "state.pt").stat().st_size
    (p / "COMPLETE").write_text(json.dumps(sizes))
    # weights_only refuses the pickle (UnpicklingError), reported as one line naming the file
    with pytest.raises(AudioclError, match=r"state\.pt: cannot be loaded .*weights_only=True\) refused"):
        load_checkpoint(p)
    assert "pwned" not in capsys.readouterr().out


def test_rng_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    first = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2))
    restore_rng(state)
    second = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2))
    assert first[:4] == second[:4] and torch.equal(first[4], second[4])


def test_warmup_cosine_schedule():
    cfg = TrainingConfig.model_validate(
        {"optim": {"lr": 1.0}, "schedule": {"warmup_steps": 4, "min_lr": 0.1}, "train": {"max_steps": 14}}
    )
    lrs = [lr_at(s, 14, cfg) for s in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] > 0.1
