"""Bad point-cloud inputs: one case per reader and failure, each a DataError naming the file and the problem.

Every case starts from a valid file written by ``ValidFiles`` (conftest.py), breaks it in one way,
and reads it back with the reader a user would call.
"""

from __future__ import annotations

import json

import numpy as np
import plyfile
import pytest

from datamodules.formats.las import read_las
from datamodules.formats.npy_cloud import read_npy_cloud, read_npz_cloud
from datamodules.formats.ply import read_ply
from datamodules.formats.pointcloud_io import read_point_cloud
from datamodules.formats.pointcloud_scene import read_canonical
from datamodules.formats.s3dis import read_s3dis_room
from datamodules.formats.scannet import read_scannet_vert
from datamodules.formats.semantickitti import read_semantickitti_scan
from datamodules.pointcloud import PointCloudDataModule


def _write_vertices(path, **columns):
    """A binary PLY whose vertex element has exactly ``columns`` (name -> 1-D array)."""
    vertex = np.empty(len(next(iter(columns.values()))), dtype=[(k, v.dtype) for k, v in columns.items()])
    for name, values in columns.items():
        vertex[name] = values
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


def _xyz(n=4):
    return {axis: np.arange(n, dtype=np.float64) for axis in "xyz"}


# ---------------------------------------------------------------------------------------------- PLY
def ply_truncated(valid):
    path = valid.ply()
    path.write_bytes(path.read_bytes()[:-30])
    return lambda: read_ply(path), path


def ply_ascii_row_missing_a_value(valid):
    path = valid.ply(text=True)
    lines = path.read_text().splitlines()
    lines[-1] = " ".join(lines[-1].split()[:-2])
    path.write_text("\n".join(lines) + "\n")
    return lambda: read_ply(path), path


def ply_not_a_ply(valid):
    path = valid.root / "notes.ply"
    path.write_bytes(b"solid cube\nfacet normal 0 0 1\n")
    return lambda: read_ply(path), path


def ply_nan_coordinate(valid):
    columns = _xyz()
    columns["y"][2] = np.nan
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "nan.ply", **columns))


def ply_infinite_coordinate(valid):
    columns = _xyz()
    columns["z"][0] = np.inf
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "inf.ply", **columns))


def ply_empty_cloud(valid):
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "empty.ply", **_xyz(0)))


def ply_without_z(valid):
    columns = _xyz()
    del columns["z"]
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "flat.ply", **columns))


def ply_fractional_labels(valid):
    columns = {**_xyz(), "label": np.array([0.0, 1.5, 2.0, 1.0], np.float32)}
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "half.ply", **columns))


def ply_labels_beyond_int64(valid):
    columns = {**_xyz(), "label": np.array([0.0, 1e30, 2.0, 1.0], np.float64)}
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "huge.ply", **columns))


def ply_colours_out_of_range(valid):
    columns = {**_xyz(), **{c: np.array([0.1, 0.2, 1.5, -0.5], np.float32) for c in ("red", "green", "blue")}}
    return lambda: read_ply(path), (path := _write_vertices(valid.root / "colours.ply", **columns))


# ---------------------------------------------------------------------------------------------- LAS
def las_truncated(valid):
    path = valid.las()
    path.write_bytes(path.read_bytes()[:-20])
    return lambda: read_las(path), path


def las_random_bytes(valid):
    path = valid.root / "noise.las"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return lambda: read_las(path), path


def las_header_promises_more_points(valid):
    path = valid.las()
    data = bytearray(path.read_bytes())
    data[247:255] = (10**9).to_bytes(8, "little")  # LAS 1.4 point count: a billion points in 800 bytes
    path.write_bytes(bytes(data))
    return lambda: read_las(path), path


def las_class_not_in_class_map(valid):
    path = valid.las()  # classes 0, 1, 2
    return lambda: read_las(path, class_map={0: 0, 1: 1}, unmapped="error"), path


# ---------------------------------------------------------------------------------------------- NPY / NPZ
def npy_truncated(valid):
    path = valid.npy()
    path.write_bytes(path.read_bytes()[:100])
    return lambda: read_npy_cloud(path), path


def npy_text_dtype(valid):
    path = valid.npy(array=np.array([["1", "2", "3"], ["4", "5", "6"]]))
    return lambda: read_npy_cloud(path), path


def npy_object_dtype(valid):
    path = valid.root / "objects.npy"
    np.save(path, np.array([[1, 2, 3], [4, "a", None]], dtype=object), allow_pickle=True)
    return lambda: read_npy_cloud(path), path


def npy_two_columns(valid):
    path = valid.npy(array=np.zeros((5, 2)))
    return lambda: read_npy_cloud(path), path


def npy_nan_coordinate(valid):
    array = np.zeros((5, 3))
    array[3, 0] = np.nan
    path = valid.npy(array=array)
    return lambda: read_npy_cloud(path), path


def npz_label_count_mismatch(valid):
    path = valid.npz(coord=np.zeros((6, 3)), segment=np.zeros(5, np.int64))
    return lambda: read_npz_cloud(path), path


def npz_colours_wrong_shape(valid):
    path = valid.npz(coord=np.zeros((6, 3)), color=np.zeros((6, 4)))
    return lambda: read_npz_cloud(path), path


def npz_truncated(valid):
    path = valid.npz()
    path.write_bytes(path.read_bytes()[:-40])
    return lambda: read_npz_cloud(path), path


def npz_without_coordinates(valid):
    path = valid.npz(segment=np.zeros(5, np.int64))
    return lambda: read_npz_cloud(path), path


# ---------------------------------------------------------------------------------------------- SemanticKITTI, S3DIS, ScanNet
def kitti_scan_not_whole_points(valid):
    scan, _ = valid.kitti()
    scan.write_bytes(scan.read_bytes()[:-6])
    return lambda: read_semantickitti_scan(scan), scan


def kitti_label_count_mismatch(valid):
    scan, labels = valid.kitti()
    labels.write_bytes(labels.read_bytes()[:-4])  # one uint32 label short
    return lambda: read_semantickitti_scan(scan), labels


def s3dis_non_numeric_value(valid):
    room = valid.s3dis_room()
    annotation = sorted(room.glob("Annotations/*.txt"))[0]
    lines = annotation.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split()[2], "1.2.3", 1)
    annotation.write_text("\n".join(lines) + "\n")
    return lambda: read_s3dis_room(room), annotation


def s3dis_row_with_five_columns(valid):
    room = valid.s3dis_room()
    annotation = sorted(room.glob("Annotations/*.txt"))[0]
    annotation.write_text(annotation.read_text() + "1 2 3 4 5\n")
    return lambda: read_s3dis_room(room), annotation


def s3dis_unknown_class(valid):
    room = valid.s3dis_room()
    annotation = sorted(room.glob("Annotations/*.txt"))[0]
    renamed = annotation.rename(annotation.with_name("lamp_1.txt"))
    return lambda: read_s3dis_room(room), renamed


def scannet_label_count_mismatch(valid):
    vert = valid.scannet_vert()
    labels = vert.with_name("scene0000_00_sem_label.npy")
    np.save(labels, np.ones(5, np.int64))
    return lambda: read_scannet_vert(vert), labels


def scannet_label_not_nyu40(valid):
    vert = valid.scannet_vert()
    labels = vert.with_name("scene0000_00_sem_label.npy")
    np.save(labels, np.full(12, 77, np.int64))
    return lambda: read_scannet_vert(vert), labels


# ---------------------------------------------------------------------------------------------- canonical folder
def canonical_point_count_mismatch(valid):
    folder = valid.canonical()
    meta = json.loads((folder / "meta.json").read_text())
    meta["num_points"] = 99
    (folder / "meta.json").write_text(json.dumps(meta))
    return lambda: read_canonical(folder), folder / "meta.json"


def canonical_truncated_meta(valid):
    folder = valid.canonical()
    (folder / "meta.json").write_text('{"format_version": 1, "num_po')
    return lambda: read_canonical(folder), folder / "meta.json"


def canonical_segment_for_other_scene(valid):
    folder = valid.canonical()
    np.save(folder / "segment.npy", np.zeros(7, np.int64))
    return lambda: read_canonical(folder), folder


def unknown_extension(valid):
    path = valid.root / "scan.xyz"
    path.write_text("0 0 0\n")
    return lambda: read_point_cloud(path), path


# ---------------------------------------------------------------------------------------------- DataModule
def class_id_outside_label_map(valid):
    path = valid.ply("train/room.ply")  # labels 0, 1, 2
    datamodule = PointCloudDataModule(data_root=str(valid.root), class_names=["floor", "wall"])
    return lambda: datamodule.read_scene(path), path


CASES = [
    pytest.param(ply_truncated, "malformed PLY", id="ply-truncated"),
    pytest.param(ply_ascii_row_missing_a_value, "malformed PLY", id="ply-ascii-short-row"),
    pytest.param(ply_not_a_ply, "malformed PLY", id="ply-not-a-ply"),
    pytest.param(ply_nan_coordinate, r"NaN or infinite coordinates \(first at point 2\)", id="ply-nan-coordinate"),
    pytest.param(ply_infinite_coordinate, "NaN or infinite coordinates", id="ply-inf-coordinate"),
    pytest.param(ply_empty_cloud, r"empty point cloud \(0 points\)", id="ply-empty-cloud"),
    pytest.param(ply_without_z, r"lacks coordinate properties \['z'\]", id="ply-no-z"),
    pytest.param(ply_fractional_labels, "label values must be whole numbers", id="ply-fractional-labels"),
    pytest.param(ply_labels_beyond_int64, "label values must be whole numbers", id="ply-labels-beyond-int64"),
    pytest.param(ply_colours_out_of_range, r"colors must lie in \[0, 1\]", id="ply-colours-out-of-range"),
    pytest.param(las_truncated, "truncated", id="las-truncated"),
    pytest.param(las_random_bytes, "malformed or truncated LAS/LAZ file", id="las-random-bytes"),
    pytest.param(las_header_promises_more_points, "header says 1000000000 points", id="las-point-count-too-big"),
    pytest.param(las_class_not_in_class_map, r"classes \[2\] are not in class_map", id="las-class-not-mapped"),
    pytest.param(npy_truncated, r"unreadable \.npy file", id="npy-truncated"),
    pytest.param(npy_text_dtype, "array must be numeric", id="npy-text-dtype"),
    pytest.param(npy_object_dtype, r"unreadable \.npy file", id="npy-object-dtype"),
    pytest.param(npy_two_columns, r"expected an \(N, >=3\) array, got shape \(5, 2\)", id="npy-two-columns"),
    pytest.param(npy_nan_coordinate, r"NaN or infinite coordinates \(first at point 3\)", id="npy-nan-coordinate"),
    pytest.param(npz_label_count_mismatch, "semantic has 5 entries but the cloud has 6 points",
                 id="npz-point-label-count-mismatch"),
    pytest.param(npz_colours_wrong_shape, r"color must be \(N, 3\)", id="npz-colours-wrong-shape"),
    pytest.param(npz_truncated, r"unreadable \.npz file", id="npz-truncated"),
    pytest.param(npz_without_coordinates, "no coordinates", id="npz-no-coordinates"),
    pytest.param(kitti_scan_not_whole_points, "not a multiple of 16", id="kitti-scan-truncated"),
    pytest.param(kitti_label_count_mismatch, "11 labels but the scan 000000.bin has 12 points",
                 id="kitti-label-count-mismatch"),
    pytest.param(s3dis_non_numeric_value, "line 2: non-numeric value '1.2.3'", id="s3dis-non-numeric"),
    pytest.param(s3dis_row_with_five_columns, "5 columns, expected 6", id="s3dis-five-columns"),
    pytest.param(s3dis_unknown_class, "unknown S3DIS class 'lamp'", id="s3dis-unknown-class"),
    pytest.param(scannet_label_count_mismatch, "5 labels but scene0000_00_vert.npy has 12 points",
                 id="scannet-label-count-mismatch"),
    pytest.param(scannet_label_not_nyu40, "label 77 is not an NYU40 id", id="scannet-label-not-nyu40"),
    pytest.param(canonical_point_count_mismatch, "meta.json says 99 points but coord.npy has 12",
                 id="canonical-point-count-mismatch"),
    pytest.param(canonical_truncated_meta, "invalid JSON", id="canonical-truncated-meta"),
    pytest.param(canonical_segment_for_other_scene, "semantic has 7 entries but the cloud has 12 points",
                 id="canonical-segment-count-mismatch"),
    pytest.param(unknown_extension, "unknown point-cloud extension '.xyz'", id="unknown-extension"),
    pytest.param(class_id_outside_label_map, "class id 2 >= num_classes 2", id="class-id-outside-label-map"),
]


@pytest.mark.parametrize(("make", "reason"), CASES)
def test_bad_point_cloud_raises_data_error_naming_the_file(valid, expect_data_error, make, reason):
    read, path = make(valid)
    expect_data_error(read, path, reason)
