"""PLY reading and writing (ascii and binary), predictions added as vertex properties."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from datamodules.formats.ply import add_predictions_to_ply, read_ply, write_ply
from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import PointCloudScene
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX


def small_scene() -> PointCloudScene:
    return PointCloudScene(
        coords=np.array([[870000.125, 6617000.5, 10.0], [1.0, 2.0, 3.0], [-4.5, 0.25, 7.0]]),
        colors=np.array([[0, 51, 255], [255, 255, 255], [10, 20, 30]], dtype=np.float32) / np.float32(255),
        intensity=np.array([1.5, 2.0, 3.0], dtype=np.float32),
        semantic=np.array([2, 0, IGNORE_INDEX]),
        instance=np.array([7, 7, 8]),
        extra={"nz": np.array([0.5, 1.0, -1.0], dtype=np.float32)},
    )


@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_write_then_read_ply_round_trips(tmp_path, text):
    path = write_ply(tmp_path / "room.ply", small_scene(), text=text)
    back = read_ply(path)
    original = small_scene()
    np.testing.assert_array_equal(back.coords, original.coords)  # float64 x, y, z: exact
    np.testing.assert_array_equal(np.round(back.colors * 255), [[0, 51, 255], [255, 255, 255], [10, 20, 30]])
    np.testing.assert_array_equal(back.intensity, [1.5, 2.0, 3.0])
    assert back.semantic.tolist() == [2, 0, IGNORE_INDEX]
    assert back.instance.tolist() == [7, 7, 8]
    assert back.extra["nz"].tolist() == [0.5, 1.0, -1.0]
    assert read_point_cloud(path).num_points == 3


def test_written_ply_uses_the_documented_property_types(tmp_path):
    path = write_ply(tmp_path / "room.ply", small_scene(), labels=np.array([1, 1, 0]),
                     confidence=np.array([0.5, 0.25, 1.0]))
    data = plyfile.PlyData.read(str(path))
    types = {p.name: p.val_dtype for p in data["vertex"].properties}
    assert (types["x"], types["red"], types["label"], types["instance"], types["confidence"]) == (
        "f8", "u1", "i4", "i4", "f4")
    assert not data.text and data.byte_order == "<"
    assert data["vertex"]["label"].tolist() == [1, 1, 0]  # explicit labels win over scene.semantic
    with pytest.raises(FileExistsError):
        write_ply(path, small_scene())


def test_ply_labels_from_cloudcompare_float_field(tmp_path):
    vertex = np.array([(0.0, 0.0, 0.0, 3.0), (1.0, 0.0, 0.0, -1.0)],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("scalar_Classification", "f4")])
    path = tmp_path / "cc.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=True).write(str(path))
    assert read_ply(path).semantic.tolist() == [3, IGNORE_INDEX]  # -1 = unlabelled
    with pytest.raises(DataError, match="no vertex property 'label'"):
        read_ply(path, label_field="label")


def test_add_predictions_keeps_original_properties_and_faces(tmp_path):
    vertex = np.array([(0.0, 0.0, 0.0, 9), (1.0, 0.0, 0.0, 8), (0.0, 1.0, 0.0, 7)],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("quality", "u1")])
    face = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "O")])
    src = tmp_path / "mesh.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"), plyfile.PlyElement.describe(face, "face")],
                    comments=["scanned"]).write(str(src))
    dst = add_predictions_to_ply(src, tmp_path / "mesh_pred.ply", np.array([4, 5, 6]), np.array([0.1, 0.2, 0.3]))
    out = plyfile.PlyData.read(str(dst))
    assert out["vertex"]["quality"].tolist() == [9, 8, 7]
    assert out["vertex"]["pred_label"].tolist() == [4, 5, 6]
    np.testing.assert_allclose(out["vertex"]["pred_confidence"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert out["face"]["vertex_indices"][0].tolist() == [0, 1, 2] and out.comments == ["scanned"]
    with pytest.raises(FileExistsError):
        add_predictions_to_ply(src, dst, np.array([0, 0, 0]))
    with pytest.raises(DataError, match="mesh.ply: labels has 2 entries but the cloud has 3 points"):
        add_predictions_to_ply(src, tmp_path / "other.ply", np.array([0, 0]))
    # the dispatcher writes <stem>.pred.ply beside the input
    assert write_predictions(src, np.array([1, 1, 1])) == tmp_path / "mesh.pred.ply"


def test_truncated_binary_ply_raises_data_error(tmp_path):
    path = write_ply(tmp_path / "room.ply", small_scene())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"room\.ply: malformed PLY .*early end-of-file"):
        read_ply(path)


def test_malformed_ply_files_raise_data_error(tmp_path):
    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.ply: malformed PLY"):
        read_ply(empty)
    no_points = tmp_path / "no_points.ply"
    vertex = np.zeros(0, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(no_points))
    with pytest.raises(DataError, match="no_points.ply: empty point cloud"):
        read_ply(no_points)
    nan = tmp_path / "nan.ply"
    vertex = np.array([(0.0, np.nan, 0.0)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(nan))
    with pytest.raises(DataError, match="nan.ply: NaN or infinite coordinates"):
        read_ply(nan)
