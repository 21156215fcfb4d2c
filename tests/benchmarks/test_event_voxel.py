"""The voxel-grid throughput benchmark on tiny sensors: values checked, JSON and table written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vision.benchmarks import event_voxel


def test_loop_reference_and_our_grid_agree_on_a_subsample():
    events = event_voxel.make_events(400, 6, 8, seed=1)
    assert np.all(np.diff(events["t"]) >= 0) and set(np.unique(events["p"])) == {0, 1}
    assert event_voxel.check_against_loop(events, 5, 6, 8, sample=100) < 1e-5


def test_loop_reference_hand_values():
    # t* = 4 * t / 400: t = 0 -> bin 0 (ON); t = 150 -> OFF split -0.5 / -0.5 in bins 1 and 2; t = 400 -> bin 4
    x, y, t, p = (np.array(v) for v in ([0, 1, 2], [0, 0, 0], [0, 150, 400], [1, 0, 1]))
    grid = event_voxel.voxel_grid_loop(x, y, t, p, 5, 1, 3)
    assert grid[0, 0, 0] == 1 and grid[1, 0, 1] == grid[2, 0, 1] == -0.5 and grid[4, 0, 2] == 1
    assert np.abs(grid).sum() == 3


def test_benchmark_writes_json_and_table_with_tonic(tmp_path, capsys):
    pytest.importorskip("tonic")
    assert event_voxel.main(quick=True, folder=tmp_path, sizes=((6, 8), (12, 16)), counts=(3000,)) == 0
    result = json.loads((tmp_path / "events-voxel-throughput.json").read_text())
    assert result["benchmark"] == "events-voxel" and result["threads"] == 1 and result["repeats"] == 5
    assert result["command"] == "sparsevision benchmark events-voxel --quick"
    assert [(r["height"], r["width"], r["events"]) for r in result["rows"]] == [(6, 8, 3000), (12, 16, 3000)]
    for row in result["rows"]:
        assert row["ours_equals_loop"] and row["max_abs_diff_to_loop"] < 1e-5
        # tonic's n_bins time scale: equal to ours with one bin more, not to ours with the same bins
        assert row["tonic_matches_ours"] and row["max_abs_diff_tonic_to_ours_bins_plus_1"] < 1e-4
        assert row["max_abs_diff_tonic_to_ours_same_bins"] > 0.1
        assert row["tonic_flips_callers_polarity"] is True
        assert len(row["ours_s"]) == len(row["tonic_s"]) == 5
        assert row["ratio"] == pytest.approx(np.median(row["tonic_s"]) / np.median(row["ours_s"]), rel=0.02)
        assert row["ours_mev_per_s"] == pytest.approx(3000 / np.median(row["ours_s"]) / 1e6, rel=0.02)
    out = capsys.readouterr().out
    assert "ours Mev/s" in out and "tonic Mev/s" in out and "12x16" in out
