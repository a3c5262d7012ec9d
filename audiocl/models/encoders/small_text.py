"""A small from-scratch text transformer with a byte-level tokenizer.

For languages or scripts no offline pretrained tower covers: the tokenizer has
no vocabulary file to get wrong. Text is NFC-normalised, encoded as UTF-8, and
each byte becomes a token (ids 3..258); 0 is padding, 1 the CLS token that
starts every sequence, 2 the end token. It is deterministic and its whole
state is ``max_length`` and ``lowercase``, which live in the config.

Input: ``list[str]`` or a mapping with ``input_ids``/``attention_mask``
``[B, L]``. Output: ``Tensor[B, d_model]`` by ``cls`` or masked ``mean`` pooling.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder
from audiocl.models.encoders.hf_text import pool_hidden

PAD, CLS, EOS, BYTE_OFFSET = 0, 1, 2, 3
VOCAB_SIZE = 256 + BYTE_OFFSET


class ByteTokenizer:
    """UTF-8 byte tokenizer: ``[CLS] bytes... [EOS]``, truncated to ``max_length``."""

    def __init__(self, max_length: int = 256, lowercase: bool = False):
        if max_length < 3:
            raise AudioclError("byte tokenizer max_length must be at least 3")
        self.max_length = max_length
        self.lowercase = lowercase

    def encode(self, text: str) -> list[int]:
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        body = [b + BYTE_OFFSET for b in text.encode("utf-8")][: self.max_length - 2]
        return [CLS, *body, EOS]

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - BYTE_OFFSET for i in ids if i >= BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")

    def __call__(self, texts: list[str]) -> dict[str, Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise AudioclError("text input must be a list of strings")
        seqs = [self.encode(t) for t in texts]
        n = max((len(s) for s in seqs), default=2)
        ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def to_dict(self) -> dict[str, object]:
        return {"type": "bytes", "max_length": self.max_length, "lowercase": self.lowercase}


@register_encoder("small_text")
class SmallTextEncoder(nn.Module):
    """Pre-norm transformer encoder over bytes, learned positions."""

    class Params(EncoderParams):
        d_model: int = Field(default=256, gt=0)
        layers: int = Field(default=4, ge=1)
        heads: int = Field(default=4, ge=1)
        ff_mult: int = Field(default=4, ge=1)
        dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
        max_length: int = Field(default=256, ge=3)
        pooling: Literal["cls", "mean"] = "mean"
        lowercase: bool = False

        @model_validator(mode="after")
        def _heads_divide(self) -> SmallTextEncoder.Params:
            if self.d_model % self.heads:
                raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
            return self

    def __init__(self, params: Params | None = None):
        super().__init__()
        p = params or self.Params()
        self.params = p
        self.tokenizer = ByteTokenizer(p.max_length, p.lowercase)
        self.tok_emb = nn.Embedding(VOCAB_SIZE, p.d_model, padding_idx=PAD)
        self.pos_emb = nn.Embedding(p.max_length, p.d_model)
        layer = nn.TransformerEncoderLayer(
            p.d_model,
            p.heads,
            p.d_model * p.ff_mult,
            p.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.d_model)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.output_dim = p.d_model

    def forward(self, x: list[str] | Mapping[str, Tensor], lengths: Tensor | None = None, **_: object) -> Tensor:
        enc = dict(x) if isinstance(x, Mapping) else self.tokenizer(x)
        device = self.tok_emb.weight.device
        ids = enc["input_ids"].to(device)
        mask = enc.get("attention_mask")
        mask = (ids != PAD).long() if mask is None else mask.to(device)
        if ids.shape[1] > self.params.max_length:
            raise AudioclError(f"token sequence of {ids.shape[1]} exceeds max_length {self.params.max_length}")
        pos = torch.arange(ids.shape[1], device=device)
        h = self.tok_emb(ids) + self.pos_emb(pos)[None]
        h = self.encoder(h, src_key_padding_mask=mask == 0)
        h = self.norm(h)
        return pool_hidden(h, mask, self.params.pooling)
