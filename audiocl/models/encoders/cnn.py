"""PANN-style CNN encoders on log-mel spectrograms (Cnn6 / Cnn10 / Cnn14 shapes).

Input ``x: Tensor[B, frames, n_mels]`` (log-mel, dB) and optional
``lengths: LongTensor[B]`` (valid frames). The mel bins are batch-normalised
first (as in PANNs), then conv blocks halve time and frequency, the frequency
axis is averaged, and time is pooled as ``mean + max`` over *valid* frames only,
so padding never changes the embedding of a shorter clip beyond the receptive
field at its end. Output: ``Tensor[B, C_last]``.

Variants:
- ``cnn6``: 4 blocks of one 5x5 conv each;
- ``cnn10``: 4 blocks of two 3x3 convs;
- ``cnn14``: 6 blocks of two 3x3 convs (the last block does not pool).

Widths give the first block's channels; each block doubles them:
tiny 16, small 32, base 64 (the PANN papers' width), large 128.
``stem_pool: [t, f]`` average-pools the normalised mel before the first block,
which divides the cost of every block by ``t * f`` (useful for 10 s clips on CPU).

``input_norm: utterance`` first normalises each clip by its own statistics
over its valid frames (cepstral mean and variance normalisation on log-mels):
``x[t, f] <- (x[t, f] - mean_t x[t, f]) / std_{t,f}(x)``, padded frames set to
0. A fixed channel (microphone, telephone band, synthesiser timbre) is a
constant offset per mel bin in the log domain, so this removes it; batch
statistics (the default, as in PANNs) keep it. ``time_masks`` /
``freq_masks`` (SpecAugment) zero that many random time / mel stripes of at
most ``time_mask_width`` frames / ``freq_mask_width`` bins per clip, in
training mode only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder

WIDTHS = {"tiny": 16, "small": 32, "base": 64, "large": 128}
_BLOCKS = {"cnn6": (4, 1, 5), "cnn10": (4, 2, 3), "cnn14": (6, 2, 3)}


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_convs: int, kernel: int, pool: bool, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        self.pool = pool
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.convs(x)
        if self.pool:
            # ceil_mode keeps the last odd frame, so valid = ceil(valid / 2) exactly
            x = F.avg_pool2d(x, 2, ceil_mode=True)
        return self.dropout(x)


def masked_mean_max(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``x: [B, C, T]`` -> mean + max over the first ``lengths[b]`` steps: ``[B, C]``."""
    if lengths is None:
        return x.mean(dim=-1) + x.amax(dim=-1)
    t = x.shape[-1]
    valid = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, T]
    m = valid[:, None, :].to(x.dtype)
    mean = (x * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    mx = x.masked_fill(~valid[:, None, :], torch.finfo(x.dtype).min).amax(dim=-1)
    return mean + mx


def _valid_mask(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``[B, T, 1]`` float mask of the valid frames of ``x: [B, T, F]``."""
    T = x.shape[1]
    if lengths is None:
        return torch.ones(x.shape[0], T, 1, dtype=x.dtype, device=x.device)
    steps = torch.arange(T, device=x.device)[None, :]
    return (steps < lengths.to(x.device)[:, None].clamp(min=1)).to(x.dtype)[..., None]


def utterance_norm(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Per-clip mean (per mel bin) and variance (over all bins) normalisation over valid frames.

    ``x: [B, T, F]`` log-mel; returns the same shape, padded frames 0.
    """
    m = _valid_mask(x, lengths)
    n = m.sum(dim=1, keepdim=True)  # [B, 1, 1]
    mean = (x * m).sum(dim=1, keepdim=True) / n  # [B, 1, F]
    centred = (x - mean) * m
    var = centred.pow(2).sum(dim=(1, 2), keepdim=True) / (n * x.shape[2])
    return centred / torch.sqrt(var + eps)


def spec_augment(x: Tensor, lengths: Tensor | None, p: CNNEncoder.Params) -> Tensor:
    """Zero ``p.time_masks`` time stripes and ``p.freq_masks`` mel stripes per clip (``x: [B, T, F]``)."""
    B, T, F_ = x.shape
    dev = x.device
    keep = torch.ones(B, T, F_, dtype=x.dtype, device=dev)
    valid = lengths.to(dev).clamp(min=1, max=T) if lengths is not None else torch.full((B,), T, device=dev)
    t_idx = torch.arange(T, device=dev)[None, :]
    f_idx = torch.arange(F_, device=dev)[None, :]
    for _ in range(p.time_masks):
        w = torch.randint(0, p.time_mask_width + 1, (B,), device=dev)
        start = (torch.rand(B, device=dev) * (valid - w).clamp(min=1)).long()
        hit = (t_idx >= start[:, None]) & (t_idx < (start + w)[:, None])
        keep = keep * (~hit).to(x.dtype)[:, :, None]
    for _ in range(p.freq_masks):
        w = torch.randint(0, min(p.freq_mask_width, F_) + 1, (B,), device=dev)
        start = (torch.rand(B, device=dev) * (F_ - w).clamp(min=1)).long()
        hit = (f_idx >= start[:, None]) & (f_idx < (start + w)[:, None])
        keep = keep * (~hit).to(x.dtype)[:, None, :]
    return x * keep


@register_encoder("cnn")
class CNNEncoder(nn.Module):
    """PANN-style CNN on log-mels; see the module docstring for shapes."""

    class Params(EncoderParams):
        variant: Literal["cnn6", "cnn10", "cnn14"] = "cnn10"
        width: Literal["tiny", "small", "base", "large"] = "tiny"
        channels: int | None = Field(default=None, gt=0, description="overrides width")
        n_mels: int = Field(default=64, gt=0)
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        stem_pool: list[int] = Field(
            default_factory=lambda: [1, 1],
            min_length=2,
            max_length=2,
            description="average-pool (time, freq) before the blocks; [2, 2] cuts compute ~4x on long clips",
        )
        input_norm: Literal["batch", "utterance"] = "batch"
        time_masks: int = Field(default=0, ge=0)
        time_mask_width: int = Field(default=10, ge=1)
        freq_masks: int = Field(default=0, ge=0)
        freq_mask_width: int = Field(default=8, ge=1)

    def __init__(self, params: Params | None = None):
        super().__init__()
        p = params or self.Params()
        self.params = p
        n_blocks, n_convs, kernel = _BLOCKS[p.variant]
        c = p.channels or WIDTHS[p.width]
        self.bn0 = nn.BatchNorm2d(p.n_mels)
        blocks = []
        c_in = 1
        for i in range(n_blocks):
            c_out = c * 2**i
            # Cnn14's last block keeps its resolution (PANN pools it 1x1)
            pool = not (p.variant == "cnn14" and i == n_blocks - 1)
            blocks.append(_ConvBlock(c_in, c_out, n_convs, kernel, pool, p.dropout))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.n_pools = sum(int(b.pool) for b in blocks)
        self.output_dim = c_in

    def forward(self, x: Tensor, lengths: Tensor | None = None, **_: object) -> Tensor:
        if x.dim() != 3:
            raise AudioclError(f"cnn encoder expects features [B, frames, n_mels], got shape {tuple(x.shape)}")
        if x.shape[-1] != self.params.n_mels:
            raise AudioclError(
                f"cnn encoder built for n_mels={self.params.n_mels}, got features with {x.shape[-1]} mel bins"
            )
        if self.params.input_norm == "utterance":
            x = utterance_norm(x, lengths)
        if self.training and (self.params.time_masks or self.params.freq_masks):
            x = spec_augment(x, lengths, self.params)
        x = x.unsqueeze(1)  # [B, 1, T, F]
        # BatchNorm over mel bins: put mels on the channel axis
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        st, sf = self.params.stem_pool
        if st > 1 or sf > 1:
            x = F.avg_pool2d(x, (st, sf), ceil_mode=True)
        for b in self.blocks:
            x = b(x)
        x = x.mean(dim=3)  # [B, C, T']
        if lengths is not None:
            lengths = lengths.clone().to(torch.long)
            lengths = torch.div(lengths + st - 1, st, rounding_mode="floor")
            for _pool in range(self.n_pools):
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            lengths = lengths.clamp(min=1, max=x.shape[-1])
        return masked_mean_max(x, lengths)
