"""The device helpers of the trainer on CPU (the CUDA side is tests/test_cuda.py).

``train.device=cuda`` without CUDA is one clear error; ``train.compile`` is a
validated config key that may change on resume; :func:`compile_towers`
compiles the towers' encoders in place (same outputs, same parameter names);
off CUDA the loader is iterated as it is.
"""

from __future__ import annotations

import pytest
import torch

from audiocl.errors import AudioclError, InputError


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_one_line_error():
    from audiocl.train.device import pick_device

    with pytest.raises(AudioclError, match=r"train.device=cuda: this torch is a CPU build|no CUDA device") as e:
        pick_device("cuda")
    assert "\n" not in str(e.value)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_compile_key_validated_and_allowed_on_resume():
    from audiocl.train.config import RESUME_ALLOWED, TrainingConfig, validate_config

    assert TrainingConfig.model_validate({"train": {"compile": True}}).train.compile is True
    assert TrainingConfig().train.compile is False
    with pytest.raises(InputError, match="compile"):
        validate_config({"train": {"compile": "sometimes"}}, "conf.yaml")
    assert "train.compile" in RESUME_ALLOWED


def test_prefetcher_refuses_a_cpu_device_and_cpu_batches_pass_through():
    from audiocl.train.device import CudaPrefetcher, device_batches

    batches = [{"x": torch.arange(3)}, {"x": torch.arange(3, 6)}]
    with pytest.raises(ValueError, match="CUDA"):
        CudaPrefetcher(batches, torch.device("cpu"))
    got = list(device_batches(batches, torch.device("cpu")))
    assert [b["x"].tolist() for b in got] == [[0, 1, 2], [3, 4, 5]]


def test_compile_towers_in_place_keeps_outputs_and_names():
    from audiocl.models import MultiTowerModel
    from audiocl.train.device import compile_towers

    cfg = {
        "embed_dim": 8,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4,
                      "n_mels": 16}, "projection": {"type": "linear"}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1,
                     "heads": 2}, "projection": {"type": "linear"}},
        },
    }  # fmt: skip
    torch.manual_seed(0)
    model = MultiTowerModel.from_config(cfg).eval()
    x = torch.randn(3, 20, 16)
    with torch.no_grad():
        ref = model.encode("audio", x)
    names = list(model.state_dict())
    # eager backend: dynamo traces the encoder (the graph capture the flag turns on)
    # without the C++ compile that inductor would need on CPU
    done = compile_towers(model, backend="eager")
    # the byte-level text tower tokenises in forward and exposes no inner .model
    assert done == ["towers.audio.encoder"]
    assert model.towers["audio"].encoder._compiled_call_impl is not None
    assert list(model.state_dict()) == names
    with torch.no_grad():
        torch.testing.assert_close(model.encode("audio", x), ref)


def test_trainer_compiles_the_towers_when_asked(tmp_path):
    from audiocl.losses import build_loss
    from audiocl.models import MultiTowerModel
    from audiocl.train.config import TrainingConfig
    from audiocl.train.data import TrainData
    from audiocl.train.loop import Trainer

    model_cfg = {
        "embed_dim": 8,
        "towers": {"audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4,
                             "n_mels": 16}, "projection": {"type": "linear"}}},
    }  # fmt: skip
    data = TrainData(dataset=[None] * 4, collate=lambda items, seed: {}, to_inputs=lambda b, k: b)
    for flag, expected in ((False, []), (True, ["towers.audio.encoder"])):
        cfg = TrainingConfig.model_validate({
            "data": {"batch_size": 4}, "train": {"compile": flag, "device": "cpu", "output_dir": str(tmp_path)},
        })  # fmt: skip
        model = MultiTowerModel.from_config(model_cfg)
        trainer = Trainer(cfg, model, build_loss("clip"), data)
        assert trainer.compiled == expected
        assert (model.towers["audio"].encoder._compiled_call_impl is not None) is flag


def test_ray_train_with_cuda_device_needs_gpus(tmp_path):
    """train.device=cuda with distributed.gpus=0 is refused before Ray starts (workers get no GPU)."""
    from audiocl.train.config import TrainingConfig
    from audiocl.train.distributed import train_distributed

    cfg = TrainingConfig.model_validate({
        "train": {"device": "cuda", "output_dir": str(tmp_path / "run")}, "distributed": {"workers": 2},
    })  # fmt: skip
    with pytest.raises(AudioclError, match=r"distributed.gpus >= 1"):
        train_distributed(cfg)
    assert not (tmp_path / "run").exists()
