"""The "your own data" pages under docs/ do what they say: every command and Python block runs.

Each test makes tiny data in the user's format under the exact names its page uses (LAS tiles in
``my_scans/``, DSEC-layout recordings in ``my_recordings/``, a Pascal VOC folder in ``my_voc/``), then
runs the page's fenced blocks in order, in a temporary working directory that links ``configs/`` of
this repository:

* ```` ```bash ```` lines run verbatim: ``sparsevision ...`` in this process through
  :func:`vision.cli.main` (must return 0), anything else (``cp``) in a shell;
* ```` ```yaml ```` blocks are the lines the page tells the user to change in ``my.yaml``: they are
  merged into it, followed by the page's entry of :data:`TINY` (the one substitution: small models,
  data and schedules so that a page runs in seconds; it changes no path, class or label setting);
* ```` ```python ```` blocks are executed, sharing one namespace per page.

Afterwards the test checks what the page promises: the weak-label file, the checkpoint, the test
metric and the predictions in the user's own format.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

#: Test-only settings merged into ``my.yaml`` after the page's own edit (see the module docstring).
TRAINER = {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1, "limit_val_batches": 0,
           "enable_progress_bar": False, "enable_model_summary": False}
TINY = {
    "pointcloud": {
        "trainer": TRAINER,
        "model": {"init_args": {"rampup_steps": 1, "model": {"init_args": {
            "encoder_kwargs": {"dims": [8, 16, 32], "k": 8}, "head_kwargs": {"hidden": [32]}}}}},
        "data": {"init_args": {"crop_points": 512, "crops_per_epoch": 4, "batch_size": 2, "num_layers": 3, "k": 8,
                               "sub_ratios": [4, 4, 4], "voxel_size": 0.5, "num_workers": 0}},
    },
    "events": {
        "trainer": TRAINER,
        "model": {"init_args": {"rampup_steps": 1, "contrastive_pixels": 256, "queue_size": 16,
                                "model": {"init_args": {"base_channels": 4, "depth": 2}}}},
        "data": {"init_args": {"batch_size": 2, "num_workers": 0}},
    },
    "detection": {
        "trainer": TRAINER,
        "model": {"init_args": {"burn_in_steps": 1, "warmup_steps": 1, "model": {"init_args": {
            "min_size": 96, "max_size": 128}}}},
        "data": {"init_args": {"image_size": 96, "batch_size": 2, "num_workers": 0}},
    },
}


# --- running a page -----------------------------------------------------------------------------------

def fenced_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced block, in page order."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


def command_lines(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blank and comment-only lines dropped."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if shlex.split(line, comments=True)]


def deep_merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def run_command(line: str, workdir: Path) -> None:
    argv = shlex.split(line, comments=True)
    if argv[0] != "sparsevision":
        subprocess.run(line, shell=True, cwd=workdir, check=True)
        return
    from vision.cli import main

    try:
        code = main(argv[1:])
    except SystemExit as stop:  # --print_config and argparse errors exit
        code = stop.code or 0
    assert code == 0, f"`{line}` returned {code}"


def run_page(name: str, workdir: Path) -> dict:
    """Run every block of ``docs/<name>.md`` in ``workdir``; returns the Python blocks' namespace."""
    (workdir / "configs").symlink_to(REPO / "configs")
    namespace: dict = {"__name__": f"docs_{name}"}
    ran = {"bash": 0, "yaml": 0, "python": 0}
    for language, text in fenced_blocks(DOCS / f"{name}.md"):
        if language == "bash":
            for line in command_lines(text):
                run_command(line, workdir)
        elif language == "yaml":
            config_path = workdir / "my.yaml"
            config = yaml.safe_load(config_path.read_text())
            deep_merge(config, yaml.safe_load(text))
            deep_merge(config, TINY[name])
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        elif language == "python":
            exec(compile(text, f"docs/{name}.md", "exec"), namespace)  # noqa: S102 (the page's own example)
        else:
            continue
        ran[language] += 1
    assert all(ran.values()), f"docs/{name}.md: blocks run per kind {ran}"
    return namespace


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path


def metric_values(run_dir: Path, key: str) -> list[float]:
    values = []
    for metrics in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with metrics.open() as handle:
            values += [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]
    return values


@pytest.mark.parametrize("name", ["pointcloud", "events", "detection"])
def test_every_page_command_is_a_sparsevision_subcommand(name):
    from vision.cli import LIGHTNING_SUBCOMMANDS, TOOL_SUBCOMMANDS

    commands = [shlex.split(line, comments=True) for language, text in fenced_blocks(DOCS / f"{name}.md")
                if language == "bash" for line in command_lines(text)]
    used = {argv[1] for argv in commands if argv[0] == "sparsevision"}
    assert used >= {"sparsify", "fit", "test", "predict"}
    assert used <= set(LIGHTNING_SUBCOMMANDS) | set(TOOL_SUBCOMMANDS)
    assert {argv[0] for argv in commands} <= {"sparsevision", "cp"}


def test_command_lines_join_continuations_and_drop_comments():
    block = "# a comment\nsparsevision fit --config my.yaml \\\n  --trainer.max_epochs 1   # why\n\ncp a b\n"
    assert [shlex.split(c, comments=True) for c in command_lines(block)] == [
        ["sparsevision", "fit", "--config", "my.yaml", "--trainer.max_epochs", "1"], ["cp", "a", "b"]]


# --- point clouds: LAS tiles --------------------------------------------------------------------------

#: ASPRS classification codes of the tiles -> class ids, as docs/pointcloud.md maps them
LAS_CODES = {1: 0, 2: 1, 6: 2}


def write_las_tiles(root: Path, tiles: dict[str, int], points: int = 1500) -> None:
    """Tiles of ground (code 2), a building block (6) and scattered vegetation (1), 20 m x 20 m."""
    from datamodules.formats.las import write_las
    from datamodules.formats.pointcloud_scene import PointCloudScene

    for name, seed in tiles.items():
        rng = np.random.default_rng(seed)
        xy = rng.uniform(0, 20, (points, 2))
        semantic = np.ones(points, np.int64)  # ground
        building = (np.abs(xy - 10) < 4).all(1)
        semantic[building] = 2
        vegetation = rng.random(points) < 0.15
        semantic[vegetation & ~building] = 0
        z = np.where(building, 6.0, 0.0) + np.where(semantic == 0, rng.uniform(1, 5, points), 0.0)
        coords = np.column_stack([xy + [650_000.0, 6_860_000.0], z + 100.0])
        path = root / f"{name}.las"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_las(path, PointCloudScene(coords, semantic=semantic), class_map=LAS_CODES)


@pytest.mark.slow
def test_pointcloud_page(workdir):
    import laspy

    write_las_tiles(workdir / "my_scans", {"train/tile_a": 0, "train/tile_b": 1, "val/tile_c": 2, "test/tile_d": 3})
    namespace = run_page("pointcloud", workdir)

    assert (workdir / "my_scans_canonical" / "train" / "tile_a" / "coord.npy").is_file()
    assert (workdir / "my-0.1pct.weak.json").is_file() and (workdir / "my-0.1pct.weak.npz").is_file()
    run_dir = workdir / "outputs" / "runs" / "my"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    miou = metric_values(run_dir, "test/miou")
    assert miou and all(math.isfinite(v) and 0 <= v <= 1 for v in miou)
    original = laspy.read(workdir / "my_scans" / "test" / "tile_d.las")
    predicted = laspy.read(run_dir / "predictions" / "test" / "tile_d.pred.las")
    assert len(predicted.points) == len(original.points)
    assert set(np.unique(predicted.classification)) <= set(LAS_CODES)  # raw codes, not class ids
    assert predicted["confidence"].shape == (len(original.points),)
    assert list(run_dir.glob("pictures/*.png"))
    assert (workdir / "outputs" / "selftrain" / "my" / "round1.weak.json").is_file()
    assert 0 <= namespace["metrics"][0]["test/miou"] <= 1
    assert namespace["labels"].shape == (len(original.points),)


# --- events: DSEC-layout recordings, one of them as NPZ ------------------------------------------------

def write_recordings(root: Path, workdir: Path, recordings: dict[str, int]) -> None:
    """Simulated 1 s street drives on a 40x32 sensor in the DSEC-Semantic layout of docs/events.md.

    ``test/drive_3``'s events are written as ``drive_3.npz`` in ``workdir`` instead: the page's first
    Python block converts them.
    """
    from datamodules.formats.dsec import write_dsec_events, write_label_png
    from datamodules.formats.event_npz import write_event_npz
    from datamodules.synthetic.events_sim import simulate_sequence

    for name, seed in recordings.items():
        events, labels = simulate_sequence(seed, name, duration_s=1.0, height=32, width=40, label_interval_ms=200)
        semantic = root / name / "semantic" / "left"
        (semantic / "9classes" / "data").mkdir(parents=True)
        for i, (_, mask) in enumerate(labels):
            write_label_png(semantic / "9classes" / "data" / f"{i:06d}.png", mask)
        (semantic / "timestamps.txt").write_text("".join(f"{t}\n" for t, _ in labels))
        if name == "test/drive_3":
            write_event_npz(workdir / "drive_3.npz", events)
        else:
            (root / name / "events" / "left").mkdir(parents=True)
            write_dsec_events(root / name / "events" / "left" / "events.h5", events)


def write_labelled_images(images: Path, masks: Path) -> None:
    """One 40x32 image with two rectangles and its class-id mask (for ``convert images-to-events``)."""
    from PIL import Image

    image = np.full((32, 40, 3), 60, np.uint8)
    mask = np.zeros((32, 40), np.uint8)
    image[8:20, 5:18], mask[8:20, 5:18] = 200, 1
    image[18:28, 24:36], mask[18:28, 24:36] = 120, 2
    images.mkdir()
    masks.mkdir()
    Image.fromarray(image).save(images / "cells.png")
    Image.fromarray(mask).save(masks / "cells.png")


@pytest.mark.slow
def test_events_page(workdir):
    from datamodules.formats.dsec import read_label_png

    write_recordings(workdir / "my_recordings", workdir, {"train/drive_1": 1, "train/drive_2": 2, "test/drive_3": 3})
    write_labelled_images(workdir / "my_images", workdir / "my_masks")
    namespace = run_page("events", workdir)

    assert (workdir / "my_recordings" / "test" / "drive_3" / "events" / "left" / "events.h5").is_file()
    saccades = workdir / "my_saccades" / "cells"
    assert (saccades / "events.h5").is_file() and list((saccades / "labels").glob("*.png"))
    assert (workdir / "my-1pt.weak.json").is_file() and (workdir / "my-1pt.weak.npz").is_file()
    run_dir = workdir / "outputs" / "runs" / "my"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    miou = metric_values(run_dir, "test/miou")
    assert miou and all(math.isfinite(v) and 0 <= v <= 1 for v in miou)
    test_recording = workdir / "my_recordings" / "test" / "drive_3"
    labels = sorted((test_recording / "semantic" / "left" / "9classes" / "data").glob("*.png"))
    predictions = sorted((test_recording / "predictions").glob("*.png"))
    assert [p.name for p in predictions] == [p.name for p in labels]
    predicted = read_label_png(predictions[0], num_classes=9)
    assert predicted.shape == (32, 40) and 0 <= predicted.min() and predicted.max() < 9
    assert list(run_dir.glob("pictures/*.png"))
    assert namespace["grid"].shape == (5, 32, 40) and namespace["grid"].abs().sum() > 0
    assert namespace["frame"].shape == (32, 40)


# --- detection: a Pascal VOC folder ----------------------------------------------------------------------

DETECTION_CLASSES = ["star", "house", "car", "person", "tree", "bullseye"]


def write_voc_folder(root: Path, staging: Path, counts: dict[str, int]) -> None:
    """Synthetic scenes (96x128 JPEG) written as one VOC folder with a list per split."""
    from PIL import Image

    from datamodules.formats.detection_common import DetectionDataset, ImageRecord
    from datamodules.formats.voc import write_voc
    from datamodules.synthetic.detection_scenes import generate_image
    from vision.labels.types import BoxLabels

    staging.mkdir()
    for split, count in counts.items():
        records = []
        for index in range(count):
            image_id = f"{split}_{index:03d}"
            image, boxes, class_ids = generate_image(0, image_id, 96, 128)
            Image.fromarray(image).save(staging / f"{image_id}.jpg")
            records.append(ImageRecord(image_id, f"{image_id}.jpg", 128, 96, BoxLabels(boxes, class_ids)))
        write_voc(DetectionDataset(DETECTION_CLASSES, records, staging), root, split=split)


@pytest.mark.slow
def test_detection_page(workdir):
    from datamodules.formats.coco import read_coco
    from datamodules.formats.voc import read_voc

    write_voc_folder(workdir / "my_voc", workdir / "staging", {"train": 4, "val": 2, "test": 2})
    run_page("detection", workdir)

    assert len(read_coco(workdir / "my_coco" / "annotations.json").images) == 8
    assert (workdir / "my-drop50.weak.json").is_file() and (workdir / "my-drop50.weak.npz").is_file()
    run_dir = workdir / "outputs" / "runs" / "my"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    maps = metric_values(run_dir, "test/map_50")
    assert maps and all(math.isfinite(v) and -1 <= v <= 1 for v in maps)  # -1: no detections to score
    results = json.loads((run_dir / "predictions" / "test.results.json").read_text())
    assert isinstance(results, list) and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert list(run_dir.glob("pictures/*.png"))
    predicted = read_voc(workdir / "my_voc_predicted", split="test", class_names=DETECTION_CLASSES)
    assert [r.image_id for r in predicted.images] == ["test_000", "test_001"]
    confident = sum(r["score"] >= 0.5 for r in results)
    assert predicted.num_boxes == confident
