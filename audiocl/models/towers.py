"""A tower: encoder + projection to the shared space + L2 normalisation.

``Tower(x, lengths) -> Tensor[B, dim]`` with unit-norm rows (unless the config
turns normalisation off). A frozen tower (LiT) keeps its encoder in eval mode
with ``requires_grad=False`` whatever ``.train()`` is called with; its
projection still trains. A frozen tower may cache encoder outputs with
:class:`FrozenEmbeddingCache`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.config import ProjectionConfig, TowerConfig
from audiocl.models.embed import device_of
from audiocl.models.encoders.base import build_encoder

_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class Projection(nn.Module):
    """``linear``: W x + b; ``mlp``: linear2(act(linear1(x))); ``identity``: x."""

    def __init__(self, in_dim: int, cfg: ProjectionConfig, dim: int):
        super().__init__()
        self.kind = cfg.type
        if cfg.type == "identity":
            if in_dim != dim:
                raise AudioclError(f"identity projection needs encoder output {in_dim} == dim {dim}")
            self.net: nn.Module = nn.Identity()
        elif cfg.type == "linear":
            self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_dim, dim, bias=cfg.bias))
        else:
            hidden = cfg.hidden or dim
            # named so LAION/HF CLAP projection weights (linear1/linear2) map directly
            self.net = nn.Sequential()
            self.net.add_module("linear1", nn.Linear(in_dim, hidden, bias=cfg.bias))
            self.net.add_module("act", _ACT[cfg.activation]())
            self.net.add_module("dropout", nn.Dropout(cfg.dropout))
            self.net.add_module("linear2", nn.Linear(hidden, dim, bias=cfg.bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FrozenEmbeddingCache:
    """Encoder outputs of a frozen tower, computed once per unique input.

    Keyed by a hashable id per item: the caption string itself for text, or
    an explicit id (e.g. the manifest item id) for other inputs. Values are
    detached ``Tensor[d]`` stored on CPU, so the cache costs host memory
    ``n_unique * d * 4`` bytes, not accelerator memory. Valid only while the
    encoder does not change: a frozen encoder in eval mode is deterministic.
    Not saved with the model; a tower clears its cache whenever weights are
    loaded into it (``load_state_dict``).
    """

    def __init__(self, max_items: int | None = None):
        self._store: dict[Hashable, Tensor] = {}
        self.max_items = max_items
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store

    def preload(self, keys: Sequence[Hashable], rows: Tensor) -> None:
        """Store precomputed encoder outputs ``rows: Tensor[len(keys), d]`` (e.g. a
        frozen tower's features extracted into a store), up to ``max_items``."""
        if len(keys) != rows.shape[0]:
            raise AudioclError(f"cache preload got {len(keys)} keys for {rows.shape[0]} rows")
        for k, row in zip(keys, rows.detach().float().cpu()):
            if self.max_items is not None and len(self._store) >= self.max_items:
                break
            self._store[k] = row

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def get_or_compute(
        self,
        keys: Sequence[Hashable],
        inputs: Sequence[Any],
        compute: Callable[[list[Any]], Tensor],
        device: torch.device | None = None,
    ) -> Tensor:
        """Return ``Tensor[len(keys), d]``; ``compute`` runs once on the missing inputs."""
        if len(keys) != len(inputs):
            raise AudioclError(f"cache got {len(keys)} keys for {len(inputs)} inputs")
        missing: dict[Hashable, int] = {}
        for i, k in enumerate(keys):
            if k not in self._store and k not in missing:
                missing[k] = i
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            with torch.no_grad():
                out = compute([inputs[i] for i in missing.values()]).detach().float().cpu()
            for k, row in zip(missing, out):
                if self.max_items is not None and len(self._store) >= self.max_items:
                    break
                self._store[k] = row
            if self.max_items is not None and any(k not in self._store for k in keys):
                # over capacity: serve this batch from the fresh outputs too
                fresh = dict(zip(missing, out))
                rows = [self._store[k] if k in self._store else fresh[k] for k in keys]
                return torch.stack(rows).to(device)
        return torch.stack([self._store[k] for k in keys]).to(device)


class Tower(nn.Module):
    """Encoder + projection + L2 normalisation for one modality."""

    def __init__(
        self,
        cfg: TowerConfig,
        embed_dim: int,
        *,
        name: str = "tower",
        for_loading: bool = False,
        base_dir: Any = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.modality = cfg.modality
        self.encoder = build_encoder(
            cfg.encoder, where=f"towers.{name}.encoder", for_loading=for_loading, base_dir=base_dir
        )
        dim = cfg.projection.dim or embed_dim
        if dim != embed_dim:
            raise AudioclError(
                f"towers.{name}.projection.dim={dim} differs from embed_dim={embed_dim}; "
                "all towers must project to the shared space"
            )
        # nn.Module attributes are typed Tensor | Module; every encoder sets an int output_dim
        self.projection = Projection(int(cast(Any, self.encoder).output_dim), cfg.projection, dim)
        self.normalize = cfg.normalize
        self.frozen = False
        self.cache: FrozenEmbeddingCache | None = None
        if cfg.cache and not cfg.frozen:
            raise AudioclError(f"towers.{name}.cache needs frozen: true (a training encoder changes)")
        if cfg.frozen:
            self.freeze()
            if cfg.cache:
                self.cache = FrozenEmbeddingCache()
                # new weights make cached outputs stale: drop them on any load
                self._register_load_state_dict_pre_hook(self._clear_cache_hook)

    def _clear_cache_hook(self, *args: Any, **kwargs: Any) -> None:
        if self.cache is not None:
            self.cache.clear()

    def freeze(self) -> None:
        """Freeze the encoder (LiT): no gradients, eval mode from now on."""
        self.frozen = True
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Tower:
        super().train(mode)
        if self.frozen:
            # dropout/batch-norm statistics of a frozen encoder must not move
            self.encoder.eval()
        return self

    def encode(self, x: Any, lengths: Tensor | None = None, ids: Sequence[Hashable] | None = None, **kw: Any) -> Tensor:
        """Encoder output before projection, ``Tensor[B, encoder.output_dim]``."""
        if self.cache is not None and (ids is not None or _is_str_list(x)):
            keys = list(ids) if ids is not None else list(x)
            items = _split_items(x, lengths, len(keys))
            device = device_of(self)

            def compute(sub: list[Any]) -> Tensor:
                xs, ls = _join_items(sub)
                return self.encoder(xs, ls, **kw)

            return self.cache.get_or_compute(keys, items, compute, device)
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x, lengths, **kw)
        return self.encoder(x, lengths, **kw)

    def forward(self, x: Any, lengths: Tensor | None = None, ids: Sequence[Hashable] | None = None, **kw: Any) -> Tensor:
        if isinstance(x, dict) and "features" in x:
            kw = {**{k: v for k, v in x.items() if k not in ("features", "lengths")}, **kw}
            lengths = x.get("lengths", lengths)
            x = x["features"]
        h = self.encode(x, lengths, ids, **kw)
        z = self.projection(h)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return z


def _is_str_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x)


def _split_items(x: Any, lengths: Tensor | None, n: int) -> list[Any]:
    if _is_str_list(x):
        return list(x)
    if isinstance(x, Tensor):
        if lengths is None:
            return [(x[i], None) for i in range(n)]
        return [(x[i], lengths[i]) for i in range(n)]
    raise AudioclError("a cached tower takes a list of strings or a tensor with ids")


def _join_items(sub: list[Any]) -> tuple[Any, Tensor | None]:
    if isinstance(sub[0], str):
        return sub, None
    xs = torch.stack([s[0] for s in sub])
    ls = None if sub[0][1] is None else torch.stack([s[1] for s in sub])
    return xs, ls
