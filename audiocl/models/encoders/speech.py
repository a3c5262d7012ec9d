"""Speech encoders.

- ``speech_cnn``: the PANN-style CNN (:mod:`.cnn`) with speech defaults, on
  16 kHz log-mels ``[B, frames, n_mels]`` (+ ``lengths`` in frames).
- ``hf_speech``: wav2vec2 / HuBERT / WavLM (any transformers audio encoder
  taking ``input_values``) from a local directory. Input: 16 kHz waveform
  ``Tensor[B, T]`` with optional ``lengths`` (valid samples). Output: the
  masked mean of the last hidden states, ``Tensor[B, hidden_size]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.embed import device_of
from audiocl.models.encoders.base import EncoderParams, register_encoder
from audiocl.models.encoders.cnn import CNNEncoder
from audiocl.models.encoders.hf_text import _resolve


@register_encoder("speech_cnn")
class SpeechCNNEncoder(CNNEncoder):
    """The CNN family with defaults for 16 kHz speech log-mels."""

    class Params(CNNEncoder.Params):
        variant: Literal["cnn6", "cnn10", "cnn14"] = "cnn10"
        width: Literal["tiny", "small", "base", "large"] = "tiny"
        n_mels: int = Field(default=80, gt=0)
        dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


@register_encoder("hf_speech")
class HFSpeechEncoder(nn.Module):
    """A transformers speech model (wav2vec2, HuBERT, WavLM...) on raw waveforms."""

    input_kind = "waveform"

    class Params(EncoderParams):
        path: str | None = None
        pretrained: bool = True
        hf_config: dict[str, Any] | None = None
        normalize_waveform: bool = Field(
            default=True, description="zero mean, unit variance per utterance (wav2vec2 feature extractor)"
        )
        pooling: Literal["mean", "first"] = "mean"

    def __init__(self, params: Params):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        p = params
        self.params = p
        overrides = dict(p.hf_config or {})
        if p.path is None:
            if "model_type" not in overrides:
                raise AudioclError("hf_speech needs a local model 'path' or an hf_config with model_type")
            config = AutoConfig.for_model(**overrides)
        else:
            if not (Path(p.path) / "config.json").is_file():
                raise AudioclError(f"speech encoder path {p.path} is not a transformers model folder")
            config = AutoConfig.from_pretrained(p.path, local_files_only=True, **overrides)
        if p.pretrained and p.path is not None:
            self.model = AutoModel.from_pretrained(p.path, config=config, local_files_only=True)
        else:
            self.model = AutoModel.from_config(config)
        self.output_dim = int(config.hidden_size)
        # group-norm feature extractors (wav2vec2-base) were trained without an
        # attention mask; passing one changes their output, so follow HF's rule
        self.use_attention_mask = getattr(config, "feat_extract_norm", "layer") == "layer"

    @classmethod
    def for_loading(cls, params: Params, base_dir: Path | None = None) -> Params:
        return params.model_copy(update={"pretrained": False, "path": _resolve(params.path, base_dir)})

    def save_assets(self, folder: Path, rel: str) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(folder))
        return {"path": rel, "hf_config": None, "pretrained": False}

    def forward(self, x: Tensor, lengths: Tensor | None = None, **_: object) -> Tensor:
        if x.dim() != 2:
            raise AudioclError(f"hf_speech expects waveforms [B, samples], got {tuple(x.shape)}")
        device = device_of(self.model)
        x = x.to(device)
        b, t = x.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=device)
        lengths = lengths.to(device).long()
        valid = torch.arange(t, device=device)[None, :] < lengths[:, None]
        if self.params.normalize_waveform:
            m = valid.to(x.dtype)
            n = m.sum(1, keepdim=True).clamp_min(1.0)
            mean = (x * m).sum(1, keepdim=True) / n
            var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / n
            x = (x - mean) / torch.sqrt(var + 1e-7) * m
        kwargs: dict[str, Tensor] = {"input_values": x}
        if self.use_attention_mask:
            kwargs["attention_mask"] = valid.long()
        hidden = self.model(**kwargs).last_hidden_state  # [B, frames, H]
        if self.params.pooling == "first":
            return hidden[:, 0]
        out_len = self.model._get_feat_extract_output_lengths(lengths).clamp(1, hidden.shape[1])
        fm = (torch.arange(hidden.shape[1], device=device)[None, :] < out_len[:, None]).to(hidden.dtype)
        return (hidden * fm[..., None]).sum(1) / fm.sum(1, keepdim=True)
