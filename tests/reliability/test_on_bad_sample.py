"""``on_bad_sample: raise | skip`` in the three DataModules.

``raise`` (the default) stops at the first bad file with its DataError; ``skip`` drops it at setup,
logs it, lists it in ``skipped_samples`` and reports the count to the trainer's loggers.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import h5py
import numpy as np
import plyfile
import pytest

from datamodules.bad_samples import SKIPPED_METRIC, BadSamples
from datamodules.detection import DetectionDataModule
from datamodules.events import EventSegmentationDataModule
from datamodules.pointcloud import PointCloudDataModule
from vision.errors import DataError


class RecordingLogger:
    """Stands in for a Lightning logger: keeps what ``log_metrics`` received."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((metrics, step))


def _trainer():
    return SimpleNamespace(loggers=[RecordingLogger()], global_step=0)


# ---------------------------------------------------------------------------------------------- point clouds
@pytest.fixture
def rooms(valid_files_class, tmp_path):
    """``train/`` with two good rooms and one whose coordinates hold a NaN, ``val/`` with one good room."""
    root = tmp_path / "rooms"
    for name in ("train/a.ply", "train/b.ply", "val/c.ply"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        valid_files_class(root).ply(name)
    vertex = np.array([(0.0, 0.0, 0.0), (np.nan, 1.0, 0.0)], dtype=[("x", "f8"), ("y", "f8"), ("z", "f8")])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(root / "train" / "broken.ply"))
    return root


def test_pointcloud_raise_stops_at_the_bad_scene(rooms, expect_data_error):
    datamodule = PointCloudDataModule(data_root=str(rooms), class_names=["floor", "wall", "chair"])
    expect_data_error(lambda: datamodule.setup("fit"), rooms / "train" / "broken.ply", "NaN or infinite coordinates")


def test_pointcloud_skip_drops_logs_and_counts_the_bad_scene(rooms, caplog):
    datamodule = PointCloudDataModule(data_root=str(rooms), class_names=["floor", "wall", "chair"],
                                      on_bad_sample="skip")
    datamodule.trainer = _trainer()
    with caplog.at_level(logging.WARNING, logger="datamodules.pointcloud"):
        datamodule.setup("fit")
    assert [scene.scene_id for scene in datamodule.scenes("train")] == ["train/a", "train/b"]
    assert [scene.scene_id for scene in datamodule.scenes("val")] == ["val/c"]
    assert len(datamodule.skipped_samples) == 1
    path, reason = datamodule.skipped_samples[0]
    assert path.endswith("broken.ply") and reason.startswith("NaN or infinite coordinates")
    assert f"skipping {path}: NaN or infinite coordinates" in caplog.text
    assert "skipped 1 bad sample(s)" in caplog.text
    assert datamodule.trainer.loggers[0].metrics == [({SKIPPED_METRIC: 1.0}, 0)]
    assert [scene_id for scene_id, _ in datamodule.full_labels("train")] == ["train/a", "train/b"]


def test_pointcloud_skip_with_every_scene_bad_still_fails(rooms, expect_data_error):
    for name in ("a.ply", "b.ply"):
        (rooms / "train" / name).write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    datamodule = PointCloudDataModule(data_root=str(rooms), class_names=["floor", "wall", "chair"],
                                      on_bad_sample="skip")
    expect_data_error(lambda: datamodule.scenes("train"), rooms, r"no usable scenes for split 'train' \(3 skipped")


# ---------------------------------------------------------------------------------------------- events
@pytest.fixture
def recordings(valid_files_class, tmp_path):
    """``train/`` with a good recording, one whose timestamps go back, and one with a truncated label PNG."""
    root = tmp_path / "recordings"
    for split, name in (("train", "seq_a"), ("train", "seq_b"), ("train", "seq_c"), ("val", "seq_v")):
        valid_files_class(root / split).event_sequence(name)
    with h5py.File(root / "train" / "seq_b" / "events.h5", "r+") as handle:
        t = handle["events/t"][:]
        t[40] = t[-1] + 10  # event 40 jumps ahead of event 41
        del handle["events/t"]
        handle.create_dataset("events/t", data=t)
    label = root / "train" / "seq_c" / "labels" / "000001.png"
    label.write_bytes(label.read_bytes()[:50])
    return root


def test_events_raise_stops_at_the_bad_recording(recordings, expect_data_error):
    datamodule = EventSegmentationDataModule(data_root=str(recordings), num_classes=3)
    datamodule.setup("fit")  # raise mode reads events lazily: the bad window fails when it is sliced
    frames = datamodule.frames("train")
    assert len(frames) == 6
    expect_data_error(lambda: datamodule.frames("train")[3].sequence.events.read_all(),
                      recordings / "train" / "seq_b" / "events.h5", "timestamps decrease at event 41")
    expect_data_error(lambda: frames[5].labels(), recordings / "train" / "seq_c" / "labels" / "000001.png",
                      "cannot read label PNG")


def test_events_skip_drops_the_bad_recording_and_the_bad_frame(recordings, caplog):
    datamodule = EventSegmentationDataModule(data_root=str(recordings), num_classes=3, on_bad_sample="skip")
    datamodule.trainer = _trainer()
    with caplog.at_level(logging.WARNING, logger="datamodules.events"):
        datamodule.setup("fit")
    assert [frame.sample_id for frame in datamodule.frames("train")] == [
        "train/seq_a/000000", "train/seq_a/000001", "train/seq_c/000000"]
    skipped = dict(datamodule.skipped_samples)
    assert sorted(p.split("recordings/")[1] for p in skipped) == ["train/seq_b/events.h5",
                                                                  "train/seq_c/labels/000001.png"]
    assert "skipped 2 bad sample(s)" in caplog.text
    assert datamodule.trainer.loggers[0].metrics == [({SKIPPED_METRIC: 2.0}, 0)]


# ---------------------------------------------------------------------------------------------- detection
@pytest.fixture
def coco_with_bad_images(valid_files_class, tmp_path):
    """A COCO split of three images: one fine, one corrupt, one missing."""
    files = valid_files_class(tmp_path / "detection")
    dataset = files.detection_dataset(images=3)
    from datamodules.formats.coco import write_coco

    write_coco(dataset, files.root / "coco" / "annotations.json")
    (files.root / "src_images" / "img1.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    (files.root / "src_images" / "img2.jpg").unlink()
    return files.root


def test_detection_raise_stops_at_the_missing_image(coco_with_bad_images, expect_data_error):
    datamodule = DetectionDataModule(data_root=str(coco_with_bad_images), splits={"train": "coco/annotations.json"})
    expect_data_error(lambda: datamodule.dataset("train"), coco_with_bad_images / "src_images" / "img2.jpg",
                      "image file not found")


def test_detection_skip_keeps_only_the_readable_image(coco_with_bad_images, caplog):
    split = {name: "coco/annotations.json" for name in ("train", "val")}
    datamodule = DetectionDataModule(data_root=str(coco_with_bad_images), splits=split, on_bad_sample="skip")
    datamodule.trainer = _trainer()
    with caplog.at_level(logging.WARNING, logger="datamodules.detection"):
        datamodule.setup("fit")
    assert [record.file_name for record in datamodule.dataset("train").images] == ["../src_images/img0.jpg"]
    reasons = {path.rsplit("/", 1)[1]: reason for path, reason in datamodule.skipped_samples}
    assert reasons["img2.jpg"].startswith("image file not found")
    assert reasons["img1.jpg"].startswith("corrupt or truncated image")
    assert len(reasons) == 2 and "skipped 2 bad sample(s)" in caplog.text
    assert datamodule.trainer.loggers[0].metrics == [({SKIPPED_METRIC: 2.0}, 0)]
    item = datamodule.images("train", training=True)[0]
    assert item["image_id"] == "1" and item["boxes"].shape == (2, 4)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="on_bad_sample must be 'raise' or 'skip', got 'ignore'"):
        BadSamples("ignore", logging.getLogger("test"))


def test_raise_policy_re_raises_the_data_error():
    bad = BadSamples("raise", logging.getLogger("test"))
    with pytest.raises(DataError, match="a.ply: empty"):
        bad.attempt(lambda: (_ for _ in ()).throw(DataError("a.ply", "empty")))
    assert bad.skipped == []
