"""The weak-label file: layout, round trip, refusal to overwrite, source hash, sparsify, imports."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import vision
from vision.errors import DataError
from vision.labels.protocols import DropBoxes, PerClass, Ratio
from vision.labels.types import HUMAN, IGNORE_INDEX, PSEUDO, BoxLabels, DenseLabels, PointLabels
from vision.labels.weakfile import WeakLabelSet, import_scannet_indices, source_sha256, sparsify

IGN = IGNORE_INDEX


def clouds() -> list[tuple[str, DenseLabels]]:
    """Three small clouds: 40 points with classes 0-3 (10 ignored), 10 points of class 2, a 5-point one."""
    first = np.arange(40) % 4
    first[:10] = IGN
    return [("area_1/office_1", DenseLabels(first)), ("area_1/office_2", DenseLabels(np.full(10, 2))),
            ("area_2/hall", DenseLabels(np.array([0, 1, IGN, 1, 0]), np.array([0, 0, 0, 1, 1])))]


def point_set() -> WeakLabelSet:
    """PerClass(k=2) labels plus two pseudo-labels in office_2: one on a human label (dropped), one new."""
    weak = sparsify(clouds(), PerClass(k=2), seed=3)
    taken = weak["area_1/office_2"].index
    free = next(i for i in range(10) if i not in taken)
    pseudo = {"area_1/office_2": PointLabels(class_id=[2, 2], index=[taken[0], free], confidence=[0.75, 0.5])}
    return weak.merge_pseudo(pseudo)


def test_sparsify_header_counts_are_hand_computed():
    weak = sparsify(clouds(), PerClass(k=2), seed=3)
    # office_1: classes 0-3 two each; office_2: class 2 twice; hall: 0 twice, 1 twice
    assert [len(weak[s]) for s in weak] == [8, 2, 4]
    assert list(weak) == ["area_1/office_1", "area_1/office_2", "area_2/hall"]
    counts = weak.counts()
    assert counts == {"per_class": {"0": 4, "1": 4, "2": 4, "3": 2}, "human": 14, "pseudo": 0, "total": 14,
                      "source_labelled": 30 + 10 + 4}
    assert weak.task == "pointcloud" and weak.seed == 3
    assert weak.protocol == {"name": "per_class", "params": {"k": 2}}
    assert weak.source_sha256 == source_sha256(clouds())


def test_sparsify_is_independent_of_order_and_subset_but_not_of_seed():
    items = clouds()
    full = sparsify(items, Ratio(0.3), seed=0)
    reversed_subset = sparsify(items[::-1][:2], Ratio(0.3), seed=0)
    for sample_id in reversed_subset:
        assert np.array_equal(reversed_subset[sample_id].index, full[sample_id].index)
    other = sparsify(items, Ratio(0.3), seed=1)
    assert not np.array_equal(other["area_1/office_1"].index, full["area_1/office_1"].index)


def test_round_trip_keeps_every_array_and_dtype(tmp_path):
    weak = point_set()
    json_path, npz_path = weak.save(tmp_path / "s3dis-2pt")
    assert (json_path.name, npz_path.name) == ("s3dis-2pt.weak.json", "s3dis-2pt.weak.npz")
    for path in (tmp_path / "s3dis-2pt", json_path, npz_path):
        assert WeakLabelSet.load(path) == weak
    office = WeakLabelSet.load(json_path)["area_1/office_2"]
    assert office.source.tolist() == [HUMAN, HUMAN, PSEUDO] and office.confidence.tolist() == [1, 1, 0.5]
    with np.load(npz_path) as npz:
        assert npz["area_2/hall/index"].dtype == np.int64
        assert npz["area_2/hall/class_id"].dtype == np.int32
        assert npz["area_2/hall/source"].dtype == np.uint8
        assert npz["area_2/hall/confidence"].dtype == np.float16
        assert sorted(npz.files) == sorted(f"{s}/{k}" for s in weak for k in ("index", "class_id", "source",
                                                                             "confidence"))
    assert sorted(tmp_path.iterdir()) == [json_path, npz_path]  # no temporary files left behind


def test_header_layout(tmp_path):
    json_path, _ = point_set().save(tmp_path / "w")
    header = json.loads(json_path.read_text())
    assert set(header) == {"format_version", "task", "protocol", "seed", "source_sha256", "created",
                           "tool_version", "counts"}
    assert header["format_version"] == 1 and header["tool_version"] == vision.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header["created"])
    assert header["protocol"] == {"name": "per_class", "params": {"k": 2}}
    assert header["counts"] == {"per_class": {"0": 4, "1": 4, "2": 5, "3": 2}, "human": 14, "pseudo": 1,
                                "total": 15, "source_labelled": 44}


def test_xy_and_box_round_trip(tmp_path):
    xy = PointLabels(class_id=[1, 0], xy=[[0.5, 2.25], [7.0, 3.0]], source=[HUMAN, PSEUDO],
                     confidence=[1.0, 0.625])
    box = BoxLabels([[0, 0, 4, 2.5]], [3], complete=False)
    empty = PointLabels(class_id=np.zeros(0), xy=np.zeros((0, 2)))
    weak = WeakLabelSet({"frame_0": xy, "frame_1": empty, "img_0": box}, task="mixed",
                        protocol={"name": "full", "params": {}}, seed=0, source_sha256="0" * 64)
    weak.save(tmp_path / "mixed")
    loaded = WeakLabelSet.load(tmp_path / "mixed")
    assert loaded == weak
    assert loaded["frame_0"].xy.dtype == np.float32 and loaded["frame_0"].xy.tolist() == [[0.5, 2.25], [7, 3]]
    assert loaded["frame_0"].confidence.dtype == np.float16 and loaded["frame_0"].confidence[1] == 0.625
    assert loaded["frame_1"].xy.shape == (0, 2)
    assert loaded["img_0"].complete is False and loaded["img_0"].boxes.tolist() == [[0, 0, 4, 2.5]]
    with np.load(tmp_path / "mixed.weak.npz") as npz:
        assert npz["img_0/complete"].shape == () and npz["img_0/complete"].dtype == np.bool_
        assert npz["img_0/boxes"].dtype == np.float32


def test_save_refuses_to_overwrite(tmp_path):
    weak = point_set()
    json_path, _ = weak.save(tmp_path / "w")
    before = json_path.read_text()
    with pytest.raises(FileExistsError, match=r"w\.weak\.json.*overwrite=True"):
        sparsify(clouds(), Ratio(0.5), seed=0).save(tmp_path / "w")
    assert json_path.read_text() == before
    sparsify(clouds(), Ratio(0.5), seed=0).save(tmp_path / "w", overwrite=True)
    assert WeakLabelSet.load(tmp_path / "w").protocol["name"] == "ratio"


def test_source_hash_ignores_order_and_storage_dtype_but_not_labels():
    items = clouds()
    reference = source_sha256(items)
    assert source_sha256(items[::-1]) == reference
    as_int32 = [(s, DenseLabels(d.semantic.astype(np.int32), d.instance)) for s, d in items]
    assert source_sha256(as_int32) == reference
    changed = [(s, DenseLabels(d.semantic.copy(), d.instance)) for s, d in items]
    changed[1][1].semantic[3] = 0
    assert source_sha256(changed) != reference
    renamed = [("x" + s, d) for s, d in items]
    assert source_sha256(renamed) != reference
    boxes = [("img", BoxLabels([[0, 0, 2, 2]], [1]))]
    assert source_sha256(boxes) != source_sha256([("img", BoxLabels([[0, 0, 2, 2]], [1], complete=False))])
    with pytest.raises(ValueError, match="twice"):
        source_sha256(items + items[:1])


def test_load_with_other_source_hash_names_both(tmp_path):
    weak = point_set()
    weak.save(tmp_path / "w")
    assert WeakLabelSet.load(tmp_path / "w", expected_sha256=source_sha256(clouds())) == weak
    other = "ab" * 32
    with pytest.raises(DataError) as info:
        WeakLabelSet.load(tmp_path / "w", expected_sha256=other)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "w.weak.json"))
    assert weak.source_sha256 in message and other in message


def test_truncated_or_incomplete_files_are_data_errors(tmp_path):
    _, npz_path = point_set().save(tmp_path / "w")
    data = npz_path.read_bytes()
    npz_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"^.*w\.weak\.npz: malformed or truncated"):
        WeakLabelSet.load(tmp_path / "w")
    # an npz without class_id for one sample
    weak = point_set()
    weak.save(tmp_path / "v")
    with np.load(tmp_path / "v.weak.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "area_2/hall/class_id"}
    np.savez(tmp_path / "v.weak.npz", **arrays)
    with pytest.raises(DataError, match="area_2/hall.*missing class_id"):
        WeakLabelSet.load(tmp_path / "v")


def test_bad_headers_are_data_errors(tmp_path):
    json_path, _ = point_set().save(tmp_path / "w")
    with pytest.raises(DataError, match="not found"):
        WeakLabelSet.load(tmp_path / "missing")
    header = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**header, "format_version": 2}))
    with pytest.raises(DataError, match="format_version 2"):
        WeakLabelSet.load(json_path)
    json_path.write_text(json.dumps({k: v for k, v in header.items() if k != "seed"}))
    with pytest.raises(DataError, match="lacks seed"):
        WeakLabelSet.load(json_path)
    json_path.write_text("{not json")
    with pytest.raises(DataError, match="not a readable"):
        WeakLabelSet.load(json_path)
    # a header from another run beside this npz
    json_path.write_text(json.dumps({**header, "counts": {**header["counts"], "total": 99}}))
    with pytest.raises(DataError, match="different runs"):
        WeakLabelSet.load(json_path)


def test_merge_pseudo_adds_only_unlabelled_points():
    human = PointLabels(class_id=[1, 2], index=[3, 8])
    weak = WeakLabelSet({"s": human, "t": PointLabels(class_id=[0], index=[1])}, task="pointcloud",
                        protocol={"name": "count", "params": {"n": 2}}, seed=0, source_sha256="0" * 64)
    pseudo = PointLabels(class_id=[5, 1, 5, 4], index=[9, 3, 9, 0], confidence=[0.9, 0.8, 0.7, 0.6])
    merged = weak.merge_pseudo({"s": pseudo})
    s = merged["s"]
    assert s.index.tolist() == [3, 8, 0, 9] and s.class_id.tolist() == [1, 2, 4, 5]
    assert s.source.tolist() == [HUMAN, HUMAN, PSEUDO, PSEUDO]
    assert s.confidence.tolist() == [1.0, 1.0, pytest.approx(0.6, abs=1e-3), pytest.approx(0.9, abs=1e-3)]
    assert merged["t"].index.tolist() == [1] and merged.counts()["pseudo"] == 2
    # a second round replaces the first round's pseudo-labels
    again = merged.merge_pseudo({"t": PointLabels(class_id=[3], index=[2])})
    assert again["s"].index.tolist() == [3, 8] and again["t"].index.tolist() == [1, 2]
    with pytest.raises(ValueError, match="unknown sample"):
        weak.merge_pseudo({"u": pseudo})


def test_merge_pseudo_on_pixels_compares_nearest_pixels():
    weak = WeakLabelSet({"f": PointLabels(class_id=[1], xy=[[2.0, 3.0]])}, task="events",
                        protocol={"name": "per_class", "params": {"k": 1}}, seed=0, source_sha256="0" * 64)
    merged = weak.merge_pseudo({"f": PointLabels(class_id=[0, 0], xy=[[2.4, 2.6], [5.0, 1.0]])})
    assert merged["f"].xy.tolist() == [[2.0, 3.0], [5.0, 1.0]]


def test_drop_boxes_set_round_trip(tmp_path):
    items = [(f"img_{i}", BoxLabels([[0, 0, 2, 2], [3, 3, 5, 6], [1, 1, 9, 9]], [0, 1, 2])) for i in range(4)]
    weak = sparsify(items, DropBoxes(0.5), seed=0)
    assert weak.task == "detection" and weak.counts()["source_labelled"] == 12
    weak.save(tmp_path / "boxes")
    loaded = WeakLabelSet.load(tmp_path / "boxes", expected_sha256=source_sha256(items))
    assert loaded == weak
    assert [loaded[s].complete for s in loaded] == [len(weak[s]) == 3 for s in weak]


@pytest.mark.parametrize("suffix", [".pth", ".json", ".npz"])
def test_import_scannet_indices(tmp_path, suffix):
    items = clouds()[::2]  # office_1 (40 points) and hall (5 points)
    indices = {"area_1/office_1": np.array([12, 0, 13, 12]), "area_2/hall": np.array([2, 4])}
    path = tmp_path / f"points20{suffix}"
    if suffix == ".pth":
        import torch  # only here: importing torch takes seconds

        torch.save(indices, path)
    elif suffix == ".json":
        path.write_text(json.dumps({k: v.tolist() for k, v in indices.items()}))
    else:
        np.savez(path, **indices)
    weak = import_scannet_indices(path, items)
    # index 0 of office_1 and 2 of hall are unlabelled (ignored); 12 is repeated
    assert weak["area_1/office_1"].index.tolist() == [12, 13]
    assert weak["area_1/office_1"].class_id.tolist() == [0, 1]
    assert weak["area_2/hall"].index.tolist() == [4] and weak["area_2/hall"].class_id.tolist() == [0]
    assert weak.protocol["name"] == "scannet_indices" and weak.seed is None
    assert weak.source_sha256 == source_sha256(items)


def test_import_scannet_indices_errors(tmp_path):
    items = clouds()[2:]  # hall: 5 points
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"area_2/hall": [1, 5]}))
    with pytest.raises(DataError, match=r"bad\.json: scene 'area_2/hall': index 5 outside its 5 points"):
        import_scannet_indices(path, items)
    path.write_text(json.dumps({"area_2/hall": [1], "scene0999_00": [0]}))
    with pytest.raises(DataError, match="1 scenes are not in the dataset, e.g. 'scene0999_00'"):
        import_scannet_indices(path, items)
    path.write_text(json.dumps({"scene0999_00": [0]}))
    with pytest.raises(DataError, match="no entry for dataset sample 'area_2/hall'"):
        import_scannet_indices(path, items)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot read"):
        import_scannet_indices(tmp_path / "junk.pth", items)


def test_real_lidar_tile_sparsified_to_a_tenth_of_a_percent(shared_data, tmp_path):
    import laspy

    las = laspy.read(shared_data / "ign_lidarhd" / "870000_6618000.subset.50mx100m.las")
    items = [("870000_6618000", DenseLabels(np.asarray(las.classification)))]  # ASPRS classes 1, 2, 6
    weak = sparsify(items, Ratio(0.001), seed=0)
    labels = weak["870000_6618000"]
    assert len(labels) == 71  # round(0.001 * 70,840)
    assert np.array_equal(np.asarray(las.classification)[labels.index], labels.class_id)
    assert set(weak.counts()["per_class"]) <= {"1", "2", "6"}
    weak.save(tmp_path / "lidar")
    assert WeakLabelSet.load(tmp_path / "lidar", expected_sha256=source_sha256(items)) == weak
