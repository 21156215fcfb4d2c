"""Benchmark rows resume from their JSON files; the report keeps ratios honest."""

from __future__ import annotations

import json

import numpy as np

from vision.benchmarks.common import Row, converged, run_rows
from vision.benchmarks.knn_baseline import confusion, knn_vote, standardised_features
from vision.benchmarks.report import summarise, task_table, write_report


def test_rows_run_once_and_resume_from_their_json(tmp_path):
    calls = []

    def run_one(row, seed):
        calls.append((row.name, seed))
        return {"metric": {"miou": 0.5 + seed / 10}, "label_budget": {"labelled": 10, "total": 1000}}

    rows = [Row("pointcloud", "0.1pct", "c.yaml", seeds=(0, 1, 2), method="sqn", labels="0.1pct")]
    first = run_rows(rows, run_one, tmp_path, log=lambda _: None)
    assert calls == [("0.1pct", 0), ("0.1pct", 1), ("0.1pct", 2)]
    saved = json.loads((tmp_path / "pointcloud-0.1pct-seed1.json").read_text())
    assert saved["metric"]["miou"] == 0.6 and saved["seed"] == 1
    assert saved["command"] == "sparsevision fit --config c.yaml --data.init_args.weak_label_seed=1"
    again = run_rows(rows, run_one, tmp_path, log=lambda _: None)  # nothing reruns
    assert len(calls) == 3 and [r["metric"] for r in again] == [r["metric"] for r in first]


def test_convergence_is_judged_on_the_last_fifth_of_the_schedule():
    rising = [(100, 0.50), (200, 0.60), (300, 0.65), (400, 0.68), (500, 0.70)]
    flat = [(100, 0.50), (200, 0.60), (300, 0.69), (400, 0.695), (500, 0.699)]
    assert converged(rising) is False  # +2 points after step 400
    assert converged(flat) is True  # +0.4 points
    assert converged([(1, 0.1)]) is None


def _row(name, value, seed=0, converged_=True, method="sqn"):
    return {"task": "pointcloud", "row": name, "seed": seed, "method": method, "labels": name,
            "metric": {"miou": value}, "converged": converged_, "command": f"cmd {name}",
            "label_budget": {"labelled": 5, "total": 100}}


def test_ratio_is_shown_only_when_the_full_run_meets_its_floor(tmp_path):
    strong = summarise([_row("full", 0.80), _row("0.1pct", 0.70, 0), _row("0.1pct", 0.74, 1)])
    assert abs(strong[("pointcloud", "0.1pct")]["mean"] - 0.72) < 1e-9
    table = "\n".join(task_table(strong, "pointcloud"))
    assert "0.720 ± 0.028" in table and "| 0.900 |" in table  # 0.72 / 0.80
    weak = summarise([_row("full", 0.60), _row("0.1pct", 0.55)])
    table = "\n".join(task_table(weak, "pointcloud"))
    assert "n/a" in table and "below its floor 0.7" in table
    unconverged = summarise([_row("full", 0.80, converged_=False), _row("0.1pct", 0.70)])
    assert "has not converged" in "\n".join(task_table(unconverged, "pointcloud"))
    for i, row in enumerate([_row("full", 0.8), _row("0.1pct", 0.7)]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(row))
    report = write_report(tmp_path, tmp_path / "B.md").read_text()
    assert "## pointcloud" in report and "`cmd 0.1pct`" in report


def test_knn_vote_propagates_labels_by_inverse_distance():
    coords = np.array([[0, 0, 0], [1, 0, 0], [10, 0, 0], [11, 0, 0], [0.4, 0, 0]], np.float64)
    features = standardised_features(coords)
    predicted = knn_vote(features, np.array([0, 2]), np.array([1, 0]), k=2, num_classes=2)
    assert predicted.tolist() == [1, 1, 0, 0, 1]
    matrix = confusion(predicted, np.array([1, 1, 0, 0, 0]), 2)
    assert matrix.tolist() == [[2, 1], [0, 2]]
