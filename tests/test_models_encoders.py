"""Encoders: forward shapes, gradient flow, masking, HTSAT shapes vs the LAION reference."""

from __future__ import annotations

import json
import os

import pytest
import torch
from pydantic import Field
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.errors import AudioclError  # noqa: E402
from audiocl.models import MultiTowerModel, build_encoder, register_encoder  # noqa: E402
from audiocl.models.encoders import EncoderParams  # noqa: E402
from audiocl.models.encoders.cnn import masked_mean_max  # noqa: E402
from audiocl.models.encoders.hf_text import default_text_model_dir, pool_hidden  # noqa: E402
from audiocl.models.encoders.small_text import ByteTokenizer  # noqa: E402

torch.set_num_threads(1)


def _grad_flows(enc: nn.Module, out: torch.Tensor, unused: str | None = None) -> None:
    """Every trainable parameter (except names containing ``unused``) gets a finite gradient."""
    out.square().sum().backward()
    grads = [
        p.grad for n, p in enc.named_parameters() if p.requires_grad and not (unused and unused in n)
    ]
    assert grads and all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# ---------------------------------------------------------------- CNN


@pytest.mark.parametrize(
    "variant,width,n_params",
    [("cnn6", "tiny", None), ("cnn10", "tiny", (200_000, 500_000)), ("cnn14", "tiny", None)],
)
def test_cnn_shapes_and_grads(variant, width, n_params):
    torch.manual_seed(0)
    enc = build_encoder({"type": "cnn", "variant": variant, "width": width})
    assert enc.output_dim == 16 * 2 ** (5 if variant == "cnn14" else 3)
    if n_params:
        n = sum(p.numel() for p in enc.parameters())
        assert n_params[0] < n < n_params[1], n
    x = torch.randn(3, 101, 64)
    out = enc(x, torch.tensor([101, 57, 9]))
    assert out.shape == (3, enc.output_dim)
    _grad_flows(enc, out)


def test_cnn_lengths_full_equals_none_and_wrong_input_rejected():
    enc = build_encoder({"type": "cnn", "channels": 4}).eval()
    x = torch.randn(2, 77, 64)
    torch.testing.assert_close(enc(x, torch.tensor([77, 77])), enc(x), rtol=0, atol=1e-6)
    assert not torch.allclose(enc(x, torch.tensor([77, 20]))[1], enc(x)[1])
    with pytest.raises(AudioclError, match="n_mels=64"):
        enc(torch.randn(2, 50, 80))
    with pytest.raises(AudioclError, match="frames, n_mels"):
        enc(torch.randn(50, 64))


def test_cnn_stem_pool_lengths():
    torch.manual_seed(0)
    enc = build_encoder({"type": "cnn", "channels": 4, "stem_pool": [2, 2]}).eval()
    x = torch.randn(2, 101, 64)
    # a full length equals no lengths; a short one only sees its own frames' pooled cells
    torch.testing.assert_close(enc(x, torch.tensor([101, 101])), enc(x), rtol=0, atol=1e-6)
    assert enc(x, torch.tensor([101, 30])).shape == (2, 32)
    with pytest.raises(AudioclError, match="stem_pool"):
        build_encoder({"type": "cnn", "stem_pool": [2]})


def test_masked_mean_max_ignores_padding():
    x = torch.tensor([[[1.0, 3.0, 100.0, -100.0]]]).repeat(2, 1, 1)
    out = masked_mean_max(x, torch.tensor([2, 4]))
    assert out[0, 0].item() == pytest.approx(2.0 + 3.0)
    assert out[1, 0].item() == pytest.approx(1.0 + 100.0)


# ---------------------------------------------------------------- HTSAT


def test_htsat_tiny_forward_and_grads():
    torch.manual_seed(0)
    enc = build_encoder(
        {"type": "htsat", "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4, "spec_size": 64, "n_mels": 16}
    )
    assert enc.output_dim == 16 and enc.max_frames == 256
    out = enc(torch.randn(2, 201, 16))
    assert out.shape == (2, 16)
    _grad_flows(enc, out)
    with pytest.raises(AudioclError, match="at most 256 frames"):
        enc(torch.randn(1, 300, 16))
    with pytest.raises(AudioclError, match="no fusion"):
        enc(torch.randn(1, 4, 100, 16))


def test_htsat_fusion_tiny_uses_local_views_only_when_longer():
    torch.manual_seed(0)
    enc = build_encoder(
        {"type": "htsat", "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4,
         "spec_size": 64, "n_mels": 16, "enable_fusion": True}
    ).eval()
    x = torch.randn(2, 4, 256, 16)
    base = enc(x, is_longer=torch.tensor([False, False]))
    fused = enc(x, is_longer=torch.tensor([True, False]))
    assert fused.shape == (2, 16)
    assert not torch.allclose(base[0], fused[0])
    torch.testing.assert_close(base[1], fused[1], atol=1e-6, rtol=0)


def test_htsat_matches_laion_reference_config_shapes(shared_dir):
    ref = shared_dir / "reference" / "laion_clap"
    cfg = json.loads((ref / "config.json").read_text())["htsat"]
    enc = build_encoder(
        {"type": "htsat", "embed_dim": cfg["embed_dim"], "depths": cfg["depths"], "num_heads": cfg["num_heads"],
         "window_size": cfg["window_size"], "spec_size": cfg["spec_size"], "patch_size": cfg["patch_size"],
         "patch_stride": cfg["patch_stride"], "n_mels": 64}
    ).eval()
    assert enc.output_dim == cfg["output_dim"]
    # 10 s at hop 480 = 1001 frames
    out = enc(torch.randn(2, 1001, 64))
    assert out.shape == (2, cfg["output_dim"])
    # that every LAION tensor has a same-shaped slot is checked through the real
    # converter in tests/test_interop_laion.py
    sd = torch.load(ref / "checkpoint.pt", weights_only=True, map_location="cpu")["state_dict"]
    assert sd["module.audio_projection.0.weight"].shape[1] == enc.output_dim


def test_htsat_presets():
    p = build_encoder.__globals__["parse_params"]({"type": "htsat", "preset": "tiny"})[1]
    assert p.embed_dim == 96 and p.depths == [2, 2, 6, 2]
    p = build_encoder.__globals__["parse_params"]({"type": "htsat", "preset": "base", "embed_dim": 64})[1]
    assert p.embed_dim == 64 and p.depths == [2, 2, 12, 2]


# ---------------------------------------------------------------- HF text


@pytest.fixture(scope="module")
def minilm_tok_dir():
    return default_text_model_dir()


def _tiny_hf_dir(tmp_path, minilm_tok_dir, kind: str):
    from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    if kind == "bert":
        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        model = BertModel(cfg)
    else:
        cfg = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=64)
        model = GPT2Model(cfg)
    d = tmp_path / kind
    model.save_pretrained(str(d))
    AutoTokenizer.from_pretrained(str(minilm_tok_dir), local_files_only=True).save_pretrained(str(d))
    return d


@pytest.mark.parametrize("kind,pooling", [("bert", "mean"), ("bert", "cls"), ("bert", "pooler"), ("gpt2", "last_token")])
def test_hf_text_tiny_models_padding_invariant(tmp_path, minilm_tok_dir, kind, pooling):
    d = _tiny_hf_dir(tmp_path, minilm_tok_dir, kind)
    enc = build_encoder({"type": "hf_text", "path": str(d), "pooling": pooling}).eval()
    assert enc.output_dim == 32
    texts = ["a short one", "a much longer sentence with many more tokens in it"]
    with torch.no_grad():
        batch = enc(texts)
        single = torch.cat([enc([t]) for t in texts])
    assert batch.shape == (2, 32)
    # padding of the short text must not change its embedding
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    assert not torch.allclose(batch[0], batch[1])
    enc.train()
    # every parameter gets a gradient (an unused pooler would break DDP)
    _grad_flows(enc, enc(texts))
    assert (getattr(enc.model, "pooler", None) is not None) == (pooling == "pooler")


def test_hf_text_token_id_input_and_last_token_index():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])  # right and left padding
    assert pool_hidden(h, mask, "last_token")[:, 0].tolist() == [1.0, 7.0]
    assert pool_hidden(h, mask, "mean")[:, 0].tolist() == [0.5, 6.0]
    with pytest.raises(AudioclError):
        build_encoder({"type": "hf_text", "path": "/nonexistent/dir"})


def test_hf_text_max_length_truncates(minilm_tok_dir):
    enc = build_encoder({"type": "hf_text", "max_length": 8})
    ids = enc.tokenize(["word " * 50])["input_ids"]
    assert ids.shape == (1, 8)
    assert build_encoder({"type": "hf_text"}).max_length == 256  # sentence-transformers setting


# ---------------------------------------------------------------- small text


def test_byte_tokenizer_any_script_round_trip():
    tok = ByteTokenizer(max_length=64)
    for s in ["hello", "Grüße", "音声認識", "مرحبا", "🙂 emoji", ""]:
        ids = tok.encode(s)
        assert ids[0] == 1 and ids[-1] == 2
        assert tok.decode(ids) == s
    # NFC: composed and decomposed forms give the same tokens
    assert tok.encode("e\u0301") == tok.encode("\u00e9")
    assert len(ByteTokenizer(max_length=5).encode("abcdefgh")) == 5


def test_small_text_shapes_grads_and_padding():
    torch.manual_seed(0)
    for pooling in ("mean", "cls"):
        enc = build_encoder({"type": "small_text", "d_model": 32, "layers": 2, "heads": 4, "pooling": pooling})
        texts = ["ab", "a longer text, 音声"]
        out = enc(texts)
        assert out.shape == (2, 32)
        _grad_flows(enc, out)
        enc.eval()
        with torch.no_grad():
            torch.testing.assert_close(enc(texts), torch.cat([enc([t]) for t in texts]), atol=1e-5, rtol=0)
    with pytest.raises(AudioclError, match="divisible"):
        build_encoder({"type": "small_text", "d_model": 30, "heads": 4})


# ---------------------------------------------------------------- speech


def test_speech_cnn_defaults():
    enc = build_encoder({"type": "speech_cnn"})
    assert enc.params.n_mels == 80
    out = enc(torch.randn(2, 120, 80), torch.tensor([120, 60]))
    assert out.shape == (2, enc.output_dim)
    _grad_flows(enc, out)


def test_hf_speech_tiny_wav2vec2(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    Wav2Vec2Model(cfg).save_pretrained(str(tmp_path / "w2v"))
    enc = build_encoder({"type": "hf_speech", "path": str(tmp_path / "w2v")}).eval()
    assert enc.output_dim == 16
    wav = torch.randn(2, 1600)
    with torch.no_grad():
        batch = enc(wav, torch.tensor([1600, 800]))
        short = enc(wav[1:, :800])
    assert batch.shape == (2, 16)
    torch.testing.assert_close(batch[1], short[0], atol=1e-4, rtol=0)
    enc.train()
    _grad_flows(enc, enc(wav))
    with pytest.raises(AudioclError, match="samples"):
        enc(torch.randn(2, 10, 80))


# ---------------------------------------------------------------- vector + registry


def test_mlp_encoder_flattens_and_checks():
    enc = build_encoder({"type": "mlp", "input_dim": 8, "hidden": [16, 4]})
    out = enc(torch.randint(0, 2, (5, 2, 4)))
    assert out.shape == (5, 4)
    _grad_flows(enc, out)
    linear = build_encoder({"type": "mlp", "input_dim": 8})
    assert linear.output_dim == 8
    with pytest.raises(AudioclError, match="8 values"):
        enc(torch.randn(5, 7))


def test_register_custom_encoder_used_by_model(tmp_path):
    @register_encoder("test_sum_pool")
    class SumPool(nn.Module):
        class Params(EncoderParams):
            dim: int = Field(gt=0)

        def __init__(self, params):
            super().__init__()
            self.lin = nn.Linear(params.dim, params.dim)
            self.output_dim = params.dim

        def forward(self, x, lengths=None, **_):
            return self.lin(x).sum(1)

    cfg = {"embed_dim": 4, "towers": {"imu": {"modality": "vector", "encoder": {"type": "test_sum_pool", "dim": 6}}}}
    m = MultiTowerModel.from_config(cfg)
    assert m({"imu": torch.randn(2, 5, 6)})["embeddings"]["imu"].shape == (2, 4)
    m.save_pretrained(tmp_path / "c")
    m2 = MultiTowerModel.from_pretrained(tmp_path / "c")
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(m.eval()({"imu": x})["embeddings"]["imu"], m2({"imu": x})["embeddings"]["imu"])
    with pytest.raises(AudioclError, match="dimm"):
        build_encoder({"type": "test_sum_pool", "dimm": 3})
