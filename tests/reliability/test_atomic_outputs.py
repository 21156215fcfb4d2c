"""Nothing lost: outputs are written atomically and never replaced without ``--overwrite``.

An interrupted write leaves no file under the final name (only a hidden temporary, removed when
the interruption is an exception), and a later run ignores what a killed run left behind.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from datamodules.formats.coco import read_coco
from datamodules.formats.dsec import read_dsec_semantic_sequence
from datamodules.formats.voc import read_voc
from vision import atomic
from vision.atomic import OutputExistsError, atomic_path, atomic_write, refuse_existing
from vision.commands import convert
from vision.errors import DataError


def _visible(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.name.startswith("."))


def _everything(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------- vision.atomic
def test_atomic_write_interrupted_midway_leaves_no_file(tmp_path):
    def write_half(handle):
        handle.write(b"half of the ")
        raise KeyboardInterrupt  # the user pressed Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "labels.npy", write_half)
    assert _everything(tmp_path) == []


def test_atomic_write_interrupted_keeps_the_previous_file(tmp_path):
    atomic_write(tmp_path / "labels.txt", lambda handle: handle.write(b"first run\n"))
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "labels.txt", lambda handle: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert (tmp_path / "labels.txt").read_text() == "first run\n" and _everything(tmp_path) == ["labels.txt"]


def test_atomic_path_keeps_the_suffix_and_renames_only_on_success(tmp_path):
    with atomic_path(tmp_path / "tile.laz") as temp:
        assert temp.suffix == ".laz" and temp.name.startswith(".tile.laz.tmp-") and temp.parent == tmp_path
        temp.write_bytes(b"points")
    assert (tmp_path / "tile.laz").read_bytes() == b"points"
    with pytest.raises(ValueError), atomic_path(tmp_path / "other.laz") as temp:
        temp.write_bytes(b"half")
        raise ValueError("encoder failed")
    assert _everything(tmp_path) == ["tile.laz"]


def test_refuse_existing_names_the_file_and_the_flag(tmp_path):
    (tmp_path / "out.json").write_text("{}")
    assert refuse_existing(tmp_path / "new.json", overwrite=False) == tmp_path / "new.json"
    assert refuse_existing(tmp_path / "out.json", overwrite=True) == tmp_path / "out.json"
    with pytest.raises(FileExistsError, match=r"out\.json: already exists; pass --overwrite") as info:
        refuse_existing(tmp_path / "out.json", overwrite=False)
    assert isinstance(info.value, DataError) and isinstance(info.value, OutputExistsError)
    assert info.value.path == os.fspath(tmp_path / "out.json")


# ---------------------------------------------------------------------------------------------- sparsevision convert
def test_interrupted_pointcloud_conversion_leaves_no_scene(valid_files_class, tmp_path, monkeypatch):
    src = valid_files_class(tmp_path / "src")
    src.ply("room.ply")
    argv = ["pointcloud", str(src.root), str(tmp_path / "out")]
    from datamodules.formats import pointcloud_scene

    def write_coordinates_then_die(scene, folder):
        np.save(folder / "coord.npy", scene.coords)
        raise KeyboardInterrupt

    monkeypatch.setattr(pointcloud_scene, "_write_canonical_files", write_coordinates_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert.main(argv)
    assert _everything(tmp_path / "out") == []  # no room/, not even a temporary folder
    monkeypatch.undo()
    assert convert.main(argv) == 0
    assert _visible(tmp_path / "out") == ["room", "room/color.npy", "room/coord.npy", "room/instance.npy",
                                          "room/intensity.npy", "room/meta.json", "room/segment.npy"]


def test_interrupted_coco_conversion_leaves_no_annotation_file(valid_files_class, tmp_path, monkeypatch, capsys):
    voc = valid_files_class(tmp_path).voc()
    argv = ["detection", str(voc), str(tmp_path / "coco"), "--from", "voc", "--to", "coco", "--split", "train"]
    real_replace = os.replace

    def die_before_the_json_appears(src, dst):
        if str(dst).endswith("annotations.json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", die_before_the_json_appears)
    with pytest.raises(KeyboardInterrupt):
        convert.main(argv)
    monkeypatch.undo()
    assert _everything(tmp_path / "coco") == ["images", "images/img0.jpg", "images/img1.jpg"]
    with pytest.raises(DataError, match="COCO annotation file not found"):
        read_coco(tmp_path / "coco" / "annotations.json")  # a later run finds nothing half-written

    assert convert.main(argv) == 2  # the images are there: replacing them needs the flag
    assert "img0.jpg: already exists; pass --overwrite" in capsys.readouterr().err
    assert convert.main(argv + ["--overwrite"]) == 0
    assert len(read_coco(tmp_path / "coco" / "annotations.json").images) == 2


def test_detection_conversion_never_overwrites_without_the_flag(valid_files_class, tmp_path, capsys):
    voc = valid_files_class(tmp_path).voc()
    argv = ["detection", str(voc), str(tmp_path / "yolo"), "--from", "voc", "--to", "yolo", "--split", "train"]
    assert convert.main(argv) == 0
    labels = tmp_path / "yolo" / "labels" / "train" / "img0.txt"
    labels.write_text("0 0.5 0.5 0.1 0.1\n")  # the user edited a label since
    capsys.readouterr()
    assert convert.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsevision convert: ") and "already exists; pass --overwrite" in err
    assert labels.read_text() == "0 0.5 0.5 0.1 0.1\n"
    assert convert.main(argv + ["--overwrite"]) == 0
    assert labels.read_text() != "0 0.5 0.5 0.1 0.1\n"


# ---------------------------------------------------------------------------------------------- leftovers of killed runs
def test_leftovers_of_a_killed_run_are_not_read(valid_files_class, tmp_path):
    files = valid_files_class(tmp_path)
    src = valid_files_class(tmp_path / "clouds")
    src.ply("room.ply")
    (src.root / ".room.ply.tmp-k1ll3d.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    assert convert.main(["pointcloud", str(src.root), str(tmp_path / "out")]) == 0
    assert _visible(tmp_path / "out")[0] == "room"

    voc = files.voc()
    (voc / "Annotations" / ".img0.xml.tmp-k1ll3d.xml").write_text("<annotation><obj")
    assert [r.image_id for r in read_voc(voc, split=None).images] == ["img0", "img1"]

    sequence = files.event_sequence("seq_a", frames=2)
    (sequence / "labels" / ".000001.png.tmp-k1ll3d.png").write_bytes(b"\x89PNG half")
    assert len(read_dsec_semantic_sequence(sequence, num_classes=3)) == 2
