"""HTSAT (hierarchical token-semantic audio transformer) via ``transformers.ClapAudioModel``.

Using the maintained transformers implementation means LAION-CLAP and HF CLAP
checkpoints load into this encoder by key mapping alone.

Input: log-mel ``Tensor[B, frames, n_mels]`` (one view), or
``Tensor[B, 4, frames, n_mels]`` for the fusion variant (the shrunk global view
plus three local crops, as ``ClapFeatureExtractor`` makes them) with
``is_longer: BoolTensor[B]`` saying which items carry real local crops.
``frames`` must be at most ``spec_size * (spec_size // n_mels)`` (1024 for the
LAION setting; a 10 s clip at hop 480 has 1001 frames and is interpolated up
to 1024 inside the model). Lengths are ignored: HTSAT sees a fixed window, so
length policies are applied before it.
Output: pooled features ``Tensor[B, embed_dim * 2**(len(depths)-1)]``
(768 for HTSAT-tiny, the ``embedding`` LAION's projection reads).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder

# LAION-CLAP's HTSAT sizes ('tiny' is what 630k-audioset-best uses)
PRESETS: dict[str, dict[str, object]] = {
    "tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [4, 8, 16, 32]},
    "base": {"embed_dim": 128, "depths": [2, 2, 12, 2], "num_heads": [4, 8, 16, 32]},
    "large": {"embed_dim": 256, "depths": [2, 2, 12, 2], "num_heads": [4, 8, 16, 32]},
}


@register_encoder("htsat")
class HTSATEncoder(nn.Module):
    """HTSAT-Swin audio encoder; parameters map onto ``ClapAudioConfig``."""

    #: LAION-CLAP and ``ClapFeatureExtractor`` fit short clips as waveforms (repeat,
    #: then zero-pad) before the log-mel; embedding follows them for parity (see
    #: :mod:`audiocl.audio.length`, "One domain").
    fit_domain = "waveform"

    class Params(EncoderParams):
        preset: Literal["tiny", "base", "large"] | None = None
        embed_dim: int = Field(default=96, gt=0)
        depths: list[int] = Field(default_factory=lambda: [2, 2, 6, 2])
        num_heads: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
        window_size: int = Field(default=8, gt=0)
        spec_size: int = Field(default=256, gt=0)
        patch_size: int = Field(default=4, gt=0)
        patch_stride: list[int] = Field(default_factory=lambda: [4, 4])
        n_mels: int = Field(default=64, gt=0)
        mlp_ratio: float = 4.0
        enable_fusion: bool = False
        fusion_type: Literal["aff_2d", "channel_map"] | None = None
        drop_path_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
        hidden_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        attention_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

        @model_validator(mode="after")
        def _check(self) -> HTSATEncoder.Params:
            if self.preset is not None:
                for k, v in PRESETS[self.preset].items():
                    if k not in self.model_fields_set:
                        object.__setattr__(self, k, v)
            if len(self.depths) != len(self.num_heads):
                raise ValueError("depths and num_heads need the same number of stages")
            if self.spec_size % self.n_mels != 0:
                raise ValueError("spec_size must be a multiple of n_mels")
            if self.enable_fusion and self.fusion_type is None:
                object.__setattr__(self, "fusion_type", "aff_2d")
            return self

    def __init__(self, params: Params | None = None):
        super().__init__()
        from transformers import ClapAudioConfig, ClapAudioModel

        p = params or self.Params()
        self.params = p
        self.output_dim = int(p.embed_dim * 2 ** (len(p.depths) - 1))
        cfg = ClapAudioConfig(
            window_size=p.window_size,
            num_mel_bins=p.n_mels,
            spec_size=p.spec_size,
            patch_size=p.patch_size,
            patch_stride=list(p.patch_stride),
            patch_embeds_hidden_size=p.embed_dim,
            depths=list(p.depths),
            num_attention_heads=list(p.num_heads),
            num_hidden_layers=len(p.depths),
            enable_fusion=p.enable_fusion,
            fusion_type=p.fusion_type,
            mlp_ratio=p.mlp_ratio,
            drop_path_rate=p.drop_path_rate,
            hidden_dropout_prob=p.hidden_dropout,
            attention_probs_dropout_prob=p.attention_dropout,
            # the projection lives in the tower, not in ClapAudioModel
            hidden_size=self.output_dim,
        )
        self.model = ClapAudioModel(cfg)
        self.max_frames = p.spec_size * (p.spec_size // p.n_mels)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        is_longer: Tensor | None = None,
        **_: object,
    ) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # [B, 1, frames, mels]
        if x.dim() != 4:
            raise AudioclError(f"htsat expects [B, frames, n_mels] or [B, 4, frames, n_mels], got {tuple(x.shape)}")
        if x.shape[-1] != self.params.n_mels:
            raise AudioclError(f"htsat built for n_mels={self.params.n_mels}, got {x.shape[-1]} mel bins")
        if x.shape[-2] > self.max_frames:
            raise AudioclError(
                f"htsat takes at most {self.max_frames} frames, got {x.shape[-2]}: "
                "apply a length policy (trunc/fusion/sliding windows) first"
            )
        if self.params.enable_fusion:
            if is_longer is None:
                is_longer = torch.zeros(x.shape[0], dtype=torch.bool)
            is_longer = is_longer.reshape(-1).to(x.device)
            if x.shape[1] == 1 and bool(is_longer.any()):
                raise AudioclError("is_longer items need the 4-view fusion input [B, 4, frames, n_mels]")
        else:
            is_longer = None
            if x.shape[1] != 1:
                raise AudioclError("this htsat has no fusion: give one view [B, frames, n_mels]")
        out = self.model(input_features=x, is_longer=is_longer)
        return out.pooler_output
