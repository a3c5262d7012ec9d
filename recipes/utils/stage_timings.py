"""Read the ``exp/timings.tsv`` that ``run_stage`` (recipes/utils/common.sh) appends to.

Each finished stage appends ``N<TAB>name<TAB>seconds<TAB>load average``; a
stage redone later (``--force``) appends another row, and some run.sh files
add a row for the whole invocation (``total``/``all`` instead of a stage
number). The table a RESULTS.md shows is the **latest row of each numbered
stage, in stage order**; whole-invocation rows are left out (an invocation
may have run only some stages). Every recipe's ``local/write_results.py``
reads the file with :func:`read_timings`:

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "utils"))
    from stage_timings import read_timings
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from audiocl.errors import InputError

__all__ = ["StageTime", "read_timings"]


@dataclass(frozen=True)
class StageTime:
    """One stage's wall time: ``seconds`` as logged, ``load`` the 1-minute load average ("-" if absent)."""

    stage: int
    name: str
    seconds: int
    load: str


def read_timings(path: str | os.PathLike) -> list[StageTime]:
    """The latest row of each numbered stage of ``path``, by stage number; ``[]`` when the file is absent.

    A row with fewer than 3 fields or non-integer seconds raises ``InputError``
    naming the file and line (the file is written by run.sh; a bad row means
    it was edited or cut short).
    """
    p = Path(path)
    if not p.is_file():
        return []
    latest: dict[int, StageTime] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise InputError(str(p), f"expected stage<TAB>name<TAB>seconds[<TAB>load], got {line!r}", line=n)
        if not parts[0].strip().isdigit():
            continue  # a whole-invocation row ("total", "all")
        try:
            seconds = int(parts[2])
        except ValueError:
            raise InputError(str(p), f"seconds must be an integer, got {parts[2]!r}", line=n) from None
        stage = int(parts[0])
        latest[stage] = StageTime(stage, parts[1], seconds, parts[3].strip() if len(parts) > 3 else "-")
    return [latest[k] for k in sorted(latest)]
