"""Length policies: fit a waveform or a log-mel to a fixed length, deterministically.

Policies (names as in LAION-CLAP and ``ClapFeatureExtractor``):

* pad side, for clips shorter than the target
  - ``pad``:       zero-pad at the end.
  - ``repeat``:    tile the clip and cut at the target.
  - ``repeatpad``: tile ``target // len`` whole copies, then zero-pad (LAION).
* truncation side, for clips longer than the target
  - ``trunc``:      keep the first ``target`` samples.
  - ``rand_trunc``: keep a random window; the offset is drawn from a generator
    seeded by ``seed`` and, if given, the item ``key`` (e.g. its id), so the same
    (clip, seed, key) always gives the same crop, in any process.

A policy string is ``"<pad>+<trunc>"`` (``"repeatpad+rand_trunc"``) or one name,
which stands for both sides (see :func:`audiocl.audio.frontend.parse_length_policy`).

Two more ways to treat a clip longer than the target, used at inference:

* ``windows``: ``ceil(n / target)`` windows with evenly spaced starts (first at 0,
  last ending at the clip's end, :func:`window_starts`); the caller embeds each
  and averages. Deterministic, and every frame is seen.
* ``fusion``: LAION's 4-view input (:func:`fusion_views`).

**The valid-length rule** (one rule, everywhere: training collation, the store
reader and the file/waveform path): padding is not signal. A fitted clip's valid
length counts the frames (samples) that come from the clip itself, repeated
copies included, and never the padding (:func:`valid_length`):

    n >= target:  target                     (a crop or a window is all signal)
    pad:          n
    repeat:       target                     (the tiled copies fill the target)
    repeatpad:    (target // n) * n          (whole copies; the zero tail is not)

**One domain**: log-mel inputs are fitted in the mel domain, always: the
front-end runs on the whole clip and :func:`fit_clip` / :func:`clip_pieces`
then cut, tile or pad its frames. A feature store keeps full-length mels, so
this is the only way the store path and the file path can give the same input;
a clip tiled as a waveform would differ in the frames that straddle a copy
boundary. Waveform-input towers are fitted the same way in samples (pad 0).

The ``*_frames`` variants work on ``[frames, n_mels]`` log-mels along the first
axis, because the feature store keeps full-length mels and the loader crops at
batch time. Padding a mel uses ``pad_value`` (the log floor; -100 dB for
``laion_clap``), which is what a zero-padded waveform turns into, except for the
one or two frames whose window straddles the boundary.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from audiocl.audio.frontend import parse_length_policy
from audiocl.errors import AudioclError

#: Log floor of the ``laion_clap`` preset: 10 * log10(1e-10).
LAION_FLOOR_DB = -100.0


def make_rng(seed: int, key: str | int | None = None) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (stable across processes).

    Python's ``hash()`` of a string changes per process, so the key is hashed with
    sha256 instead.
    """
    parts = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    if key is not None:
        digest = hashlib.sha256(str(key).encode()).digest()
        parts.append(int.from_bytes(digest[:8], "little"))
    return np.random.default_rng(np.random.SeedSequence(parts))


def _as_numpy(x: Any) -> tuple[np.ndarray, bool]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy(), True
    return np.asarray(x), False


def _back(x: np.ndarray, was_torch: bool) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x)) if was_torch else x


def _fit(
    x: np.ndarray,
    target: int,
    policy: str,
    seed: int,
    key: str | int | None,
    pad_value: float,
) -> np.ndarray:
    """Fit ``x`` to ``target`` along axis 0."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target <= 0:
        raise AudioclError(f"target length must be a positive integer, got {target!r}")
    pad_p, trunc_p = parse_length_policy(policy)
    n = x.shape[0]
    if n == 0:
        raise AudioclError("cannot apply a length policy to an empty clip")
    if n > target:
        if trunc_p == "trunc":
            return x[:target]
        off = int(make_rng(seed, key).integers(0, n - target + 1))
        return x[off : off + target]
    if n == target:
        return x
    if pad_p == "repeat":
        reps = -(-target // n)
        return np.concatenate([x] * reps, axis=0)[:target]
    if pad_p == "repeatpad":
        x = np.concatenate([x] * (target // n), axis=0)
    out = np.full((target, *x.shape[1:]), pad_value, dtype=x.dtype)
    out[: x.shape[0]] = x
    return out


def apply_length_policy(
    wav: Any,
    target_len: int,
    policy: str,
    *,
    seed: int = 0,
    key: str | int | None = None,
) -> Any:
    """Fit a waveform ``[T]`` (or ``[C, T]``) to ``target_len`` samples.

    Returns the same type as given (numpy array or torch tensor). Zero is the pad
    value. ``rand_trunc`` is deterministic given ``(seed, key)``.
    """
    x, was_torch = _as_numpy(wav)
    if x.ndim == 1:
        return _back(_fit(x, target_len, policy, seed, key, 0.0), was_torch)
    if x.ndim == 2:
        # Same crop for every channel: fit the transposed [T, C] array along time.
        return _back(_fit(x.T, target_len, policy, seed, key, 0.0).T, was_torch)
    raise AudioclError(f"expected a waveform [T] or [C, T], got shape {x.shape}")


def apply_length_policy_frames(
    mel: Any,
    target_frames: int,
    policy: str,
    *,
    seed: int = 0,
    key: str | int | None = None,
    pad_value: float = LAION_FLOOR_DB,
) -> Any:
    """Fit a log-mel ``[frames, n_mels]`` to ``target_frames`` frames (same policies).

    Pads with ``pad_value`` (pass the preset's log floor, -100 dB for laion_clap,
    ln(1e-6) for speech16k).
    """
    x, was_torch = _as_numpy(mel)
    if x.ndim != 2:
        raise AudioclError(f"expected a log-mel [frames, n_mels], got shape {x.shape}")
    return _back(_fit(x, target_frames, policy, seed, key, pad_value), was_torch)


def fusion_views(
    mel: Any,
    chunk_frames: int,
    *,
    seed: int = 0,
    key: str | int | None = None,
    pad_value: float = LAION_FLOOR_DB,
) -> tuple[Any, bool]:
    """LAION-style fusion input: ``([4, chunk_frames, n_mels], is_longer)``.

    For a mel longer than ``chunk_frames``: view 0 is the whole mel shrunk to
    ``chunk_frames`` frames (bilinear, ``align_corners=False``, mel axis kept);
    views 1-3 are ``chunk_frames``-long crops whose start is drawn (seeded by
    ``seed``/``key``) from the first, middle and last third of the possible
    starts ``0 .. frames - chunk_frames`` (an empty third falls back to start 0).
    A mel not longer than the chunk is repeat-padded to the chunk and used as all
    four views, and ``is_longer`` is False.
    """
    x, was_torch = _as_numpy(mel)
    if x.ndim != 2:
        raise AudioclError(f"expected a log-mel [frames, n_mels], got shape {x.shape}")
    total = x.shape[0]
    if total <= chunk_frames:
        one = _fit(x, chunk_frames, "repeatpad", seed, key, pad_value)
        return _back(np.stack([one] * 4), was_torch), False
    rng = make_rng(seed, key)
    thirds = np.array_split(np.arange(total - chunk_frames + 1), 3)
    starts = [int(rng.choice(t)) if len(t) else 0 for t in thirds]
    crops = [x[s : s + chunk_frames] for s in starts]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    shrunk = torch.nn.functional.interpolate(
        t, size=(chunk_frames, x.shape[1]), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    views = np.stack([shrunk.astype(x.dtype, copy=False), *crops])
    return _back(views, was_torch), True


def window_starts(n: int, win: int) -> list[int]:
    """Starts of ``ceil(n / win)`` windows of ``win`` covering ``[0, n)`` evenly.

    The first starts at 0, the last ends at ``n``; a clip not longer than ``win``
    is one window at 0.
    """
    if n <= win:
        return [0]
    k = math.ceil(n / win)
    return [round(i * (n - win) / (k - 1)) for i in range(k)]


def valid_length(n: int, target: int | None, policy: str) -> int:
    """Frames (samples) of real signal after ``policy`` fits ``n`` to ``target``.

    Padding is not signal; repeated copies of the clip are (see the module
    docstring). ``target=None`` keeps the clip whole: ``n``.
    """
    if target is None:
        return int(n)
    pad_p, _ = parse_length_policy(policy)
    if n >= target or pad_p == "repeat":
        return int(target)
    if pad_p == "repeatpad":
        return (target // n) * n
    return int(n)


@dataclass(frozen=True)
class Piece:
    """One model input cut from a clip: ``x`` ``[frames, n_mels]`` (or ``[samples]``),
    ``length`` its valid frames; a fusion piece holds ``x`` ``[4, frames, n_mels]`` and
    ``is_longer`` instead."""

    x: np.ndarray
    length: int
    is_longer: bool | None = None


def fit_clip(
    x: Any,
    target: int | None,
    policy: str,
    *,
    seed: int = 0,
    key: str | int | None = None,
    pad_value: float = 0.0,
) -> Piece:
    """Fit ``x`` (``[frames, n_mels]`` or ``[samples]``) to ``target`` along axis 0 by
    ``policy`` (pad side and trunc/rand_trunc side): one :class:`Piece` with its valid
    length. ``rand_trunc`` crops are seeded by ``(seed, key)``, so they are the same
    in training collation and at inference given the same key. ``target=None`` keeps
    the clip whole."""
    a, _ = _as_numpy(x)
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise AudioclError(f"expected a non-empty clip [frames, n_mels] or [samples], got shape {a.shape}")
    if target is None:
        return Piece(a, int(a.shape[0]))
    fitted = _fit(a, target, policy, seed, key, pad_value)
    return Piece(fitted, valid_length(int(a.shape[0]), target, policy))


def clip_pieces(
    x: Any,
    target: int | None,
    policy: str,
    *,
    long: str = "windows",
    seed: int = 0,
    key: str | int | None = None,
    pad_value: float = 0.0,
) -> list[Piece]:
    """Inference: the model inputs of one clip, each with its valid length.

    ``long`` says what a clip longer than ``target`` becomes: ``"windows"`` (evenly
    spaced windows, see :func:`window_starts`; the caller averages their
    embeddings), ``"policy"`` (the truncation side of ``policy``: the first window,
    or the ``rand_trunc`` crop seeded by ``(seed, key)``, the same crop training
    collation takes) or ``"fusion"`` (one 4-view piece, :func:`fusion_views`,
    log-mels only). A clip not longer than ``target`` is fitted by the pad side of
    ``policy`` (fusion: repeat-padded, LAION's rule).
    """
    a, _ = _as_numpy(x)
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise AudioclError(f"expected a non-empty clip [frames, n_mels] or [samples], got shape {a.shape}")
    if long == "fusion":
        if target is None:
            raise AudioclError("fusion needs a clip length (clip_samples)")
        views, is_longer = fusion_views(a, target, seed=seed, key=key, pad_value=pad_value)
        return [Piece(views, int(target), is_longer)]
    if long not in ("windows", "policy"):
        raise AudioclError(f"long clips are cut into 'windows', fitted by the 'policy' or use 'fusion', not {long!r}")
    n = int(a.shape[0])
    if target is None or n <= target or long == "policy":
        return [fit_clip(a, target, policy, seed=seed, key=key, pad_value=pad_value)]
    return [Piece(a[s : s + target], int(target)) for s in window_starts(n, target)]
