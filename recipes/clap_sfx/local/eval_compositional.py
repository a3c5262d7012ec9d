#!/usr/bin/env python3
"""Stage 16 of clap_sfx: the CompA-style caption choice of one model
(``audiocl.eval.compositional.run_caption_choice``), written as JSON.

    python local/eval_compositional.py --model M --manifest data/compa/test.jsonl --store data/store_compa --out X.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiocl.errors import AudioclError
from audiocl.eval.compositional import run_caption_choice


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pick each clip's caption among its swapped ones")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        res = run_caption_choice(args.model, args.manifest, store=args.store)
    except AudioclError as e:
        print(f"eval_compositional: error: {e}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    order = res.get("order", {}).get("accuracy")
    print(f"caption choice {res['accuracy']:.4f} (chance {res['chance']:.4f}), order {order}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
