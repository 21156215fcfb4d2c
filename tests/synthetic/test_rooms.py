"""The procedural room generator: reproducible, every class present, colour a weak cue, real PLY."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData
from scipy.spatial import cKDTree

from datamodules.synthetic.rooms import (
    CLASS_COLOUR_FAMILIES,
    COLOUR_FAMILIES,
    ROOM_CLASSES,
    ROOMS_VERSION,
    ensure_room_dataset,
    generate_room,
    write_room_dataset,
)

SMALL = (3000, 5000)  # points per room in these tests; the default is 40k-80k


@pytest.fixture(scope="module")
def rooms() -> list[dict[str, np.ndarray]]:
    return [generate_room(0, f"train_{i:03d}", points_per_room=SMALL) for i in range(6)]


def test_same_seed_and_room_id_give_identical_arrays(rooms):
    again = generate_room(0, "train_001", points_per_room=SMALL)
    for key in ("coords", "colors", "semantic", "instance"):
        np.testing.assert_array_equal(again[key], rooms[1][key])


def test_another_seed_or_room_id_gives_another_room(rooms):
    other_seed = generate_room(1, "train_001", points_per_room=SMALL)
    assert not np.array_equal(other_seed["coords"], rooms[1]["coords"])
    assert not np.array_equal(rooms[0]["coords"], rooms[1]["coords"])
    assert not np.allclose(other_seed["coords"].max(axis=0), rooms[1]["coords"].max(axis=0), atol=0.05)


def test_arrays_have_the_documented_types_and_point_count_in_range(rooms):
    for room in rooms:
        n = room["coords"].shape[0]
        assert SMALL[0] <= n <= SMALL[1]
        assert room["coords"].dtype == np.float32 and room["coords"].shape == (n, 3)
        assert room["colors"].dtype == np.uint8 and room["colors"].shape == (n, 3)
        assert room["semantic"].dtype == np.int32 and room["instance"].dtype == np.int32
        assert 0 <= room["semantic"].min() and room["semantic"].max() < len(ROOM_CLASSES)


def test_every_class_appears_across_six_rooms(rooms):
    present = set(np.concatenate([room["semantic"] for room in rooms]).tolist())
    assert present == set(range(len(ROOM_CLASSES)))
    assert len(ROOM_CLASSES) >= 10


def test_floor_and_ceiling_are_horizontal_planes_at_room_height(rooms):
    room = rooms[0]
    z = room["coords"][:, 2]
    floor_z = z[room["semantic"] == ROOM_CLASSES.index("floor")]
    ceiling_z = z[room["semantic"] == ROOM_CLASSES.index("ceiling")]
    assert abs(np.median(floor_z)) < 0.005  # noise is a few mm, outliers are rare
    assert 2.5 <= np.median(ceiling_z) <= 3.2


def test_floor_under_a_cabinet_is_not_sampled(rooms):
    """Occlusion holes: the floor under a wall cabinet is hidden (cabinets stand axis-aligned)."""
    cabinet, floor = ROOM_CLASSES.index("cabinet"), ROOM_CLASSES.index("floor")
    checked = 0
    for room in rooms:
        xy, semantic, instance = room["coords"][:, :2], room["semantic"], room["instance"]
        floor_xy = xy[semantic == floor]
        for cabinet_id in np.unique(instance[semantic == cabinet]):
            low, high = np.percentile(xy[instance == cabinet_id], [2, 98], axis=0)
            if np.any(high - low < 0.3):
                continue  # too few points to find the footprint
            inner_low, inner_high = low + 0.05, high - 0.05
            under = np.all((floor_xy > inner_low) & (floor_xy < inner_high), axis=1)
            assert under.sum() <= 0.002 * len(floor_xy) + 1  # at most an outlier or two
            checked += 1
    assert checked >= 2


def test_every_colour_family_is_used_by_at_least_two_classes():
    assert set(CLASS_COLOUR_FAMILIES) == set(ROOM_CLASSES)
    users = {family: [name for name, weights in CLASS_COLOUR_FAMILIES.items() if weights.get(family, 0) > 0]
             for family in COLOUR_FAMILIES}
    assert all(set(weights) <= set(COLOUR_FAMILIES) for weights in CLASS_COLOUR_FAMILIES.values())
    assert {family: len(names) >= 2 for family, names in users.items()} == {f: True for f in COLOUR_FAMILIES}
    assert {"chair", "table"} <= set(users["wood"]) and {"cabinet", "wall"} <= set(users["white"])


def test_colour_alone_does_not_give_the_class(rooms):
    """A 1-nearest-neighbour classifier on rgb, fit on 4 rooms and scored on 2 others, is poor."""
    train_rgb = np.concatenate([r["colors"] for r in rooms[:4]]).astype(np.float64)
    train_label = np.concatenate([r["semantic"] for r in rooms[:4]])
    test_rgb = np.concatenate([r["colors"] for r in rooms[4:]]).astype(np.float64)
    test_label = np.concatenate([r["semantic"] for r in rooms[4:]])
    _, nearest = cKDTree(train_rgb).query(test_rgb, k=1)
    predicted = train_label[nearest]
    ious = [np.sum((predicted == c) & (test_label == c)) / np.sum((predicted == c) | (test_label == c))
            for c in np.unique(test_label)]
    assert (predicted == test_label).mean() < 0.5  # measured 0.25
    assert np.mean(ious) < 0.3  # measured 0.09


def test_write_room_dataset_writes_readable_binary_ply_and_meta(tmp_path):
    out = write_room_dataset(tmp_path / "rooms", num_train=1, num_val=1, num_test=1, seed=3,
                             points_per_room=(2000, 2500))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ROOM_CLASSES and meta["version"] == ROOMS_VERSION
    assert meta["splits"] == {"train": ["train_000"], "val": ["val_000"], "test": ["test_000"]}

    ply = PlyData.read(str(out / "val" / "val_000.ply"))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert [(p.name, p.val_dtype) for p in vertex.properties] == [
        ("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
        ("label", "i4"), ("instance", "i4")]
    room = generate_room(3, "val_000", points_per_room=(2000, 2500))
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1), room["coords"])
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1),
                                  room["colors"])
    np.testing.assert_array_equal(vertex["label"], room["semantic"])
    np.testing.assert_array_equal(vertex["instance"], room["instance"])
    assert meta["counts"]["val"]["points"] == len(room["coords"])
    assert sum(meta["counts"]["val"]["per_class"].values()) == len(room["coords"])


def test_ensure_room_dataset_builds_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path))
    params = {"num_train": 1, "num_val": 0, "num_test": 0, "points_per_room": (1000, 1000)}
    folder = ensure_room_dataset(seed=5, **params)
    assert folder.parent == tmp_path / "synthetic" / "pointcloud"
    assert folder.name.startswith("rooms-v1-seed5-")
    assert (folder / "DONE.json").is_file() and (folder / "train" / "train_000.ply").is_file()
    stamp = (folder / "train" / "train_000.ply").stat().st_mtime_ns
    assert ensure_room_dataset(seed=5, **params) == folder
    assert (folder / "train" / "train_000.ply").stat().st_mtime_ns == stamp  # not rebuilt
    assert len(PlyData.read(str(folder / "train" / "train_000.ply"))["vertex"]) == 1000


def test_bad_point_range_is_refused():
    with pytest.raises(ValueError, match="points_per_room"):
        generate_room(0, "x", points_per_room=(500, 100))
