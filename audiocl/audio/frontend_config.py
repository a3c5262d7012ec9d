"""The log-mel front-end's configuration, without torch: ``FrontendConfig``, the
named presets, and the numpy pieces the transform is built from (mel filterbank,
window, frame count, log floor).

Kept apart from :mod:`audiocl.audio.frontend` (which adds the torch ``LogMel``
module and re-exports everything here) so that a process that only plans or
describes features, such as the extraction driver, never imports torch: that
import is ~1.6 s of CPU and ~200 MB per process. The filterbank is computed here
in float64 from the mel-scale formulas (Slaney's and HTK's), equal bit for bit
to ``librosa.filters.mel`` (tested), so librosa is not imported either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiocl.audio.io import RESAMPLER
from audiocl.errors import AudioclError

FORMAT = "audiocl.frontend/1"

#: Length policies for clips shorter than the target (pad side) and longer (truncation side).
PAD_POLICIES = ("pad", "repeat", "repeatpad")
TRUNC_POLICIES = ("trunc", "rand_trunc")
#: Keys that ``describe()`` adds and ``from_dict`` accepts (and checks) beside the parameters.
RESERVED_KEYS = ("format", "resampler", "hash")


@dataclass(frozen=True)
class FrontendConfig:
    """Every parameter of waveform -> log-mel, plus the batching length policy.

    sample_rate: waveform rate in Hz (audio is resampled to it).
    n_fft / win_length / hop_length: STFT sizes in samples; a window shorter than
        n_fft is zero-padded on both sides (centred), as torch.stft and librosa do.
    window: "hann" (periodic) or "hamming" (periodic).
    n_mels, f_min, f_max (None = sample_rate / 2): mel filterbank.
    mel_scale: "slaney" (librosa default) or "htk"; mel_norm: "slaney" (area),
        "unit_sum" (each filter's weights sum to 1, Essentia's MelBands) or None.
    power: 2.0 power spectrogram, 1.0 magnitude.
    center / pad_mode: pad n_fft // 2 each side with "reflect" or "constant" (zeros).
    log: "db" -> (20/power)*log10(max(M, amin)/ref); "log" -> ln(max(M, amin));
        "log10p1" -> log10(M/ref + 1) (Essentia's shift_scale_log with ref = 1/scale).
    amin, ref, top_db: floor, reference and optional dynamic-range clip (per clip).
    norm_mean, norm_std: fixed feature normalisation (out - norm_mean) / norm_std.
        Added after format 1: left out of ``to_dict`` (and so of the hash) at
        their defaults 0 and 1, so every earlier configuration keeps its hash.
    clip_samples: target waveform length when batching (None = keep full length).
    length_policy: "<pad>+<trunc>", e.g. "repeatpad+rand_trunc" (see audiocl.audio.length).
    fusion: LAION-style 4-view fusion of clips longer than clip_samples.
    drop_last_frame: drop the last STFT frame, as Whisper does (T // hop frames);
        like norm_mean/norm_std, left out of ``to_dict``/``hash`` at its default.
    """

    sample_rate: int = 48000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 480
    window: str = "hann"
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float | None = 14000.0
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"
    log: str = "db"
    amin: float = 1e-10
    ref: float = 1.0
    top_db: float | None = None
    clip_samples: int | None = 480000
    length_policy: str = "repeatpad+rand_trunc"
    fusion: bool = False
    norm_mean: float = 0.0
    norm_std: float = 1.0
    drop_last_frame: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str) -> AudioclError:
            return AudioclError(f"front-end config: {msg}")

        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            if getattr(self, name) <= 0:
                raise bad(f"{name} must be positive, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise bad(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.window not in ("hann", "hamming"):
            raise bad(f"window must be 'hann' or 'hamming', got {self.window!r}")
        nyquist = self.sample_rate / 2
        fmax = self.f_max_hz
        if not (0 <= self.f_min < fmax <= nyquist):
            raise bad(f"need 0 <= f_min < f_max <= sample_rate/2 ({nyquist}), got {self.f_min}, {fmax}")
        if self.mel_scale not in ("slaney", "htk"):
            raise bad(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.mel_norm not in ("slaney", "unit_sum", None):
            raise bad(f"mel_norm must be 'slaney', 'unit_sum' or null, got {self.mel_norm!r}")
        if self.power not in (1.0, 2.0):
            raise bad(f"power must be 1.0 or 2.0, got {self.power}")
        if self.pad_mode not in ("reflect", "constant"):
            raise bad(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.log not in ("db", "log", "log10p1"):
            raise bad(f"log must be 'db', 'log' or 'log10p1', got {self.log!r}")
        if not self.norm_std > 0:
            raise bad(f"norm_std must be > 0, got {self.norm_std}")
        if not (self.amin > 0 and self.ref > 0):
            raise bad("amin and ref must be > 0")
        if self.top_db is not None and not self.top_db > 0:
            raise bad(f"top_db must be > 0 or null, got {self.top_db}")
        if self.clip_samples is not None and self.clip_samples <= 0:
            raise bad(f"clip_samples must be positive or null, got {self.clip_samples}")
        parse_length_policy(self.length_policy)

    # -- derived -----------------------------------------------------------
    @property
    def f_max_hz(self) -> float:
        return float(self.sample_rate) / 2 if self.f_max is None else float(self.f_max)

    @property
    def clip_frames(self) -> int | None:
        """Frames of a ``clip_samples`` waveform (the length the loader crops mels to)."""
        if self.clip_samples is None:
            return None
        return num_frames(self.clip_samples, self)

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The parameters only, JSON-ready (``from_dict(to_dict())`` round-trips).

        Fields added after format 1 (:data:`_OMIT_AT_DEFAULT`) are left out while
        they hold their default, so configurations that do not use them keep the
        parameters, ``features.json`` and hash they always had.
        """
        d = dataclasses.asdict(self)
        for name, default in _OMIT_AT_DEFAULT.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontendConfig:
        """Build from a dict; unknown keys raise AudioclError naming them.

        A dict from :meth:`describe` (with ``format``/``resampler``/``hash``) is
        accepted. When its resampler is this installation's, its hash must match
        the parameters (an edited file is refused). When the resampler differs
        (another soxr version), the parameters are kept and a warning is given:
        ``hash()`` then differs from the stored one, which is how a feature store
        tells features made elsewhere apart; a model still loads.
        """
        if not isinstance(d, dict):
            raise AudioclError(f"front-end config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and k not in RESERVED_KEYS)
        if unknown:
            raise AudioclError(
                f"front-end config: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(names))}"
            )
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        stored_resampler = d.get("resampler", RESAMPLER)
        if stored_resampler != RESAMPLER:
            warnings.warn(
                f"front-end config was made with resampler {stored_resampler}, this installation "
                f"has {RESAMPLER}; waveforms may differ slightly",
                stacklevel=2,
            )
        elif "hash" in d and d["hash"] != cfg.hash():
            raise AudioclError(
                "front-end config: the stored hash does not match its parameters "
                "(the file was edited or written by another audiocl version)"
            )
        return cfg

    def canonical_json(self) -> str:
        payload = {"format": FORMAT, "params": self.to_dict(), "resampler": RESAMPLER}
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def hash(self) -> str:
        """sha256 hex of the canonical JSON of the parameters and the resampler identity."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Parameters plus format, resampler and hash: what ``features.json``/``frontend.json`` hold."""
        return {**self.to_dict(), "format": FORMAT, "resampler": dict(RESAMPLER), "hash": self.hash()}

    def replace(self, **overrides: Any) -> FrontendConfig:
        return FrontendConfig.from_dict({**self.to_dict(), **overrides})


#: Fields added after format 1, with the default at which they are left out of the hash.
_OMIT_AT_DEFAULT: dict[str, Any] = {"norm_mean": 0.0, "norm_std": 1.0, "drop_last_frame": False}

_INT = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels")
_FLOAT = ("f_min", "power", "amin", "ref", "norm_mean", "norm_std")
_OPT_FLOAT = ("f_max", "top_db")


def _coerce(name: str, v: Any) -> Any:
    """Types as JSON/YAML deliver them (50 for 50.0, 48000.0 for 48000), checked."""

    def fail(kind: str) -> AudioclError:
        return AudioclError(f"front-end config: {name} must be {kind}, got {v!r}")

    if name in _INT or (name == "clip_samples" and v is not None):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer)):
            raise fail("an integer")
        if isinstance(v, float) and not v.is_integer():
            raise fail("an integer")
        return int(v)
    if name in _FLOAT or (name in _OPT_FLOAT and v is not None):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            raise fail("a number")
        if not math.isfinite(float(v)):
            raise fail("finite")
        return float(v)
    if name in ("center", "fusion", "drop_last_frame"):
        if not isinstance(v, bool):
            raise fail("true or false")
        return v
    if name in ("window", "mel_scale", "pad_mode", "log", "length_policy"):
        if not isinstance(v, str):
            raise fail("a string")
        return v
    if name == "mel_norm":
        if v is not None and not isinstance(v, str):
            raise fail("a string or null")
        return v
    return v


def parse_length_policy(policy: str) -> tuple[str, str]:
    """Split ``"<pad>+<trunc>"`` into its two halves.

    A single name stands for both directions: a pad policy (pad, repeat,
    repeatpad) truncates long clips from the start ("trunc"); a truncation
    policy (trunc, rand_trunc) zero-pads short clips ("pad").
    """
    if not isinstance(policy, str):
        raise AudioclError(f"length policy must be a string, got {policy!r}")
    parts = policy.split("+")
    if len(parts) == 1:
        p = parts[0]
        if p in PAD_POLICIES:
            return p, "trunc"
        if p in TRUNC_POLICIES:
            return "pad", p
    elif len(parts) == 2 and parts[0] in PAD_POLICIES and parts[1] in TRUNC_POLICIES:
        return parts[0], parts[1]
    raise AudioclError(
        f"unknown length policy {policy!r}: use one of {', '.join(PAD_POLICIES + TRUNC_POLICIES)} "
        "or '<pad>+<trunc>' such as 'repeatpad+rand_trunc'"
    )


PRESETS: dict[str, FrontendConfig] = {
    # LAION-CLAP / HF ClapFeatureExtractor(rand_trunc, repeatpad, 50..14000 Hz):
    # librosa-style Slaney mels, power spectrogram, 10*log10(max(M, 1e-10)), no top_db.
    "laion_clap": FrontendConfig(),
    # LAION-CLAP fusion checkpoints (and HF ClapFeatureExtractor(truncation="fusion")):
    # HTK mel scale without area normalisation; clips over 10 s become 4 views
    # (audiocl.audio.length.fusion_views), shorter ones are repeat-padded.
    "laion_clap_fusion": FrontendConfig(mel_scale="htk", mel_norm=None, fusion=True),
    # Speech at 16 kHz: 25 ms Hann window in a 512-point FFT, 10 ms hop, 80 mels.
    # 20 Hz keeps the DC/rumble bin out; 8000 Hz is Nyquist. Natural log with a
    # 1e-6 floor (-13.8) keeps digital silence from dominating feature statistics.
    # 10 s clips, zero-padded, truncated from the start (speech is not repeated).
    "speech16k": FrontendConfig(
        sample_rate=16000,
        n_fft=512,
        win_length=400,
        hop_length=160,
        n_mels=80,
        f_min=20.0,
        f_max=8000.0,
        mel_scale="slaney",
        mel_norm="slaney",
        power=2.0,
        center=True,
        pad_mode="reflect",
        log="log",
        amin=1e-6,
        clip_samples=160000,
        length_policy="pad+trunc",
    ),
    # aiSFX (Ma & Lerch, ISMIR 2022; the `aisfx` encoder), their Essentia path:
    # 44.1 kHz mono, 2048-sample periodic Hann frames centred with zero padding,
    # hop 1024, power, 96 HTK mel bands 0-22050 Hz each summing to 1,
    # log10(1e4 M + 1) / 9.457798957824707 (their min-max constant over their
    # training spectrograms), time-major. Whole clips (no target length): the
    # encoder cuts 100-frame blocks itself; batches zero-pad (= silence here).
    "aisfx": FrontendConfig(
        sample_rate=44100,
        n_fft=2048,
        win_length=2048,
        hop_length=1024,
        window="hann",
        n_mels=96,
        f_min=0.0,
        f_max=22050.0,
        mel_scale="htk",
        mel_norm="unit_sum",
        power=2.0,
        center=True,
        pad_mode="constant",
        log="log10p1",
        ref=1e-4,
        norm_std=9.457798957824707,
        clip_samples=None,
        length_policy="pad+trunc",
    ),
    # Whisper (any size; large-v3 wants n_mels=128): WhisperFeatureExtractor's
    # defaults, 16 kHz, 25 ms periodic Hann in a 400-point FFT, 10 ms hop, 80 Slaney
    # mels 0-8000 Hz, log10 clamped at peak - 8, (x + 4) / 4, last frame dropped.
    # clip_samples None: clips keep their length (the whisper encoder takes any
    # length up to 30 s and masks padding), never padded to Whisper's 30 s.
    "whisper": FrontendConfig(
        sample_rate=16000,
        n_fft=400,
        win_length=400,
        hop_length=160,
        window="hann",
        n_mels=80,
        f_min=0.0,
        f_max=8000.0,
        mel_scale="slaney",
        mel_norm="slaney",
        power=2.0,
        center=True,
        pad_mode="reflect",
        log="db",
        amin=1e-10,
        ref=1.0,
        top_db=80.0,
        norm_mean=-40.0,
        norm_std=40.0,
        drop_last_frame=True,
        clip_samples=None,
        length_policy="pad+trunc",
    ),
}


def get_preset(name: str, **overrides: Any) -> FrontendConfig:
    """A named preset with any parameters overridden (checked like ``from_dict``)."""
    if name not in PRESETS:
        raise AudioclError(f"unknown front-end preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    if not overrides:
        return PRESETS[name]
    return PRESETS[name].replace(**overrides)


def num_frames(num_samples: int, cfg: FrontendConfig) -> int:
    """Frames ``LogMel`` produces for ``num_samples`` samples."""
    drop = int(cfg.drop_last_frame)
    if cfg.center:
        return max(0, num_samples // cfg.hop_length + 1 - drop)
    if num_samples < cfg.n_fft:
        return 0
    return max(0, (num_samples - cfg.n_fft) // cfg.hop_length + 1 - drop)


def log_floor(cfg: FrontendConfig) -> float:
    """The value ``LogMel`` gives digital silence (pad mels with it): -100.0 for laion_clap.

    With ``top_db`` a clip's silence is raised to its peak - top_db instead; the
    floor is the lowest value any clip can hold.
    """
    if cfg.log == "db":
        scale = 10.0 * 2.0 / cfg.power
        value = scale * math.log10(cfg.amin) - scale * math.log10(cfg.ref)
    elif cfg.log == "log10p1":
        value = 0.0  # log10(0 / ref + 1)
    else:
        value = math.log(cfg.amin) - math.log(cfg.ref)
    if (cfg.norm_mean, cfg.norm_std) == (0.0, 1.0):
        return value
    return (value - cfg.norm_mean) / cfg.norm_std


def hz_to_mel(hz: np.ndarray, scale: str) -> np.ndarray:
    """Hz -> mel, float64. ``"htk"``: ``2595 log10(1 + f / 700)``. ``"slaney"``
    (Slaney's Auditory Toolbox): linear below 1 kHz, ``f / (200 / 3)``, then
    logarithmic, ``15 + ln(f / 1000) / (ln(6.4) / 27)``."""
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mel = f / _SLANEY_HZ_PER_MEL
    high = f >= 1000.0
    mel[high] = _SLANEY_BREAK_MEL + np.log(f[high] / 1000.0) / _SLANEY_LOG_STEP
    return mel


def mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`, float64."""
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    hz = _SLANEY_HZ_PER_MEL * m
    high = m >= _SLANEY_BREAK_MEL
    hz[high] = 1000.0 * np.exp(_SLANEY_LOG_STEP * (m[high] - _SLANEY_BREAK_MEL))
    return hz


# Slaney mel scale: 200/3 Hz per mel up to 1 kHz (mel 15), then 27 mels per factor 6.4
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_BREAK_MEL = 1000.0 / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """``[n_fft // 2 + 1, n_mels]`` float64 triangular mel filterbank.

    With ``c_0 < ... < c_{n_mels+1}`` the band edges, equally spaced in mel from
    ``f_min`` to ``f_max`` (converted back to Hz), and ``f_k = k sr / n_fft`` the
    FFT bin frequencies, band ``m`` weighs bin ``k`` by::

        w[k, m] = max(0, min((f_k - c_m) / (c_{m+1} - c_m), (c_{m+2} - f_k) / (c_{m+2} - c_{m+1})))

    ``mel_norm="slaney"`` multiplies band ``m`` by ``2 / (c_{m+2} - c_m)`` (equal
    area); ``"unit_sum"`` divides it by the sum of its weights (Essentia
    ``MelBands(normalize="unit_sum")``); ``None`` leaves the triangles' peaks at 1.
    Computed in the same float64 operations as ``librosa.filters.mel(dtype=float64)``,
    so it equals that bit for bit (tests/test_frontend.py), without importing librosa.
    """
    scale = cfg.mel_scale
    bins = np.fft.rfftfreq(n=cfg.n_fft, d=1.0 / cfg.sample_rate)
    edges_mel = np.linspace(hz_to_mel(np.asarray([cfg.f_min]), scale)[0],
                            hz_to_mel(np.asarray([cfg.f_max_hz]), scale)[0], cfg.n_mels + 2)
    edges = mel_to_hz(edges_mel, scale)
    width = np.diff(edges)
    dist = np.subtract.outer(edges, bins)  # [n_mels + 2, bins]: c_j - f_k
    fb = np.zeros((cfg.n_mels, bins.size), dtype=np.float64)
    for m in range(cfg.n_mels):
        rising = -dist[m] / width[m]
        falling = dist[m + 2] / width[m + 1]
        fb[m] = np.maximum(0, np.minimum(rising, falling))
    if cfg.mel_norm == "slaney":
        fb *= (2.0 / (edges[2 : cfg.n_mels + 2] - edges[: cfg.n_mels]))[:, np.newaxis]
    elif cfg.mel_norm == "unit_sum":
        sums = fb.sum(axis=1, keepdims=True)
        if not (sums > 0).all():
            raise AudioclError(
                f"front-end config: {int((sums <= 0).sum())} of {cfg.n_mels} mel bands hold no FFT bin; "
                "unit_sum needs fewer n_mels or a larger n_fft"
            )
        fb = fb / sums
    return np.ascontiguousarray(fb.T)


def window_array(cfg: FrontendConfig) -> np.ndarray:
    """Periodic window of ``win_length`` zero-padded (centred) to ``n_fft``, float64."""
    n = cfg.win_length
    k = np.arange(n)
    if cfg.window == "hann":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    else:
        w = 0.54 - 0.46 * np.cos(2 * np.pi * k / n)
    out = np.zeros(cfg.n_fft)
    off = (cfg.n_fft - n) // 2
    out[off : off + n] = w
    return out
