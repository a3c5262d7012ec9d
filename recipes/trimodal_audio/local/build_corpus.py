#!/usr/bin/env python3
"""Stage 0 of trimodal_audio: the speech and note clips every tuple is made of.

Speech: for each language of ``conf/task.yaml``, ``clips_per_class`` sentences of
random filler words of that language, spoken by espeak-ng with a random voice
variant, speed and pitch (the words are irrelevant; only the language is the
class). Notes: for each instrument, ``clips_per_class`` single General MIDI
notes with random pitch (within the instrument's range) and velocity, laid out
on one timeline, rendered by one fluidsynth call and cut into one file a note.
Every clip gets a split (by clip, per class, fixed fractions), so no clip is
shared between the tuples of two splits.

Writes ``<out>/speech.jsonl`` and ``<out>/notes.jsonl`` (audiocl manifests:
labels = [language] or [instrument]), the audio under ``<out>/speech`` and
``<out>/notes``, and ``<out>/corpus_stats.json``.

    python local/build_corpus.py --out data/corpus [--clips-per-class N] [--jobs 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from audiocl.data.manifest import AudioItem, write_manifest
from audiocl.errors import AudioclError

HERE = Path(__file__).resolve().parent
SPLITS = ("train", "val", "test")
LICENSE_ESPEAK = "speech synthesised by espeak-ng (GPL-3+ program; its output is not a copy of it)"


def load_task(path: str | Path) -> dict[str, Any]:
    """The task config, checked for what the tuples rely on."""
    cfg = yaml.safe_load(Path(path).read_text())
    langs, instr = cfg["languages"], cfg["instruments"]
    if len(langs) != len(set(langs)):
        raise AudioclError(f"{path}: languages repeat: {langs}")
    if len(instr) != len(langs):
        # the permutation text names every instrument exactly once only when there are as many
        raise AudioclError(f"{path}: {len(instr)} instruments for {len(langs)} languages; the task needs as many of each")
    for name, spec in instr.items():
        missing = [lang for lang in langs if not spec.get("names", {}).get(lang)]
        if missing:
            raise AudioclError(f"{path}: instruments.{name}.names has no word for {missing}")
    for lang in langs:
        if len(cfg["words"].get(lang, [])) < 10:
            raise AudioclError(f"{path}: words.{lang} needs at least 10 filler words")
    fr = cfg["split_fractions"]
    if abs(sum(fr[s] for s in SPLITS) - 1.0) > 1e-6:
        raise AudioclError(f"{path}: split_fractions must sum to 1, got {fr}")
    return cfg


def split_of(n: int, fractions: dict[str, float], rng: np.random.Generator) -> list[str]:
    """A split per clip of one class: fixed counts, random order."""
    n_val = max(1, round(fractions["val"] * n))
    n_test = max(1, round(fractions["test"] * n))
    labels = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    if n - n_test - n_val < 1:
        raise AudioclError(f"{n} clips per class leave none for training")
    return [labels[i] for i in rng.permutation(n)]


# -------------------------------------------------------------------- speech
def speak(text: str, voice: str, speed: int, pitch: int, path: Path) -> None:
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AudioclError("espeak-ng not found; run: apt-get install -y espeak-ng") from None
    if res.returncode != 0 or not path.is_file():
        raise AudioclError(f"espeak-ng failed for voice {voice} ({res.returncode}): {res.stderr.strip()[-300:]}")


def build_speech(cfg: dict[str, Any], out: Path, n: int, seed: int, jobs: int) -> list[AudioItem]:
    sp = cfg["speech"]
    jobs_args = []
    items: list[AudioItem] = []
    for li, lang in enumerate(cfg["languages"]):
        rng = np.random.default_rng([seed, 1, li])
        splits = split_of(n, cfg["split_fractions"], rng)
        folder = out / "speech" / lang
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lo, hi = sp["words_per_sentence"]
            words = rng.choice(cfg["words"][lang], size=int(rng.integers(lo, hi + 1)))
            text = " ".join(str(w) for w in words)
            variant = str(rng.choice(sp["variants"]))
            speed = int(rng.integers(sp["speed"][0], sp["speed"][1] + 1))
            pitch = int(rng.integers(sp["pitch"][0], sp["pitch"][1] + 1))
            path = folder / f"{lang}_{i:04d}.wav"
            jobs_args.append((text, f"{lang}+{variant}", speed, pitch, path))
            items.append(AudioItem(
                id=f"speech/{lang}/{i:04d}", path=str(path.resolve()), texts=[text], labels=[lang],
                split=splits[i], language=lang, speaker=variant, source="espeak-ng", license=LICENSE_ESPEAK,
                custom={"voice": f"{lang}+{variant}", "speed": speed, "pitch": pitch},
            ))  # fmt: skip
    # espeak-ng is one short process per sentence; a few at a time keep both cores busy
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda a: speak(*a), jobs_args))
    for it in items:
        info = sf.info(it.path)
        it.duration, it.sampling_rate, it.num_samples, it.channels = info.duration, info.samplerate, info.frames, info.channels
    return items


# --------------------------------------------------------------------- notes
def _clap_sfx_midi():
    """``write_midi`` of recipes/clap_sfx (a standard MIDI file from timed raw messages)."""
    path = HERE.parents[1] / "clap_sfx" / "local" / "build_corpus.py"
    spec = importlib.util.spec_from_file_location("clap_sfx_build_corpus", path)
    if spec is None or spec.loader is None:
        raise AudioclError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while it loads
    spec.loader.exec_module(mod)
    return mod.write_midi


def build_notes(cfg: dict[str, Any], out: Path, n: int, seed: int) -> list[AudioItem]:
    nc = cfg["note"]
    sf2 = Path(nc["soundfont"])
    if not sf2.is_file():
        raise AudioclError(f"{sf2} not found; run: apt-get install -y fluidsynth fluid-soundfont-gm")
    if shutil.which("fluidsynth") is None:
        raise AudioclError("fluidsynth not found; run: apt-get install -y fluidsynth")
    write_midi = _clap_sfx_midi()
    folder = out / "notes"
    folder.mkdir(parents=True, exist_ok=True)
    on, clip = float(nc["note_on"]), float(nc["note_clip"])
    events: list[tuple[float, bytes]] = []
    plan: list[tuple[str, int, float, int, int, str]] = []  # name, index, start, key, velocity, split
    t = 0.5
    for ki, (name, spec) in enumerate(cfg["instruments"].items()):
        rng = np.random.default_rng([seed, 2, ki])
        splits = split_of(n, cfg["split_fractions"], rng)
        lo, hi = spec["range"]
        for i in range(n):
            key = int(rng.integers(lo, hi + 1))
            vel = int(rng.integers(nc["velocity"][0], nc["velocity"][1] + 1))
            # a program change before every note: the timeline mixes instruments freely
            events.append((t, bytes([0xC0, int(spec["program"])])))
            events.append((t + 0.05, bytes([0x90, key, vel])))
            events.append((t + 0.05 + on, bytes([0x80, key, 0])))
            plan.append((name, i, t, key, vel, splits[i]))
            t += clip + 0.5  # 0.5 s gap: the release of one note ends before the next clip
    mid, wav = folder / "all.mid", folder / "all.wav"
    write_midi(mid, events)
    sr = int(nc["sample_rate"])
    cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-F", str(wav), "-r", str(sr), str(sf2), str(mid)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not wav.is_file():
        raise AudioclError(f"fluidsynth failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    audio, got_sr = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    items = []
    lic = "soundfont FluidR3_GM: MIT (/usr/share/doc/fluid-soundfont-gm/copyright)"
    for name, i, start, key, vel, split in plan:
        a = int(round(start * got_sr))
        seg = mono[a : a + int(round(clip * got_sr))]
        if np.abs(seg).max() < 1e-4:
            raise AudioclError(f"fluidsynth rendered silence for {name} key {key}")
        path = folder / name / f"{name}_{i:04d}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), seg, got_sr, subtype="PCM_16")
        items.append(AudioItem(
            id=f"note/{name}/{i:04d}", path=str(path.resolve()), duration=len(seg) / got_sr,
            sampling_rate=got_sr, num_samples=len(seg), channels=1, texts=[name], labels=[name],
            split=split, source="fluidsynth", license=lic,
            custom={"program": int(cfg["instruments"][name]["program"]), "key": key, "velocity": vel},
        ))  # fmt: skip
    wav.unlink()
    return items


def build(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    cfg = load_task(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(args.clips_per_class or cfg["clips_per_class"])
    speech = build_speech(cfg, out, n, args.seed, args.jobs)
    t1 = time.time()
    notes = build_notes(cfg, out, n, args.seed)
    t2 = time.time()
    write_manifest(speech, out / "speech.jsonl")
    write_manifest(notes, out / "notes.jsonl")
    stats = {
        "languages": cfg["languages"],
        "instruments": list(cfg["instruments"]),
        "clips_per_class": n,
        "speech": {"clips": len(speech), "seconds": round(sum(it.duration or 0 for it in speech), 1),
                   "splits": dict(Counter(it.split for it in speech)), "build_s": round(t1 - t0, 1)},
        "notes": {"clips": len(notes), "seconds": round(sum(it.duration or 0 for it in notes), 1),
                  "splits": dict(Counter(it.split for it in notes)), "build_s": round(t2 - t1, 1)},
        "seed": args.seed,
    }  # fmt: skip
    (out / "corpus_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (speech.jsonl, notes.jsonl, audio)")
    ap.add_argument("--config", default=str(HERE.parent / "conf" / "task.yaml"))
    ap.add_argument("--clips-per-class", type=int, default=None, help="override conf clips_per_class (quick tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="espeak-ng processes at a time")
    args = ap.parse_args(argv)
    try:
        stats = build(args)
    except AudioclError as e:
        print(f"build_corpus: error: {e}", file=sys.stderr)
        return 2
    s, nt = stats["speech"], stats["notes"]
    print(f"speech: {s['clips']} clips, {s['seconds']} s, splits {s['splits']}, {s['build_s']} s to build")
    print(f"notes:  {nt['clips']} clips, {nt['seconds']} s, splits {nt['splits']}, {nt['build_s']} s to build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
