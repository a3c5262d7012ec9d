"""recipes/utils/stage_timings.py: the one reader of run.sh's exp/timings.tsv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from audiocl.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "utils"))
from stage_timings import StageTime, read_timings  # noqa: E402


def test_latest_row_per_stage_in_stage_order(tmp_path):
    p = tmp_path / "timings.tsv"
    p.write_text("2\ttrain\t100\t1.9\n0\tdata\t12\t0.50\n\n1\textract\t30\n"
                 "total\tall selected stages\t200\t1.0\nall\tselected stages 0-2\t150\t0.9\n1\textract\t31\t1.10\n")
    assert read_timings(p) == [StageTime(0, "data", 12, "0.50"), StageTime(1, "extract", 31, "1.10"),
                               StageTime(2, "train", 100, "1.9")]
    assert read_timings(tmp_path / "absent.tsv") == []


@pytest.mark.parametrize("line", ["3\ttrain", "3\ttrain\tlong\t1.0"])
def test_bad_row_names_file_and_line(tmp_path, line):
    p = tmp_path / "timings.tsv"
    p.write_text("0\tdata\t12\t0.5\n" + line + "\n")
    with pytest.raises(InputError, match=f"{p}:2"):
        read_timings(p)
