"""Log-mel front-end: the torch ``LogMel`` module, with its configuration and presets
(from :mod:`audiocl.audio.frontend_config`, re-exported here).

``FrontendConfig`` holds every parameter of the waveform -> log-mel transform
plus the clip length and length policy used when clips are batched. Its
``hash()`` covers the parameters and the resampler identity
(:data:`audiocl.audio.io.RESAMPLER`), so a feature store can refuse features
made any other way.

``LogMel`` computes, for a batch ``[B, T]``::

    frames  = T // hop + 1                        (center=True: pad n_fft//2 each side)
    S[b,t,f] = |rfft(window * x_b[t*hop : t*hop + n_fft])[f]| ** power
    M[b,t,m] = sum_f S[b,t,f] * mel[f,m]
    out      = (20 / power) * log10(max(M, amin) / ref)      (log="db")
             = ln(max(M, amin) / ref)                         (log="log")
             = log10(M / ref + 1)                             (log="log10p1")
    optionally clipped below at max_b(out) - top_db (per clip)
    out      = (out - norm_mean) / norm_std                   (identity by default)
    and without the last frame if drop_last_frame

The ``whisper`` preset is Hugging Face ``WhisperFeatureExtractor``'s defaults:
``(max(log10(max(M, 1e-10)), peak - 8) + 4) / 4`` equals the dB form above with
``top_db=80``, ``norm_mean=-40``, ``norm_std=40``; Whisper drops the last STFT
frame (``T // hop`` frames). Tested against it to 1e-4 on real clips.

With the ``laion_clap`` preset this equals Hugging Face
``ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad",
frequency_min=50, frequency_max=14000)`` on the same 10 s waveform (tested to
1e-3 dB), which is also what LAION-CLAP's torchlibrosa front-end computes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from audiocl.audio.frontend_config import (
    FORMAT,
    PAD_POLICIES,
    PRESETS,
    RESERVED_KEYS,
    TRUNC_POLICIES,
    FrontendConfig,
    get_preset,
    log_floor,
    mel_filterbank,
    num_frames,
    parse_length_policy,
    window_array,
)
from audiocl.errors import AudioclError

# the configuration half lives in audiocl.audio.frontend_config (no torch); it is
# re-exported so `from audiocl.audio.frontend import get_preset` keeps working
__all__ = [
    "compute_logmel",
    "FORMAT",
    "FrontendConfig",
    "get_preset",
    "log_floor",
    "LogMel",
    "mel_filterbank",
    "num_frames",
    "PAD_POLICIES",
    "parse_length_policy",
    "PRESETS",
    "RESERVED_KEYS",
    "TRUNC_POLICIES",
    "window_array",
]


class LogMel(torch.nn.Module):
    """Batched log-mel: ``forward(wav: Tensor[B, T]) -> Tensor[B, frames, n_mels]`` (float32).

    A 1-D ``Tensor[T]`` gives ``Tensor[frames, n_mels]``. Works on any device the
    module is moved to. The window and the mel matrix are buffers; the mel matrix
    is cut to the FFT bins where some filter is non-zero, so only those bins'
    power is formed (at 48 kHz / 50-14000 Hz that is 297 of 513 bins).

    The FFT runs in float32. With ``precise=True`` (default) frames where float32
    rounding could show in some band are recomputed in float64 (see ``_refine``),
    so the output matches a float64 reference (HF, librosa) to under 1e-3 dB
    (3e-4 dB worst measured) even for a lone tone with 110 dB of range. ``precise=False`` skips that
    check: faster, no host sync on GPU, up to ~0.2 dB off in bands 110 dB or
    more below the frame's loudest.
    """

    #: Frames with a band whose mean power per bin is below this fraction of the
    #: frame's mean power per bin are recomputed in float64.
    REFINE_TAU = 5e-6
    #: On CPU, batches are processed this many frames at a time (cache size).
    CPU_CHUNK_FRAMES = 1024
    #: On CPU, one clip's frames are processed this many at a time.
    CPU_FRAME_CHUNK = 256

    def __init__(self, cfg: FrontendConfig, *, precise: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        fb = mel_filterbank(cfg)
        nz = np.flatnonzero(np.abs(fb).sum(axis=1) > 0)
        if nz.size == 0:
            raise AudioclError("front-end config: the mel filterbank is all zero (check n_mels/f_min/f_max)")
        self.lo, self.hi = int(nz[0]), int(nz[-1]) + 1
        self.register_buffer("mel", torch.from_numpy(fb[self.lo : self.hi].astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.from_numpy(window_array(cfg).astype(np.float32)), persistent=False)
        self.register_buffer("mel64", torch.from_numpy(fb[self.lo : self.hi].copy()), persistent=False)
        weight = fb.sum(axis=0)
        self.register_buffer(
            "band_weight", torch.from_numpy(np.where(weight > 0, weight, 1.0).astype(np.float32)), persistent=False
        )
        self.register_buffer("window64", torch.from_numpy(window_array(cfg)), persistent=False)
        self.precise = precise
        if cfg.log == "db":
            self.log_scale = 10.0 * 2.0 / cfg.power
            self.log_offset = self.log_scale * math.log10(cfg.ref)
        elif cfg.log == "log10p1":
            self.log_scale, self.log_offset = 1.0, 0.0
        else:
            self.log_scale, self.log_offset = 1.0, math.log(cfg.ref)

    def _mel_power(self, frames: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(frames, dim=-1)
        ri = torch.view_as_real(spec[..., self.lo : self.hi])
        # re^2 + im^2 on strided views: several times faster on CPU than .abs() on complex.
        power = ri[..., 0].square() + ri[..., 1].square()
        if self.cfg.power == 1.0:
            power = power.sqrt()
        return torch.matmul(power, mel)

    def _mel_frames(self, raw: torch.Tensor) -> torch.Tensor:
        """Mel power of un-windowed frames ``[..., frames, n_fft]`` -> ``[..., frames, n_mels]``."""
        frames = raw * self.window
        m = self._mel_power(frames, self.mel)
        if self.precise:
            self._refine(raw, frames, m)
        return m

    def _refine(self, raw: torch.Tensor, frames: torch.Tensor, m: torch.Tensor) -> None:
        """Recompute in float64, in place, the frames where float32 rounding could show.

        A float32 FFT's error scales with the frame's energy E (windowed sum of
        squares), not with each band's own power M, so bands far below the
        frame's loudest lose precision: a pure tone with nothing else reaches
        0.17 dB of error at -100 dB. Frames holding a band whose mean power per
        bin, max(M, amin) / sum(filter), is below REFINE_TAU * E are redone in
        float64, which is what the reference (HF, librosa) computes throughout.
        Measured against HF: at most 3e-4 dB on pure tones and real ESC-50 clips,
        Slaney or HTK filters (float64 everywhere: 8e-6 dB); about 10 % of the
        frames of ESC-50 clips and 45 % of pure-tone frames are redone.
        """
        energy = frames.square().sum(-1, keepdim=True)
        # Mean power per FFT bin of each band: independent of the filters' scaling
        # (Slaney area norm or none) and comparable with E, the mean over all bins.
        level = m.clamp_min(self.cfg.amin) / self.band_weight
        if self.cfg.power == 1.0:
            level = level.square()  # compare in power units
        risky = (level < self.REFINE_TAU * energy).any(-1)
        if not bool(risky.any()):
            return
        bi, fi = risky.nonzero(as_tuple=True)
        fr64 = raw[bi, fi].double() * self.window64
        m[bi, fi] = self._mel_power(fr64, self.mel64).to(m.dtype)

    def extra_repr(self) -> str:
        return f"preset_hash={self.cfg.hash()[:12]}, bins={self.lo}:{self.hi}"

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.n_fft // 2
        if self.cfg.pad_mode == "constant":
            return torch.nn.functional.pad(x, (p, p))
        if x.shape[-1] <= p:
            raise AudioclError(
                f"waveform of {x.shape[-1]} samples is too short for reflect padding of {p} "
                "(apply a length policy first or use pad_mode='constant')"
            )
        # Reflection excludes the edge sample (numpy/librosa/torch "reflect").
        return torch.cat([x[:, 1 : p + 1].flip(-1), x, x[:, -p - 1 : -1].flip(-1)], dim=-1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        squeeze = wav.dim() == 1
        if squeeze:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise AudioclError(f"LogMel expects [B, T] or [T], got shape {tuple(wav.shape)}")
        x = wav.to(self.mel.dtype)
        if x.device.type == "cpu" and x.shape[0] > 1:
            # Batches are cut into pieces of ~CPU_CHUNK_FRAMES frames: the
            # [frames, n_fft] buffers of a whole batch fall out of cache and a
            # batch of 16 ten-second clips then runs slower per clip than one.
            per = max(1, self.CPU_CHUNK_FRAMES // max(1, num_frames(x.shape[-1], self.cfg)))
            if per < x.shape[0]:
                out = torch.cat([self._forward2d(x[i : i + per]) for i in range(0, x.shape[0], per)])
                return out[0] if squeeze else out
        out = self._forward2d(x)
        return out[0] if squeeze else out

    def _forward2d(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.center:
            x = self._pad(x)
        if x.shape[-1] < self.cfg.n_fft:
            raise AudioclError(f"padded waveform of {x.shape[-1]} samples is shorter than n_fft {self.cfg.n_fft}")
        raw = x.unfold(-1, self.cfg.n_fft, self.cfg.hop_length)
        if self.cfg.drop_last_frame:
            raw = raw[..., :-1, :]
        step = self.CPU_FRAME_CHUNK
        if x.device.type == "cpu" and raw.shape[-2] > step:
            # ~256 frames at a time: the [frames, n_fft] temporaries stay in cache and
            # small enough for malloc to reuse instead of fresh page-faulting memory;
            # measured 15-20 % faster on a 10 s clip, output bit-identical.
            m = torch.cat(
                [self._mel_frames(raw[..., i : i + step, :]) for i in range(0, raw.shape[-2], step)],
                dim=-2,
            )
        else:
            m = self._mel_frames(raw)
        if self.cfg.log == "log10p1":
            # log1p keeps the precision of quiet bands, where M / ref << 1
            out = m.div_(self.cfg.ref).log1p_().div_(math.log(10.0))
        else:
            out = m.clamp_min_(self.cfg.amin)
            if self.cfg.log == "db":
                out = out.log10_().mul_(self.log_scale)
            else:
                out = out.log_()
            if self.log_offset:
                out = out.sub_(self.log_offset)
        if self.cfg.top_db is not None:
            peak = out.amax(dim=(-2, -1), keepdim=True)
            out = torch.maximum(out, peak - self.cfg.top_db)
        if self.cfg.norm_mean != 0.0 or self.cfg.norm_std != 1.0:
            out = out.sub_(self.cfg.norm_mean).div_(self.cfg.norm_std)
        return out


_MODULE_CACHE: dict[str, LogMel] = {}


def compute_logmel(wav: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Log-mel of one waveform ``[T]`` (at ``cfg.sample_rate``): float32 ``[frames, n_mels]``."""
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise AudioclError(f"compute_logmel expects a 1-D waveform, got shape {x.shape}")
    key = cfg.hash()
    mod = _MODULE_CACHE.get(key)
    if mod is None:
        mod = _MODULE_CACHE[key] = LogMel(cfg)
    with torch.inference_mode():
        return mod(torch.from_numpy(x)).numpy()
