"""The retrieval results table: AudioCaps test and Clotho evaluation, both directions.

Reads the JSON files written by `audiocl eval retrieval` (stage 3) and writes
``results.json`` (R@1, R@5, R@10, mAP@10 text-to-audio and audio-to-text per
benchmark, with clip and caption counts) and ``results.md``. Every number is
copied from the evaluator's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS = ("R@1", "R@5", "R@10", "mAP@10")
DIRECTIONS = ("text_to_audio", "audio_to_text")


def build(evals: dict[str, dict], command: str) -> dict:
    out: dict = {"protocol": None, "benchmarks": {}, "command": command}
    for name, ev in evals.items():
        out["protocol"] = ev.get("protocol")
        n_audio, n_text = ev["n_audio"], ev["n_text"]
        out["benchmarks"][name] = {
            "n_audio": n_audio,
            "n_text": n_text,
            # 5.0 on the published test sets; anything else means an incomplete copy
            "captions_per_clip": round(n_text / n_audio, 3),
            **{d: {m: ev[d][m] for m in METRICS} for d in DIRECTIONS},
        }
    return out


def markdown(res: dict) -> str:
    head = "| benchmark | clips | captions | " + " | ".join(
        f"{'T2A' if d == 'text_to_audio' else 'A2T'} {m}" for d in DIRECTIONS for m in METRICS
    ) + " |"
    lines = [f"# Retrieval ({res['protocol']})", "", head, "|" + "---|" * (3 + 2 * len(METRICS))]
    for name, b in res["benchmarks"].items():
        vals = " | ".join(f"{100 * b[d][m]:.2f}" for d in DIRECTIONS for m in METRICS)
        lines.append(f"| {name} | {b['n_audio']} | {b['n_text']} | {vals} |")
    lines += ["", "Values in %.", "", f"Command: `{res['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", action="append", default=[], metavar="NAME=JSON", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    a = ap.parse_args(argv)
    evals = {}
    for pair in a.eval:
        name, _, path = pair.partition("=")
        evals[name] = json.loads(Path(path).read_text())
    res = build(evals, a.command)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
