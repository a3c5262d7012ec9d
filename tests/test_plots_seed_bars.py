"""audiocl.plots.seed_bars: the per-seed bar chart of recipe RESULTS files."""

from __future__ import annotations

from audiocl.plots import seed_bars


def test_seed_bars_draws_the_metrics_it_has(tmp_path):
    runs = {"CLIP": {"top1": [30.0, 34.0, 28.0], "gap": [0.8, 0.7, 0.9]}, "DCL": {"top1": [31.0, 29.0, 33.0]}}
    png = seed_bars(runs, tmp_path / "a.png", ["top1", "gap", "absent"], chance={"top1": 10.0})
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seed_bars(runs, tmp_path / "b.png", ["absent"]) is None
    assert not (tmp_path / "b.png").exists()
