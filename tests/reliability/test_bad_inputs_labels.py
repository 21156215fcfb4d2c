"""Bad weak-label files: corrupt pairs, files made for another dataset or task, and hand-edited labels.

A weak-label file is loaded through :func:`vision.labels.resolve.load_checked` (what every DataModule
calls for ``weak_label_file``); each case checks the DataError names the file and the problem, so a
run never trains on labels that do not belong to its dataset.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vision.labels.conversions import read_scannet_indices
from vision.labels.protocols import PerClass, Ratio
from vision.labels.resolve import load_checked, resolve_weak_labels
from vision.labels.types import DenseLabels
from vision.labels.weakfile import WeakLabelSet, sparsify, weak_file_paths


def _load(valid, json_path, shift: int = 0, task: str = "pointcloud"):
    """Load ``json_path`` against the dataset the valid file was drawn from (``shift``: another one)."""
    return lambda: load_checked(json_path, lambda: iter(valid.full_labels(shift=shift)), task)


def _edit_npz(json_path, change):
    """Rewrite the weak npz after ``change(arrays)`` edits its dict of arrays in place."""
    npz_path = weak_file_paths(json_path)[1]
    with np.load(npz_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    np.savez_compressed(npz_path, **arrays)
    return npz_path


def _edit_header(json_path, change):
    header = json.loads(json_path.read_text())
    change(header)
    json_path.write_text(json.dumps(header))
    return json_path


def file_for_another_dataset(valid):
    json_path = valid.weak_file()
    return _load(valid, json_path, shift=1), json_path


def file_for_another_task(valid):
    json_path = valid.weak_file()
    return _load(valid, json_path, task="events"), json_path


def npz_truncated(valid):
    json_path = valid.weak_file()
    npz_path = weak_file_paths(json_path)[1]
    npz_path.write_bytes(npz_path.read_bytes()[:-50])
    return _load(valid, json_path), npz_path


def npz_missing(valid):
    json_path = valid.weak_file()
    npz_path = weak_file_paths(json_path)[1]
    npz_path.unlink()
    return _load(valid, json_path), npz_path


def json_truncated(valid):
    json_path = valid.weak_file()
    json_path.write_text(json_path.read_text()[:-30])
    return _load(valid, json_path), json_path


def json_without_hash(valid):
    json_path = _edit_header(valid.weak_file(), lambda header: header.pop("source_sha256"))
    return _load(valid, json_path), json_path


def json_from_the_future(valid):
    json_path = _edit_header(valid.weak_file(), lambda header: header.update(format_version=7))
    return _load(valid, json_path), json_path


def json_and_npz_from_different_runs(valid):
    json_path = valid.weak_file()
    other = sparsify(valid.full_labels(), Ratio(0.5), seed=3, task="pointcloud")
    other.save(valid.root / "other")
    weak_file_paths(valid.root / "other")[1].replace(weak_file_paths(json_path)[1])
    return _load(valid, json_path), weak_file_paths(json_path)[1]


def npz_source_two(valid):
    json_path = valid.weak_file()
    npz_path = _edit_npz(json_path, lambda arrays: arrays["scene0/source"].fill(2))
    return _load(valid, json_path), npz_path


def npz_float_class_ids(valid):
    json_path = valid.weak_file()

    def change(arrays):
        arrays["scene1/class_id"] = arrays["scene1/class_id"].astype(np.float32)

    return _load(valid, json_path), _edit_npz(json_path, change)


def npz_index_outside_the_scene(valid):
    json_path = valid.weak_file()
    _edit_npz(json_path, lambda arrays: arrays["scene0/index"].__setitem__(0, 50))  # the scenes have 50 points
    return _load(valid, json_path), json_path


def npz_negative_index(valid):
    json_path = valid.weak_file()
    _edit_npz(json_path, lambda arrays: arrays["scene1/index"].__setitem__(1, -3))
    return _load(valid, json_path), json_path


def npz_class_not_the_full_label(valid):
    json_path = valid.weak_file()

    def change(arrays):
        arrays["scene0/class_id"][0] = (arrays["scene0/class_id"][0] + 1) % 3

    _edit_npz(json_path, change)
    return _load(valid, json_path), json_path


def npz_class_outside_label_map(valid):
    json_path = valid.weak_file()
    _edit_npz(json_path, lambda arrays: arrays["scene0/class_id"].__setitem__(0, -5))
    return _load(valid, json_path), json_path


def npz_sample_not_in_dataset(valid):
    json_path = valid.weak_file()

    def change(arrays):
        for key in [k for k in arrays if k.startswith("scene1/")]:
            arrays[key.replace("scene1/", "scene9/")] = arrays.pop(key)

    _edit_npz(json_path, change)
    return _load(valid, json_path), json_path


def pixel_labels_outside_the_frame(valid):
    frames = [("frame0", DenseLabels(np.array([[0, 1], [1, 1]])))]
    weak = sparsify(frames, PerClass(k=1), seed=0, task="events")
    weak.labels["frame0"].xy[0] = [2.0, 1.0]  # column 2 of a 2-pixel-wide frame
    json_path, _ = weak.save(valid.root / "points")
    return lambda: load_checked(json_path, lambda: iter(frames), "events"), json_path


def scannet_index_file_unreadable(valid):
    path = valid.root / "points20.pth"
    path.write_bytes(b"PK\x03\x04 not a torch file")
    return lambda: read_scannet_indices(path), path


def scannet_index_file_not_integers(valid):
    path = valid.root / "points20.json"
    path.write_text('{"scene0000_00": [0.5, 3, 7]}')
    return lambda: read_scannet_indices(path), path


CASES = [
    pytest.param(file_for_another_dataset, "made from other labels: file records source_sha256",
                 id="weak-file-for-another-dataset"),
    pytest.param(file_for_another_task, "weak labels for task 'pointcloud', but this dataset is 'events'",
                 id="weak-file-for-another-task"),
    pytest.param(npz_truncated, "malformed or truncated weak-label arrays", id="weak-npz-truncated"),
    pytest.param(npz_missing, "weak-label arrays not found", id="weak-npz-missing"),
    pytest.param(json_truncated, "not a readable weak-label header", id="weak-json-truncated"),
    pytest.param(json_without_hash, "weak-label header lacks source_sha256", id="weak-json-missing-key"),
    pytest.param(json_from_the_future, "format_version 7 is not supported", id="weak-json-format-version"),
    pytest.param(json_and_npz_from_different_runs, "the two files come from different runs",
                 id="weak-pair-from-different-runs"),
    pytest.param(npz_source_two, r"sample 'scene0': source must be 0 \(human\) or 1 \(pseudo\)",
                 id="weak-npz-source-two"),
    pytest.param(npz_float_class_ids, "scene1/class_id has dtype float32", id="weak-npz-float-class-ids"),
    pytest.param(npz_index_outside_the_scene, "sample 'scene0': point index 50 outside its 50 points",
                 id="weak-index-outside-scene"),
    pytest.param(npz_negative_index, "sample 'scene1': point index -3 outside its 50 points",
                 id="weak-negative-index"),
    pytest.param(npz_class_not_the_full_label, "sample 'scene0': label 0 has class .* but the full label there is",
                 id="weak-class-differs-from-full-label"),
    pytest.param(npz_class_outside_label_map, "sample 'scene0': negative class id -5", id="weak-negative-class-id"),
    pytest.param(npz_sample_not_in_dataset, "1 samples are not in the dataset, e.g. 'scene9'",
                 id="weak-sample-not-in-dataset"),
    pytest.param(pixel_labels_outside_the_frame, r"sample 'frame0': 1 points outside the 2x2 frame",
                 id="weak-pixels-outside-frame"),
    pytest.param(scannet_index_file_unreadable, "cannot read ScanNet index file", id="scannet-index-unreadable"),
    pytest.param(scannet_index_file_not_integers, "indices must be a 1-D integer list", id="scannet-index-floats"),
]


@pytest.mark.parametrize(("make", "reason"), CASES)
def test_bad_weak_label_file_raises_data_error_naming_the_file(valid, expect_data_error, make, reason):
    read, path = make(valid)
    expect_data_error(read, path, reason)


def test_resolve_refuses_a_weak_label_file_made_for_another_dataset(valid, expect_data_error):
    json_path = valid.weak_file()
    expect_data_error(lambda: resolve_weak_labels(lambda: iter(valid.full_labels(shift=2)), "pointcloud",
                                                  weak_label_file=str(json_path)), json_path, "made from other labels")


def test_a_valid_file_loads_against_its_own_dataset(valid):
    weak = load_checked(valid.weak_file(), lambda: iter(valid.full_labels()), "pointcloud")
    assert sorted(weak) == ["scene0", "scene1"] and weak.counts()["total"] == 20


def test_cached_labels_left_half_written_are_drawn_again(valid, monkeypatch, tmp_path):
    """A run killed between the npz and the json leaves only the npz: the next run redraws and saves both."""
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    first = resolve_weak_labels(lambda: iter(valid.full_labels()), "pointcloud", Ratio(0.1), seed=4)
    cached = next((tmp_path / "cache").rglob("*.weak.json"))
    cached.unlink()  # as if the process died after writing the npz
    again = resolve_weak_labels(lambda: iter(valid.full_labels()), "pointcloud", Ratio(0.1), seed=4)
    assert cached.is_file() and again.counts() == first.counts()
    assert WeakLabelSet.load(cached) == again
