"""Typed configuration of a multi-tower model.

A model is fully determined by a :class:`ModelConfig`: a dict of named towers
(each an encoder, a projection to the shared space and a freeze flag), the
shared embedding size, and the temperature / bias of the contrastive logits.
Unknown keys are rejected and named, so a typo in a YAML file never silently
falls back to a default.

Example (YAML)::

    embed_dim: 512
    towers:
      audio:
        modality: audio
        encoder: {type: cnn, variant: cnn10, width: tiny, n_mels: 64}
        projection: {type: mlp}
      text:
        modality: text
        encoder: {type: hf_text, pooling: mean}   # all-MiniLM-L6-v2 by default
        frozen: true
    logit_scale: {init: 2.6593, max: 4.6052, learnable: true}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from audiocl.config_schema import StrictModel, format_validation_error
from audiocl.errors import AudioclError, InputError

Modality = Literal["audio", "speech", "text", "vector"]


class EncoderConfig(BaseModel):
    """``type`` picks a registered encoder; every other key is a parameter of it.

    Parameters are checked against the encoder's own schema when the encoder is
    built (see :func:`audiocl.models.encoders.build_encoder`), so unknown
    parameters are rejected there with their name.
    """

    model_config = ConfigDict(extra="allow")

    type: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ProjectionConfig(StrictModel):
    """Map the encoder output to the shared space.

    ``linear``: one affine layer. ``mlp``: Linear(in, hidden) - activation -
    Linear(hidden, dim) (the CLAP projection). ``identity``: none (the encoder
    must already output ``dim`` features). ``dim`` defaults to the model's
    ``embed_dim``; ``hidden`` defaults to ``dim``.
    """

    type: Literal["linear", "mlp", "identity"] = "linear"
    dim: int | None = Field(default=None, gt=0)
    hidden: int | None = Field(default=None, gt=0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    bias: bool = True


class TowerConfig(StrictModel):
    """One modality tower.

    ``input_key`` names the entry of the model's input dict this tower reads
    (default: the tower's name); ``<input_key>_lengths`` (valid frames or
    samples) and ``<input_key>_ids`` (cache keys for a frozen tower) are read
    when present. ``frozen`` freezes the encoder (LiT): no gradients, kept in
    eval mode; the projection still trains. ``cache`` (frozen towers only)
    computes each unique input's encoder output once and reuses it, keyed by
    the text itself or by ``<input_key>_ids``; use ids only when an id always
    means the same input (no random crops).
    """

    modality: Modality
    encoder: EncoderConfig
    projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    frozen: bool = False
    cache: bool = False
    normalize: bool = True
    input_key: str | None = None

    @field_validator("encoder", mode="before")
    @classmethod
    def _encoder_needs_type(cls, v: Any) -> Any:
        if isinstance(v, dict) and "type" not in v:
            raise ValueError("an encoder needs a 'type' (e.g. cnn, htsat, hf_text, small_text, mlp)")
        return v


class LogitScaleConfig(StrictModel):
    """Temperature stored as a log: logits = exp(min(s, max)) * cosine.

    Defaults follow CLIP: init log(1/0.07), clamped at log(100).
    """

    init: float = math.log(1 / 0.07)
    max: float = math.log(100.0)
    learnable: bool = True


class LogitBiasConfig(StrictModel):
    """Additive logit bias b (SigLIP uses init -10); ``init: null`` means no bias."""

    init: float | None = None
    learnable: bool = True


class ModelConfig(StrictModel):
    """A multi-tower model: any number of named towers and a shared space."""

    towers: dict[str, TowerConfig]
    embed_dim: int = Field(default=512, gt=0)
    logit_scale: LogitScaleConfig = Field(default_factory=LogitScaleConfig)
    logit_bias: LogitBiasConfig = Field(default_factory=LogitBiasConfig)
    format_version: int = 1

    @field_validator("towers")
    @classmethod
    def _at_least_one(cls, v: dict[str, TowerConfig]) -> dict[str, TowerConfig]:
        if not v:
            raise ValueError("a model needs at least one tower")
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"tower name {name!r} must be a Python identifier")
        return v

    def input_key(self, tower: str) -> str:
        return self.towers[tower].input_key or tower

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str | None = None) -> ModelConfig:
        """Validate a plain dict; user mistakes raise AudioclError naming the key."""
        if isinstance(d, ModelConfig):
            return d
        if not isinstance(d, dict):
            raise AudioclError(f"model config must be a mapping, got {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            msg = "invalid model config: " + format_validation_error(e)
            if source is not None:
                raise InputError(source, msg) from None
            raise AudioclError(msg) from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read YAML (.yaml/.yml) or JSON. A top-level ``model:`` section is accepted."""
        p = Path(path)
        if not p.is_file():
            raise InputError(str(p), "model config file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(str(p), f"cannot read: {e}") from None
        if p.suffix.lower() in (".yaml", ".yml"):
            from audiocl.config_yaml import load_yaml

            # bounded alias expansion: an alias bomb is refused here, naming the file
            d = load_yaml(text, str(p))
        else:
            try:
                d = json.loads(text)
            except (ValueError, RecursionError) as e:  # parse errors are user mistakes
                raise InputError(str(p), f"cannot parse: {e}") from None
        if isinstance(d, dict) and set(d) == {"model"}:
            d = d["model"]
        return cls.from_dict(d, source=str(p))


NAMED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def named_configs() -> list[str]:
    """Names of the model configs shipped with audiocl (``audiocl/models/configs``)."""
    return sorted(p.stem for p in NAMED_CONFIG_DIR.glob("*.yaml"))


def load_model_config(cfg: ModelConfig | dict[str, Any] | str | Path) -> ModelConfig:
    """Accept a ModelConfig, a dict, a path to a YAML/JSON file, or a shipped
    config's name (see :func:`named_configs`), e.g. ``"clap-cnn10-tiny-minilm"``."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict):
        return ModelConfig.from_dict(cfg)
    p = Path(cfg)
    if not p.exists() and isinstance(cfg, str) and "/" not in cfg and not p.suffix:
        named = NAMED_CONFIG_DIR / f"{cfg}.yaml"
        if not named.is_file():
            raise AudioclError(
                f"model config '{cfg}' is neither a file nor a shipped config ({', '.join(named_configs())})"
            )
        p = named
    return ModelConfig.from_file(p)
