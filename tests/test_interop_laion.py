"""``audiocl convert laion`` against laion_clap's own outputs (../shared/reference/laion_clap).

The checkpoint is converted through the CLI into an ordinary audiocl model
folder; the stored int16 waveforms go through OUR front-end (the folder's
``frontend.json``, the ``laion_clap`` preset) and OUR loaded model, the stored
token ids through the loaded text tower, and the embeddings must equal the
ones laion_clap 1.1.7 produced. ``keys_full.json`` (the real HTSAT-tiny model's
key list) is planned from shapes alone: every key must be mapped or dropped
with a reason, and every mapped target must exist with the right shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.cli import main  # noqa: E402
from audiocl.errors import AudioclError  # noqa: E402
from audiocl.interop.laion import plan_laion, strip_checkpoint  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ref(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "laion_clap"


@pytest.fixture(scope="module")
def converted(ref: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("laion") / "model"
    assert main(["convert", "laion", "--checkpoint", str(ref / "checkpoint.pt"), "--out", str(out)]) == 0
    return out


def _io(ref: Path) -> dict[str, np.ndarray]:
    return dict(np.load(ref / "io.npz"))


def test_audio_embeddings_match_laion_clap(converted: Path, ref: Path) -> None:
    from audiocl.audio.frontend import get_preset
    from audiocl.models import embed_waveforms, load_model

    model = load_model(converted)
    assert model.frontend == get_preset("laion_clap")
    io = _io(ref)
    # LAION's hook quantises through int16; the stored waveforms already are int16
    wavs = [io["audio_10s_int16"].astype(np.float32) / 32767.0, io["audio_3s_int16"].astype(np.float32) / 32767.0]
    assert wavs[1].size < 480000  # the 3 s clip takes the repeatpad path
    got = embed_waveforms(model, wavs, 48000).numpy()
    want = np.concatenate([io["audio_embed_10s"], io["audio_embed_3s"]])
    assert np.abs(got - want).max() < 1e-4


def test_three_line_api_on_files(converted: Path, ref: Path, tmp_path: Path) -> None:
    """load_model -> embed_audio_files -> embed_texts, the documented three lines."""
    import soundfile as sf

    from audiocl.models import embed_audio_files, embed_texts, load_model

    io = _io(ref)
    paths = []
    for name in ("audio_10s_int16", "audio_3s_int16"):
        p = tmp_path / f"{name}.wav"
        sf.write(str(p), io[name], 48000, subtype="PCM_16")  # int16 on disk, read back as int16/32768
        paths.append(p)
    model = load_model(converted)
    a = embed_audio_files(model, paths)
    t = embed_texts(model, {"input_ids": torch.from_numpy(io["input_ids"]),
                            "attention_mask": torch.from_numpy(io["attention_mask"])})
    want = np.concatenate([io["audio_embed_10s"], io["audio_embed_3s"]])
    # soundfile scales by 1/32768, LAION by 1/32767: a 3e-5 gain, a constant 2.7e-4 dB
    # shift of the log-mel; measured effect on the embeddings 1.1e-6
    assert np.abs(a.numpy() - want).max() < 1e-5
    assert a.shape == (2, 512) and t.shape == (3, 512)


def test_text_embeddings_match_laion_clap(converted: Path, ref: Path) -> None:
    from audiocl.models import embed_texts, load_model

    model = load_model(converted)
    io = _io(ref)
    ids = {"input_ids": torch.from_numpy(io["input_ids"]), "attention_mask": torch.from_numpy(io["attention_mask"])}
    got = embed_texts(model, ids).numpy()
    assert np.abs(got - io["text_embed"]).max() < 1e-5


def test_folder_and_report(converted: Path, ref: Path) -> None:
    cfg = json.loads((converted / "config.json").read_text())
    enc = cfg["towers"]["audio"]["encoder"]
    laion = json.loads((ref / "config.json").read_text())
    for k in ("embed_dim", "depths", "num_heads", "window_size"):
        assert enc[k] == laion["htsat"][k]
    assert cfg["towers"]["text"]["encoder"]["max_length"] == 77
    assert json.loads((converted / "prompts.json").read_text()) == ["This is a sound of {}."]
    text = json.loads((converted / "towers" / "text" / "config.json").read_text())
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert text[k] == laion["text"][k]
    rep = json.loads((converted / "conversion.json").read_text())
    sd = torch.load(ref / "checkpoint.pt", weights_only=True, map_location="cpu")["state_dict"]
    keys = {k.removeprefix("module.") for k in sd}
    srcs = {m["from"] for m in rep["mapped"]}
    dropped = {d["key"] for d in rep["dropped"]}
    assert srcs | dropped == keys and not (srcs & dropped)
    assert all(d["reason"] for d in rep["dropped"])
    assert "logit_scale_t" in dropped and "audio_branch.logmel_extractor.melW" in dropped
    assert abs(cfg["logit_scale"]["init"] - float(sd["module.logit_scale_a"])) < 1e-7


def _assert_plan_fits_model(plan, shapes: dict[str, list[int]]) -> None:
    from audiocl.models import MultiTowerModel

    model = MultiTowerModel.from_config(plan.model_config)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    targets = set()
    for src, dst, op in plan.mapped:
        want = list(shapes[src])
        if op.startswith("qkv:"):
            want[0] //= 3
        assert dst in own, dst
        assert own[dst] == want, (src, dst)
        targets.add(dst)
    # everything the model holds comes from the checkpoint, except constant index buffers
    left = [k for k in own if k not in targets]
    assert all(k.endswith("relative_position_index") for k in left), left[:5]


def test_keys_full_every_key_handled(ref: Path) -> None:
    shapes = json.loads((ref / "keys_full.json").read_text())
    plan = plan_laion(shapes)
    srcs = {s for s, _, _ in plan.mapped}
    dropped = {k for k, _ in plan.dropped}
    assert srcs | dropped == set(shapes) and not (srcs & dropped)
    h = plan.arch["htsat"]
    assert (h["embed_dim"], h["depths"], h["num_heads"], h["window_size"]) == (96, [2, 2, 6, 2], [4, 8, 16, 32], 8)
    assert h["output_dim"] == 768 and not h["enable_fusion"]
    assert any(k.endswith("attn_mask") for k in dropped)
    _assert_plan_fits_model(plan, shapes)


def test_roberta_base_shapes_infer_layers_and_heads(ref: Path) -> None:
    # keys_full's text branch is one layer; widen it to roberta-base's 12 layers / 50265 tokens
    shapes = json.loads((ref / "keys_full.json").read_text())
    layer0 = {k: v for k, v in shapes.items() if k.startswith("text_branch.encoder.layer.0.")}
    for i in range(1, 12):
        for k, v in layer0.items():
            shapes[k.replace("layer.0.", f"layer.{i}.")] = v
    for k in layer0:
        if "intermediate.dense.weight" in k:
            shapes[k.replace("layer.0.", "layer.0.")] = [3072, 768]
    shapes["text_branch.embeddings.word_embeddings.weight"] = [50265, 768]
    shapes["module.text_branch.embeddings.position_ids"] = [1, 514]
    shapes = {("module." + k if not k.startswith("module.") else k): v for k, v in shapes.items()}
    plan = plan_laion(shapes)
    assert "text_branch.embeddings.position_ids" in {k for k, _ in plan.dropped}
    t = plan.arch["text"]
    assert (t["num_hidden_layers"], t["num_attention_heads"], t["vocab_size"]) == (12, 12, 50265)
    assert plan_laion(shapes, text_heads=16).arch["text"]["num_attention_heads"] == 16


def test_fusion_checkpoint_shapes(ref: Path) -> None:
    """aff_2d fusion keys (patch_embed.fusion_model / mel_conv2d) map onto a fusion HTSAT."""
    from transformers import ClapAudioConfig, ClapAudioModel

    shapes = json.loads((ref / "keys_full.json").read_text())
    hf = ClapAudioModel(ClapAudioConfig(enable_fusion=True, fusion_type="aff_2d", depths=[1, 1], num_attention_heads=[1, 2]))
    for k, v in hf.state_dict().items():
        if ".patch_embed.fusion_model." in k or ".patch_embed.mel_conv2d." in k:
            shapes["audio_branch." + k.removeprefix("audio_encoder.")] = list(v.shape)
    plan = plan_laion(shapes)
    assert plan.arch["htsat"]["fusion_type"] == "aff_2d"
    _assert_plan_fits_model(plan, shapes)
    with pytest.raises(AudioclError, match="1-D fusion"):
        plan_laion({**shapes, "audio_branch.mel_conv1d.0.weight": [64, 64, 5]})


def test_unknown_key_is_refused(ref: Path) -> None:
    shapes = json.loads((ref / "keys_full.json").read_text())
    with pytest.raises(AudioclError, match="text_branch.surprise"):
        plan_laion({**shapes, "text_branch.surprise.weight": [3]})
    del shapes["audio_projection.2.weight"]
    with pytest.raises(AudioclError, match="audio_projection.2.weight"):
        plan_laion(shapes)


def test_wrappers_and_prefixes() -> None:
    t = torch.zeros(2)
    assert strip_checkpoint({"state_dict": {"module.a": t}}) == {"a": t}
    assert strip_checkpoint({"a": t}) == {"a": t}
    with pytest.raises(AudioclError):
        strip_checkpoint({"epoch": 3, "state_dict": {}})


def test_cli_refuses_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", "laion", "--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("audiocl convert: error:") and str(bad) in err and "\n" not in err
    # a pickle holding an arbitrary object is refused by weights_only, never executed
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Path("/")}, evil)
    assert main(["convert", "laion", "--checkpoint", str(evil), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
