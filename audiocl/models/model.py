"""The multi-tower model: any number of named towers sharing one embedding space.

``forward(inputs)`` runs the towers whose input key is present and returns::

    {"embeddings": {name: Tensor[N, embed_dim]},   # L2-normalised rows
     "logit_scale": Tensor[],                      # exp(min(s, max)), s learnable
     "logit_bias": Tensor[] | None}

Input conventions per tower (key = the tower's ``input_key``, default its name):
``inputs[key]`` is the tower's input (audio/speech ``Tensor[B, frames, n_mels]``
or waveforms, text ``list[str]`` or token-id dict, vector ``Tensor[B, ...]``);
``inputs[key + "_lengths"]`` optional valid lengths; ``inputs[key + "_ids"]``
optional cache keys for a frozen, cached tower.

A saved model folder holds ``config.json`` (the :class:`ModelConfig`),
``model.safetensors`` (all weights, shared tensors deduplicated),
``frontend.json`` (the audio FrontendConfig, when set), ``prompts.json``
(default zero-shot templates), ``towers/<name>/`` with the tokenizer and
HF config of pretrained towers, so the folder is self-contained, and, when a
tower started from published weights, ``LICENSES.md`` / ``licenses.json`` with
their source, licence and attribution (:mod:`audiocl.models.licenses`).
Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_text
from audiocl.models.config import ModelConfig, load_model_config
from audiocl.models.licenses import encoder_license, read_licenses, write_licenses
from audiocl.models.towers import Tower

DEFAULT_PROMPTS = ["This is a sound of {}."]


def _frontend_to_dict(frontend: Any) -> dict[str, Any] | None:
    if frontend is None:
        return None
    if isinstance(frontend, dict):
        return dict(frontend)
    if hasattr(frontend, "describe"):
        # parameters + resampler identity + hash, so a mismatch is refused at load
        return frontend.describe()
    if hasattr(frontend, "to_dict"):
        return frontend.to_dict()
    raise AudioclError(f"frontend must be a FrontendConfig or dict, got {type(frontend).__name__}")


def _frontend_from_dict(d: dict[str, Any] | None) -> Any:
    if d is None:
        return None
    from audiocl.audio.frontend import FrontendConfig

    return FrontendConfig.from_dict(d)


class MultiTowerModel(nn.Module):
    """Named towers + learnable temperature (+ optional bias); see module docstring."""

    def __init__(
        self,
        config: ModelConfig | dict[str, Any],
        *,
        frontend: Any = None,
        prompts: Sequence[str] | None = None,
        _for_loading: bool = False,
        _base_dir: Path | None = None,
    ):
        super().__init__()
        cfg = load_model_config(config)
        self.config = cfg
        self.towers = nn.ModuleDict(
            {
                name: Tower(tc, cfg.embed_dim, name=name, for_loading=_for_loading, base_dir=_base_dir)
                for name, tc in cfg.towers.items()
            }
        )
        ls = cfg.logit_scale
        if ls.init > ls.max:
            raise AudioclError(f"logit_scale.init ({ls.init}) is above logit_scale.max ({ls.max})")
        self.logit_scale = nn.Parameter(torch.tensor(float(ls.init)), requires_grad=ls.learnable)
        self.logit_scale_max = float(ls.max)
        if cfg.logit_bias.init is not None:
            self.logit_bias: nn.Parameter | None = nn.Parameter(
                torch.tensor(float(cfg.logit_bias.init)), requires_grad=cfg.logit_bias.learnable
            )
        else:
            self.logit_bias = None
        self.frontend = frontend
        self.prompts = list(prompts) if prompts is not None else list(DEFAULT_PROMPTS)
        #: {tower: {encoder, source, license, attribution}} of towers built from
        #: published weights; written to LICENSES.md by save_pretrained
        self.licenses: dict[str, dict[str, str]] = {}
        for name, tower in self.towers.items():
            tower = cast(Tower, tower)  # ModuleDict values are typed as Module
            entry = encoder_license(tower.encoder, tower.cfg.encoder.type)
            if entry is not None:
                self.licenses[name] = entry

    # ---------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: ModelConfig | dict[str, Any] | str | Path, **kw: Any) -> MultiTowerModel:
        return cls(load_model_config(config), **kw)

    @property
    def tower_names(self) -> list[str]:
        return list(self.towers.keys())

    def input_key(self, name: str) -> str:
        return self.config.input_key(name)

    # ---------------------------------------------------------------- forward
    def scale(self) -> Tensor:
        """exp of the clamped log-scale; the clamp stops gradients above ``max``."""
        return self.logit_scale.clamp(max=self.logit_scale_max).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the stored log-scale in place (call after an optimiser step)."""
        self.logit_scale.clamp_(max=self.logit_scale_max)

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        emb: dict[str, Tensor] = {}
        for name, tower in self.towers.items():
            key = self.input_key(name)
            if key not in inputs:
                continue
            emb[name] = tower(inputs[key], inputs.get(f"{key}_lengths"), inputs.get(f"{key}_ids"))
        if not emb:
            keys = [self.input_key(n) for n in self.towers]
            raise AudioclError(f"model inputs hold none of the tower input keys {keys}; got {sorted(inputs)}")
        return {"embeddings": emb, "logit_scale": self.scale(), "logit_bias": self.logit_bias}

    def encode(self, name: str, x: Any, lengths: Tensor | None = None, **kw: Any) -> Tensor:
        """Embeddings of one tower, ``Tensor[B, embed_dim]`` (keeps grad mode)."""
        if name not in self.towers:
            raise AudioclError(f"no tower named '{name}'; towers: {self.tower_names}")
        return self.towers[name](x, lengths, **kw)

    def _pick_tower(self, tower: str | None, modalities: tuple[str, ...]) -> str:
        if tower is not None:
            if tower not in self.towers:
                raise AudioclError(f"no tower named '{tower}'; towers: {self.tower_names}")
            return tower
        names = [n for n, t in self.towers.items() if t.modality in modalities]
        if len(names) != 1:
            raise AudioclError(
                f"cannot pick a {'/'.join(modalities)} tower among {self.tower_names}; pass tower="
            )
        return names[0]

    def embed_text(self, texts: Sequence[str], tower: str | None = None, *, batch_size: int = 256) -> Tensor:
        """Embed strings in eval mode without gradients: ``Tensor[N, embed_dim]`` on CPU
        (:func:`audiocl.models.embed.embed_texts`)."""
        from audiocl.models.embed import embed_texts

        return embed_texts(self, list(texts), tower=tower, batch_size=batch_size)

    def embed_audio(
        self,
        features: Tensor,
        lengths: Tensor | None = None,
        tower: str | None = None,
        *,
        batch_size: int = 64,
    ) -> Tensor:
        """Embed model inputs as they are (log-mels ``[B, frames, n_mels]``, or waveforms
        for a waveform tower) in eval mode without gradients: ``Tensor[B, embed_dim]``.
        No clip rule is applied; to embed clips use :mod:`audiocl.models.embed`."""
        from audiocl.models.embed import device_of, inference

        name = self._pick_tower(tower, ("audio",) if self._has("audio") else ("speech",))
        dev = device_of(self)
        outs = []
        with inference(self):
            for i in range(0, features.shape[0], batch_size):
                ln = None if lengths is None else lengths[i : i + batch_size].to(dev)
                outs.append(self.towers[name](features[i : i + batch_size].to(dev), ln))
        if not outs:
            return torch.empty(0, self.config.embed_dim)
        return torch.cat(outs)

    def _has(self, modality: str) -> bool:
        return any(t.modality == modality for t in self.towers.values())

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder atomically: its files (fsynced, :mod:`audiocl.fsutil`) into a
        temporary folder ``.<name>.*`` beside it, then one rename; a killed writer's leftover
        folder is removed by the next run (:func:`audiocl.train.checkpoint.clean_leftovers`)."""
        from safetensors.torch import save_model

        out = Path(directory)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            cfg = self.config.to_dict()
            for name, tower in self.towers.items():
                save_assets = getattr(cast(Tower, tower).encoder, "save_assets", None)
                if save_assets is not None:
                    rel = f"towers/{name}"
                    cfg["towers"][name]["encoder"].update(save_assets(tmp / rel, rel))
            atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=2) + "\n")
            # save_model drops duplicate names of shared (tied) tensors
            save_model(self, str(tmp / "model.safetensors"), metadata={"format": "pt", "audiocl": "1"})
            fe = _frontend_to_dict(self.frontend)
            if fe is not None:
                atomic_write_text(tmp / "frontend.json", json.dumps(fe, indent=2, sort_keys=True) + "\n")
            atomic_write_text(tmp / "prompts.json", json.dumps(self.prompts, indent=2, ensure_ascii=False) + "\n")
            write_licenses(tmp, {n: e for n, e in self.licenses.items() if n in self.towers})
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultiTowerModel:
        """Load a model folder written by :meth:`save_pretrained` (safetensors only)."""
        from safetensors.torch import load_model

        d = Path(directory)
        cfg_path = d / "config.json"
        weights = d / "model.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise AudioclError(f"{d} is not an audiocl model folder (needs config.json and model.safetensors)")
        try:
            raw = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise AudioclError(f"{cfg_path}: invalid JSON: {e}") from None
        cfg = ModelConfig.from_dict(raw, source=str(cfg_path))
        def _json(path: Path) -> Any:
            try:
                return json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise AudioclError(f"{path}: invalid JSON: {e}") from None

        fe_path = d / "frontend.json"
        frontend = _frontend_from_dict(_json(fe_path)) if fe_path.is_file() else None
        pr_path = d / "prompts.json"
        prompts = _json(pr_path) if pr_path.is_file() else None
        model = cls(cfg, frontend=frontend, prompts=prompts, _for_loading=True, _base_dir=d)
        # towers are built without their published weights here: the licences come from the folder
        model.licenses = {n: e for n, e in read_licenses(d).items() if n in model.towers}
        from safetensors import SafetensorError

        try:
            missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
        except SafetensorError as e:  # garbage or truncated header/data
            raise AudioclError(f"{weights}: not a valid safetensors file ({str(e).strip()[:200]})") from None
        except RuntimeError as e:  # shape mismatches: the folder's files disagree
            raise AudioclError(f"{weights} does not match config.json: {str(e).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise AudioclError(
                f"{weights} does not match config.json: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        model.to(device)
        model.eval()
        return model
