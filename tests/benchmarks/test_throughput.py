"""The point-cloud throughput benchmark on tiny tiled scenes: exact sizes, full coverage, one JSON per size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.synthetic.rooms import generate_room
from vision.benchmarks import throughput

ROOM_POINTS = (2000, 2500)
#: A small SQN and small crops, so that a measurement takes seconds.
SMALL = ["--data.init_args.crop_points=512", "--data.init_args.batch_size=2", "--data.init_args.num_layers=3",
         "--data.init_args.k=8", "--data.init_args.sub_ratios=[4, 4, 4]",
         "--model.init_args.model.init_args.encoder_kwargs={dims: [8, 16, 32], k: 8}",
         "--model.init_args.model.init_args.head_kwargs={hidden: [32], k: 3}"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiled_rooms_have_exactly_n_points_in_rooms_side_by_side():
    cloud = throughput.tiled_rooms(6000, points_per_room=ROOM_POINTS)
    assert {key: len(value) for key, value in cloud.items()} == dict.fromkeys(cloud, 6000)
    rooms = [generate_room(0, f"tile_{i:04d}", points_per_room=ROOM_POINTS) for i in range(3)]
    sizes = [len(room["coords"]) for room in rooms]
    assert sum(sizes[:2]) < 6000 <= sum(sizes)  # two whole rooms, then part of the third
    first = rooms[0]["coords"] - rooms[0]["coords"].min(0)
    assert np.array_equal(cloud["coords"][: sizes[0]], first)  # the first room is not moved
    starts = np.cumsum([0, *sizes])
    boxes = [(cloud["coords"][a:b, :2].min(0), cloud["coords"][a:b, :2].max(0))
             for a, b in zip(starts[:-1], np.minimum(starts[1:], 6000))]
    for i in range(3):
        for j in range(i + 1, 3):  # floor plans do not overlap: the rooms are 0.5 m apart
            apart = (boxes[i][1] + 0.5 <= boxes[j][0] + 1e-4) | (boxes[j][1] + 0.5 <= boxes[i][0] + 1e-4)
            assert apart.any(), (i, j)
    first_room_instances = set(cloud["instance"][: sizes[0]].tolist())
    assert not first_room_instances & set(cloud["instance"][sizes[0]:].tolist())


def test_inference_predicts_every_point_of_the_scene_and_writes_it_back(cache):
    scene = throughput.ensure_tiled_scene(5000, points_per_room=ROOM_POINTS)
    assert throughput.ensure_tiled_scene(5000, points_per_room=ROOM_POINTS) == scene  # built once
    result = throughput.measure_inference(scene, SMALL)
    assert result["points"] == result["predicted_points"] == 5000
    assert result["every_point_predicted"] and result["uncovered_points"] == 0
    assert result["written"] == ["scene.pred.ply"] and result["points_per_s"] > 0
    assert 0 < result["sub_points"] <= 5000 and result["peak_rss_gib"] >= result["baseline_rss_gib"] > 0


def test_a_point_no_crop_covers_is_reported(cache, monkeypatch):
    import datamodules.pointcloud_crops as crops

    one_crop = crops.coverage_plan
    monkeypatch.setattr(crops, "coverage_plan", lambda *args: one_crop(*args)[:1])
    result = throughput.measure_inference(throughput.ensure_tiled_scene(5000, points_per_room=ROOM_POINTS), SMALL)
    assert not result["every_point_predicted"] and result["uncovered_points"] > 0


def test_training_counts_crop_points_of_the_timed_steps(cache):
    result = throughput.measure_training(throughput.ensure_tiled_scene(5000, points_per_room=ROOM_POINTS), 3, SMALL)
    assert result["steps"] == 3 and (result["batch_size"], result["crop_points"]) == (2, 512)
    assert result["points_per_s"] == pytest.approx(2 * 2 * 512 / (2 * result["s_per_step"]))


def test_main_writes_one_json_per_size_and_fails_when_a_point_is_missed(tmp_path, monkeypatch):
    def fake_run_size(num_points, threads, steps):
        covered = num_points < 2_000_000
        peak = 1.0 + num_points * 300 / 2**30  # 300 bytes per point above a 1 GiB base
        return {"size": throughput.size_name(num_points), "points": num_points, "peak_rss_gib": peak,
                "command": "sparsevision benchmark pointcloud-throughput", "train": {"points_per_s": 10.0},
                "infer": {"points_per_s": 5.0, "every_point_predicted": covered, "peak_rss_gib": peak}}

    monkeypatch.setattr(throughput, "run_size", fake_run_size)
    assert throughput.main(quick=False, folder=tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["throughput-pointcloud-1M.json",
                                                          "throughput-pointcloud-2M.json"]
    big = json.loads((tmp_path / "throughput-pointcloud-2M.json").read_text())
    assert big["infer_rss_growth_bytes_per_point"] == pytest.approx(300)
    assert throughput.main(quick=True, folder=tmp_path / "quick") == 0
    row = json.loads((tmp_path / "quick" / "throughput-pointcloud-200k.json").read_text())
    assert row["command"].endswith("--quick")


@pytest.mark.slow
def test_each_measurement_runs_in_its_own_process(cache):
    row = throughput.run_size(5000, steps=3, overrides=SMALL, points_per_room=ROOM_POINTS, log=lambda _: None)
    assert row["size"] == "5k" and row["infer"]["every_point_predicted"]
    assert row["train"]["steps"] == 3 and row["within_rss_target"] and row["points"] == 5000
