"""Print `audiocl extract` options that reproduce a model folder's front-end.

    audiocl extract ... $(python frontend_args.py MODEL_DIR)

A feature store is only usable with a model whose frontend.json it matches
(the evaluator compares the hashes), so the store is made from that file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# written by FrontendConfig.to_dict but not parameters of it
_NOT_PARAMS = {"format", "hash", "resampler"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: frontend_args.py MODEL_DIR", file=sys.stderr)
        return 2
    path = Path(argv[0]) / "frontend.json"
    if not path.is_file():
        print(f"{path} not found: the model folder has no front-end to extract with", file=sys.stderr)
        return 1
    cfg = json.loads(path.read_text())
    args = ["--preset", "laion_clap"]
    for key, value in sorted(cfg.items()):
        if key not in _NOT_PARAMS:
            args += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    print(" ".join(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
