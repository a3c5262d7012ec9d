"""A generic MLP encoder for vectors or small tensors (other modalities).

Input ``Tensor[B, *shape]`` with ``prod(shape) == input_dim`` (flattened);
output ``Tensor[B, hidden[-1]]``, or ``Tensor[B, input_dim]`` when ``hidden`` is
empty (then the tower's projection is the whole encoder: a linear encoder, as
in the Symile XOR experiment).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder

_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Flatten, then Linear -> (LayerNorm) -> activation -> dropout per hidden layer."""

    class Params(EncoderParams):
        input_dim: int = Field(gt=0)
        hidden: list[int] = Field(default_factory=list)
        activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        layer_norm: bool = False

    def __init__(self, params: Params):
        super().__init__()
        self.params = params
        layers: list[nn.Module] = []
        d = params.input_dim
        for h in params.hidden:
            layers.append(nn.Linear(d, h))
            if params.layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(_ACT[params.activation]())
            if params.dropout > 0:
                layers.append(nn.Dropout(params.dropout))
            d = h
        self.net = nn.Sequential(*layers)
        self.output_dim = d

    def forward(self, x: Tensor, lengths: Tensor | None = None, **_: object) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.params.input_dim:
            raise AudioclError(
                f"mlp encoder expects {self.params.input_dim} values per item, got {x.shape[1]}"
            )
        return self.net(x.float() if not x.is_floating_point() else x)
