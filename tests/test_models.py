"""Multi-tower model: config validation, towers, freezing/caching, logit scale, save/load."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.errors import AudioclError  # noqa: E402
from audiocl.models import (  # noqa: E402
    FrozenEmbeddingCache,
    ModelConfig,
    MultiTowerModel,
    load_model,
    load_model_config,
)
from audiocl.models.encoders.hf_text import default_text_model_dir  # noqa: E402

torch.set_num_threads(1)

CNN_MINILM = {
    "embed_dim": 32,
    "towers": {
        "audio": {
            "modality": "audio",
            "encoder": {"type": "cnn", "variant": "cnn10", "width": "tiny"},
            "projection": {"type": "mlp"},
        },
        "text": {"modality": "text", "encoder": {"type": "hf_text"}, "frozen": True, "cache": True},
    },
}


@pytest.fixture(scope="module")
def clap() -> MultiTowerModel:
    torch.manual_seed(0)
    return MultiTowerModel.from_config(CNN_MINILM)


# ---------------------------------------------------------------- config


def test_config_rejects_unknown_top_level_key():
    with pytest.raises(AudioclError, match="embed_dims"):
        ModelConfig.from_dict({**CNN_MINILM, "embed_dims": 3})


def test_config_rejects_unknown_nested_key_with_path():
    bad = json.loads(json.dumps(CNN_MINILM))
    bad["towers"]["audio"]["projection"]["hiden"] = 4
    with pytest.raises(AudioclError, match=r"towers\.audio\.projection\.hiden"):
        ModelConfig.from_dict(bad)


def test_config_rejects_unknown_encoder_param_naming_it():
    bad = json.loads(json.dumps(CNN_MINILM))
    bad["towers"]["audio"]["encoder"]["widht"] = "tiny"
    with pytest.raises(AudioclError, match=r"towers\.audio\.encoder.*widht"):
        MultiTowerModel.from_config(bad)


def test_config_unknown_encoder_type_and_bad_modality():
    bad = json.loads(json.dumps(CNN_MINILM))
    bad["towers"]["audio"]["encoder"]["type"] = "resnet9000"
    with pytest.raises(AudioclError, match="resnet9000"):
        MultiTowerModel.from_config(bad)
    bad = json.loads(json.dumps(CNN_MINILM))
    bad["towers"]["audio"]["modality"] = "smell"
    with pytest.raises(AudioclError, match=r"towers\.audio\.modality"):
        ModelConfig.from_dict(bad)


def test_config_from_yaml_file(tmp_path):
    import yaml

    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"model": CNN_MINILM}))
    cfg = ModelConfig.from_file(p)
    assert cfg.embed_dim == 32 and set(cfg.towers) == {"audio", "text"}
    assert math.isclose(cfg.logit_scale.init, math.log(1 / 0.07))
    assert math.isclose(cfg.logit_scale.max, math.log(100))
    p.write_text("towers: {a: {modality: vector, encoder: {type: mlp, input_dim: 3}, colour: red}}")
    with pytest.raises(AudioclError, match=r"m\.yaml.*towers\.a\.colour"):
        ModelConfig.from_file(p)


# ---------------------------------------------------------------- forward


def test_forward_shapes_norms_and_partial_inputs(clap):
    x = torch.randn(3, 120, 64)
    out = clap({"audio": x, "audio_lengths": torch.tensor([120, 80, 30]), "text": ["a", "b c", "d"]})
    assert set(out["embeddings"]) == {"audio", "text"}
    for e in out["embeddings"].values():
        assert e.shape == (3, 32)
        torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert out["logit_bias"] is None
    assert math.isclose(out["logit_scale"].item(), 1 / 0.07, rel_tol=1e-5)
    only = clap({"text": ["x"]})
    assert set(only["embeddings"]) == {"text"}
    with pytest.raises(AudioclError, match="none of the tower input keys"):
        clap({"video": 1})


def test_logit_scale_clamped_and_bias():
    cfg = {
        "embed_dim": 4,
        "towers": {"a": {"modality": "vector", "encoder": {"type": "mlp", "input_dim": 3}}},
        "logit_scale": {"init": math.log(10.0), "max": math.log(50.0)},
        "logit_bias": {"init": -10.0},
    }
    m = MultiTowerModel.from_config(cfg)
    out = m({"a": torch.randn(2, 3)})
    assert math.isclose(out["logit_scale"].item(), 10.0, rel_tol=1e-6)
    assert out["logit_bias"].item() == -10.0 and out["logit_bias"].requires_grad
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1000.0))
    assert math.isclose(m({"a": torch.randn(2, 3)})["logit_scale"].item(), 50.0, rel_tol=1e-5)
    # above the clamp the temperature gets no gradient, below it does
    m({"a": torch.randn(2, 3)})["logit_scale"].backward()
    assert float(m.logit_scale.grad) == 0.0
    m.clamp_logit_scale_()
    assert math.isclose(m.logit_scale.item(), math.log(50.0), rel_tol=1e-6)
    with pytest.raises(AudioclError, match="above"):
        MultiTowerModel.from_config({**cfg, "logit_scale": {"init": 5.0, "max": 4.0}})


def test_gradients_reach_trainable_towers_not_frozen_encoder(clap):
    clap.train()
    clap.zero_grad(set_to_none=True)
    out = clap({"audio": torch.randn(4, 64, 64), "text": ["dog", "cat", "rain", "car"]})
    sim = out["logit_scale"] * out["embeddings"]["audio"] @ out["embeddings"]["text"].T
    loss = torch.nn.functional.cross_entropy(sim, torch.arange(4))
    loss.backward()
    audio_grads = [p.grad for p in clap.towers.audio.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in audio_grads)
    assert any(float(g.abs().sum()) > 0 for g in audio_grads)
    assert all(p.grad is None and not p.requires_grad for p in clap.towers.text.encoder.parameters())
    assert all(p.grad is not None for p in clap.towers.text.projection.parameters())
    assert clap.logit_scale.grad is not None
    # train() must not switch a frozen encoder back to training mode (dropout)
    assert clap.towers.audio.encoder.training and not clap.towers.text.encoder.training


def test_frozen_cache_reuses_and_matches_uncached(clap):
    tower = clap.towers.text
    tower.cache.clear()
    texts = ["a dog barks", "rain on a roof", "a dog barks"]
    first = tower.encode(texts)
    assert tower.cache.misses == 2 and tower.cache.hits == 1 and len(tower.cache) == 2
    again = tower.encode(["rain on a roof", "a dog barks"])
    assert tower.cache.hits == 3 and tower.cache.misses == 2
    torch.testing.assert_close(again, first[[1, 0]], rtol=0, atol=0)
    with torch.no_grad():
        direct = tower.encoder(texts)
    # the cache encodes the 2 unique texts as one batch, `direct` all 3: other batch
    # shapes reorder float32 sums, which moves values by ~1e-6 (seen at 1.01e-6)
    torch.testing.assert_close(first, direct, rtol=0, atol=1e-5)
    # loading weights (e.g. resuming) invalidates the cache
    clap.load_state_dict(clap.state_dict())
    assert len(tower.cache) == 0


def test_cache_with_ids_on_tensor_input():
    calls = []
    cache = FrozenEmbeddingCache()

    def compute(items):
        calls.append(len(items))
        return torch.stack([x * 2 for x in items])

    x = torch.arange(6.0).reshape(3, 2)
    out = cache.get_or_compute(["a", "b", "a"], [x[0], x[1], x[0]], compute)
    torch.testing.assert_close(out, 2 * x[[0, 1, 0]])
    cache.get_or_compute(["b"], [x[1]], compute)
    assert calls == [2]
    with pytest.raises(AudioclError):
        MultiTowerModel.from_config(
            {"embed_dim": 4, "towers": {"a": {"modality": "vector", "cache": True, "encoder": {"type": "mlp", "input_dim": 2}}}}
        )


# ---------------------------------------------------------------- MiniLM parity


def test_minilm_tower_matches_independent_sentence_transformers_pooling(clap):
    from transformers import AutoModel, AutoTokenizer

    d = default_text_model_dir()
    assert (d / "config.json").is_file()
    sentences = ["A dog is barking loudly.", "Heavy rain falls on a tin roof at night."]
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    ref = AutoModel.from_pretrained(str(d), local_files_only=True).eval()
    enc = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = ref(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    with torch.no_grad():
        got = torch.nn.functional.normalize(clap.towers.text.encoder(sentences), dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the two sentences differ: a pooling bug returning a constant would fail here
    assert float(got[0] @ got[1]) < 0.9


# ---------------------------------------------------------------- save / load


def _same_outputs(a: MultiTowerModel, b: MultiTowerModel, inputs: dict) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        oa, ob = a(inputs), b(inputs)
    assert set(oa["embeddings"]) == set(ob["embeddings"])
    for k in oa["embeddings"]:
        torch.testing.assert_close(oa["embeddings"][k], ob["embeddings"][k], rtol=0, atol=0)
    torch.testing.assert_close(oa["logit_scale"], ob["logit_scale"], rtol=0, atol=0)


def test_save_load_round_trip_cnn_minilm(clap, tmp_path):
    from audiocl.audio.frontend import get_preset

    clap.frontend = get_preset("laion_clap")
    clap.prompts = ["This is a sound of {}.", "A recording of {}."]
    # make BatchNorm statistics non-trivial so a loader that drops buffers fails
    clap.train()
    with torch.no_grad():
        clap({"audio": torch.randn(4, 100, 64) * 3 + 1})
    out = clap.save_pretrained(tmp_path / "m")
    names = sorted(p.name for p in out.iterdir())
    # LICENSES.md / licenses.json: the text tower starts from all-MiniLM-L6-v2 (Apache-2.0)
    assert names == ["LICENSES.md", "config.json", "frontend.json", "licenses.json", "model.safetensors",
                     "prompts.json", "towers"]
    assert json.loads((out / "licenses.json").read_text())["towers"]["text"]["license"] == "Apache-2.0"
    saved_cfg = json.loads((out / "config.json").read_text())
    # the text tower points inside the folder: the folder is self-contained
    assert saved_cfg["towers"]["text"]["encoder"]["path"] == "towers/text"
    assert (out / "towers" / "text" / "tokenizer.json").is_file()
    loaded = load_model(out)
    assert loaded.frontend == clap.frontend
    assert loaded.prompts == clap.prompts
    assert not loaded.training
    assert saved_cfg["towers"]["text"]["encoder"]["max_length"] == 256
    # a text longer than 256 tokens is truncated the same way after loading
    long_text = " ".join(f"word{i}" for i in range(400))
    inputs = {"audio": torch.randn(2, 90, 64), "audio_lengths": torch.tensor([90, 41]), "text": ["x y", long_text]}
    _same_outputs(clap, loaded, inputs)
    # saving over an existing folder replaces it atomically
    clap.save_pretrained(out)
    assert (out / "model.safetensors").is_file()


def test_save_load_three_towers(tmp_path):
    cfg = {
        "embed_dim": 16,
        "logit_bias": {"init": -10.0},
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1, "heads": 2}},
            "bits": {"modality": "vector", "encoder": {"type": "mlp", "input_dim": 8, "hidden": [12]}, "input_key": "xor"},
        },
    }
    torch.manual_seed(1)
    m = MultiTowerModel.from_config(cfg)
    m.save_pretrained(tmp_path / "m3")
    loaded = MultiTowerModel.from_pretrained(tmp_path / "m3")
    assert loaded.tower_names == ["audio", "text", "bits"]
    assert loaded.logit_bias.item() == -10.0
    inputs = {"audio": torch.randn(3, 50, 64), "text": ["α", "音", "b"], "xor": torch.randint(0, 2, (3, 8))}
    _same_outputs(m, loaded, inputs)


def test_from_pretrained_refuses_mismatched_weights(tmp_path):
    cfg = {"embed_dim": 4, "towers": {"a": {"modality": "vector", "encoder": {"type": "mlp", "input_dim": 3}}}}
    MultiTowerModel.from_config(cfg).save_pretrained(tmp_path / "m")
    c = json.loads((tmp_path / "m" / "config.json").read_text())
    c["towers"]["a"]["encoder"]["hidden"] = [5]
    (tmp_path / "m" / "config.json").write_text(json.dumps(c))
    with pytest.raises(AudioclError, match="does not match"):
        MultiTowerModel.from_pretrained(tmp_path / "m")
    with pytest.raises(AudioclError, match="not an audiocl model folder"):
        MultiTowerModel.from_pretrained(tmp_path)


def test_embed_text_and_audio_eval_no_grad(clap):
    clap.train()
    t = clap.embed_text(["one", "two", "three"], batch_size=2)
    a = clap.embed_audio(torch.randn(5, 70, 64), batch_size=2)
    assert t.shape == (3, 32) and a.shape == (5, 32)
    assert not t.requires_grad and not a.requires_grad
    assert clap.training  # mode restored
    clap.eval()
    x = torch.randn(3, 70, 64)
    torch.testing.assert_close(clap.embed_audio(x, batch_size=1), clap.embed_audio(x, batch_size=3), atol=1e-6, rtol=0)


def test_named_configs_build():
    from audiocl.models.config import named_configs

    names = named_configs()
    assert "clap-cnn10-tiny-minilm" in names and len(names) >= 4
    from audiocl.models.encoders.base import parse_params

    for name in names:
        cfg = load_model_config(name)
        for tname, tower in cfg.towers.items():
            parse_params(tower.encoder, f"{name}: {tname}")  # every encoder parameter is valid
    with pytest.raises(AudioclError, match="shipped config"):
        load_model_config("no-such-model")
    m = MultiTowerModel.from_config("clap-cnn10-tiny-bytes")
    n_audio = sum(p.numel() for p in m.towers.audio.encoder.parameters())
    assert 200_000 < n_audio < 500_000
    out = m({"audio": torch.randn(2, 100, 64), "text": ["un chien", "雨"]})
    assert out["embeddings"]["audio"].shape == (2, 256)


def test_frozen_cached_tensor_tower_keyed_by_ids():
    cfg = {
        "embed_dim": 4,
        "towers": {
            "v": {"modality": "vector", "frozen": True, "cache": True, "encoder": {"type": "mlp", "input_dim": 3, "hidden": [5]}},
        },
    }
    m = MultiTowerModel.from_config(cfg)
    x = torch.randn(3, 3)
    first = m({"v": x, "v_ids": ["a", "b", "c"]})["embeddings"]["v"]
    cache = m.towers.v.cache
    assert len(cache) == 3 and cache.misses == 3
    # same ids, reordered: served from the cache, same rows
    again = m({"v": x[[2, 0]], "v_ids": ["c", "a"]})["embeddings"]["v"]
    assert cache.hits == 2
    torch.testing.assert_close(again, first[[2, 0]], rtol=0, atol=0)
    # the projection still trains through cached encoder outputs
    again.sum().backward()
    assert m.towers.v.projection.net[1].weight.grad is not None


def test_inference_switches_only_training_modules_and_restores_each():
    """audiocl.models.embed.inference: eval + no grad inside; afterwards each module's own mode
    (a frozen encoder stays in eval mode, the rest trains again)."""
    import torch
    from torch import nn

    from audiocl.models.embed import inference

    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    net.train()
    net[2].eval()  # a frozen part
    with inference(net) as m:
        assert not any(x.training for x in m.modules())
        assert not torch.is_grad_enabled()
    assert [x.training for x in net.modules()] == [True, True, True, False, False]
    net.eval()
    with inference(net):
        pass
    assert not any(x.training for x in net.modules())
