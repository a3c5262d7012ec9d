#!/usr/bin/env python3
"""Train and evaluate every (setting, loss, seed) of one task through the CLI.

Each job is ``audiocl train --config conf/<task>/<loss>.yaml`` (data paths,
seed, epochs and input size given as ``key=value`` overrides), then
``local/eval_candidates.py --loss <loss>`` on the test split, scored the way the
loss scores (``audiocl.eval.multiway.score_for_loss``: symile: mip, pairwise:
cosine, gram: volume). Jobs run ``--nj`` at a time,
each on one CPU thread. A job whose ``eval/done.json`` exists is skipped, so an
interrupted stage resumes; ``--force`` redoes everything. Each job folder gets
``train.log`` (the CLI's output) and ``eval/<target>.json``; ``done.json``
records the commands and wall times.

    python local/run_grid.py --task xor8 --data data/xor8 --exp exp/xor8 --seeds 0 1 2
    python local/run_grid.py --task xor3 --data data/xor3 --exp exp/xor3 --d-v 1 --ps 0 0.5 1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOSSES = ("symile", "pairwise", "gram")
TARGETS = {"xor8": list("abcdefgh"), "xor3": ["a", "b", "c"]}


def p_name(p: float) -> str:
    return f"p{p:.2f}"


def jobs(args: argparse.Namespace) -> list[dict]:
    out = []
    settings = [("", None)] if args.task == "xor8" else [(f"d{args.d_v}_{p_name(p)}/", p) for p in args.ps]
    for sub, p in settings:
        for loss in args.losses:
            for seed in args.seeds:
                data = args.data / f"{sub}seed{seed}"
                out.append({"loss": loss, "seed": seed, "p": p, "data": data,
                            "dir": args.exp / f"{sub}{loss}/seed{seed}"})  # fmt: skip
    return out


def run_job(job: dict, args: argparse.Namespace, python: str) -> dict:
    d: Path = job["dir"]
    done = d / "eval" / "done.json"
    if done.is_file() and not args.force:
        return json.loads(done.read_text())
    # a second run_grid on the same exp folder (e.g. started to share the work) must not
    # train the same job twice: the first to create the lock owns it, the other waits for it
    lock = d.parent / f".{d.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            if not _owner_alive(lock):
                lock.unlink(missing_ok=True)
                continue
            time.sleep(5)
            if done.is_file():
                return json.loads(done.read_text())
    try:
        return _run_locked(job, args, python, d, done)
    finally:
        lock.unlink(missing_ok=True)


def _owner_alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text() or 0)
        os.kill(pid, 0)
    except (ValueError, OSError):
        return False
    return True


def _run_locked(job: dict, args: argparse.Namespace, python: str, d: Path, done: Path) -> dict:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    # through --python (default: the interpreter running this script), so a venv need not be on PATH
    train = [python, "-m", "audiocl", "train", "--config", f"conf/{args.task}/{job['loss']}.yaml", "--output", str(d / "train"),
             f"data.arrays={job['data']}/train.npz", f"data.val_arrays={job['data']}/val.npz",
             f"train.seed={job['seed']}", f"train.epochs={args.epochs}"]  # fmt: skip
    if args.task == "xor3":
        train += [f"model.towers.{t}.encoder.input_dim={args.d_v}" for t in TARGETS["xor3"]]
    train += args.train_args
    ev = [python, "local/eval_candidates.py", "--model", str(d / "train" / "model"), "--arrays",
          f"{job['data']}/test.npz", "--targets", *TARGETS[args.task], "--loss", job["loss"],
          "--out-dir", str(d / "eval")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    times = {}
    with open(d / "train.log", "w") as log:
        for name, cmd in (("train", train), ("eval", ev)):
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            t0 = time.perf_counter()
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            times[name] = round(time.perf_counter() - t0, 1)
            if r.returncode != 0:
                tail = (d / "train.log").read_text().strip().splitlines()[-1:]
                raise SystemExit(f"run_grid.py: {name} failed for {d} (exit {r.returncode}): {' '.join(tail)}")
    rec = {"loss": job["loss"], "seed": job["seed"], "p": job["p"], "train_cmd": shlex.join(train),
           "eval_cmd": shlex.join(ev), "seconds": times}  # fmt: skip
    done.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"{d}: train {times['train']} s, eval {times['eval']} s", file=sys.stderr, flush=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("xor8", "xor3"), required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--losses", nargs="+", default=["symile", "pairwise", "gram"], choices=sorted(LOSSES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--ps", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--d-v", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--nj", type=int, default=2, help="jobs at once (each one CPU thread)")
    ap.add_argument("--train-args", nargs="*", default=[], help="extra key=value overrides for audiocl train")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)
    todo = jobs(args)
    missing = [str(j["data"]) for j in todo if not (j["data"] / "test.npz").is_file()]
    if missing:
        print(f"run_grid.py: no data in {missing[0]} (run the data stage first)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.nj)) as pool:
        list(pool.map(lambda j: run_job(j, args, args.python), todo))
    print(json.dumps({"task": args.task, "jobs": len(todo), "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
