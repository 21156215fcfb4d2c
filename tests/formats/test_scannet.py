"""ScanNet scenes: VoteNet-style <scene>_vert.npy files and Pointcept-style folders."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.scannet import SCANNET20_CLASSES, nyu40_to_scannet20, read_pointcept_scene
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

VERT = np.array([[0.0, 1.0, 2.0, 255, 0, 0],
                 [1.0, 1.5, 2.5, 0, 255, 51],
                 [2.0, 0.0, 0.0, 0, 0, 0]], dtype=np.float32)


def test_votenet_vert_files_map_nyu40_to_scannet20(tmp_path):
    np.save(tmp_path / "scene0000_00_vert.npy", VERT)
    np.save(tmp_path / "scene0000_00_sem_label.npy", np.array([5, 39, 13], dtype=np.uint8))  # chair, otherfurn., shelves
    np.save(tmp_path / "scene0000_00_ins_label.npy", np.array([1, 2, 0], dtype=np.uint32))
    scene = read_point_cloud(tmp_path / "scene0000_00_vert.npy")
    assert scene.coords.tolist() == VERT[:, :3].tolist()
    np.testing.assert_allclose(scene.colors[1], [0.0, 1.0, 0.2], rtol=1e-6)
    assert scene.semantic.tolist() == [4, 19, IGNORE_INDEX]  # NYU40 13 (shelves) is not a benchmark class
    assert SCANNET20_CLASSES[4] == "chair" and len(SCANNET20_CLASSES) == 20
    assert scene.instance.tolist() == [1, 2, 0]
    written = write_predictions(tmp_path / "scene0000_00_vert.npy", np.array([0, 1, 2]))
    assert written == tmp_path / "scene0000_00_vert.pred.npy" and np.load(written).tolist() == [0, 1, 2]


def test_nyu40_to_scannet20_table():
    assert nyu40_to_scannet20(np.array([1, 2, 14, 16, 24, 28, 33, 34, 36, 39, 40, 0])).tolist() == [
        0, 1, 12, 13, 14, 15, 16, 17, 18, 19, IGNORE_INDEX, IGNORE_INDEX]


def test_pointcept_folder(tmp_path):
    folder = tmp_path / "scene0011_00"
    folder.mkdir()
    np.save(folder / "coord.npy", VERT[:, :3])
    np.save(folder / "color.npy", VERT[:, 3:].astype(np.uint8))
    np.save(folder / "segment20.npy", np.array([0, -1, 19], dtype=np.int16))
    np.save(folder / "instance.npy", np.array([-1, 3, 4], dtype=np.int16))
    np.save(folder / "normal.npy", np.tile([0.0, 0.0, 1.0], (3, 1)))
    scene = read_point_cloud(folder)
    assert scene.semantic.tolist() == [0, IGNORE_INDEX, 19]
    assert scene.instance.tolist() == [-1, 3, 4]
    assert scene.colors[0].tolist() == [1.0, 0.0, 0.0]
    assert scene.class_names == SCANNET20_CLASSES and scene.extra["normal"].shape == (3, 3)


def test_bad_scannet_files_raise_data_error(tmp_path):
    np.save(tmp_path / "scene0001_00_vert.npy", VERT[:, :5])
    with pytest.raises(DataError, match=r"scene0001_00_vert\.npy: expected numeric \(N, >=6\)"):
        read_point_cloud(tmp_path / "scene0001_00_vert.npy")
    np.save(tmp_path / "scene0002_00_vert.npy", VERT)
    np.save(tmp_path / "scene0002_00_sem_label.npy", np.array([1, 2]))
    with pytest.raises(DataError, match=r"scene0002_00_sem_label\.npy: 2 labels but scene0002_00_vert.npy has 3"):
        read_point_cloud(tmp_path / "scene0002_00_vert.npy")
    np.save(tmp_path / "scene0002_00_sem_label.npy", np.array([1, 2, 41]))
    with pytest.raises(DataError, match="label 41 is not an NYU40 id"):
        read_point_cloud(tmp_path / "scene0002_00_vert.npy")
    folder = tmp_path / "scene0003_00"
    folder.mkdir()
    np.save(folder / "coord.npy", np.zeros((2, 3)))
    np.save(folder / "segment20.npy", np.array([0, 20]))
    with pytest.raises(DataError, match="label 20 is outside the 20 known classes"):
        read_pointcept_scene(folder)
    with pytest.raises(DataError, match="missing file segment200.npy"):
        read_pointcept_scene(folder, segment_file="segment200.npy")
    np.save(folder / "coord.npy", np.zeros((0, 3)))
    (folder / "segment20.npy").unlink()
    with pytest.raises(DataError, match="scene0003_00: empty point cloud"):
        read_pointcept_scene(folder)
