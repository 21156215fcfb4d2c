"""Fuzzing every reader: random bytes and mutated valid files raise DataError or read a valid result.

The only exception a reader may raise for a bad file is :class:`DataError`; a file that still reads
after a mutation must give a result that passes the same validation the reader applies, so a
mutation is either reported or harmless, never a traceback from numpy, h5py, PIL or a decoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.detection import load_image
from datamodules.formats.aedat4 import read_aedat4
from datamodules.formats.coco import read_coco
from datamodules.formats.detection_common import check_image_file
from datamodules.formats.dsec import DSECEvents, read_dsec_semantic_sequence, read_label_png
from datamodules.formats.event_npz import read_event_npz
from datamodules.formats.events_common import EventArray, validate_events
from datamodules.formats.las import read_las
from datamodules.formats.npy_cloud import read_npy_cloud, read_npz_cloud
from datamodules.formats.ply import read_ply
from datamodules.formats.pointcloud_scene import PointCloudScene, read_canonical, validate_scene
from datamodules.formats.prophesee_dat import read_dat
from datamodules.formats.s3dis import read_s3dis_room
from datamodules.formats.scannet import read_scannet_vert
from datamodules.formats.semantickitti import read_semantickitti_scan
from datamodules.formats.voc import read_voc
from datamodules.formats.yolo import read_yolo
from vision.errors import DataError
from vision.labels.conversions import read_scannet_indices
from vision.labels.weakfile import WeakLabelSet

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass
class Target:
    """A file to break inside a valid dataset, and how the dataset is read back."""

    path: Path
    read: Callable[[], object]


def _read_events(path: Path) -> EventArray:
    with DSECEvents(path) as events:
        return events.read_all()


def _read_sequence(folder: Path):
    sequence = read_dsec_semantic_sequence(folder, num_classes=3)
    try:
        return [sequence.label(i) for i in range(len(sequence))] + [sequence.events.read_all()]
    finally:
        sequence.events.close()


def _image(path: Path):
    check_image_file(path, verify=True)
    return load_image(path, 16)


def _weak_npz(json_path: Path) -> Path:
    return json_path.with_name(json_path.name.replace(".weak.json", ".weak.npz"))


# name -> valid-file factory (ValidFiles -> Target)
TARGETS: dict[str, Callable] = {
    "ply-binary": lambda v: Target(p := v.ply(), lambda: read_ply(p)),
    "ply-ascii": lambda v: Target(p := v.ply(text=True), lambda: read_ply(p)),
    "las": lambda v: Target(p := v.las(), lambda: read_las(p)),
    "npy-cloud": lambda v: Target(p := v.npy(), lambda: read_npy_cloud(p)),
    "npz-cloud": lambda v: Target(p := v.npz(), lambda: read_npz_cloud(p)),
    "kitti-bin": lambda v: Target((scan := v.kitti()[0]), lambda: read_semantickitti_scan(scan)),
    "kitti-label": lambda v: Target((pair := v.kitti())[1], lambda: read_semantickitti_scan(pair[0])),
    "s3dis-txt": lambda v: Target(next((room := v.s3dis_room()).glob("Annotations/*.txt")),
                                  lambda: read_s3dis_room(room)),
    "scannet-vert": lambda v: Target(p := v.scannet_vert(), lambda: read_scannet_vert(p)),
    "scannet-labels": lambda v: Target((p := v.scannet_vert()).with_name("scene0000_00_sem_label.npy"),
                                       lambda: read_scannet_vert(p)),
    "canonical-meta": lambda v: Target((f := v.canonical()) / "meta.json", lambda: read_canonical(f)),
    "canonical-segment": lambda v: Target((f := v.canonical()) / "segment.npy", lambda: read_canonical(f)),
    "dsec-h5": lambda v: Target(p := v.dsec_h5(), lambda: _read_events(p)),
    "event-npz": lambda v: Target(p := v.event_npz(), lambda: read_event_npz(p, sensor_size=(32, 24))),
    "prophesee-dat": lambda v: Target(p := v.dat(), lambda: read_dat(p)),
    "aedat4": lambda v: Target(p := v.root / "rec.aedat4", lambda: read_aedat4(p)),
    "label-png": lambda v: Target(p := v.label_png(), lambda: read_label_png(p, num_classes=3)),
    "timestamps": lambda v: Target((f := v.event_sequence()) / "timestamps.txt", lambda: _read_sequence(f)),
    "sequence-h5": lambda v: Target((f := v.event_sequence()) / "events.h5", lambda: _read_sequence(f)),
    "coco-json": lambda v: Target(p := v.coco(), lambda: read_coco(p, verify_images=True)),
    "voc-xml": lambda v: Target((r := v.voc()) / "Annotations" / "img0.xml", lambda: read_voc(r, split="train")),
    "voc-split": lambda v: Target((r := v.voc()) / "ImageSets" / "Main" / "train.txt",
                                  lambda: read_voc(r, split="train")),
    "yolo-labels": lambda v: Target((r := v.yolo()) / "labels" / "img0.txt", lambda: read_yolo(r)),
    "yolo-classes": lambda v: Target((r := v.yolo()) / "classes.txt", lambda: read_yolo(r)),
    "yolo-data-yaml": lambda v: Target((r := v.yolo()) / "data.yaml",
                                       lambda: read_yolo(r, classes_file=r / "data.yaml")),
    "jpeg": lambda v: Target(p := v.jpeg(), lambda: _image(p)),
    "png": lambda v: Target(p := v.png(), lambda: _image(p)),
    "weak-json": lambda v: Target(p := v.weak_file(), lambda: WeakLabelSet.load(p)),
    "weak-npz": lambda v: Target(_weak_npz(p := v.weak_file()), lambda: WeakLabelSet.load(p)),
    "scannet-indices-json": lambda v: Target(p := v.root / "points20.json",
                                             lambda: read_scannet_indices(p)),
}
#: Formats whose valid file the tests cannot write: fuzzed with random bytes only (and the real sample).
NO_VALID_FILE = {"aedat4", "scannet-indices-json"}


def _check_result(result) -> None:
    """A file that still reads must give data that passes the readers' own validation."""
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, PointCloudScene):
            validate_scene(item)
        elif isinstance(item, EventArray):
            validate_events(item)


def _read_bytes(target: Target, data: bytes) -> None:
    target.path.parent.mkdir(parents=True, exist_ok=True)
    target.path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipped boxes, guessed sensor sizes: warnings are allowed
        try:
            result = target.read()
        except DataError as err:
            assert str(err).startswith(err.path) and err.reason
            return
    _check_result(result)


class FuzzTargets:
    """One valid dataset per reader, made on first use and shared by all of hypothesis' examples
    (an example only rewrites the target file, so the rest of the dataset stays valid)."""

    def __init__(self, valid_files: Callable, tmp_path_factory) -> None:
        self.valid_files, self.tmp_path_factory = valid_files, tmp_path_factory
        self.made: dict[str, tuple[Target, bytes]] = {}

    def __call__(self, name: str) -> tuple[Target, bytes]:
        if name not in self.made:
            target = TARGETS[name](self.valid_files(self.tmp_path_factory.mktemp(name)))
            if name == "scannet-indices-json":
                target.path.write_text('{"scene0000_00": [0, 3, 7]}')
            self.made[name] = target, (target.path.read_bytes() if target.path.exists() else b"")
        return self.made[name]


@pytest.fixture(scope="module")
def fuzz_target(valid_files_class, tmp_path_factory) -> FuzzTargets:
    return FuzzTargets(valid_files_class, tmp_path_factory)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_raise_only_data_error(fuzz_target, name, data):
    target, _ = fuzz_target(name)
    _read_bytes(target, data)


@pytest.mark.parametrize("name", sorted(set(TARGETS) - NO_VALID_FILE))
@FUZZ
@given(cut=st.floats(0.0, 1.0), edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
       truncate=st.booleans())
def test_mutated_valid_files_raise_only_data_error(fuzz_target, name, cut, edits, truncate):
    target, original = fuzz_target(name)
    assert original, "the valid file must exist"
    data = bytearray(original)
    for position, value in edits:
        data[min(int(position * len(data)), len(data) - 1)] = value
    if truncate:
        data = data[: int(cut * len(data))]
    _read_bytes(target, bytes(data))


def test_mutated_real_aedat4_sample_raises_only_data_error(shared_data, tmp_path):
    original = (shared_data / "event_samples" / "sample.aedat4").read_bytes()
    target = Target(tmp_path / "rec.aedat4", lambda: read_aedat4(tmp_path / "rec.aedat4"))

    @FUZZ
    @given(cut=st.floats(0.0, 1.0), edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)),
                                                    min_size=1, max_size=8))
    def check(cut, edits):
        data = bytearray(original[: max(16, int(cut * len(original)))])
        for position, value in edits:
            data[min(int(position * len(data)), len(data) - 1)] = value
        _read_bytes(target, bytes(data))

    check()


def test_valid_files_read_back(valid_files_class, tmp_path):
    """The fuzz tests start from files that really are valid (and read without a warning)."""
    for name in sorted(set(TARGETS) - NO_VALID_FILE):
        target = TARGETS[name](valid_files_class(tmp_path / name))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _check_result(target.read())
