"""Encoder protocol and registry.

An encoder is an ``nn.Module`` with

- ``Params``: a pydantic model (``extra="forbid"``) of its config parameters;
- ``__init__(self, params: Params)``;
- ``output_dim: int``: the size of the vector it returns per item;
- ``forward(x, lengths=None, **extra) -> Tensor[B, output_dim]``.

Optional: ``save_assets(folder) -> dict`` copies files the encoder needs at load
time (tokenizer, HF config) into ``folder`` and returns parameter updates that
point at them, so a saved model folder is self-contained; ``for_loading(params)``
returns params that build the architecture without loading pretrained weights
(the model's safetensors file holds them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import ConfigDict, ValidationError
from torch import nn

from audiocl.config_schema import StrictModel, format_validation_error
from audiocl.errors import AudioclError
from audiocl.models.config import EncoderConfig


class EncoderParams(StrictModel):
    """Base of encoder parameter schemas: unknown keys are rejected."""

    # encoder parameters may start with ``model_`` (``model_path``)
    model_config = ConfigDict(protected_namespaces=())


_REGISTRY: dict[str, type[nn.Module]] = {}


def register_encoder(name: str, cls: type[nn.Module] | None = None) -> Any:
    """Register an encoder class under ``name``; usable as a decorator.

    The class needs a ``Params`` pydantic model (subclass :class:`EncoderParams`),
    ``__init__(params)`` and an ``output_dim`` attribute.
    """

    def deco(c: type[nn.Module]) -> type[nn.Module]:
        if not hasattr(c, "Params"):
            raise TypeError(f"encoder {c.__name__} needs a nested pydantic 'Params' class")
        _REGISTRY[name] = c
        return c

    return deco(cls) if cls is not None else deco


def encoder_names() -> list[str]:
    """Registered encoder types, sorted."""
    return sorted(_REGISTRY)


def get_encoder_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; AudioclError naming the known types otherwise."""
    if name not in _REGISTRY:
        raise AudioclError(f"unknown encoder type '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def parse_params(cfg: EncoderConfig | dict[str, Any], where: str = "encoder") -> tuple[type, Any]:
    """Validate an encoder config against its class's schema."""
    if isinstance(cfg, dict):
        cfg = EncoderConfig.model_validate(cfg)
    cls = get_encoder_class(cfg.type)
    try:
        # every registered encoder declares a ``Params`` schema (an EncoderParams)
        params = cast(Any, cls).Params.model_validate(cfg.params)
    except ValidationError as e:
        raise AudioclError(
            f"invalid {where} ({cfg.type}): " + format_validation_error(e)
        ) from None
    return cls, params


def build_encoder(
    cfg: EncoderConfig | dict[str, Any],
    *,
    where: str = "encoder",
    for_loading: bool = False,
    base_dir: Path | None = None,
) -> nn.Module:
    """Build an encoder from ``{"type": name, **params}``.

    ``for_loading=True`` builds the architecture only (no pretrained weights
    read from disk) because the weights will come from a model folder;
    relative asset paths are then resolved against ``base_dir``.
    """
    cls, params = parse_params(cfg, where)
    if for_loading and hasattr(cls, "for_loading"):
        params = cls.for_loading(params, base_dir)
    return cls(params)

