"""The ``aisfx`` pretrained sound-effects CNN (Ma & Lerch, ISMIR 2022), 512-d.

Weights come from the PyPI wheel ``aisfx`` 0.1.2 (CC BY 4.0), which is
installed with ``pip install --no-deps aisfx==0.1.2`` and never imported (it
pins numpy 1.23 and librosa 0.9): :func:`aisfx_checkpoint_path` finds its
``models/checkpoint.pth`` with ``importlib.util.find_spec``, and
:func:`load_aisfx_state_dict` reads it with ``torch.load(weights_only=True)``,
allow-listing only the numpy globals its ``(state_dict, ds_dict)`` tuple holds,
so no pickled code can run. Only ``embedding_net.*`` is kept (the ``fc.*``
per-dataset classifier heads are dropped).

Input ``x: Tensor[B, frames, 96]``: the ``aisfx`` front-end preset
(:data:`audiocl.audio.frontend.PRESETS`), time-major, and optional
``lengths: LongTensor[B]`` of valid frames.

Per clip of ``L`` valid frames, as ``aisfx.preprocessing.blocking`` with
``drop_partial_block=True`` and hop 0.5::

    n_blocks = max(1, floor((L - 100) / 50) + 1)       (1 when L < 100)
    block_k  = x[50 k : 50 k + 100], frames >= L set to 0 (their zero padding)
    h_k      = EmbeddingNet(block_k)                    [512]
    out      = max_k h_k                                [512]

``EmbeddingNet`` (the DCASE cross-task ``Cnn_9layers``): 4 blocks of
(conv3x3 - BN - ReLU) x 2 with 64, 128, 256, 512 channels, 2x2 max pooling after
the first three; then the mean over frequency and the max over time. Blocks
of a padded batch that lie past an item's valid frames are never computed, and
frames past its length are zeroed, so an item's embedding does not depend on
its batch-mates or on the pad value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.models.encoders.base import EncoderParams, register_encoder

AISFX_PACKAGE = "aisfx"
AISFX_REQUIREMENT = "aisfx==0.1.2"
INSTALL_HINT = f"pip install --no-deps {AISFX_REQUIREMENT}"
#: What a saved model folder's LICENSES.md says about these weights.
LICENSE_INFO = {
    "source": f"PyPI package {AISFX_REQUIREMENT} (https://github.com/alisonbma/aisfx), models/checkpoint.pth",
    "license": "CC BY 4.0 (weights)",
    "attribution": (
        "aiSFX embedding network by Alison B. Ma and Alexander Lerch, \"Representation Learning "
        "for the Automatic Indexing of Sound Effects Libraries\", ISMIR 2022; weights licensed "
        "under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
    ),
}
#: Channels of the four conv blocks (hl1 = 64 in aisfx's load_bestModel).
CHANNELS = (64, 128, 256, 512)
N_MELS = 96


def aisfx_checkpoint_path() -> Path:
    """``<site-packages>/aisfx/models/checkpoint.pth``, found without importing aisfx."""
    from audiocl.packaged import package_dir

    root = package_dir(AISFX_PACKAGE, f"the aisfx encoder needs the aisfx weights package: {INSTALL_HINT}")
    path = root / "models" / "checkpoint.pth"
    if not path.is_file():
        raise AudioclError(f"{path}: aisfx checkpoint missing (reinstall: {INSTALL_HINT})")
    return path


def _allowed_globals() -> list[Any]:
    """Exactly the non-tensor globals aisfx's pickle holds: the numpy int64 scalars
    of ``ds_dict`` (``numpy.core.multiarray.scalar`` + their dtype)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    # the pickle names numpy 1's module path; numpy 2 moved it to numpy._core
    return [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]


def load_aisfx_state_dict(path: str | Path | None = None) -> dict[str, Tensor]:
    """The ``EmbeddingNet`` weights (keys without ``embedding_net.``) of aisfx's checkpoint.

    Loaded with ``weights_only=True``: a checkpoint holding any other global
    (code, a ``__reduce__`` payload) is refused with an :class:`AudioclError`.
    """
    import pickle

    p = Path(path) if path is not None else aisfx_checkpoint_path()
    if not p.is_file():
        raise AudioclError(f"{p}: aisfx checkpoint not found ({INSTALL_HINT})")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        reason = next((ln.strip() for ln in first if "error" in ln.lower()), first[0] if first else type(e).__name__)
        raise AudioclError(f"{p}: refused to load as an aisfx checkpoint (weights only): {reason[:200]}") from None
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], dict)):
        raise AudioclError(f"{p}: not an aisfx checkpoint (expected a (state_dict, ds_dict) tuple)")
    prefix = "embedding_net."
    sd = {k[len(prefix) :]: v for k, v in obj[0].items() if k.startswith(prefix) and isinstance(v, Tensor)}
    if not sd:
        raise AudioclError(f"{p}: no embedding_net.* weights in the aisfx checkpoint")
    return sd


class _ConvBlock(nn.Module):
    """(conv3x3 - BN - ReLU) x 2, then ``pool`` x ``pool`` max pooling; names as aisfx's ConvBlock."""

    def __init__(self, c_in: int, c_out: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, self.pool) if self.pool > 1 else x


def block_starts(length: int, block: int, hop: int) -> list[int]:
    """Start frames of the blocks of a clip of ``length`` frames (partial last block dropped)."""
    n = max(1, (length - block) // hop + 1) if length >= block else 1
    return [k * hop for k in range(n)]


@register_encoder("aisfx")
class AisfxEncoder(nn.Module):
    """aiSFX's EmbeddingNet over 100-frame blocks, max over blocks; see the module docstring."""

    class Params(EncoderParams):
        pretrained: bool = Field(default=True, description="load the aisfx wheel's weights")
        checkpoint: str | None = Field(default=None, description="checkpoint.pth; None = the installed aisfx")
        block_frames: int = Field(default=100, gt=0, description="frames per block (aisfx: 100, ~2.3 s)")
        block_hop: int = Field(default=50, gt=0, description="hop between blocks (aisfx: 50)")
        max_blocks_per_pass: int = Field(default=64, gt=0, description="blocks per forward pass (memory)")

    def __init__(self, params: Params | None = None):
        super().__init__()
        p = params or self.Params()
        self.params = p
        c = (1, *CHANNELS)
        self.conv_block1 = _ConvBlock(c[0], c[1], 2)
        self.conv_block2 = _ConvBlock(c[1], c[2], 2)
        self.conv_block3 = _ConvBlock(c[2], c[3], 2)
        self.conv_block4 = _ConvBlock(c[3], c[4], 1)
        self.output_dim = CHANNELS[-1]
        self.weights_source: str | None = None
        # licence of the pretrained weights, passed on to saved model folders (LICENSES.md);
        # None for a randomly initialised net
        self.license_info: dict[str, str] | None = None
        if p.pretrained:
            path = Path(p.checkpoint) if p.checkpoint is not None else aisfx_checkpoint_path()
            sd = load_aisfx_state_dict(path)
            missing, unexpected = self.load_state_dict(sd, strict=False)
            if missing or unexpected:
                raise AudioclError(
                    f"{path}: aisfx weights do not fit the network: missing {sorted(missing)[:3]}, "
                    f"unexpected {sorted(unexpected)[:3]}"
                )
            self.weights_source = str(path)
            self.license_info = dict(LICENSE_INFO)

    @classmethod
    def for_loading(cls, params: Params, base_dir: Path | None = None) -> Params:
        # the model folder's safetensors file holds the weights
        return params.model_copy(update={"pretrained": False, "checkpoint": None})

    def embed_blocks(self, blocks: Tensor) -> Tensor:
        """``[N, block_frames, 96]`` -> ``[N, 512]`` (aisfx ``EmbeddingNet.forward``)."""
        x = blocks.unsqueeze(1)
        for b in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
            x = b(x)
        return x.mean(dim=3).amax(dim=2)

    def forward(self, x: Tensor, lengths: Tensor | None = None, **_: object) -> Tensor:
        if x.dim() != 3:
            raise AudioclError(f"aisfx encoder expects features [B, frames, 96], got shape {tuple(x.shape)}")
        if x.shape[-1] != N_MELS:
            raise AudioclError(
                f"aisfx encoder needs the 'aisfx' front-end (96 mel bands), got {x.shape[-1]} bands"
            )
        B, T = x.shape[0], x.shape[1]
        bf, hop = self.params.block_frames, self.params.block_hop
        lens = [T] * B if lengths is None else [max(1, min(T, int(n))) for n in lengths.tolist()]
        # frames past a clip's length read as aisfx's zero padding, whatever the batch padded with
        steps = torch.arange(T, device=x.device)[None, :]
        valid = steps < torch.tensor(lens, device=x.device)[:, None]
        x = x.masked_fill(~valid[..., None], 0.0)
        starts = [block_starts(n, bf, hop) for n in lens]
        need = max(s[-1] for s in starts) + bf
        if need > T:
            x = F.pad(x, (0, 0, 0, need - T))
        owner = torch.tensor([b for b, s in enumerate(starts) for _ in s], device=x.device)
        index = [(b, k) for b, s in enumerate(starts) for k in s]
        outs = []
        step = self.params.max_blocks_per_pass
        for i in range(0, len(index), step):
            chunk = torch.stack([x[b, k : k + bf] for b, k in index[i : i + step]])
            outs.append(self.embed_blocks(chunk))
        h = torch.cat(outs)  # [n_blocks_total, 512]
        out = torch.full((B, h.shape[1]), float("-inf"), dtype=h.dtype, device=h.device)
        return out.scatter_reduce(0, owner[:, None].expand_as(h), h, reduce="amax", include_self=True)
