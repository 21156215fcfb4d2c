"""Small valid files of every format the readers take, for the bad-input corpus and the fuzz tests.

Each ``ValidFiles`` method writes one valid file (or folder) with the project's own writers and
returns its path; a test then breaks it in one precise way and checks the reader's DataError.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.coco import write_coco
from datamodules.formats.detection_common import DetectionDataset, ImageRecord
from datamodules.formats.dsec import write_dsec_events, write_label_png
from datamodules.formats.event_npz import write_event_npz
from datamodules.formats.events_common import EventArray
from datamodules.formats.las import write_las
from datamodules.formats.npy_cloud import write_npz_cloud
from datamodules.formats.ply import write_ply
from datamodules.formats.pointcloud_scene import PointCloudScene, write_canonical
from datamodules.formats.prophesee_dat import write_dat
from datamodules.formats.s3dis import write_s3dis_room
from datamodules.formats.semantickitti import write_semantickitti_labels, write_semantickitti_scan
from datamodules.formats.voc import write_voc
from datamodules.formats.yolo import write_yolo
from vision.errors import DataError
from vision.labels.protocols import Ratio
from vision.labels.types import BoxLabels, DenseLabels
from vision.labels.weakfile import sparsify

NUM_POINTS = 12


def small_scene(n: int = NUM_POINTS) -> PointCloudScene:
    """``n`` points on a line, colours in [0, 1], labels 0..2 (3 classes), two instances."""
    rng = np.random.default_rng(0)
    return PointCloudScene(coords=np.column_stack([np.arange(n), rng.random(n), rng.random(n)]).astype(np.float64),
                           colors=rng.random((n, 3)).astype(np.float32),
                           intensity=rng.random(n).astype(np.float32) * 100,
                           semantic=(np.arange(n) % 3).astype(np.int64),
                           instance=(np.arange(n) // (n // 2)).astype(np.int64),
                           class_names=["floor", "wall", "chair"])


def small_events(n: int = 200, width: int = 32, height: int = 24) -> EventArray:
    """``n`` events over 20 ms on a ``width x height`` sensor, timestamps non-decreasing."""
    rng = np.random.default_rng(0)
    return EventArray.from_arrays(rng.integers(0, width, n), rng.integers(0, height, n),
                                  np.sort(rng.integers(0, 20_000, n)) + 1_000, rng.integers(0, 2, n),
                                  width, height, "small")


class ValidFiles:
    """Writers of small valid files under ``root`` (one method per format)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ point clouds
    def ply(self, name: str = "scene.ply", text: bool = False) -> Path:
        return write_ply(self.root / name, small_scene(), text=text)

    def las(self, name: str = "tile.las") -> Path:
        return write_las(self.root / name, small_scene())

    def npy(self, name: str = "cloud.npy", array: np.ndarray | None = None) -> Path:
        scene = small_scene()
        if array is None:  # x y z r g b label
            array = np.column_stack([scene.coords, scene.colors * 255, scene.semantic]).astype(np.float64)
        np.save(self.root / name, array)
        return self.root / name

    def npz(self, name: str = "cloud.npz", **arrays) -> Path:
        if not arrays:
            return write_npz_cloud(self.root / name, small_scene())
        np.savez(self.root / name, **arrays)
        return self.root / name

    def kitti(self, name: str = "000000") -> tuple[Path, Path]:
        scan = self.root / "velodyne" / f"{name}.bin"
        labels = self.root / "labels" / f"{name}.label"
        scan.parent.mkdir(parents=True, exist_ok=True)
        labels.parent.mkdir(parents=True, exist_ok=True)
        scene = small_scene()
        write_semantickitti_scan(scan, scene)
        write_semantickitti_labels(labels, scene.semantic)
        return scan, labels

    def s3dis_room(self, name: str = "office_1") -> Path:
        scene = small_scene()
        scene.class_names = None
        return write_s3dis_room(self.root / "Area_1" / name, scene)

    def scannet_vert(self, scene_id: str = "scene0000_00") -> Path:
        scene = small_scene()
        np.save(self.root / f"{scene_id}_vert.npy", np.column_stack([scene.coords, scene.colors * 255]))
        np.save(self.root / f"{scene_id}_sem_label.npy", scene.semantic + 1)  # NYU40 wall/floor/cabinet
        return self.root / f"{scene_id}_vert.npy"

    def canonical(self, name: str = "canonical_scene") -> Path:
        return write_canonical(small_scene(), self.root / name)

    # ------------------------------------------------------------------ events
    def dsec_h5(self, name: str = "events.h5") -> Path:
        write_dsec_events(self.root / name, small_events())
        return self.root / name

    def event_npz(self, name: str = "events.npz") -> Path:
        write_event_npz(self.root / name, small_events())
        return self.root / name

    def dat(self, name: str = "td.dat") -> Path:
        write_dat(self.root / name, small_events())
        return self.root / name

    def label_png(self, name: str = "000000.png", shape: tuple[int, int] = (24, 32)) -> Path:
        mask = (np.arange(shape[0] * shape[1]).reshape(shape) % 3).astype(np.int64)
        write_label_png(self.root / name, mask)
        return self.root / name

    def event_sequence(self, name: str = "seq_a", frames: int = 2) -> Path:
        """A flattened DSEC-Semantic sequence: ``events.h5``, ``labels/*.png``, ``timestamps.txt``."""
        folder = self.root / name
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        write_dsec_events(folder / "events.h5", small_events())
        for i in range(frames):
            ValidFiles(folder / "labels").label_png(f"{i:06d}.png")
        (folder / "timestamps.txt").write_text("".join(f"{6_000 + 6_000 * i}\n" for i in range(frames)))
        return folder

    # ------------------------------------------------------------------ detection
    def jpeg(self, name: str = "img.jpg", size: tuple[int, int] = (40, 30)) -> Path:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(self.root / name)
        return self.root / name

    def png(self, name: str = "img.png", size: tuple[int, int] = (40, 30)) -> Path:
        return self.jpeg(name, size)

    def detection_dataset(self, images: int = 2) -> DetectionDataset:
        """``images`` JPEGs of 40x30 under ``root/src_images`` with two boxes each, classes cat/dog."""
        folder = ValidFiles(self.root / "src_images")
        records = []
        for i in range(images):
            folder.jpeg(f"img{i}.jpg")
            boxes = BoxLabels(boxes=[[2, 3, 12, 13], [20, 5, 35, 25]], class_id=[0, 1])
            records.append(ImageRecord(str(i + 1), f"img{i}.jpg", 40, 30, boxes))
        return DetectionDataset(["cat", "dog"], records, folder.root)

    def coco(self, name: str = "coco") -> Path:
        """A COCO folder: ``annotations.json`` next to the images it names."""
        folder = self.root / name
        dataset = self.detection_dataset()
        write_coco(DetectionDataset(dataset.categories, dataset.images, dataset.images_root),
                   folder / "annotations.json")
        return folder / "annotations.json"

    def coco_data(self, name: str = "coco") -> tuple[Path, dict]:
        path = self.coco(name)
        return path, json.loads(path.read_text())

    def voc(self, name: str = "voc") -> Path:
        write_voc(self.detection_dataset(), self.root / name, split="train")
        return self.root / name

    def yolo(self, name: str = "yolo") -> Path:
        write_yolo(self.detection_dataset(), self.root / name)
        return self.root / name

    # ------------------------------------------------------------------ weak labels
    def full_labels(self, scenes: int = 2, shift: int = 0) -> list[tuple[str, DenseLabels]]:
        """Per-point labels of ``scenes`` scenes (``shift`` changes them: another dataset)."""
        return [(f"scene{i}", DenseLabels((np.arange(50) + i + shift) % 3)) for i in range(scenes)]

    def weak_file(self, name: str = "labels") -> Path:
        weak = sparsify(self.full_labels(), Ratio(0.2), seed=0, task="pointcloud")
        json_path, _ = weak.save(self.root / name)
        return json_path


@pytest.fixture
def valid(tmp_path) -> ValidFiles:
    """Writers of small valid files in a fresh temporary folder."""
    return ValidFiles(tmp_path / "valid")


@pytest.fixture(scope="session")
def valid_files_class() -> type[ValidFiles]:
    """The :class:`ValidFiles` class, for tests that make several folders (test modules cannot import it)."""
    return ValidFiles


def raises_data_error(read, path, reason: str) -> DataError:
    """Call ``read()``; assert it raises DataError naming ``path`` (the file itself, or a file inside the
    folder ``path``) with a reason matching the regex ``reason``. Returns the error."""
    with pytest.raises(DataError, match=reason) as info:
        read()
    err = info.value
    named, expected = Path(err.path).resolve(), Path(path).resolve()
    assert named == expected or expected in named.parents, f"error names {err.path}, expected {path}"
    assert str(err).startswith(err.path + ": ")
    assert "Traceback" not in err.reason
    return err


@pytest.fixture(scope="session")
def expect_data_error():
    """:func:`raises_data_error`: the check every bad-input case ends with."""
    return raises_data_error
