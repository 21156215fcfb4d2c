"""Benchmark row files: written atomically, read back as written, hidden leftovers never read as rows."""

from __future__ import annotations

import json

from vision.benchmarks.common import run_rows, write_json_atomically
from vision.benchmarks.report import load_rows, summarise, task_table
from vision.benchmarks.training import SuiteRow


def knn_row(seed: int, miou: float) -> dict:
    return {"task": "pointcloud-ign", "row": "knn-0.1pct", "seed": seed, "method": "knn", "labels": "0.1pct",
            "metric": {"miou": miou}, "label_budget": {"labelled": 71, "total": 70840},
            "command": f"sparsevision benchmark pointcloud-ign --rows knn-0.1pct --seeds {seed}"}


def test_a_written_row_round_trips_and_leaves_no_temporary_file(tmp_path):
    row = knn_row(1, 0.465)
    path = write_json_atomically(tmp_path / "pointcloud-ign-knn-0.1pct-seed1.json", row)
    assert json.loads(path.read_text()) == row
    assert load_rows(tmp_path) == [row]
    assert [p.name for p in tmp_path.iterdir()] == ["pointcloud-ign-knn-0.1pct-seed1.json"]


def test_a_hidden_leftover_of_a_killed_run_is_not_a_row(tmp_path):
    write_json_atomically(tmp_path / "pointcloud-ign-knn-0.1pct-seed0.json", knn_row(0, 0.4))
    # a complete-looking temporary file a killed run left behind (vision.atomic's naming)
    (tmp_path / ".pointcloud-ign-knn-0.1pct-seed1.json.tmp-abcd.json").write_text(json.dumps(knn_row(1, 0.9)))
    (tmp_path / ".x.json").write_text("{not json")  # half-written: would raise if it were read
    assert [r["seed"] for r in load_rows(tmp_path)] == [0]


def test_each_knn_seed_records_and_prints_its_own_command(tmp_path):
    row = SuiteRow("pointcloud-ign", "knn-0.1pct", "c.yaml", seeds=(0, 1, 2), method="knn", labels="0.1pct",
                   suite="pointcloud-ign")
    run_rows([row], lambda row, seed: {"metric": {"miou": 0.4 + seed / 100},
                                       "label_budget": {"labelled": 71, "total": 70840}}, tmp_path,
             log=lambda _: None)
    saved = {r["seed"]: r["command"] for r in load_rows(tmp_path)}
    assert saved == {s: f"sparsevision benchmark pointcloud-ign --rows knn-0.1pct --seeds {s}" for s in (0, 1, 2)}
    table = "\n".join(task_table(summarise(load_rows(tmp_path)), "pointcloud-ign"))
    assert "- `knn-0.1pct`, seed 2: `sparsevision benchmark pointcloud-ign --rows knn-0.1pct --seeds 2`" in table
    assert "0.410 ± 0.010" in table  # mean ± std of 0.40, 0.41, 0.42
