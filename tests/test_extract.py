"""``audiocl extract`` end to end under Ray: real audio read back exactly, a corpus of
broken files, SIGKILL + --resume, a separately started Ray head, refusals.

Each test that starts Ray costs a few seconds, so the corpora are small and one
reference store (module fixture) serves the resume and cluster tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocl.audio.frontend import compute_logmel, get_preset
from audiocl.audio.io import load_mono
from audiocl.data.store import FeatureStore, content_hash
from audiocl.errors import AudioclError

AUDIOCL = [sys.executable, "-m", "audiocl.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*AUDIOCL, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------- fault corpus


def build_fault_corpus(root: Path, shared: Path) -> tuple[list[dict], dict[str, str]]:
    """Good real and synthetic files plus one of each kind of broken file.

    Returns the manifest rows and ``{bad id: expected reason}``.
    """
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    fsdd = sorted((shared / "data" / "fsdd-dev" / "recordings").glob("*.wav"))[:6]
    esc = sorted((shared / "data" / "esc50-sample" / "audio").glob("*.wav"))[:3]
    for p in fsdd + esc:
        rows.append({"id": f"good/{p.stem}", "path": str(p), "labels": [p.stem.split("_")[0]]})
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(22050) / 22050)).astype(np.float32)
    sf.write(root / "stereo.flac", np.stack([tone, -tone * 0.5], 1), 22050, subtype="PCM_16")
    sf.write(root / "tone.ogg", tone, 22050, format="OGG", subtype="VORBIS")
    rows += [
        {"id": "good/stereo-flac", "path": str(root / "stereo.flac")},
        {"id": "good/ogg", "path": str(root / "tone.ogg")},
        # a segment of a real file (start/duration honoured)
        {"id": "good/segment", "path": str(esc[0]), "start": 1.0, "duration": 2.0},
    ]

    bad: dict[str, str] = {}

    def add(name: str, reason: str, path: Path, **extra) -> None:
        rows.append({"id": f"bad/{name}", "path": str(path), **extra})
        bad[f"bad/{name}"] = reason

    add("missing", "missing", root / "does-not-exist.wav")
    (root / "zero.wav").write_bytes(b"")
    add("zero-byte", "unreadable", root / "zero.wav")
    (root / "truncated.wav").write_bytes(fsdd[0].read_bytes()[:30])
    add("truncated-header", "unreadable", root / "truncated.wav")
    (root / "random.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    add("random-bytes", "unreadable", root / "random.wav")
    (root / "text.flac").write_text("this is not audio\n" * 20)
    add("text-as-flac", "unreadable", root / "text.flac")
    x = tone.copy()
    x[100] = np.nan
    sf.write(root / "nan.wav", x, 22050, subtype="FLOAT")
    add("nan", "nonfinite", root / "nan.wav")
    x = tone.copy()
    x[5000] = np.inf
    sf.write(root / "inf.wav", x, 22050, subtype="FLOAT")
    add("inf", "nonfinite", root / "inf.wav")
    sf.write(root / "silent.wav", np.zeros(22050, np.float32), 22050, subtype="PCM_16")
    add("silent", "silent", root / "silent.wav")
    sf.write(root / "short.wav", tone[:200], 22050, subtype="PCM_16")
    add("too-short", "too_short", root / "short.wav")
    long = (0.1 * rng.standard_normal(8000 * 9)).astype(np.float32)
    sf.write(root / "long.wav", long, 8000, subtype="PCM_16")
    add("too-long", "too_long", root / "long.wav")
    sf.write(root / "noframes.wav", np.zeros((0, 1), np.float32), 22050, subtype="PCM_16")
    add("zero-frames", "empty", root / "noframes.wav")
    sf.write(root / "twelve.wav", np.tile(tone[:4000, None], (1, 12)), 22050, subtype="PCM_16")
    add("12-channels", "bad_channels", root / "twelve.wav")
    add("segment-past-end", "out_of_range", esc[1], start=60.0)
    # the header says 5148 samples, 1716 are there: libsndfile reads short without an error
    sf.write(root / "full.wav", np.tile(tone, 1)[:5148], 22050, subtype="PCM_16")
    (root / "cut.wav").write_bytes((root / "full.wav").read_bytes()[: 44 + 1716 * 2])
    add("truncated-data", "truncated", root / "cut.wav")
    (root / "dir.wav").mkdir()
    add("directory", "not_a_file", root / "dir.wav")
    os.symlink(root / "loop.wav", root / "loop.wav")
    add("symlink-loop", "symlink_loop", root / "loop.wav")
    return rows, bad


@pytest.mark.slow
def test_fault_corpus_real_audio_read_back(tmp_path: Path, shared_dir: Path) -> None:
    rows, bad = build_fault_corpus(tmp_path, shared_dir)
    assert len(set(bad.values())) >= 8
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "store"
    r = cli("extract", "--manifest", str(manifest), "--out", str(out), "--workers", "2",
            "--shard-size", "5", "--store-waveform", "--min-duration", "0.05",
            "--max-duration", "8", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    good = [row for row in rows if row["id"].startswith("good/")]
    assert summary["done"] == len(good) and summary["failed"] == len(bad)
    assert "extract -> store: " in r.stderr  # the progress ran (plain lines: not a terminal)

    store = FeatureStore(out)
    assert sorted(store.ids()) == sorted(row["id"] for row in good)
    cfg = get_preset("laion_clap")
    assert store.config == cfg
    for row in good:
        ref_wav = load_mono(row["path"], 48000, start=row.get("start", 0.0), duration=row.get("duration"))
        ref = compute_logmel(ref_wav, cfg)
        got = np.asarray(store[row["id"]])
        assert got.shape == ref.shape, row["id"]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4, err_msg=row["id"])
        wav = store.waveform(row["id"])
        assert wav.shape == ref_wav.shape
        np.testing.assert_allclose(wav, np.clip(ref_wav, -1, 1), atol=1.5 / 32768)

    errors = {e["id"]: e for e in store.errors()}
    assert set(errors) == set(bad)
    for item_id, reason in bad.items():
        assert errors[item_id]["reason"] == reason, (item_id, errors[item_id])
        assert errors[item_id]["path"] and errors[item_id]["message"]
    assert summary["failed_by_reason"] == {
        reason: list(bad.values()).count(reason) for reason in set(bad.values())
    }


# ----------------------------------------------------------------- resume / cluster


@pytest.fixture(scope="module")
def resume_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """96 synthetic 12 s clips (44.1 kHz WAV), 12 shards of 8, and a store made in one run."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(1)
    rows = []
    sr = 44100
    t = np.arange(12 * sr) / sr
    for i in range(96):
        x = 0.2 * np.sin(2 * np.pi * (100 + 20 * i) * t) + 0.05 * rng.standard_normal(t.size)
        p = root / "audio" / f"c{i:03d}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, x.astype(np.float32), sr, subtype="PCM_16")
        rows.append({"id": f"c{i:03d}", "path": f"audio/c{i:03d}.wav", "texts": [f"tone {i}"]})
    rows.insert(40, {"id": "broken", "path": "audio/none.wav"})
    manifest = write_manifest(root / "m.jsonl", rows)
    ref = root / "ref"
    r = cli("extract", "--manifest", str(manifest), "--out", str(ref), "--workers", "2",
            "--shard-size", "8", "--no-progress")
    assert r.returncode == 0, r.stderr
    return root, manifest, content_hash(ref)


def _done(out: Path) -> int:
    return len(list((out / "shards").glob("*.done")))


@pytest.mark.slow
def _kill_session(sid: int, timeout: float = 20.0) -> None:
    """SIGKILL every process of session ``sid`` (the driver started with
    ``start_new_session``) until none is left. Ray starts its workers in other
    process groups of the same session; one that outlives ``killpg`` could still
    finish a shard after the kill was counted (a flaky ``shards_resumed``)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after the ")" of the command: state, ppid, pgrp, session, ...
            if int(fields[3]) == sid and fields[0] != "Z":
                left.append(int(stat.parent.name))
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def test_sigkill_at_five_seeded_points_then_resume_gives_identical_store(
    resume_corpus, tmp_path: Path
) -> None:
    """Five runs, each SIGKILLed at a seeded random point (after 0-2 more finished
    shards, then 0-0.6 s: during start-up, mid-shard or just after a marker), each
    resuming the last; then a resume to the end gives the one-run store's hash."""
    import random

    _, manifest, ref_hash = resume_corpus
    out = tmp_path / "store"
    base = [*AUDIOCL, "extract", "--manifest", str(manifest), "--out", str(out),
            "--workers", "1", "--shard-size", "8", "--no-progress"]
    rng = random.Random(14)
    points = []
    for k in range(5):
        target, delay = _done(out) + rng.randint(0, 2), rng.uniform(0.0, 0.6)
        args = base + (["--resume"] if k else [])
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=ENV, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None and _done(out) < target:
                time.sleep(0.01)
            time.sleep(delay)
            assert proc.poll() is None, f"run {k} ended before its kill point {points}"
            # the whole job: the driver and the local Ray it started
            _kill_session(proc.pid)
        finally:
            proc.wait(timeout=30)
        points.append((target, round(delay, 2), _done(out)))
        assert not (out / "index.jsonl").exists(), points
        if k == 0 and _done(out):
            r = cli(*base[len(AUDIOCL):], "--workers", "2")
            assert r.returncode == 2 and "--resume" in r.stderr  # refuses without --resume
    assert _done(out) < 13, points  # the store really was unfinished

    r = cli(*base[len(AUDIOCL):], "--workers", "2", "--resume", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["shards_resumed"] == points[-1][2]
    assert summary["done"] == 96 and summary["failed"] == 1
    assert content_hash(out) == ref_hash, points
    assert not list((out / "shards").glob(".*tmp*"))
    FeatureStore(out, verify=True)


def test_ctrl_c_stops_the_workers_at_once_and_resume_completes(resume_corpus, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it)
    once a shard is written: exit 130 with one line, within seconds, no worker
    process left; --resume then gives the one-run store."""
    _, manifest, ref_hash = resume_corpus
    out = tmp_path / "store"
    args = [*AUDIOCL, "extract", "--manifest", str(manifest), "--out", str(out), "--workers", "2",
            "--shard-size", "8"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True,
                            # a non-interactive parent may ignore SIGINT; a terminal's child does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _done(out) < 1:
            time.sleep(0.02)
        assert proc.poll() is None and _done(out) < 13
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            _kill_session(proc.pid)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "audiocl extract: interrupted" and "Traceback" not in err
    assert took < 8, took  # not the 10 s grace of a normal close
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if "audiocl.data.shard_pool" in _cmdline(p)
            and _session_of(p) == str(proc.pid)]
    _kill_session(proc.pid, timeout=0.5)
    assert not left  # no worker process of the run is alive
    r = cli("extract", "--manifest", str(manifest), "--out", str(out), "--workers", "2", "--shard-size", "8",
            "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert content_hash(out) == ref_hash


def _cmdline(p: Path) -> str:
    try:
        return p.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _session_of(cmdline: Path) -> str:
    try:
        return cmdline.with_name("stat").read_text().rsplit(")", 1)[1].split()[3]
    except (OSError, IndexError):
        return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cluster_head_started_separately_gives_same_store(resume_corpus, tmp_path: Path) -> None:
    _, manifest, ref_hash = resume_corpus
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: unix socket paths
    # a private token for this head and its client, so neither depends on (or
    # rewrites) the shared ~/.ray/auth_token of other Ray users on the machine
    token = Path(temp_dir) / "token"
    token.write_text(os.urandom(32).hex())
    # started as the Ray 2.60 docs say: plain `ray start --head`, no RAY_AUTH_MODE; with
    # a token present (here RAY_AUTH_TOKEN_PATH, usually ~/.ray/auth_token, which any
    # local ray.init() creates) such a head requires token authentication
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN_PATH"] = str(token)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )
    try:
        ready = threading.Event()
        lines: list[str] = []

        def watch() -> None:
            assert head.stdout is not None
            for line in head.stdout:
                lines.append(line)
                if "Ray runtime started" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        assert ready.wait(120), "ray head did not start:\n" + "".join(lines[-20:])
        out = tmp_path / "store"
        join = [*AUDIOCL, "extract", "--manifest", str(manifest), "--out", str(out),
                "--workers", "2", "--shard-size", "8", "--address", f"127.0.0.1:{port}",
                "--no-progress", "--json"]
        # a client without the head's token: one line with the hint, no store left
        no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
        no_token["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token either
        r = subprocess.run(join, capture_output=True, text=True, timeout=240, env=no_token)
        assert r.returncode == 2, r.stderr
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "cannot start or join the Ray cluster" in err[0], r.stderr
        assert "no token found" in err[0] and "ray get-auth-token" in err[0]
        assert "InvalidAuthToken" in err[0]  # what the head said, quoted once
        assert not out.exists()
        # with the token (RAY_AUTH_MODE still unset) it joins
        r = subprocess.run(join, capture_output=True, text=True, timeout=240, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1])["done"] == 96
        assert content_hash(out) == ref_hash
    finally:
        # only this head's process group; never `ray stop` (other people's Ray runs here)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # gcs_server/raylet linger after SIGTERM
        except ProcessLookupError:
            pass
        head.wait(timeout=30)
        time.sleep(0.5)  # let the killed daemons release their session files
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------- refusals (no Ray)


def test_store_with_other_parameters_refused(resume_corpus) -> None:
    root, manifest, ref_hash = resume_corpus
    ref = root / "ref"
    r = cli("extract", "--manifest", str(manifest), "--out", str(ref), "--shard-size", "8",
            "--set", "n_mels=80", "--set", "hop_length=320", "--resume")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "other parameters" in err[0], r.stderr
    assert "frontend.n_mels: 64 in the store, 80 requested" in err[0]
    assert "frontend.hop_length" in err[0]
    r = cli("extract", "--manifest", str(manifest), "--out", str(ref), "--shard-size", "4",
            "--resume")
    assert r.returncode == 2 and "shard_size: 8 in the store, 4 requested" in r.stderr
    assert content_hash(ref) == ref_hash


def test_bad_manifest_line_names_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    rows = [{"id": "a", "path": "a.wav"}, {"id": "b", "path": "b.wav"},
            {"id": "c", "path": "c.wav", "start": "soon"}]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "store"
    r = cli("extract", "--manifest", str(manifest), "--out", str(out))
    assert r.returncode == 2
    assert "m.jsonl:3" in r.stderr and "start" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_concurrent_extraction_into_one_store_refused(tmp_path: Path, tiny_wav_factory) -> None:
    import fcntl

    from audiocl.data.extract import extract

    wav = tiny_wav_factory("a.wav", seconds=0.3)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "path": str(wav)}])
    out = tmp_path / "store"
    cfg = get_preset("speech16k")
    extract(manifest, out, cfg, runner="inline", progress=False)
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running extraction holds it
        with pytest.raises(AudioclError, match="another extraction is writing"):
            extract(manifest, out, cfg, runner="inline", progress=False, resume=True)
    finally:
        os.close(fd)
    assert extract(manifest, out, cfg, runner="inline", progress=False, resume=True)["done"] == 1
