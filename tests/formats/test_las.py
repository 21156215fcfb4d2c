"""LAS/LAZ reading with ASPRS class maps, and predictions written back into a copy of the file."""

from __future__ import annotations

import laspy
import numpy as np
import pytest

from datamodules.formats.las import ASPRS_CLASSES, read_las, write_las, write_las_predictions
from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import PointCloudScene
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

IGN_TILE = "ign_lidarhd/870000_6618000.subset.50mx100m.las"


def small_las(path, point_format=3, rgb=((0, 0, 0), (255, 128, 64), (10, 20, 30))):
    """A 3-point LAS 1.2 tile with 8-bit colours stored in the 16-bit fields and classes 2, 6, 1."""
    las = laspy.create(point_format=point_format, file_version="1.2")
    las.header.offsets = [650000.0, 6860000.0, 0.0]
    las.header.scales = [0.01, 0.01, 0.01]
    las.x = np.array([650000.12, 650001.5, 650002.0])
    las.y = np.array([6860000.0, 6860010.25, 6860020.5])
    las.z = np.array([10.0, 11.0, 12.5])
    las.intensity = np.array([100, 200, 300], dtype=np.uint16)
    rgb = np.array(rgb, dtype=np.uint16)
    las.red, las.green, las.blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    las.classification = np.array([2, 6, 1], dtype=np.uint8)
    las.write(str(path))
    return path


def test_read_las_raw_and_mapped_classes(tmp_path):
    path = small_las(tmp_path / "tile.las")
    raw = read_las(path)
    np.testing.assert_allclose(raw.coords, [[650000.12, 6860000.0, 10.0], [650001.5, 6860010.25, 11.0],
                                            [650002.0, 6860020.5, 12.5]], atol=1e-9)
    assert raw.semantic.tolist() == [2, 6, 1] and raw.class_names is None
    assert raw.intensity.tolist() == [100, 200, 300]
    np.testing.assert_allclose(raw.colors[1], [1.0, 128 / 255, 64 / 255], rtol=1e-6)  # 8-bit in 16-bit fields
    mapped = read_las(path, class_map={2: 0, 6: 1})
    assert mapped.semantic.tolist() == [0, 1, IGNORE_INDEX]
    assert mapped.class_names == ["ground", "building"]
    with pytest.raises(DataError, match=r"tile\.las: classes \[1\] are not in class_map"):
        read_las(path, class_map={2: 0, 6: 1}, unmapped="error")
    assert ASPRS_CLASSES[17] == "bridge deck" and ASPRS_CLASSES[7].startswith("low point")


def test_sixteen_bit_colours_are_divided_by_65535(tmp_path):
    path = small_las(tmp_path / "tile16.las", rgb=((0, 0, 0), (65535, 32768, 256), (0, 0, 0)))
    np.testing.assert_allclose(read_las(path).colors[1], [1.0, 32768 / 65535, 256 / 65535], rtol=1e-6)


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_write_las_predictions_maps_back_and_adds_confidence(tmp_path, suffix):
    src = small_las(tmp_path / "tile.las")
    dst = write_las_predictions(src, tmp_path / f"pred{suffix}", np.array([1, 0, IGNORE_INDEX]),
                                confidence=np.array([0.75, 0.5, 0.0]), class_map={2: 0, 6: 1})
    out = laspy.read(str(dst))
    assert out.header.are_points_compressed == (suffix == ".laz")
    assert np.asarray(out.classification).tolist() == [6, 2, 0]  # IGNORE_INDEX -> 0 "never classified"
    assert np.asarray(out.confidence).tolist() == [0.75, 0.5, 0.0]
    assert np.asarray(out.intensity).tolist() == [100, 200, 300]  # everything else is kept
    assert read_las(dst, class_map={2: 0, 6: 1}).semantic.tolist() == [1, 0, IGNORE_INDEX]
    with pytest.raises(FileExistsError):
        write_las_predictions(src, dst, np.array([0, 0, 0]))
    with pytest.raises(DataError, match=r"tile\.las: labels \[5\] are not training ids"):
        write_las_predictions(src, tmp_path / "x.las", np.array([5, 0, 0]), class_map={2: 0, 6: 1})
    with pytest.raises(DataError, match=r"tile\.las: 2 labels but the file has 3 points"):
        write_las_predictions(src, tmp_path / "x.las", np.array([0, 0]))


def test_write_las_round_trip_through_laz(tmp_path):
    scene = PointCloudScene(coords=np.array([[1000.123, 2000.5, 3.25], [1001.0, 2001.0, 4.0]]),
                            colors=np.array([[1.0, 0.5, 0.0], [0.25, 0.75, 1.0]], dtype=np.float32),
                            intensity=np.array([5.0, 6.0], dtype=np.float32), semantic=np.array([0, 1]))
    path = write_las(tmp_path / "scene.laz", scene, class_map={2: 0, 6: 1})
    back = read_point_cloud(path, class_map={2: 0, 6: 1})
    np.testing.assert_allclose(back.coords, scene.coords, atol=1e-9)
    np.testing.assert_allclose(back.colors, scene.colors, atol=1 / 65535)
    assert back.intensity.tolist() == [5.0, 6.0] and back.semantic.tolist() == [0, 1]


def test_malformed_las_raises_data_error(tmp_path):
    path = small_las(tmp_path / "tile.las")
    data = path.read_bytes()
    (tmp_path / "cut.las").write_bytes(data[:-20])
    with pytest.raises(DataError, match="cut.las: .*truncated"):
        read_las(tmp_path / "cut.las")
    (tmp_path / "cut_row.las").write_bytes(data[:-34])  # exactly one 34-byte point record short
    with pytest.raises(DataError, match="cut_row.las: truncated: header says 3 points, file holds 2"):
        read_las(tmp_path / "cut_row.las")
    laz = write_las_predictions(path, tmp_path / "tile.laz", np.array([2, 6, 1]))
    (tmp_path / "cut.laz").write_bytes(laz.read_bytes()[:-10])
    with pytest.raises(DataError, match="cut.laz: malformed or truncated"):
        read_las(tmp_path / "cut.laz")
    (tmp_path / "empty.laz").write_bytes(b"")
    with pytest.raises(DataError, match="empty.laz: malformed or truncated"):
        read_las(tmp_path / "empty.laz")


def test_real_ign_lidarhd_tile(shared_data, tmp_path):
    tile = shared_data / IGN_TILE
    scene = read_point_cloud(tile)
    assert scene.num_points == 70840
    assert set(np.unique(scene.semantic).tolist()) == {1, 2, 6}
    # the tile is 100 m x 62 m at Lambert-93 (870200, 6617083)
    assert 870200.0 <= scene.coords[:, 0].min() and scene.coords[:, 0].max() <= 870300.0
    assert 6617083.0 <= scene.coords[:, 1].min() and scene.coords[:, 1].max() <= 6617146.0
    assert 170.0 < scene.coords[:, 2].min() < scene.coords[:, 2].max() < 200.0
    class_map = {1: 0, 2: 1, 6: 2}
    labels = read_las(tile, class_map=class_map).semantic
    confidence = np.linspace(0, 1, scene.num_points, dtype=np.float32)
    for suffix in (".las", ".laz"):
        out = write_predictions(tile, labels, confidence, out_path=tmp_path / f"pred{suffix}", class_map=class_map)
        back = read_las(out)
        np.testing.assert_array_equal(back.semantic, scene.semantic)
        np.testing.assert_array_equal(back.extra["confidence"], confidence)
        np.testing.assert_array_equal(back.coords, scene.coords)
