"""Demo pictures per task: what the labels were, what the sparse and full models predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vision.labels.types import IGNORE_INDEX


def pointcloud_pictures(models: dict, out: Path) -> list[Path]:
    """A training room with its full and sparse labels, and a test room with each model's prediction.

    ``models``: panel name -> LightningCLI (the first one's datamodule gives the data and weak labels).
    """
    from vision.viz.pointcloud import render_point_cloud_panels

    first = next(iter(models.values()))
    datamodule, names = first.datamodule, first.model.class_names
    pictures = []
    train_scene = datamodule.scenes("train")[0]
    weak = datamodule.weak[train_scene.scene_id] if datamodule.weak is not None else None
    coords = _original_coords(datamodule, "train", 0)
    sparse = np.full(len(train_scene.full_labels), IGNORE_INDEX, np.int64)
    if weak is not None:
        sparse[weak.index] = weak.class_id
    with torch.no_grad():
        predicted = first.model.scene_probabilities(train_scene).argmax(1).numpy()
    pictures.append(render_point_cloud_panels(
        coords, {"full labels (not used)": train_scene.full_labels,
                 f"sparse labels given ({int((sparse != IGNORE_INDEX).sum())} points)": sparse,
                 f"prediction ({next(iter(models))})": predicted},
        names, out / "pointcloud-train-room.png", sparse_points=None if weak is None else weak.index,
        overwrite=True))
    test_scene = datamodule.scenes("test")[0]
    panels = {"test room: full labels": test_scene.full_labels}
    with torch.no_grad():
        for name, cli in models.items():
            panels[f"prediction ({name})"] = cli.model.scene_probabilities(test_scene).argmax(1).numpy()
    pictures.append(render_point_cloud_panels(_original_coords(datamodule, "test", 0), panels, names,
                                              out / "pointcloud-test-room.png", overwrite=True))
    return pictures


def _original_coords(datamodule, split: str, index: int) -> np.ndarray:
    return datamodule.read_scene(datamodule.scene_files(split)[index]).coords


def events_pictures(models: dict, out: Path) -> list[Path]:
    """A training frame with its point labels, and a test frame, each with every model's prediction."""
    from datamodules.events import EventFrames
    from vision.viz.events import event_frame_image, render_event_panels

    first = next(iter(models.values()))
    datamodule, names = first.datamodule, first.model.class_names
    pictures = []
    for split, kind in (("train", "train-frame"), ("test", "test-frame")):
        frame = datamodule.frames(split)[len(datamodule.frames(split)) // 2]
        item = EventFrames([frame], datamodule.num_classes, datamodule.windows, False)[0]
        height, width = item["labels"].shape
        events = frame.sequence.events.slice_time(frame.time_us - datamodule.windows.window_us, frame.time_us)
        keep = events.y < height
        image = event_frame_image(events.x[keep], events.y[keep], events.p[keep], height, width)
        panels = {f"{split} frame: full labels": item["labels"].numpy()}
        points = None
        if split == "train" and datamodule.weak is not None:
            weak = datamodule.weak[frame.sample_id]
            panels["point labels given"] = np.full((height, width), IGNORE_INDEX, np.int64)
            points = {"point labels given": weak}
        with torch.no_grad():
            for name, cli in models.items():
                logits = cli.model.model.eval()(item["voxel"][None])["logits"]
                panels[f"prediction ({name})"] = logits.argmax(1)[0].numpy()
        pictures.append(render_event_panels(image, panels, names, out / f"events-{kind}.png", points=points,
                                            overwrite=True))
    return pictures



def detection_pictures(models: dict, out: Path) -> list[Path]:
    """A training image with its full and kept boxes, and a test image, each with every model's detections."""
    from vision.viz.detection import render_detection_panels

    first = next(iter(models.values()))
    datamodule, names = first.datamodule, first.model.hparams.class_names
    pictures = []
    for split in ("train", "test"):
        evaluation = datamodule.images(split, training=False)
        item = evaluation[0]
        image = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        panels = {f"{split} image: full boxes": {"boxes": item["boxes"].numpy(), "labels": item["labels"].numpy()}}
        if split == "train" and datamodule.weak is not None:
            given = datamodule.images(split, training=True).labels_of(evaluation.dataset.images[0])[0]
            scale = float(np.asarray(item["scale"]).reshape(-1)[0])
            panels[f"boxes given ({len(given)} of {len(item['labels'])})"] = {
                "boxes": given.boxes * scale, "labels": given.class_id}
        for name, cli in models.items():
            detections = cli.model.detect([item["image"]])[0]
            panels[f"prediction ({name})"] = {key: detections[key].numpy()
                                                     for key in ("boxes", "labels", "scores")}
        pictures.append(render_detection_panels(image, panels, names, out / f"detection-{split}-image.png",
                                                overwrite=True))
    return pictures
