#!/usr/bin/env bash
# Smoke test of a NON-editable install: build the wheel, install it with
# --no-deps into a fresh venv, then run `audiocl --help` and `audiocl info`
# from a folder outside the repository. The dependencies come from the project
# venv's site-packages through PYTHONPATH (no download). Not through
# --system-site-packages: that would run the venv's editable-install .pth,
# whose finder imports importlib.util as a side effect and hides exactly the
# missing-import bug this test is for (issue 14: `audiocl --help` failed with
# "module 'importlib' has no attribute 'util'" after a pip install).
# Usage: .ci/wheel_smoke.sh [python of the project venv]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-$repo/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# build from a copy so build/ and *.egg-info never land in the checkout
mkdir "$work/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/audiocl" "$work/src/"
find "$work/src/audiocl" -name __pycache__ -prune -exec rm -rf {} +
# the venv's setuptools when it has one (offline); else pip's isolated build (Python >= 3.12 venvs)
isolation=""
"$py" -c 'import setuptools' 2>/dev/null && isolation="--no-build-isolation"
"$py" -m pip wheel -q --no-deps $isolation -w "$work/dist" "$work/src" >/dev/null
wheel="$(ls "$work"/dist/audiocl-*.whl)"
"$py" -m venv "$work/venv"   # its pip comes from ensurepip (bundled, offline)
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
export PYTHONPATH="$site" PYTHONNOUSERSITE=1
cd "$work"   # outside the repository: nothing imports the checkout
loc="$("$work/venv/bin/python" -c 'import audiocl, sys; sys.stdout.write(audiocl.__file__)')"
case "$loc" in "$work/venv/"*) ;; *) echo "wheel smoke: audiocl imported from $loc, not the wheel" >&2; exit 1;; esac
"$work/venv/bin/audiocl" --help >/dev/null
printf '%s\n' '{"id": "a", "path": "a.wav", "duration": 1.5, "sampling_rate": 16000, "texts": ["a dog barks"], "labels": ["dog"]}' \
              '{"id": "b", "path": "b.wav", "duration": 2.0, "sampling_rate": 16000, "texts": ["rain"], "labels": ["rain"]}' > tiny.jsonl
out="$("$work/venv/bin/audiocl" info --json tiny.jsonl)"
"$work/venv/bin/python" -c 'import json, sys; d = json.loads(sys.argv[1]); assert d["items"] == 2 and d["duration"]["total_s"] == 3.5, d' "$out" \
  || { echo "wheel smoke: unexpected 'audiocl info' output: $out" >&2; exit 1; }
echo "wheel smoke: $(basename "$wheel") installed; audiocl --help and audiocl info work outside the repo"
