"""S3DIS rooms: per-instance annotation text files -> one labelled scene."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.formats.pointcloud_io import read_point_cloud, write_predictions
from datamodules.formats.pointcloud_scene import PointCloudScene
from datamodules.formats.s3dis import S3DIS_CLASSES, read_s3dis_room, s3dis_area_rooms, write_s3dis_room
from vision.errors import DataError


def write_room(room, files: dict[str, str]):
    (room / "Annotations").mkdir(parents=True)
    for name, text in files.items():
        (room / "Annotations" / name).write_text(text)
    return room


def test_room_from_annotation_files(tmp_path):
    room = write_room(tmp_path / "Area_1" / "office_1", {
        "chair_10.txt": "5.0 5.0 0.5 0 0 255\n",
        "chair_2.txt": "1.0 2.0 0.5 255 0 0\n1.5 2.0 0.5 255 0 0\n",
        "floor_1.txt": "0.0 0.0 0.0 51 102 153\n",
        "stairs_1.txt": "9.0 9.0 1.0 10 10 10\n",
    })
    scene = read_point_cloud(room)
    # files in class order, then numerically: chair_2, chair_10, floor_1, stairs_1
    assert scene.coords[:, 0].tolist() == [1.0, 1.5, 5.0, 0.0, 9.0]
    chair, floor, clutter = (S3DIS_CLASSES.index(c) for c in ("chair", "floor", "clutter"))
    assert scene.semantic.tolist() == [chair, chair, chair, floor, clutter]  # stairs counted as clutter
    assert scene.instance.tolist() == [0, 0, 1, 2, 3]
    np.testing.assert_allclose(scene.colors[3], [0.2, 0.4, 0.6], rtol=1e-6)
    assert scene.class_names == S3DIS_CLASSES and len(S3DIS_CLASSES) == 13
    assert s3dis_area_rooms(tmp_path / "Area_1") == [room]


def test_write_then_read_room_round_trips(tmp_path):
    scene = PointCloudScene(coords=np.array([[0.125, 1.0, 2.0], [3.0, 4.5, 5.0], [6.0, 7.0, 8.25]]),
                            colors=np.array([[0, 51, 255], [255, 0, 0], [1, 2, 3]], np.float32) / np.float32(255),
                            semantic=np.array([2, 8, 8]), instance=np.array([0, 1, 1]))
    room = write_s3dis_room(tmp_path / "Area_2" / "conferenceRoom_1", scene)
    assert sorted(p.name for p in (room / "Annotations").iterdir()) == ["chair_1.txt", "wall_1.txt"]
    back = read_s3dis_room(room)
    order = np.argsort(back.coords[:, 0])  # files come back in class-name order
    np.testing.assert_array_equal(back.coords[order], scene.coords)
    np.testing.assert_allclose(back.colors[order], scene.colors, atol=1e-7)
    assert back.semantic[order].tolist() == [2, 8, 8]
    written = write_predictions(room, np.array([8, 8, 2]))
    assert written == room.with_name("conferenceRoom_1.pred.npy")


@pytest.mark.parametrize("name, text, reason", [
    ("wall_1.txt", "0 0 0 1 2 3\n1 1 1 1 2\n", "line 2: 5 columns, expected 6"),
    ("wall_1.txt", "0 0 0 1 2 3\n1 1 1 1 2 3\n1 1 x 1 2 3\n", "line 3: non-numeric value 'x'"),
    ("wall_1.txt", "0 0 0 1 2\n", "line 1: 5 columns, expected 6"),
    ("wall_1.txt", "0 0 0 1 2 3\n\n0 0 nan 1 2 3\n", "line 3: non-finite value 'nan'"),
    ("wall_1.txt", "", "empty annotation file"),
    ("wall_1.txt", "0 0 0 300 0 0\n", r"colours must lie in 0\.\.255"),
    ("door.txt", "0 0 0 1 2 3\n", "file name must be <class>_<k>.txt"),
    ("piano_1.txt", "0 0 0 1 2 3\n", "unknown S3DIS class 'piano'"),
])
def test_bad_annotation_files_name_file_and_line(tmp_path, name, text, reason):
    room = write_room(tmp_path / "office_1", {"floor_1.txt": "0 0 0 1 2 3\n", name: text})
    with pytest.raises(DataError, match=reason) as info:
        read_s3dis_room(room)
    assert str(info.value).startswith(str(room / "Annotations" / name))


def test_room_without_annotations_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="no Annotations/ folder"):
        read_s3dis_room(tmp_path)
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DataError, match="no <class>_<k>.txt annotation files"):
        read_s3dis_room(tmp_path)
