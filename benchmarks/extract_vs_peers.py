"""audiocl extract against the peer routes and the two-process bound, same corpus, one run.

Routes (each a fresh subprocess, 2 processes of work, BLAS/OpenMP pinned to one
thread where the route does not pin itself; all make the 48 kHz 64-mel LAION
log-mel of every clip and save it):

* ``audiocl``: ``python -m audiocl extract --workers 2`` (the CLI, end to end:
  two local worker processes, the default);
* ``audiocl_ray``: the same with ``--runner ray`` (a local Ray instance and two
  actors, the route a cluster run takes), to show what Ray itself costs;
* ``pool``: a plain ``multiprocessing.Pool(2)`` script: soundfile, soxr,
  ``librosa.feature.melspectrogram`` + ``power_to_db``, one ``np.save`` a clip;
* ``hf``: Hugging Face ``datasets.map(num_proc=2)`` with transformers'
  ``ClapFeatureExtractor`` (soxr to 48 kHz first), saved with ``save_to_disk``;
* ``lhotse``: ``CutSet.compute_and_store_features(num_jobs=2)`` with
  ``LibrosaFbank`` at 48 kHz (if lhotse imports);
* ``bound``: two plain processes, each on half of the manifest: decode, soxr,
  torch log-mel (audiocl's ``LogMel``: the same arithmetic), one ``.npy`` each.
  Nothing else can be dropped, so this is the machine's bound for the job.

Rounds are interleaved (route order rotates each round) so that the machine's
other users hit every route alike. For each route and size: wall seconds
(min and median over rounds), CPU seconds and peak RSS of the whole process
tree (``/proc``, :class:`bench_common.TreeMeter`). Over the sizes, a
least-squares line ``wall = fixed + per_clip * n`` separates the fixed cost
(start-up, teardown) from the per-clip cost; for audiocl the summary's own
phases give a second view of it, the time to the first written shard plus the
teardown. audiocl's store content hash is checked to be the same in every
round and for both of its routes.

    python benchmarks/extract_vs_peers.py [--sizes 200,400] [--rounds 1] [--shard-size 256]
        [--routes audiocl,audiocl_ray,pool,hf,lhotse,bound] [--real ../shared/data/esc50-sample/audio]
    # the full comparison (idle machine, ~35 min a round with 8000):
    python benchmarks/extract_vs_peers.py --sizes 500,1000,2000,8000 --rounds 2

Last line: one JSON object with the ratios at the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ONE_THREAD, TreeMeter, make_corpus

REPO = Path(__file__).resolve().parents[1]
ROUTES = ("audiocl", "audiocl_ray", "pool", "hf", "lhotse", "bound")
TARGET_SR = 48000


def _items(manifest: str) -> list[dict]:
    with open(manifest, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- the routes (child side)


def _mel_kwargs() -> dict:
    """librosa arguments equal to the ``laion_clap`` preset."""
    return dict(sr=TARGET_SR, n_fft=1024, hop_length=480, win_length=1024, window="hann",
                center=True, pad_mode="reflect", power=2.0, n_mels=64, fmin=50.0, fmax=14000.0,
                htk=False, norm="slaney")


def _pool_one(job: tuple[str, str]) -> int:
    import librosa
    import numpy as np
    import soundfile as sf
    import soxr

    path, out = job
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    y = soxr.resample(x.mean(axis=1), sr, TARGET_SR, quality="HQ")
    mel = librosa.feature.melspectrogram(y=y, **_mel_kwargs())
    np.save(out, librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T.astype(np.float32))
    return mel.shape[1]


def route_pool(manifest: str, out: Path) -> None:
    import multiprocessing as mp

    jobs = [(it["path"], str(out / f"{it['id']}.npy")) for it in _items(manifest)]
    with mp.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(_pool_one, jobs, chunksize=8):
            pass


def _hf_one(row: dict, fe: object = None) -> dict:
    import soundfile as sf
    import soxr

    x, sr = sf.read(row["path"], dtype="float32", always_2d=True)
    y = soxr.resample(x.mean(axis=1), sr, TARGET_SR, quality="HQ")
    feats = fe(y, sampling_rate=TARGET_SR, return_tensors="np")  # type: ignore[operator]
    return {"input_features": feats["input_features"][0, 0]}


def route_hf(manifest: str, out: Path) -> None:
    import datasets
    from transformers import ClapFeatureExtractor

    datasets.disable_progress_bars()
    fe = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad", max_length_s=10)
    ds = datasets.Dataset.from_list([{"id": it["id"], "path": it["path"]} for it in _items(manifest)])
    ds = ds.map(_hf_one, fn_kwargs={"fe": fe}, num_proc=2, remove_columns=["path"],
                cache_file_name=str(out / "cache" / "map.arrow"))
    ds.save_to_disk(str(out / "ds"), num_proc=1)


def route_lhotse(manifest: str, out: Path) -> None:
    from lhotse import CutSet, Recording, RecordingSet
    from lhotse.features.io import NumpyFilesWriter
    from lhotse.features.librosa_fbank import LibrosaFbank, LibrosaFbankConfig

    recs = RecordingSet.from_recordings(
        Recording.from_file(it["path"], recording_id=it["id"]) for it in _items(manifest))
    cuts = CutSet.from_manifests(recordings=recs).resample(TARGET_SR)
    ext = LibrosaFbank(LibrosaFbankConfig(sampling_rate=TARGET_SR, fft_size=1024, hop_size=480,
                                          num_mel_bins=64, fmin=50, fmax=14000))
    cuts = cuts.compute_and_store_features(ext, storage_path=str(out / "feats"), num_jobs=2,
                                           storage_type=NumpyFilesWriter, progress_bar=False)
    cuts.to_file(str(out / "cuts.jsonl.gz"))


def route_bound_half(manifest: str, out: Path, half: int) -> None:
    import numpy as np
    import soundfile as sf
    import soxr
    import torch

    from audiocl.audio.frontend import LogMel, get_preset

    torch.set_num_threads(1)
    logmel = LogMel(get_preset("laion_clap")).eval()
    items = _items(manifest)
    mels = []
    with torch.inference_mode():
        for it in items[half::2]:
            x, sr = sf.read(it["path"], dtype="float32", always_2d=True)
            y = soxr.resample(x.mean(axis=1), sr, TARGET_SR, quality="HQ")
            mels.append(logmel(torch.from_numpy(y)).numpy())
    np.save(out / f"half{half}.npy", np.concatenate(mels))


# --------------------------------------------------------------------------- the driver


def _child(route: str, manifest: str, out: Path, half: int = 0, shard_size: int = 256) -> list[str]:
    me = [sys.executable, str(Path(__file__).resolve()), "--child", route, "--manifest", manifest,
          "--out", str(out), "--half", str(half)]
    if route in ("audiocl", "audiocl_ray"):
        runner = ["--runner", "ray"] if route == "audiocl_ray" else []
        return [sys.executable, "-m", "audiocl", "extract", "--manifest", manifest, "--out",
                str(out / "store"), "--workers", "2", "--shard-size", str(shard_size), "--no-progress",
                "--json", *runner]
    return me


def run_route(route: str, manifest: str, scratch: Path, shard_size: int = 256) -> dict:
    """One timed run of ``route`` in fresh subprocesses; returns wall, CPU, RSS (and the
    audiocl store's content hash)."""
    out = Path(tempfile.mkdtemp(prefix=f"{route}_", dir=scratch))
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    halves = (0, 1) if route == "bound" else (0,)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(_child(route, manifest, out, h, shard_size), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for h in halves]
    meters = [TreeMeter(p.pid) for p in procs]
    for m in meters:
        m.__enter__()
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for m in meters:
        m.__exit__(None, None, None)
    for p, (_so, se) in zip(procs, outs):
        if p.returncode:
            raise SystemExit(f"route {route} failed (rc {p.returncode}):\n{se[-2000:]}")
    res = [m.result() for m in meters]
    row = {"wall_s": round(wall, 3), "cpu_s": round(sum(r["cpu_s"] for r in res), 2),
           # the halves run at the same time: their peaks add up (an upper bound)
           "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in res), 1),
           "peak_rss_mb_by_name": res[0]["peak_rss_mb_by_name"]}
    if route in ("audiocl", "audiocl_ray"):
        from audiocl.data.store import content_hash

        s = json.loads(outs[0][0].strip().splitlines()[-1])
        row["content_hash"] = content_hash(out / "store")
        row["phases_s"] = p = s.get("phases_seconds")
        row["cli_wall_s"] = s["wall_seconds"]
        # the fixed cost: the first shard written (measured from the process
        # start: the CLI's imports count) plus the teardown
        row["first_shard_plus_teardown_s"] = round(wall - s["wall_seconds"] + p["first_shard"] + p["teardown"], 3)
    shutil.rmtree(out, ignore_errors=True)
    return row


def _fit(points: list[tuple[int, float]]) -> dict:
    """Least squares ``wall = fixed + per_clip * n`` over (n, wall) points."""
    if len({n for n, _ in points}) < 2:
        return {}
    ns, ws = [n for n, _ in points], [w for _, w in points]
    mn, mw = statistics.fmean(ns), statistics.fmean(ws)
    slope = sum((n - mn) * (w - mw) for n, w in points) / sum((n - mn) ** 2 for n in ns)
    return {"fixed_s": round(mw - slope * mn, 2), "per_clip_ms": round(1000 * slope, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,400", help="comma-separated corpus sizes (clips)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--ratio-size", type=int, default=None,
                    help="corpus size the last line's ratios are taken at (default: the largest of --sizes)")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shard-size", type=int, default=256,
                    help="audiocl's --shard-size (default 256, the CLI's; a size under 2 shards leaves a worker idle)")
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "esc50-sample" / "audio",
                    help="folder of real 44.1 kHz WAV recordings to build the clips from")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "audiocl-bench-cache"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--half", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = Path(args.out)
        if args.child == "pool":
            route_pool(args.manifest, out)
        elif args.child == "hf":
            route_hf(args.manifest, out)
        elif args.child == "lhotse":
            route_lhotse(args.manifest, out)
        elif args.child == "bound":
            route_bound_half(args.manifest, out, args.half)
        return

    routes = [r for r in args.routes.split(",") if r]
    if "lhotse" in routes:
        try:
            import lhotse  # noqa: F401
        except ImportError:
            routes.remove("lhotse")
            print("lhotse is not installed: its route is skipped", file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",")]
    cache = Path(args.cache)
    manifests = {n: str(make_corpus(cache, n, args.seconds, args.real)) for n in sizes}
    scratch = Path(tempfile.mkdtemp(prefix="vs_peers_", dir=cache))
    runs: dict[str, dict[int, list[dict]]] = {r: {n: [] for n in sizes} for r in routes}
    loads = []
    for rnd in range(args.rounds):
        for n in sizes:
            order = routes[rnd % len(routes):] + routes[: rnd % len(routes)]
            for r in order:
                loads.append(os.getloadavg()[0])
                row = run_route(r, manifests[n], scratch, args.shard_size)
                runs[r][n].append(row)
                print(json.dumps({"round": rnd, "clips": n, "route": r, **row}), file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)

    table: dict[str, dict] = {}
    for r in routes:
        per = {}
        for n in sizes:
            walls = sorted(x["wall_s"] for x in runs[r][n])
            per[n] = {"wall_s_min": walls[0], "wall_s_median": round(statistics.median(walls), 3),
                      "cpu_s_median": round(statistics.median(x["cpu_s"] for x in runs[r][n]), 2),
                      "peak_rss_mb_max": max(x["peak_rss_mb"] for x in runs[r][n])}
            if r in ("audiocl", "audiocl_ray"):
                per[n]["phases_s_first_round"] = runs[r][n][0].get("phases_s")
                per[n]["first_shard_plus_teardown_s_min"] = min(x["first_shard_plus_teardown_s"] for x in runs[r][n])
                per[n]["stores_identical_across_rounds"] = len({x["content_hash"] for x in runs[r][n]}) == 1
                per[n]["content_hash"] = runs[r][n][0]["content_hash"]
        table[r] = {"by_size": per, "fit_on_min_wall": _fit([(n, per[n]["wall_s_min"]) for n in sizes])}
    big = args.ratio_size or max(sizes)
    if big not in sizes:
        raise SystemExit(f"--ratio-size {big} is not one of --sizes {args.sizes}")
    result: dict = {
        "benchmark": "extract_vs_peers", "sizes": sizes, "rounds": args.rounds,
        "input": f"FLAC 44.1 kHz mono 16-bit, {args.seconds:g} s clips of real recordings from {args.real}",
        "preset": "laion_clap", "cpus": os.cpu_count(), "audiocl_shard_size": args.shard_size,
        "loadavg_1min_min_max": [round(min(loads), 2), round(max(loads), 2)],
        "routes": table,
    }
    if "audiocl" in routes:
        a = table["audiocl"]["by_size"][big]["wall_s_min"]
        ratios: dict = {"clips": big}
        for r in routes:
            if r != "audiocl":
                # > 1: audiocl is faster than route r; for the bound, audiocl's time over the bound's
                ratios[f"{r}_wall_over_audiocl"] = round(table[r]["by_size"][big]["wall_s_min"] / a, 3)
        if "bound" in routes:
            ratios["audiocl_wall_over_bound"] = round(a / table["bound"]["by_size"][big]["wall_s_min"], 3)
            fa, fb = table["audiocl"]["fit_on_min_wall"], table["bound"]["fit_on_min_wall"]
            if fa and fb and fb["per_clip_ms"] > 0:
                ratios["audiocl_per_clip_over_bound"] = round(fa["per_clip_ms"] / fb["per_clip_ms"], 3)
                ratios["audiocl_fixed_s"] = fa["fixed_s"]
        if "pool" in routes:
            ratios["audiocl_peak_rss_over_pool"] = round(
                table["audiocl"]["by_size"][big]["peak_rss_mb_max"] / table["pool"]["by_size"][big]["peak_rss_mb_max"], 3)
        ratios["audiocl_first_shard_plus_teardown_s"] = table["audiocl"]["by_size"][big]["first_shard_plus_teardown_s_min"]
        ratios["audiocl_peak_rss_mb"] = table["audiocl"]["by_size"][big]["peak_rss_mb_max"]
        if "audiocl_ray" in routes:
            ratios["audiocl_ray_fixed_s"] = table["audiocl_ray"]["fit_on_min_wall"].get("fixed_s")
            ratios["audiocl_ray_peak_rss_mb"] = table["audiocl_ray"]["by_size"][big]["peak_rss_mb_max"]
        hashes = {n: {table[r]["by_size"][n]["content_hash"] for r in ("audiocl", "audiocl_ray") if r in routes}
                  for n in sizes}
        ratios["audiocl_stores_identical"] = all(
            table[r]["by_size"][n]["stores_identical_across_rounds"] for n in sizes
            for r in ("audiocl", "audiocl_ray") if r in routes) and all(len(h) == 1 for h in hashes.values())
        result["ratios"] = ratios
    print(json.dumps(result, indent=1), file=sys.stderr)
    print(json.dumps({"benchmark": "extract_vs_peers", **result.get("ratios", {}),
                      "loadavg_1min_min_max": result["loadavg_1min_min_max"]}))


if __name__ == "__main__":
    main()
