#!/usr/bin/env python3
"""Stage 0 of clasp_speech: a synthetic speech-text corpus (espeak-ng + flite).

Every clip is one text (a digit word, a short number phrase, a dictionary word
or a short phrase of dictionary words) spoken by one synthetic *speaker* (a TTS
engine, a voice/language and a voice variant such as ``+f2`` or ``+klatt3``)
at a random speed and pitch, then augmented: speed perturbation, synthetic
reverberation, band-limiting through 8 kHz (FSDD is 8 kHz telephone-quality
speech) or a telephone band-pass, additive noise (white/pink/brown/hum/babble
made of other synthetic speech) at 0-35 dB SNR, random gain, occasional
clipping, random silence on both sides. Clips are written at 16 kHz.

Splits are by *voice variant* (and flite voice): the variants in
``VAL_VARIANTS`` / ``TEST_VARIANTS`` and the flite voices ``rms`` (val) /
``slt`` (test) are never spoken in training, by any language. ``val`` picks
checkpoints; ``test`` is the synthetic held-out test (digit zero-shot proxy
and speech-to-text retrieval). Real human speech (FSDD) is never touched here.

Languages: ``en`` (the main, MiniLM-aligned model) and, with
``--multilingual``, ``de``, ``fr``, ``es`` for the byte-level multilingual
variant. Digit clips in de/fr/es carry two texts, their own transcript first
and the English word second (the English *pivot*); words carry only their own.

    python local/build_corpus.py --out data/corpus --n-en 9000 --n-ml 1500 --jobs 2

Writes ``<out>/wav/*.wav``, ``<out>/corpus.jsonl`` (audiocl manifest, paths
relative to ``<out>``) and ``<out>/corpus_stats.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
MAX_SECONDS = 1.5  # the training crop; clips are kept within it (texts stay whole)

DIGITS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
}
TENS_EN = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
TEENS_EN = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
            "eighteen", "nineteen"]
WORDLISTS = {
    "en": "/usr/share/dict/american-english",
    "de": "/usr/share/dict/ngerman",
    "fr": "/usr/share/dict/french",
    "es": "/usr/share/dict/spanish",
}
# espeak-ng voices (language data) per language
ESPEAK_LANGS = {
    "en": ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd"],
    "de": ["de"],
    "fr": ["fr", "fr-be"],
    "es": ["es", "es-419"],
}
# espeak-ng voice variants (`espeak-ng --voices=variant`); "" is the plain voice
TRAIN_VARIANTS = [
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "croak", "whisper",
    "klatt", "klatt2", "klatt3", "klatt4", "adam", "Alex", "Andy", "Annie", "antonio", "aunty",
    "belinda", "benjamin", "boris", "david", "ed", "edward", "Gene", "gustave", "Hugo",
    "iven", "iven2", "Jacky", "john", "Lee", "linda", "Mario", "max", "Michael", "michel", "Mike",
    "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph", "steph2", "travis",
    "victor", "zac", "anika", "grandpa", "grandma", "shelby", "sandro", "marcelo", "Henrique",
    "Diogo", "Denis", "kaukovalta", "RicishayMax", "Storm", "Tweaky",
]
VAL_VARIANTS = ["m8", "f5", "klatt5", "Alicia", "Andrea", "edward2", "iven3", "miguel"]
TEST_VARIANTS = ["f3", "m5", "Tweaky", "whisperf", "Gene2", "Marco", "steph3", "iven4", "robosoft", "announcer"]
# f3/m5 moved from train to test below (a female and a male variant among the test voices)
TRAIN_VARIANTS = [v for v in TRAIN_VARIANTS if v not in TEST_VARIANTS and v not in VAL_VARIANTS]
FLITE_VOICES = {"train": ["kal", "kal16", "awb"], "val": ["rms"], "test": ["slt"]}
SPLIT_VARIANTS = {"train": TRAIN_VARIANTS, "val": VAL_VARIANTS, "test": TEST_VARIANTS}


def load_words(lang: str, rng: random.Random, n: int) -> list[str]:
    """``n`` random plain lowercase words (3-9 letters) from the Debian word list of ``lang``."""
    path = Path(WORDLISTS[lang])
    if not path.exists():
        raise SystemExit(f"build_corpus: word list {path} missing (apt-get install the w* package)")
    pat = re.compile(r"^[a-zäöüßéèêëàâîïôûùçñáíóú]{3,9}$")
    digit_words = {w for ws in DIGITS.values() for w in ws}
    words = sorted({w for w in path.read_text(encoding="utf-8").split() if pat.match(w)} - digit_words)
    rng.shuffle(words)
    return words[:n]


def english_number_phrase(rng: random.Random) -> tuple[str, str | None]:
    """A short English number phrase and its digit label when it names exactly one digit."""
    d = rng.randrange(10)
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(["the number {}", "number {}", "{} please", "say {}", "digit {}"]).format(
            DIGITS["en"][d]), DIGITS["en"][d]
    if kind < 0.55:
        return " ".join(DIGITS["en"][rng.randrange(10)] for _ in range(rng.randint(2, 3))), None
    if kind < 0.8:
        t = rng.choice(TENS_EN)
        return (t if d == 0 else f"{t} {DIGITS['en'][d]}"), None
    return rng.choice(TEENS_EN + ["hundred", "a hundred", "oh", "double " + DIGITS["en"][d]]), None


def make_texts(lang: str, n: int, rng: random.Random) -> list[tuple[str, list[str], str | None, str]]:
    """``n`` (text, texts, digit label, kind) rows for ``lang``; digits are about a quarter."""
    words = load_words(lang, rng, max(200, n))
    rows = []
    wi = 0
    for _ in range(n):
        r = rng.random()
        if r < 0.28:
            d = rng.randrange(10)
            own = DIGITS[lang][d]
            texts = [own] if lang == "en" else [own, DIGITS["en"][d]]
            rows.append((own, texts, DIGITS["en"][d], "digit"))
        elif r < 0.43 and lang == "en":
            t, lab = english_number_phrase(rng)
            rows.append((t, [t], lab, "number_phrase"))
        elif r < 0.85:
            w = words[wi % len(words)]
            wi += 1
            rows.append((w, [w], None, "word"))
        else:
            k = 2
            ws = [words[(wi + j) % len(words)] for j in range(k)]
            wi += k
            t = " ".join(ws)
            rows.append((t, [t], None, "phrase"))
    return rows


# --------------------------------------------------------------------------- synthesis


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x, sr


def synth_espeak(text: str, voice: str, variant: str, speed: int, pitch: int, gap: int) -> tuple[np.ndarray, int]:
    v = voice + (f"+{variant}" if variant else "")
    out = subprocess.run(
        ["espeak-ng", "-v", v, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "--stdout", text],
        capture_output=True, check=True, timeout=30,
    ).stdout
    return _read_wav_bytes(out)


def synth_flite(text: str, voice: str, stretch: float, f0: float, tmp: Path) -> tuple[np.ndarray, int]:
    subprocess.run(
        ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}",
         "--setf", f"int_f0_target_mean={f0:.0f}", "-t", text, "-o", str(tmp)],
        capture_output=True, check=True, timeout=30,
    )
    x, sr = sf.read(tmp, dtype="float32", always_2d=False)
    return x, sr


def trim_silence(x: np.ndarray, sr: int, thresh_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing frames 40 dB below the clip's loudest 10 ms frame."""
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n < 2:
        return x
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    on = np.nonzero(e > e.max() + thresh_db)[0]
    if on.size == 0:
        return x
    return x[max(0, on[0] - 2) * hop : min(len(x), (on[-1] + 3) * hop)]


# --------------------------------------------------------------------------- augmentation


def _resample(x: np.ndarray, sr_in: float, sr_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def _colored_noise(n: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64) + 1.0
    spec /= np.sqrt(f) if kind == "pink" else f  # pink 1/f power, brown 1/f^2
    y = np.fft.irfft(spec, n).astype(np.float32)
    return y / (y.std() + 1e-9)


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.choice([50.0, 60.0])
    t = np.arange(n) / SR
    return sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3, 5)).astype(np.float32)


def _reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.1, 0.6)
    n = int(SR * rt60)
    t = np.arange(n) / SR
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir[0] = 1.0 / rng.uniform(0.3, 1.5)  # direct path against the tail (direct-to-reverb ratio)
    from scipy.signal import fftconvolve

    y = fftconvolve(x, rir)[: len(x) + n // 2]
    return (y / (np.abs(y).max() + 1e-9) * np.abs(x).max()).astype(np.float32)


def _bandpass(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [lo, hi], btype="band", fs=SR, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, babble: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """One random augmentation chain on a 16 kHz clip; returns the clip and the chain's names."""
    chain = []
    if rng.random() < 0.5:
        f = rng.uniform(0.88, 1.12)  # speed perturbation: tempo and pitch together
        x = _resample(x, SR * f, SR)
        chain.append(f"speed{f:.2f}")
    if rng.random() < 0.4:
        x = _reverb(x, rng)
        chain.append("reverb")
    r = rng.random()
    if r < 0.55:
        x = _resample(_resample(x, SR, 8000), 8000, SR)  # FSDD-like 8 kHz band
        chain.append("8k")
    elif r < 0.7:
        x = _bandpass(x, rng.uniform(200, 400), rng.uniform(3000, 3600))
        chain.append("telephone")
    lead, tail = rng.uniform(0.0, 0.25), rng.uniform(0.0, 0.25)
    x = np.concatenate([np.zeros(int(lead * SR), np.float32), x, np.zeros(int(tail * SR), np.float32)])
    x = x / (np.abs(x).max() + 1e-9)
    if rng.random() < 0.75:
        kinds = ["white", "pink", "brown", "hum"] + (["babble"] if babble is not None else [])
        kind = str(rng.choice(kinds))
        if kind == "hum":
            nz = _hum(len(x), rng)
        elif kind == "babble":
            s = rng.integers(0, max(1, len(babble) - len(x)))
            nz = np.resize(babble[s : s + len(x)], len(x)).astype(np.float32)
        else:
            nz = _colored_noise(len(x), rng, kind)
        snr = rng.uniform(0, 35) if kind != "hum" else rng.uniform(15, 40)
        ps = np.mean(x**2) + 1e-12
        pn = np.mean(nz**2) + 1e-12
        x = x + nz * np.sqrt(ps / pn / 10 ** (snr / 10))
        chain.append(f"{kind}{snr:.0f}dB")
    gain = 10 ** (rng.uniform(-26, 0) / 20)
    x = x / (np.abs(x).max() + 1e-9) * gain
    if rng.random() < 0.05:
        x = np.clip(x * 3.0, -gain, gain)
        chain.append("clip")
    chain.append(f"gain{20 * np.log10(gain):.0f}dB")
    return x.astype(np.float32), chain


# --------------------------------------------------------------------------- jobs


def _job(args: tuple) -> dict | None:
    (uid, text, spoken, texts, label, kind, lang, split, engine, voice, variant, seed, wav_dir, babble_path) = args
    rng = np.random.default_rng(seed)
    try:
        if engine == "espeak":
            speed = int(rng.integers(110, 231))
            pitch = int(rng.integers(15, 91))
            x, sr = synth_espeak(spoken, voice, variant, speed, pitch, int(rng.integers(0, 6)))
            params = {"speed_wpm": speed, "pitch": pitch}
        else:
            stretch, f0 = float(rng.uniform(0.8, 1.3)), float(rng.uniform(80, 220))
            x, sr = synth_flite(spoken, voice, stretch, f0, Path(wav_dir) / f".{uid}.tmp.wav")
            (Path(wav_dir) / f".{uid}.tmp.wav").unlink(missing_ok=True)
            params = {"duration_stretch": round(stretch, 2), "f0": round(f0)}
    except (subprocess.SubprocessError, RuntimeError):
        return None
    if x.size == 0 or not np.isfinite(x).all():
        return None
    if sr != SR:
        x = _resample(x, sr, SR)
    x = trim_silence(x, SR)
    if x.size < SR * 0.08:
        return None
    babble = np.load(babble_path) if babble_path and Path(babble_path).exists() else None
    y, chain = augment(x, rng, babble)
    if len(y) > MAX_SECONDS * SR:  # a text cut by the crop would mislabel the pair; drop it
        return None
    sf.write(Path(wav_dir) / f"{uid}.wav", y, SR, subtype="PCM_16")
    speaker = f"{engine}:{voice}" + (f"+{variant}" if variant else "")
    return {
        "id": uid, "path": f"wav/{uid}.wav", "duration": round(len(y) / SR, 4), "sampling_rate": SR,
        "num_samples": int(len(y)), "channels": 1, "texts": texts, "labels": [label] if label else [],
        "split": split, "language": lang, "speaker": speaker, "source": f"synthetic-{engine}",
        "license": "generated (espeak-ng GPL-3, flite BSD-like; word lists from Debian)",
        "kind": kind, "engine": engine, "voice": voice, "variant": variant or "default",
        "tts": params, "augment": chain,
    }


def _voice_for(rng: random.Random, lang: str, split: str) -> tuple[str, str, str]:
    if lang == "en" and rng.random() < 0.15:
        return "flite", rng.choice(FLITE_VOICES[split]), ""
    return "espeak", rng.choice(ESPEAK_LANGS[lang]), rng.choice(SPLIT_VARIANTS[split])


def plan(n_en: int, n_ml: int, seed: int, val_frac: float, test_frac: float) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    langs = {"en": n_en} | ({"de": n_ml, "fr": n_ml, "es": n_ml} if n_ml > 0 else {})
    for lang, n in langs.items():
        for i, (text, texts, label, kind) in enumerate(make_texts(lang, n, rng)):
            r = rng.random()
            split = "val" if r < val_frac else "test" if r < val_frac + test_frac else "train"
            engine, voice, variant = _voice_for(rng, lang, split)
            rows.append((f"{lang}_{split}_{i:05d}", text, text, texts, label, kind, lang, split,
                         engine, voice, variant, rng.randrange(2**31)))
    return rows


def make_babble(out: Path, rng: random.Random) -> Path:
    """Babble noise: 8 s of overlapping training-voice speech (train variants only)."""
    words = load_words("en", rng, 200)
    track = np.zeros(8 * SR, np.float32)
    for _ in range(24):
        x, sr = synth_espeak(" ".join(rng.sample(words, 6)), rng.choice(ESPEAK_LANGS["en"]),
                             rng.choice(TRAIN_VARIANTS), rng.randint(130, 200), rng.randint(20, 80), 2)
        x = _resample(x, sr, SR)[: 8 * SR]
        s = rng.randrange(0, 8 * SR - len(x) + 1)
        track[s : s + len(x)] += x
    path = out / "babble.npy"
    np.save(path, track / (np.abs(track).max() + 1e-9))
    return path


def build(out: Path, n_en: int, n_ml: int, seed: int, jobs: int, val_frac: float, test_frac: float) -> dict:
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_corpus: {tool} not found (apt-get install {tool})")
    t0 = time.time()
    wav_dir = out / "wav"
    if out.exists():
        shutil.rmtree(out)
    wav_dir.mkdir(parents=True)
    babble = make_babble(out, random.Random(seed + 1))
    rows = plan(n_en, n_ml, seed, val_frac, test_frac)
    args = [(uid, text, spoken, texts, label, kind, lang, split, engine, voice, variant, s, str(wav_dir), str(babble))
            for (uid, text, spoken, texts, label, kind, lang, split, engine, voice, variant, s) in rows]
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        results = list(ex.map(_job, args, chunksize=32))
    items = [r for r in results if r is not None]
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    stats = {
        "n_planned": len(rows), "n_items": len(items), "dropped": len(rows) - len(items),
        "seconds": round(time.time() - t0, 1),
        "hours": round(sum(it["duration"] for it in items) / 3600, 3),
        "by_split": dict(Counter(it["split"] for it in items)),
        "by_language": dict(Counter(it["language"] for it in items)),
        "by_kind": dict(Counter(it["kind"] for it in items)),
        "by_engine": dict(Counter(it["engine"] for it in items)),
        "n_speakers": {s: len({it["speaker"] for it in items if it["split"] == s}) for s in ("train", "val", "test")},
        "variants": {"train": TRAIN_VARIANTS, "val": VAL_VARIANTS, "test": TEST_VARIANTS},
        "flite_voices": FLITE_VOICES, "espeak_voices": ESPEAK_LANGS, "seed": seed,
        "espeak_version": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    (out / "corpus_stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="synthetic speech-text corpus (espeak-ng + flite, augmented)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-en", type=int, default=9000, help="English clips planned")
    ap.add_argument("--n-ml", type=int, default=0, help="clips planned per extra language (de, fr, es); 0: none")
    ap.add_argument("--val-frac", type=float, default=0.06)
    ap.add_argument("--test-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    stats = build(Path(a.out), a.n_en, a.n_ml, a.seed, a.jobs, a.val_frac, a.test_frac)
    print(json.dumps({k: stats[k] for k in ("n_items", "dropped", "seconds", "hours", "by_split", "by_language",
                                            "n_speakers")}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
