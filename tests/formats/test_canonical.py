"""PointCloudScene validation, the canonical scene folder, and format dispatch in pointcloud_io."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.formats.npy_cloud import write_npz_cloud
from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import (
    PointCloudScene,
    read_canonical,
    validate_scene,
    write_canonical,
)
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX


def small_scene() -> PointCloudScene:
    return PointCloudScene(
        coords=np.array([[870000.25, 6617000.5, 10.0], [870001.0, 6617001.0, 11.5],
                         [870002.75, 6617002.0, 12.0]]),
        colors=np.array([[0, 0.5, 1], [1, 1, 1], [0.25, 0.0, 0.0]], dtype=np.float32),
        intensity=np.array([10.0, 20.0, 30.0], dtype=np.float32),
        semantic=np.array([0, 1, IGNORE_INDEX]),
        instance=np.array([5, 5, -1]),
        extra={"normal_z": np.array([1.0, 0.0, -1.0])},
        class_names=["ground", "building"],
        source_path="tile.las",
    )


def test_canonical_round_trip_keeps_every_field(tmp_path):
    folder = write_canonical(small_scene(), tmp_path / "scene_0")
    assert sorted(p.name for p in folder.iterdir()) == [
        "color.npy", "coord.npy", "extra.normal_z.npy", "instance.npy", "intensity.npy", "meta.json",
        "segment.npy"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["num_points"] == 3
    assert meta["class_names"] == ["ground", "building"] and meta["source_path"] == "tile.las"

    back = read_canonical(folder)
    original = small_scene()
    assert back.coords.dtype == np.float64
    np.testing.assert_array_equal(back.coords, original.coords)  # large coordinates kept exactly
    np.testing.assert_array_equal(back.colors, original.colors)
    np.testing.assert_array_equal(back.intensity, original.intensity)
    assert back.semantic.tolist() == [0, 1, IGNORE_INDEX]
    assert back.instance.tolist() == [5, 5, -1]
    assert back.extra["normal_z"].tolist() == [1.0, 0.0, -1.0]
    assert back.class_names == ["ground", "building"]
    # the dispatcher recognises the canonical folder
    assert read_point_cloud(folder).semantic.tolist() == [0, 1, IGNORE_INDEX]


def test_canonical_refuses_to_overwrite_and_leaves_no_temp_folder(tmp_path):
    write_canonical(small_scene(), tmp_path / "scene_0")
    with pytest.raises(FileExistsError):
        write_canonical(small_scene(), tmp_path / "scene_0")
    smaller = PointCloudScene(coords=np.zeros((2, 3)))
    write_canonical(smaller, tmp_path / "scene_0", overwrite=True)
    assert read_canonical(tmp_path / "scene_0").num_points == 2
    assert not (tmp_path / "scene_0" / "segment.npy").exists()  # old files do not linger
    assert [p.name for p in tmp_path.iterdir()] == ["scene_0"]


def test_canonical_bad_folders_raise_data_error(tmp_path):
    folder = write_canonical(small_scene(), tmp_path / "scene_0")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "num_points": 4}))
    with pytest.raises(DataError, match="meta.json says 4 points but coord.npy has 3"):
        read_canonical(folder)
    (folder / "segment.npy").write_bytes((folder / "segment.npy").read_bytes()[:-8])
    with pytest.raises(DataError, match=r"segment\.npy: unreadable \.npy file"):
        read_canonical(folder)
    with pytest.raises(DataError, match="no meta.json"):
        read_canonical(tmp_path)


@pytest.mark.parametrize("change, reason", [
    (dict(coords=np.zeros((0, 3))), "empty point cloud"),
    (dict(coords=np.array([[0.0, 0, 0], [np.nan, 0, 0], [1, 1, 1]])), "NaN or infinite coordinates"),
    (dict(semantic=np.array([0, 1])), "semantic has 2 entries but the cloud has 3 points"),
    (dict(semantic=np.array([0, 1, 1], dtype=np.int32)), "semantic must be int64, got int32"),
    (dict(colors=np.full((3, 3), 255.0, dtype=np.float32)), r"colors must lie in \[0, 1\]"),
    (dict(semantic=np.array([0, -1, 1])), "negative label -1"),
    (dict(semantic=np.array([0, 2, 1])), "label 2 is outside the 2 known classes"),
    (dict(extra={"nx": np.zeros(4)}), "extra field 'nx' has 4 entries but the cloud has 3 points"),
])
def test_validate_scene_names_the_file_and_the_problem(change, reason):
    scene = small_scene()
    for name, value in change.items():
        setattr(scene, name, value)
    with pytest.raises(DataError, match=reason) as info:
        validate_scene(scene, "room_1.ply")
    assert str(info.value).startswith("room_1.ply: ")


def test_read_point_cloud_rejects_unknown_extension_and_missing_path(tmp_path):
    (tmp_path / "cloud.xyz").write_text("0 0 0\n")
    with pytest.raises(DataError, match=r"cloud\.xyz: unknown point-cloud extension '\.xyz'"):
        read_point_cloud(tmp_path / "cloud.xyz")
    with pytest.raises(DataError, match="nothing.ply: does not exist"):
        read_point_cloud(tmp_path / "nothing.ply")
    with pytest.raises(DataError, match="unrecognised folder"):
        read_point_cloud(tmp_path)


def test_write_predictions_beside_npz_input(tmp_path):
    cloud = write_npz_cloud(tmp_path / "room.npz", small_scene())
    written = write_predictions(cloud, np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7]))
    assert written == tmp_path / "room.pred.npy"
    assert np.load(written).tolist() == [1, 0, 1]
    np.testing.assert_allclose(np.load(tmp_path / "room.conf.npy"), [0.9, 0.8, 0.7], rtol=1e-6)
    with pytest.raises(FileExistsError):
        write_predictions(cloud, np.array([1, 0, 1]))
    with pytest.raises(DataError, match="room.npz: 2 labels but the cloud has 3 points"):
        write_predictions(cloud, np.array([1, 0]), overwrite=True)


def test_write_predictions_for_a_canonical_folder(tmp_path):
    folder = write_canonical(small_scene(), tmp_path / "scene_0")
    written = write_predictions(folder, np.array([0, 0, 1]))
    assert written == tmp_path / "scene_0.pred.npy"
    assert np.load(written).tolist() == [0, 0, 1]
