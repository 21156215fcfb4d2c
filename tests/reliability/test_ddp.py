"""Every task trains and tests under DDP (2 CPU processes, gloo) and scores like a single process.

One driver subprocess (``ddp_driver.py``) runs ``fit`` then ``test`` of all four tasks at tiny sizes
with ``--trainer.strategy ddp --trainer.devices 2``. Each test split has an odd number of samples, so
Lightning's default padding sampler would score one sample twice; with the non-padding evaluation
sampler the 2-process test metrics must equal a 1-process test of the same checkpoint. Both ranks
must also have trained on the same weak labels (digest of what each rank loaded).

A tiny detector scores mAP 0 after a few steps, so the detection job alone cannot show that images
are counted once; a separate job syncs the project's mAP metric over ranks holding 3 and 2 images of
hand-made predictions and compares it with one process scoring all 5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.distributed import weak_label_digest
from vision.metrics.detection import MeanAveragePrecision

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("ddp_driver.py")

#: ``sparsevision fit`` options of each task at test size; test splits are odd-sized on purpose.
JOBS = {
    "toy": ["--config", "tests/configs/tiny-weak.yaml", "--trainer.max_epochs=1",
            "--data.init_args.num_val=3", "--data.init_args.num_test=5"],
    "pointcloud": [
        "--config", "configs/pointcloud/sqn-synthetic-0.1pct.yaml", "--trainer.max_epochs=1",
        "--data.init_args.synthetic={num_train: 2, num_val: 2, num_test: 3, points_per_room: [3000, 4000]}",
        "--data.init_args.crop_points=512", "--data.init_args.crops_per_epoch=8", "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0", "--data.init_args.num_layers=3", "--data.init_args.k=8",
        "--data.init_args.sub_ratios=[4, 4, 4]",
        "--model.init_args.model.init_args.encoder_kwargs={dims: [8, 16, 32], k: 8}",
        "--model.init_args.model.init_args.head_kwargs={hidden: [32], k: 3}"],
    "events": [
        "--config", "configs/events/evwsss-synthetic-1pt.yaml", "--trainer.max_epochs=1",
        "--data.init_args.synthetic={num_train: 2, num_val: 1, num_test: 1, height: 32, width: 40, duration_s: 0.8}",
        "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
        "--model.init_args.model.init_args.base_channels=4", "--model.init_args.model.init_args.depth=2"],
    "detection": [
        "--config", "configs/detection/fcos-synthetic-drop50.yaml", "--trainer.max_epochs=1",
        "--data.init_args.synthetic={num_train: 8, num_val: 3, num_test: 5, height: 64, width: 64}",
        "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
        "--model.init_args.model.init_args.min_size=64", "--model.init_args.model.init_args.max_size=64",
        "--model.init_args.model.init_args.fpn_channels=64"],
}


def detection_images(count: int = 5, seed: int = 0) -> list[dict]:
    """Per image: 1-3 true boxes and predictions (jittered true boxes plus false positives) with scores."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        n = int(rng.integers(1, 4))
        corners = rng.uniform(0, 40, (n, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(8, 20, (n, 2))], axis=1)
        labels = rng.integers(0, 2, n)
        found = boxes + rng.normal(0, 2.0, boxes.shape)
        false = rng.uniform(0, 30, (2, 2))
        predicted = np.concatenate([found, np.concatenate([false, false + 10], axis=1)])
        images.append({"target": {"boxes": boxes.tolist(), "labels": labels.tolist()},
                       "pred": {"boxes": predicted.tolist(), "scores": rng.uniform(0.05, 1.0, n + 2).tolist(),
                                "labels": np.concatenate([labels, rng.integers(0, 2, 2)]).tolist()}})
    return images


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Run the driver once for all jobs; ``{job: (run_dir, [rank0 record, rank1 record])}``."""
    root = tmp_path_factory.mktemp("ddp")
    jobs = [{"name": name, "args": args, "run_dir": str(root / name)} for name, args in JOBS.items()]
    (root / "map_inputs.json").write_text(json.dumps(detection_images()))
    jobs.append({"name": "map_sync", "map_inputs": str(root / "map_inputs.json"), "run_dir": str(root / "map_sync")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "SPARSEVISION_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(DRIVER), str(root / "jobs.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    runs = {}
    for job in jobs:
        run_dir = Path(job["run_dir"])
        runs[job["name"]] = (run_dir, [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)])
    return runs, root / "cache"


@pytest.mark.slow
@pytest.mark.parametrize("task", list(JOBS))
def test_two_process_test_metrics_equal_one_process_on_the_same_checkpoint(ddp_runs, task, monkeypatch):
    from vision.cli import build_cli

    runs, cache = ddp_runs
    run_dir, ranks = runs[task]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # synced metrics: every rank reports the same numbers

    monkeypatch.setenv("SPARSEVISION_CACHE", str(cache))
    single = build_cli([*JOBS[task], "--run_dir", str(run_dir / "single"), "--trainer.devices=1",
                        "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.logger=false"])
    expected = single.trainer.test(single.model, datamodule=single.datamodule, ckpt_path=ranks[0]["checkpoint"],
                                   verbose=False)[0]
    main_key = {"detection": "test/map"}.get(task, "test/miou")
    assert main_key in ranks[0]["metrics"]
    assert ranks[0]["metrics"].keys() == expected.keys()
    for key, value in expected.items():
        assert ranks[0]["metrics"][key] == pytest.approx(float(value), abs=1e-6), key

    # both ranks trained on the weak labels a single process loads from the same cache
    assert ranks[0]["weak_sha256"] == ranks[1]["weak_sha256"]
    assert ranks[0]["weak_sha256"] == weak_label_digest(single.datamodule.weak_label_set())
    assert ranks[0]["weak_sha256"] != weak_label_digest(None)  # every job trains from weak labels


@pytest.mark.slow
def test_map_of_ranks_with_uneven_image_counts_equals_one_process(ddp_runs):
    runs, _ = ddp_runs
    ranks = runs["map_sync"][1]
    assert [r["images"] for r in ranks] == [3, 2]  # what the non-padding sampler gives 5 images on 2 ranks
    single = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    for image in detection_images():
        single.update([{k: torch.tensor(v) for k, v in image["pred"].items()}],
                      [{k: torch.tensor(v) for k, v in image["target"].items()}])
    expected = {k: float(v) for k, v in single.compute().items() if v.numel() == 1}
    assert 0.1 < expected["map_50"] < 1.0  # neither trivial nor perfect: a lost or repeated image shows
    for rank in ranks:
        assert rank["map"] == pytest.approx(expected, abs=1e-6)
