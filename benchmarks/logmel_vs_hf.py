"""Log-mel throughput: audiocl LogMel (laion_clap preset) vs HF ClapFeatureExtractor.

10 s clips at 48 kHz (480000 samples, so neither side pads or crops), one thread.
First checks that both give the same log-mel (max abs difference in dB), then
times both in interleaved rounds in this process and reports the median
clips/s of each and their ratio, for our module at batch 1 and batched.

    python benchmarks/logmel_vs_hf.py [--clips 16] [--rounds 7] [--batch 16]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import numpy as np
import torch


def make_clips(n: int, sr: int = 48000, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """Deterministic test audio: tones with vibrato, noise bursts, quiet passages."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    clips = []
    for _ in range(n):
        f0 = rng.uniform(80, 4000)
        tone = 0.3 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * rng.uniform(0.5, 5) * t))
        noise = rng.standard_normal(t.size) * 0.05
        env = (np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t) > 0).astype(np.float64)
        x = tone + noise * env
        x[int(sr * rng.uniform(2, 8)) :][: sr // 2] *= 1e-3
        clips.append(x)
    # int16 quantisation, as decoded audio is.
    return (np.round(np.stack(clips) * 32767) / 32767).astype(np.float32)


def esc50_clips(folder: str, n: int, sr: int) -> np.ndarray:
    """Real clips: decoded, resampled to ``sr`` and repeated to exactly 10 s."""
    from pathlib import Path

    from audiocl.audio.io import load_mono

    files = sorted(Path(folder).glob("*.wav"))[:n]
    if not files:
        raise SystemExit(f"no .wav files in {folder}")
    out = []
    for f in files:
        x = load_mono(f, sr)
        out.append(np.tile(x, -(-10 * sr // len(x)))[: 10 * sr])
    return np.stack(out).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--esc50",
        default=None,
        help="an ESC-50 audio folder: use its clips (resampled to 48 kHz, tiled to 10 s) "
        "instead of the synthetic ones",
    )
    args = ap.parse_args()

    torch.set_num_threads(1)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers import ClapFeatureExtractor

    from audiocl.audio.frontend import LogMel, get_preset

    cfg = get_preset("laion_clap")
    if args.esc50:
        clips = esc50_clips(args.esc50, args.clips, cfg.sample_rate)
    else:
        clips = make_clips(args.clips, cfg.sample_rate)
    fe = ClapFeatureExtractor(
        truncation="rand_trunc", padding="repeatpad", frequency_min=50, frequency_max=14000
    )
    mod = LogMel(cfg).eval()
    fast = LogMel(cfg, precise=False).eval()

    def hf_one(x: np.ndarray) -> np.ndarray:
        return fe(x, sampling_rate=cfg.sample_rate, return_tensors="np")["input_features"][0, 0]

    def ours(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mod(torch.from_numpy(batch)).numpy()

    def ours_fast(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return fast(torch.from_numpy(batch)).numpy()

    ref = np.stack([hf_one(x) for x in clips])
    got = ours(clips)
    max_diff = float(np.abs(ref - got).max())
    fast_diff = float(np.abs(ref - ours_fast(clips)).max())
    print(f"precise=False (float32 only): max |ours - HF| = {fast_diff:.3g} dB")
    print(f"identical-output check: shape {got.shape}, max |ours - HF| = {max_diff:.3g} dB")
    if max_diff > 1e-3:
        raise SystemExit(f"outputs differ by {max_diff} dB > 1e-3 dB; not timing")

    n = len(clips)
    hf_rates, b1_rates, bb_rates, fast_rates = [], [], [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for x in clips:
            hf_one(x)
        t1 = time.perf_counter()
        for i in range(n):
            ours(clips[i : i + 1])
        t2 = time.perf_counter()
        for i in range(0, n, args.batch):
            ours(clips[i : i + args.batch])
        t3 = time.perf_counter()
        for i in range(n):
            ours_fast(clips[i : i + 1])
        t4 = time.perf_counter()
        fast_rates.append(n / (t4 - t3))
        hf_rates.append(n / (t1 - t0))
        b1_rates.append(n / (t2 - t1))
        bb_rates.append(n / (t3 - t2))
        print(
            f"round {r}: HF {hf_rates[-1]:.1f} clips/s, ours b1 {b1_rates[-1]:.1f}, "
            f"ours b{args.batch} {bb_rates[-1]:.1f}, ours float32-only b1 {fast_rates[-1]:.1f}"
        )
    hf = statistics.median(hf_rates)
    b1 = statistics.median(b1_rates)
    bb = statistics.median(bb_rates)
    fb = statistics.median(fast_rates)
    result = {
        "benchmark": "logmel_vs_hf",
        "clip_seconds": 10,
        "sample_rate": cfg.sample_rate,
        "threads": torch.get_num_threads(),
        "audio": "esc50" if args.esc50 else "synthetic",
        "clips": n,
        "rounds": args.rounds,
        "max_abs_diff_db": max_diff,
        "hf_clips_per_s": round(hf, 2),
        "ours_b1_clips_per_s": round(b1, 2),
        f"ours_b{args.batch}_clips_per_s": round(bb, 2),
        "ratio_b1": round(b1 / hf, 2),
        f"ratio_b{args.batch}": round(bb / hf, 2),
        "ratio_b1_per_round_median": round(statistics.median(b / h for b, h in zip(b1_rates, hf_rates)), 2),
        "ours_float32_only_b1_clips_per_s": round(fb, 2),
        "ratio_float32_only_b1": round(fb / hf, 2),
        "float32_only_max_abs_diff_db": fast_diff,
        "target_ratio": 4.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
