"""Point clouds as .npy (plain columns or structured) and .npz, and predictions written beside them."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.formats.npy_cloud import read_npy_cloud, read_npz_cloud, write_npz_cloud
from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import PointCloudScene
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX


def test_npy_with_default_xyzrgb_label_columns(tmp_path):
    rows = np.array([[0.0, 1.0, 2.0, 255, 0, 51, 3],
                     [4.0, 5.0, 6.0, 0, 255, 255, -1]])
    np.save(tmp_path / "room.npy", rows)
    scene = read_point_cloud(tmp_path / "room.npy")
    assert scene.coords.tolist() == [[0, 1, 2], [4, 5, 6]]
    np.testing.assert_allclose(scene.colors, [[1.0, 0.0, 0.2], [0.0, 1.0, 1.0]], rtol=1e-6)  # 0-255 -> [0, 1]
    assert scene.semantic.tolist() == [3, IGNORE_INDEX]


def test_npy_with_named_columns(tmp_path):
    rows = np.array([[0.0, 1.0, 2.0, 0.5, 4.0, 9.0], [3.0, 4.0, 5.0, 0.25, 1.0, 9.0]], dtype=np.float32)
    np.save(tmp_path / "scan.npy", rows)
    with pytest.raises(DataError, match="scan.npy: columns= names 5 columns but the array has 6"):
        read_npy_cloud(tmp_path / "scan.npy", columns=("x", "y", "z", "intensity", "label"))
    scene = read_npy_cloud(tmp_path / "scan.npy", columns=("x", "y", "z", "intensity", "label", "ring"))
    assert scene.intensity.tolist() == [0.5, 0.25]
    assert scene.semantic.tolist() == [4, 1] and scene.colors is None
    assert scene.extra["ring"].tolist() == [9.0, 9.0]


def test_npy_structured_array(tmp_path):
    points = np.zeros(2, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "u1"), ("green", "u1"),
                                ("blue", "u1"), ("label", "i2"), ("instance", "i4")])
    points["x"] = [1.5, 2.5]
    points["red"] = [255, 0]
    points["label"] = [1, 2]
    points["instance"] = [3, -1]
    np.save(tmp_path / "s.npy", points)
    scene = read_npy_cloud(tmp_path / "s.npy")
    assert scene.coords[:, 0].tolist() == [1.5, 2.5]
    assert scene.colors[:, 0].tolist() == [1.0, 0.0]
    assert scene.semantic.tolist() == [1, 2] and scene.instance.tolist() == [3, -1]


def test_npz_round_trip(tmp_path):
    scene = PointCloudScene(coords=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
                            colors=np.array([[0.5, 0.25, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32),
                            intensity=np.array([7.0, 8.0], dtype=np.float32),
                            semantic=np.array([IGNORE_INDEX, 4]), instance=np.array([1, 2]),
                            extra={"normal": np.eye(3)[:2]})
    path = write_npz_cloud(tmp_path / "room.npz", scene)
    back = read_npz_cloud(path)
    for name in ("coords", "colors", "intensity", "semantic", "instance"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scene, name))
    np.testing.assert_array_equal(back.extra["normal"], np.eye(3)[:2])
    with pytest.raises(FileExistsError):
        write_npz_cloud(path, scene)


def test_npz_with_alternative_keys(tmp_path):
    np.savez(tmp_path / "alt.npz", xyz=np.zeros((3, 3)), rgb=np.full((3, 3), 255, np.uint8),
             label=np.array([0, 1, 2], dtype=np.uint8), scene_name=np.array("room_1"))
    scene = read_point_cloud(tmp_path / "alt.npz")
    assert scene.colors.min() == 1.0 and scene.semantic.tolist() == [0, 1, 2]
    assert "scene_name" not in scene.extra  # per-scene values are not per-point fields


def test_write_predictions_beside_npy(tmp_path):
    np.save(tmp_path / "room.npy", np.zeros((4, 3)))
    written = write_predictions(tmp_path / "room.npy", np.array([0, 1, 2, 1]), np.array([1, 0.5, 0.5, 0.25]))
    assert written == tmp_path / "room.pred.npy"
    assert np.load(written).dtype == np.int64 and np.load(written).tolist() == [0, 1, 2, 1]
    assert np.load(tmp_path / "room.conf.npy").tolist() == [1, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("content, reason", [
    (np.zeros((0, 3)), "empty point cloud"),
    (np.array([[0.0, 0.0, np.inf]]), "NaN or infinite coordinates"),
    (np.zeros((4, 5)), "5 columns: pass columns"),
    (np.zeros(4), r"expected an \(N, >=3\) array"),
    (np.array([[0.0, 0.0, 0.0, 1.5]]), "label values must be whole numbers"),
])
def test_bad_npy_raises_data_error(tmp_path, content, reason):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(DataError, match=reason) as info:
        read_npy_cloud(tmp_path / "bad.npy")
    assert str(info.value).startswith(str(tmp_path / "bad.npy"))


def test_truncated_and_foreign_files_raise_data_error(tmp_path):
    np.save(tmp_path / "cut.npy", np.zeros((100, 3)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:500])
    with pytest.raises(DataError, match=r"cut\.npy: unreadable \.npy file"):
        read_npy_cloud(tmp_path / "cut.npy")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"text\.npz: unreadable \.npz file"):
        read_npz_cloud(tmp_path / "text.npz")
    np.savez(tmp_path / "nokeys.npz", colors=np.zeros((2, 3)))
    with pytest.raises(DataError, match="nokeys.npz: no coordinates"):
        read_npz_cloud(tmp_path / "nokeys.npz")
    np.savez(tmp_path / "mismatch.npz", coord=np.zeros((3, 3)), segment=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="mismatch.npz: semantic has 2 entries but the cloud has 3 points"):
        read_npz_cloud(tmp_path / "mismatch.npz")
