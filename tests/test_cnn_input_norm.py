"""Per-utterance normalisation and SpecAugment of the CNN encoders."""

from __future__ import annotations

import torch

from audiocl.models.encoders.cnn import CNNEncoder, utterance_norm


def test_utterance_norm_removes_a_fixed_channel_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 16, generator=g) * 7 - 40
    lengths = torch.tensor([50, 30, 12])
    # a channel: a constant dB offset per mel bin, and a gain in the log domain's scale
    channel = torch.linspace(-12, 9, 16)
    y = x * 1.0 + channel
    y[1, 30:] = 123.0  # padding content must not matter
    nx, ny = utterance_norm(x, lengths), utterance_norm(y, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(nx[b, :n], ny[b, :n], atol=1e-4)
        assert torch.all(ny[b, n:] == 0)
        assert abs(float(ny[b, :n].mean())) < 1e-4 and abs(float(ny[b, :n].std(unbiased=False)) - 1) < 1e-3


def test_channel_offset_leaves_the_embedding_unchanged_with_utterance_norm() -> None:
    torch.manual_seed(0)
    enc = CNNEncoder(CNNEncoder.Params(n_mels=16, input_norm="utterance", time_masks=2, freq_masks=2)).eval()
    x = torch.randn(2, 40, 16) * 5 - 30
    shifted = x + torch.linspace(-10, 10, 16)
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(shifted), atol=1e-4)
    base = CNNEncoder(CNNEncoder.Params(n_mels=16)).eval()
    with torch.no_grad():
        assert not torch.allclose(base(x), base(shifted), atol=1e-3)


def test_spec_augment_only_in_training() -> None:
    torch.manual_seed(0)
    enc = CNNEncoder(CNNEncoder.Params(n_mels=16, input_norm="utterance", time_masks=2, freq_masks=2))
    x = torch.randn(4, 40, 16)
    enc.eval()
    with torch.no_grad():
        a, b = enc(x), enc(x)
    assert torch.equal(a, b)
    enc.train()
    with torch.no_grad():
        c, d = enc(x), enc(x)
    assert not torch.allclose(c, d)
