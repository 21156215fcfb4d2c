"""Point-cloud throughput and big-scene memory: training points/s, inference points/s, peak RSS.

    sparsevision benchmark pointcloud-throughput [--quick] [--threads 1]

A big scene of ``N`` points (1M and 2M; ``--quick``: 200k) is a floor of procedural rooms
(:func:`datamodules.synthetic.rooms.generate_room`, about 60k points each) tiled side by side, so
the grid-subsampled cloud grows with ``N`` as a real building scan does (one room scanned more
densely would not). It is written once as a PLY into the generated-data cache and read back by the
same reader as real data. The model and data options are those of
``configs/pointcloud/sqn-synthetic-0.1pct.yaml`` (SQN, 4096-point crops, 2 views, EMA teacher, 0.1%
labels), with ``num_workers: 0`` so that all work and memory stay in one process.

Each measurement runs in a fresh subprocess, so the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of one never includes another's:

* ``train``: ``trainer.fit`` for a few steps on the scene; points/s = crop points of the steps after
  the first (warm-up) over their wall time, data loading included (each crop has two views; a point
  is counted once);
* ``infer``: what ``sparsevision predict`` does: read, grid-subsample and index the scene, then
  ``trainer.predict`` (coverage voting crop by crop, :func:`datamodules.pointcloud_crops.predict_scene`)
  with the prediction writer putting labels back into a PLY. Every original point must get a
  prediction: a point that no crop covered would have all-zero probabilities (confidence 0).

Peak RSS is reported beside the RSS after imports and model construction (the part that does not
depend on the scene); the slope of the inference peak between the two sizes is the memory each extra
point costs (``infer_rss_growth_bytes_per_point``). The issue's target is a peak under 4 GiB at 2M
points. Rows go to ``<folder>/throughput-pointcloud-<size>.json``
(``docs/benchmarks/``; ``--quick``: ``outputs/benchmarks-quick/``), one file per size, written as
soon as that size is done.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from vision.benchmarks.common import write_json_atomically

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "pointcloud" / "sqn-synthetic-0.1pct.yaml"
SIZES = (1_000_000, 2_000_000)
QUICK_SIZES = (200_000,)
TRAIN_STEPS, QUICK_TRAIN_STEPS = 8, 3
RSS_TARGET_GIB = 4.0
POINTS_PER_ROOM = (50_000, 70_000)
ROOM_GAP_M = 0.5
TILED_VERSION = 1


def size_name(num_points: int) -> str:
    """``2M``, ``200k``, ``1500``: the size in a file name."""
    if num_points % 1_000_000 == 0:
        return f"{num_points // 1_000_000}M"
    return f"{num_points // 1000}k" if num_points % 1000 == 0 else str(num_points)


def tiled_rooms(num_points: int, seed: int = 0,
                points_per_room: tuple[int, int] = POINTS_PER_ROOM) -> dict[str, np.ndarray]:
    """Exactly ``num_points`` points of procedural rooms laid out on a grid, ``gap`` metres apart.

    Returns the arrays of :func:`~datamodules.synthetic.rooms.generate_room` (``coords (N, 3)`` float32,
    ``colors (N, 3)`` uint8, ``semantic (N,)``, ``instance (N,)`` int32, instances unique over the
    floor). The last room is cut to a random subset of its points to hit ``num_points``.
    """
    from datamodules.synthetic.rooms import generate_room
    from vision.labels.seeding import sample_rng

    rooms, total = [], 0
    while total < num_points:
        room = generate_room(seed, f"tile_{len(rooms):04d}", points_per_room=points_per_room)
        rooms.append(room)
        total += len(room["coords"])
    per_row = max(1, int(np.ceil(np.sqrt(len(rooms)))))
    parts: dict[str, list[np.ndarray]] = {key: [] for key in rooms[0]}
    x = y = row_depth = 0.0
    instance_offset = 0
    for i, room in enumerate(rooms):
        if i and i % per_row == 0:  # next row of rooms
            x, y, row_depth = 0.0, y + row_depth + ROOM_GAP_M, 0.0
        extent = room["coords"].max(0) - room["coords"].min(0)
        coords = room["coords"] - room["coords"].min(0) + np.array([x, y, 0.0], np.float32)
        x, row_depth = x + float(extent[0]) + ROOM_GAP_M, max(row_depth, float(extent[1]))
        parts["coords"].append(coords.astype(np.float32))
        parts["colors"].append(room["colors"])
        parts["semantic"].append(room["semantic"])
        parts["instance"].append(room["instance"] + instance_offset)
        instance_offset += int(room["instance"].max(initial=-1)) + 1
    cloud = {key: np.concatenate(value) for key, value in parts.items()}
    excess = total - num_points
    if excess:
        last = len(rooms[-1]["coords"])
        drop = sample_rng(seed, "tiled-cut").choice(last, excess, replace=False) + (total - last)
        keep = np.ones(total, bool)
        keep[drop] = False
        cloud = {key: value[keep] for key, value in cloud.items()}
    return cloud


def ensure_tiled_scene(num_points: int, seed: int = 0, points_per_room: tuple[int, int] = POINTS_PER_ROOM) -> Path:
    """The cached folder holding ``scene.ply`` with :func:`tiled_rooms` (generated on first use)."""
    from datamodules.synthetic.cache import build_once, dataset_dir
    from datamodules.synthetic.rooms import write_room_ply

    params = {"num_points": int(num_points), "points_per_room": [int(v) for v in points_per_room]}
    target = dataset_dir("pointcloud", "tiled-rooms", TILED_VERSION, seed, params)

    def build(folder: Path) -> None:
        write_room_ply(folder / "scene.ply", tiled_rooms(num_points, seed, tuple(points_per_room)))

    return build_once(target, build, params=params)


def scene_overrides(scene_dir: Path) -> list[str]:
    """LightningCLI options reading ``scene_dir/scene.ply`` as every split, in one process."""
    from datamodules.synthetic.rooms import ROOM_CLASSES

    return [f"--data.init_args.data_root={scene_dir}",
            "--data.init_args.splits={train: [scene.ply], val: [scene.ply], test: [scene.ply]}",
            f"--data.init_args.class_names=[{', '.join(ROOM_CLASSES)}]", "--data.init_args.num_workers=0"]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes


def _build(scene_dir: Path, overrides: list[str]):
    from vision.cli import build_cli

    cli = build_cli(["--config", str(CONFIG), *scene_overrides(scene_dir), *overrides])
    return cli.model, cli.datamodule


def _trainer(**kwargs):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def measure_training(scene_dir: Path, steps: int, overrides: Optional[list[str]] = None) -> dict:
    """Fit ``steps`` steps on the scene; crop points per second after the first step."""
    from lightning.pytorch.callbacks import Callback

    model, datamodule = _build(scene_dir, overrides or [])
    baseline = _rss_gib()

    class StepClock(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append(time.perf_counter())

    clock, start = StepClock(), time.perf_counter()
    _trainer(max_steps=steps, limit_val_batches=0, callbacks=[clock]).fit(model, datamodule=datamodule)
    if len(clock.ends) < 2:
        raise ValueError(f"need at least 2 training steps to time, got {len(clock.ends)}")
    options = datamodule.hparams
    points = (len(clock.ends) - 1) * options.batch_size * options.crop_points
    seconds = clock.ends[-1] - clock.ends[0]
    return {"steps": len(clock.ends), "batch_size": options.batch_size, "crop_points": options.crop_points,
            "num_views": options.num_views, "points_per_s": points / seconds,
            "s_per_step": seconds / (len(clock.ends) - 1),
            "setup_and_first_step_s": clock.ends[0] - start, "baseline_rss_gib": baseline, "peak_rss_gib": _rss_gib()}


def measure_inference(scene_dir: Path, overrides: Optional[list[str]] = None) -> dict:
    """Read, subsample and predict the whole scene as ``sparsevision predict`` does; check coverage."""
    import torch

    with tempfile.TemporaryDirectory(prefix="throughput-predictions-") as out:
        model, datamodule = _build(scene_dir, [f"--model.init_args.prediction_dir={out}", *(overrides or [])])
        baseline = _rss_gib()
        start = time.perf_counter()
        scene = datamodule.scenes("test")[0]  # cached: predict reuses it
        prepared = time.perf_counter()
        outputs = _trainer().predict(model, datamodule=datamodule)
        done = time.perf_counter()
        written = sorted(p.name for p in Path(out).rglob("*.pred.*"))
    confidence = torch.cat([c for batch in outputs for c in batch["confidence"]])
    num_points = int(len(scene.inverse))
    return {"points": num_points, "sub_points": scene.num_points, "prepare_s": prepared - start,
            "predict_s": done - prepared, "points_per_s": num_points / (done - start),
            "predict_points_per_s": num_points / (done - prepared),
            "predicted_points": int(confidence.numel()), "uncovered_points": int((confidence <= 0).sum()),
            "every_point_predicted": bool(confidence.numel() == num_points and (confidence > 0).all()),
            "written": written, "baseline_rss_gib": baseline, "peak_rss_gib": _rss_gib()}


def measure_in_subprocess(kind: str, scene_dir: Path, threads: int, steps: int = TRAIN_STEPS,
                          overrides: Optional[list[str]] = None) -> dict:
    """Run :func:`measure_training` (``train``) or :func:`measure_inference` (``infer``) in a fresh process."""
    command = [sys.executable, "-m", "vision.benchmarks.throughput", kind, str(scene_dir), "--threads", str(threads),
               "--steps", str(steps), "--overrides", json.dumps(overrides or [])]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(num_points: int, threads: int = 1, steps: int = TRAIN_STEPS, seed: int = 0,
             overrides: Optional[list[str]] = None, points_per_room: tuple[int, int] = POINTS_PER_ROOM,
             log=print) -> dict:
    """One row: generate (or reuse) the scene, then the ``train`` and ``infer`` measurements."""
    start = time.perf_counter()
    scene_dir = ensure_tiled_scene(num_points, seed, points_per_room)
    log(f"[throughput] {size_name(num_points)} points: scene {scene_dir} ({time.perf_counter() - start:.0f} s)")
    train = measure_in_subprocess("train", scene_dir, threads, steps, overrides)
    log(f"[throughput]   train {train['points_per_s']:,.0f} points/s, peak RSS {train['peak_rss_gib']:.2f} GiB")
    infer = measure_in_subprocess("infer", scene_dir, threads, steps, overrides)
    log(f"[throughput]   infer {infer['points_per_s']:,.0f} points/s, peak RSS {infer['peak_rss_gib']:.2f} GiB, "
        f"every point predicted: {infer['every_point_predicted']}")
    peak = max(train["peak_rss_gib"], infer["peak_rss_gib"])
    return {"benchmark": "pointcloud-throughput", "size": size_name(num_points), "points": num_points,
            "config": str(CONFIG.relative_to(REPO)), "overrides": list(overrides or []), "threads": threads,
            "train": train, "infer": infer, "peak_rss_gib": peak, "rss_target_gib": RSS_TARGET_GIB,
            "within_rss_target": peak < RSS_TARGET_GIB,
            "infer_rss_above_baseline_gib": infer["peak_rss_gib"] - infer["baseline_rss_gib"],
            "command": f"sparsevision benchmark pointcloud-throughput --threads {threads}",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "wall_s": round(time.perf_counter() - start, 1)}


def main(quick: bool = False, folder: Path = Path("docs") / "benchmarks", threads: int = 1) -> int:
    """``sparsevision benchmark pointcloud-throughput``: every size, one JSON each; 1 if a check failed."""
    failed, previous = False, None
    for num_points in QUICK_SIZES if quick else SIZES:
        row = run_size(num_points, threads, QUICK_TRAIN_STEPS if quick else TRAIN_STEPS)
        if quick:
            row["command"] += " --quick"
        if previous is not None:  # memory per extra point: the slope of the inference peak between sizes
            row["infer_rss_growth_bytes_per_point"] = ((row["infer"]["peak_rss_gib"] - previous["infer"]["peak_rss_gib"])
                                                       * 2**30 / (row["points"] - previous["points"]))
        previous = row
        path = Path(folder) / f"throughput-pointcloud-{row['size']}.json"
        write_json_atomically(path, row)
        print(f"{row['size']}: train {row['train']['points_per_s']:,.0f} points/s, infer "
              f"{row['infer']['points_per_s']:,.0f} points/s, peak RSS {row['peak_rss_gib']:.2f} GiB -> {path}")
        failed |= not row["infer"]["every_point_predicted"]
    return 1 if failed else 0


def _measure_main(argv: list[str]) -> int:
    """Entry point of the measurement subprocess: prints one JSON line."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(prog="python -m vision.benchmarks.throughput")
    parser.add_argument("kind", choices=["train", "infer"])
    parser.add_argument("scene_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--overrides", default="[]", help="JSON list of extra LightningCLI options")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    if args.kind == "train":
        result = measure_training(args.scene_dir, args.steps, overrides)
    else:
        result = measure_inference(args.scene_dir, overrides)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_measure_main(sys.argv[1:]))
