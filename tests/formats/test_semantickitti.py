"""SemanticKITTI .bin scans and .label files, with the learning map from semantic-kitti.yaml."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import PointCloudScene
from datamodules.formats.semantickitti import (
    load_learning_map,
    read_semantickitti_scan,
    write_semantickitti_labels,
    write_semantickitti_scan,
)
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

# A cut-down semantic-kitti.yaml with the standard keys and ids (car 10, road 40, outlier 1 -> unlabeled).
KITTI_YAML = """\
labels:
  0: "unlabeled"
  1: "outlier"
  10: "car"
  40: "road"
  252: "moving-car"
learning_map:
  0: 0
  1: 0
  10: 1
  40: 2
  252: 1
learning_map_inv:
  0: 0
  1: 10
  2: 40
learning_ignore:
  0: true
  1: false
  2: false
"""


def make_sequence(root, raw_semantic=(10, 40, 252, 0), instance=(3, 0, 4, 0)):
    """sequences/00/velodyne/000000.bin + labels/000000.label with 4 points."""
    velodyne = root / "sequences" / "00" / "velodyne"
    labels = root / "sequences" / "00" / "labels"
    velodyne.mkdir(parents=True)
    labels.mkdir()
    scene = PointCloudScene(coords=np.array([[1.5, -2.0, 0.25], [10.0, 0.5, -1.75], [3.0, 3.0, 0.0],
                                             [-8.0, 4.5, 1.0]]),
                            intensity=np.array([0.25, 0.5, 0.0, 1.0], dtype=np.float32))
    write_semantickitti_scan(velodyne / "000000.bin", scene)
    write_semantickitti_labels(labels / "000000.label", np.array(raw_semantic), np.array(instance))
    return velodyne / "000000.bin"


def test_scan_round_trip_with_raw_labels(tmp_path):
    bin_path = make_sequence(tmp_path)
    assert bin_path.stat().st_size == 4 * 16
    packed = np.fromfile(bin_path.parent.parent / "labels" / "000000.label", dtype="<u4")
    assert packed.tolist() == [10 + (3 << 16), 40, 252 + (4 << 16), 0]  # instance in the upper 16 bits
    scene = read_point_cloud(bin_path)  # finds labels/ beside velodyne/
    assert scene.coords.tolist() == [[1.5, -2.0, 0.25], [10.0, 0.5, -1.75], [3.0, 3.0, 0.0], [-8.0, 4.5, 1.0]]
    assert scene.intensity.tolist() == [0.25, 0.5, 0.0, 1.0]
    assert scene.semantic.tolist() == [10, 40, 252, 0]
    assert scene.instance.tolist() == [3, 0, 4, 0]


def test_learning_map_from_yaml_drops_the_ignored_class(tmp_path):
    (tmp_path / "semantic-kitti.yaml").write_text(KITTI_YAML)
    label_map = load_learning_map(tmp_path / "semantic-kitti.yaml")
    assert label_map.class_names == ["car", "road"]
    assert label_map.to_raw == {0: 10, 1: 40}
    scene = read_semantickitti_scan(make_sequence(tmp_path), learning_map=tmp_path / "semantic-kitti.yaml")
    assert scene.semantic.tolist() == [0, 1, 0, IGNORE_INDEX]  # moving-car -> car, unlabeled ignored
    dict_map = read_semantickitti_scan(tmp_path / "sequences/00/velodyne/000000.bin", learning_map={10: 0, 40: 1})
    assert dict_map.semantic.tolist() == [0, 1, IGNORE_INDEX, IGNORE_INDEX]


def test_predictions_are_written_as_raw_ids(tmp_path):
    (tmp_path / "semantic-kitti.yaml").write_text(KITTI_YAML)
    bin_path = make_sequence(tmp_path)
    written = write_predictions(bin_path, np.array([1, 0, 0, 1]), np.array([0.5, 0.5, 1.0, 1.0]),
                                learning_map=tmp_path / "semantic-kitti.yaml")
    assert written == bin_path.with_name("000000.pred.label")
    assert np.fromfile(written, dtype="<u4").tolist() == [40, 10, 10, 40]
    assert np.load(bin_path.with_name("000000.conf.npy")).tolist() == [0.5, 0.5, 1.0, 1.0]


def test_bad_scans_raise_data_error(tmp_path):
    bin_path = make_sequence(tmp_path)
    bin_path.write_bytes(bin_path.read_bytes()[:-4])  # 60 bytes: not a multiple of 16
    with pytest.raises(DataError, match="000000.bin: size 60 bytes is not a multiple of 16"):
        read_semantickitti_scan(bin_path)
    bin_path.write_bytes(np.zeros((3, 4), "<f4").tobytes())
    with pytest.raises(DataError, match="000000.label: 4 labels but the scan 000000.bin has 3 points"):
        read_semantickitti_scan(bin_path)
    label_path = tmp_path / "odd.label"
    label_path.write_bytes(b"\x00" * 6)
    with pytest.raises(DataError, match="odd.label: size 6 bytes is not a multiple of 4"):
        read_semantickitti_scan(bin_path, label_path=label_path)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.bin: empty point cloud"):
        read_semantickitti_scan(empty)
    nan = tmp_path / "nan.bin"
    np.array([[0, np.nan, 0, 0]], "<f4").tofile(nan)
    with pytest.raises(DataError, match="nan.bin: NaN or infinite coordinates"):
        read_semantickitti_scan(nan)
    (tmp_path / "bad.yaml").write_text("labels: {0: unlabeled}\n")
    with pytest.raises(DataError, match="bad.yaml: not a SemanticKITTI label config"):
        load_learning_map(tmp_path / "bad.yaml")
