"""``sparsevision convert``, run in-process on tiny datasets written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.coco import read_coco
from datamodules.formats.las import write_las
from datamodules.formats.ply import write_ply
from datamodules.formats.pointcloud_scene import PointCloudScene, read_canonical
from vision.commands import convert
from vision.labels.types import IGNORE_INDEX


def small_scene() -> PointCloudScene:
    """Five points, colours that are exact 8-bit values, one unlabelled point."""
    rgb8 = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [128, 128, 128]])
    return PointCloudScene(
        coords=np.array([[0.0, 0.0, 0.0], [1.5, 0.25, 0.0], [2.0, 1.0, 0.5], [0.125, 3.0, 1.0], [4.0, 4.0, 2.0]]),
        colors=(rgb8.astype(np.float64) / 255.0).astype(np.float32),
        semantic=np.array([0, 1, 1, 0, IGNORE_INDEX], dtype=np.int64),
        instance=np.array([0, 1, 1, 2, -1], dtype=np.int64),
    )


def test_ply_to_canonical_reads_back_equal_arrays(tmp_path, capsys):
    scene = small_scene()
    (tmp_path / "src").mkdir()
    write_ply(tmp_path / "src" / "room.ply", scene)

    assert convert.main(["pointcloud", str(tmp_path / "src" / "room.ply"), str(tmp_path / "out")]) == 0
    back = read_canonical(tmp_path / "out" / "room")
    np.testing.assert_array_equal(back.coords, scene.coords)
    np.testing.assert_array_equal(back.colors, scene.colors)
    np.testing.assert_array_equal(back.semantic, scene.semantic)
    np.testing.assert_array_equal(back.instance, scene.instance)
    out = capsys.readouterr().out
    assert "wrote 1 scene to" in out and "room: 5 points, 4 labelled" in out
    assert "total: 5 points, 4 labelled (80%)" in out and "class 0: 2, class 1: 2" in out


def test_las_with_class_map_to_canonical(tmp_path, capsys):
    # aerial coordinates (Lambert-93-like eastings) in millimetres; raw ASPRS codes 2 ground, 6 building, 1
    coords = np.array([[870000.123, 6500000.5, 10.0], [870001.0, 6500001.25, 12.5], [870002.5, 6500000.0, 11.0],
                       [870003.0, 6500002.0, 30.0]])
    scene = PointCloudScene(coords=coords, intensity=np.array([10, 20, 30, 40], np.float32),
                            semantic=np.array([2, 2, 6, 1], np.int64))
    (tmp_path / "tiles").mkdir()
    write_las(tmp_path / "tiles" / "tile.las", scene)

    assert convert.main(["pointcloud", str(tmp_path / "tiles"), str(tmp_path / "out"),
                         "--class-map", '{"2": 0, "6": 1}']) == 0
    back = read_canonical(tmp_path / "out" / "tile")
    np.testing.assert_allclose(back.coords, coords, atol=1e-6)
    np.testing.assert_array_equal(back.intensity, [10, 20, 30, 40])
    assert back.semantic.tolist() == [0, 0, 1, IGNORE_INDEX]  # code 1 is not in the class map
    assert back.class_names == ["ground", "building"]
    assert "ground: 2, building: 1" in capsys.readouterr().out


def write_room(room: Path, objects: dict[str, list[str]]) -> None:
    (room / "Annotations").mkdir(parents=True)
    for name, rows in objects.items():
        (room / "Annotations" / f"{name}.txt").write_text("\n".join(rows) + "\n")


def test_s3dis_area_gives_one_scene_per_room(tmp_path, capsys):
    area = tmp_path / "Area_1"
    write_room(area / "office_1", {"chair_1": ["0 0 0 255 0 0", "0 0 1 255 0 0"], "table_1": ["1 1 0 0 0 255"]})
    write_room(area / "hallway_1", {"floor_1": ["0 0 0 10 10 10"]})
    (area / "notes.txt").write_text("not a room")

    assert convert.main(["pointcloud", str(area), str(tmp_path / "out"), "--format", "s3dis"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hallway_1", "office_1"]
    office = read_canonical(tmp_path / "out" / "office_1")
    names = office.class_names
    assert [names[i] for i in office.semantic] == ["chair", "chair", "table"]
    assert office.instance.tolist() == [0, 0, 1] and office.colors[2].tolist() == [0.0, 0.0, 1.0]
    out = capsys.readouterr().out
    assert "wrote 2 scenes" in out and "chair: 2" in out and "floor: 1" in out and "table: 1" in out


def test_scene_discovery_names_and_skipped_siblings(tmp_path):
    for relative in ("x.ply", "x.pred.ply", "scans/s_vert.npy", "scans/s_sem_label.npy", "seq/velodyne/000001.bin",
                     "seq/labels/000001.label", "pc/scene0/coord.npy", "pc/scene0/color.npy"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    names = [name for name, _ in convert.discover_scenes(tmp_path, "auto")]
    assert names == ["pc/scene0", "scans/s", "seq/000001", "x"]
    assert [name for name, _ in convert.discover_scenes(tmp_path, "ply")] == ["x"]


def test_voc_to_coco(tmp_path, capsys):
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    Image.new("RGB", (64, 48), (20, 120, 20)).save(voc / "JPEGImages" / "cells.png")
    objects = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                      f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                      for n, a, b, c, d in (("rbc", 11, 6, 30, 20), ("wbc", 1, 1, 64, 48)))
    (voc / "Annotations" / "cells.xml").write_text(
        f"<annotation><filename>cells.png</filename><size><width>64</width><height>48</height>"
        f"<depth>3</depth></size>{objects}</annotation>")

    args = ["detection", str(voc), str(tmp_path / "coco"), "--from", "voc", "--to", "coco"]
    assert convert.main(args) == 0
    dataset = read_coco(tmp_path / "coco" / "annotations.json")
    assert dataset.categories == ["rbc", "wbc"]
    (record,) = dataset.images
    # VOC is 1-based inclusive: xmin 11 .. xmax 30 covers pixel edges 10 .. 30
    assert record.boxes.boxes.tolist() == [[10.0, 5.0, 30.0, 20.0], [0.0, 0.0, 64.0, 48.0]]
    assert (tmp_path / "coco" / "images" / "cells.png").is_file()
    assert "wrote 1 images, 2 boxes and 0 points as coco" in capsys.readouterr().out

    assert convert.main(args) == 2  # the second run would overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert convert.main(args + ["--overwrite"]) == 0


def test_existing_scene_is_not_overwritten_without_flag(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    write_ply(tmp_path / "src" / "room.ply", small_scene())
    argv = ["pointcloud", str(tmp_path / "src"), str(tmp_path / "out")]
    assert convert.main(argv) == 0
    before = (tmp_path / "out" / "room" / "coord.npy").read_bytes()
    shifted = small_scene()
    shifted.coords = shifted.coords + 1.0
    write_ply(tmp_path / "src" / "room.ply", shifted, overwrite=True)
    capsys.readouterr()

    assert convert.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsevision convert: ") and "room: already exists; pass --overwrite" in err
    assert (tmp_path / "out" / "room" / "coord.npy").read_bytes() == before
    assert convert.main(argv + ["--overwrite"]) == 0
    np.testing.assert_array_equal(read_canonical(tmp_path / "out" / "room").coords, shifted.coords)


def test_malformed_inputs_return_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n")
    assert convert.main(["pointcloud", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sparsevision convert: {tmp_path / 'src' / 'broken.ply'}: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    assert convert.main(["pointcloud", str(tmp_path / "src"), str(tmp_path / "out"), "--class-map", "{2: 0}"]) == 2
    assert "--class-map: not a JSON object" in capsys.readouterr().err
    assert convert.main(["pointcloud", str(tmp_path / "src"), str(tmp_path / "out"), "--class-map", '{"2": 0}']) == 2
    assert "--class-map applies to LAS/LAZ files, and there are none here" in capsys.readouterr().err
    assert convert.main(["pointcloud", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "missing: does not exist" in capsys.readouterr().err


def test_help_documents_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("pointcloud", "detection", "images-to-events"))
    with pytest.raises(SystemExit):
        convert.main(["pointcloud", "--help"])
    text = capsys.readouterr().out
    assert all(word in text for word in ("--class-map", "--learning-map", "--overwrite", "S3DIS", "kitti"))


def test_images_to_events_pairs_images_and_masks_by_stem(tmp_path, capsys):
    pytest.importorskip("datamodules.synthetic.saccades")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = np.full((24, 24), 40, np.uint8)
    image[6:18, 6:18] = 220  # a bright square: its edges make events as it moves
    mask = np.zeros((24, 24), np.uint8)
    mask[6:18, 6:18] = 1
    Image.fromarray(image).save(tmp_path / "images" / "square.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "square.png")

    argv = ["images-to-events", str(tmp_path / "images"), str(tmp_path / "masks"), str(tmp_path / "rec"),
            "--seed", "3", "--duration-ms", "30"]
    assert convert.main(argv) == 0
    meta = json.loads((tmp_path / "rec" / "square" / "meta.json").read_text())
    assert meta["seed"] == 3
    assert "wrote 1 event recording to" in capsys.readouterr().out
    assert convert.main(argv) == 2  # the recording exists
    Image.fromarray(image).save(tmp_path / "images" / "unpaired.png")
    assert convert.main(argv + ["--overwrite"]) == 2
    assert "unpaired.png: no mask unpaired.png in" in capsys.readouterr().err


def test_real_lidar_tile_keeps_points_and_class_counts(shared_data, tmp_path, capsys):
    import laspy

    tile = shared_data / "ign_lidarhd" / "870000_6618000.subset.50mx100m.las"
    raw = np.asarray(laspy.read(str(tile)).classification)
    assert convert.main(["pointcloud", str(tile), str(tmp_path / "out"), "--class-map", '{"2": 0, "6": 1}']) == 0
    scene = read_canonical(tmp_path / "out" / tile.stem)
    assert scene.num_points == 70_840 and scene.class_names == ["ground", "building"]
    assert (scene.semantic == 0).sum() == (raw == 2).sum() and (scene.semantic == 1).sum() == (raw == 6).sum()
    assert (scene.semantic == IGNORE_INDEX).sum() == (raw == 1).sum()  # "unclassified" is not in the map
    assert f"ground: {(raw == 2).sum()}, building: {(raw == 6).sum()}" in capsys.readouterr().out
