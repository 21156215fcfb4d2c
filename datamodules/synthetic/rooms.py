"""Procedural indoor rooms, written as binary PLY: the embedded default 3D segmentation data.

Each room is an S3DIS-like scan: a box room (4-10 m x 3-8 m, 2.5-3.2 m high) with doors, recessed
windows, tables, chairs, a sofa, cabinets, bookshelves, lamps and clutter, built from boxes,
cylinders, cones and spheres. Surfaces are sampled by area, then thinned with a density that falls
off with distance from a virtual scanner; points hidden inside or behind other solids (floor under
a cabinet, wall behind a bookshelf, table top under a mug) are dropped; noise is added along the
normals plus a few outliers.

Colour is deliberately a weak cue: colours come from shared families (:data:`CLASS_COLOUR_FAMILIES`),
every family is used by at least two classes, so chairs and tables share wood, walls and cabinets
share white and grey; geometry is what tells them apart.

PLY layout (``write_room_ply``): one ``vertex`` element with ``x, y, z`` float32, ``red, green,
blue`` uint8, ``label`` int32 (index into :data:`ROOM_CLASSES`), ``instance`` int32.

Layout lives in :mod:`.room_layout`, surface sampling and occlusion in :mod:`.room_geometry`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from plyfile import PlyData, PlyElement

from datamodules.synthetic.cache import build_once, dataset_dir
from datamodules.synthetic.room_geometry import hidden_mask, part_area, sample_part
from datamodules.synthetic.room_layout import RoomBuilder, build_scene
from vision.labels.seeding import sample_rng

ROOM_CLASSES: list[str] = ["floor", "ceiling", "wall", "door", "window", "table", "chair", "sofa",
                           "cabinet", "bookshelf", "lamp", "clutter"]
ROOMS_VERSION = 1

#: Colour families as (light, dark) RGB endpoints; an object's colour is a random blend of the two.
COLOUR_FAMILIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "white": ((246, 246, 240), (205, 205, 196)),
    "grey": ((185, 185, 185), (95, 95, 98)),
    "wood": ((205, 165, 115), (95, 60, 35)),
    "beige": ((232, 214, 178), (185, 160, 120)),
    "blue": ((135, 165, 215), (30, 50, 110)),
    "green": ((150, 190, 135), (40, 90, 50)),
    "black": ((70, 70, 72), (15, 15, 18)),
    "red": ((215, 90, 75), (120, 25, 25)),
}
_ALL = {family: 1.0 for family in COLOUR_FAMILIES}

#: Main colour of each class: family -> weight. Every family appears under >= 2 classes.
CLASS_COLOUR_FAMILIES: dict[str, dict[str, float]] = {
    "floor": {"wood": 0.4, "grey": 0.35, "beige": 0.25},
    "ceiling": {"white": 0.8, "grey": 0.2},
    "wall": {"white": 0.45, "beige": 0.25, "grey": 0.15, "blue": 0.075, "green": 0.075},
    "door": {"wood": 0.5, "white": 0.3, "grey": 0.2},
    "window": {"white": 0.5, "black": 0.3, "grey": 0.2},
    "table": {"wood": 0.5, "white": 0.25, "black": 0.25},
    "chair": {"black": 0.3, "wood": 0.3, "blue": 0.15, "red": 0.1, "green": 0.15},
    "sofa": {"grey": 0.3, "blue": 0.2, "beige": 0.2, "green": 0.15, "red": 0.15},
    "cabinet": {"white": 0.35, "grey": 0.35, "wood": 0.3},
    "bookshelf": {"wood": 0.5, "white": 0.3, "black": 0.2},
    "lamp": {"black": 0.3, "white": 0.25, "beige": 0.15, "red": 0.1, "green": 0.1, "blue": 0.1},
    "clutter": _ALL,
}
#: Colours of secondary parts (legs, glass, handles, lamp shades, books), by role.
ROLE_COLOUR_FAMILIES: dict[str, dict[str, float]] = {
    "metal": {"grey": 0.5, "black": 0.5},
    "glass": {"blue": 0.6, "grey": 0.4},
    "any": _ALL,
}

PLY_VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                             ("blue", "u1"), ("label", "<i4"), ("instance", "<i4")])
DEFAULT_POINTS_PER_ROOM = (40_000, 80_000)
_OVERSAMPLE = 3.0  # candidates per kept point, so the distance fall-off has room to thin


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[rng.choice(len(names), p=p / p.sum())]


def family_colour(rng: np.random.Generator, family: str) -> np.ndarray:
    """One object's colour ``(3,)`` float in [0, 1]: a random blend inside ``family``."""
    light, dark = (np.asarray(c, dtype=np.float64) / 255.0 for c in COLOUR_FAMILIES[family])
    t = rng.uniform()
    return np.clip(light * (1 - t) + dark * t + rng.normal(0, 0.02, 3), 0, 1)


def _object_colours(rng: np.random.Generator, class_name: str) -> dict[str, np.ndarray]:
    """Colour per part role of one object; secondary roles sometimes reuse the main colour."""
    main = family_colour(rng, _pick(rng, CLASS_COLOUR_FAMILIES[class_name]))
    colours = {"main": main}
    for role in ("metal", "glass"):  # "any" is drawn per item by the layout
        same = role == "metal" and rng.uniform() < 0.4  # e.g. wooden legs under a wooden top
        colours[role] = main if same else family_colour(rng, _pick(rng, ROLE_COLOUR_FAMILIES[role]))
    return colours


def _scene_candidates(rng: np.random.Generator, scene: RoomBuilder, num_candidates: int):
    """Sample every part by area: points, normals ``(M, 3)``, part index ``(M,)`` (sorted)."""
    areas = np.array([part_area(p, scene.size) for p in scene.parts])
    counts = rng.poisson(areas * (num_candidates / areas.sum()))
    samples = [sample_part(p, int(n), rng, scene.size) for p, n in zip(scene.parts, counts)]
    points = np.concatenate([s[0] for s in samples])
    normals = np.concatenate([s[1] for s in samples])
    part_index = np.repeat(np.arange(len(scene.parts)), counts)
    return points, normals, part_index


def _thin_by_distance(rng: np.random.Generator, points: np.ndarray, scanner: np.ndarray,
                      falloff: float, target: int) -> np.ndarray:
    """Indices of ``target`` points drawn without replacement with weight 1 / (1 + (d / falloff)^2).

    Weighted sampling without replacement by exponential keys (Efraimidis & Spirakis 2006): keep
    the ``target`` smallest ``Exp(1) / w``; near points are almost all kept, far ones thinned.
    """
    distance = np.linalg.norm(points - scanner, axis=1)
    weight = 1.0 / (1.0 + (distance / falloff) ** 2)
    keys = rng.exponential(size=points.shape[0]) / weight
    if target >= points.shape[0]:
        return np.arange(points.shape[0])
    return np.sort(np.argpartition(keys, target)[:target])


def _shade(rng: np.random.Generator, base: np.ndarray, normals: np.ndarray, brightness: float,
           light: np.ndarray) -> np.ndarray:
    """uint8 colours: object colour x mild Lambert shading x room brightness + per-point noise."""
    lambert = 0.88 + 0.12 * (normals @ light)
    rgb = base * (brightness * lambert)[:, None] + rng.normal(0, 0.025, base.shape)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def generate_room(seed: int, room_id: str, points_per_room: tuple[int, int] = DEFAULT_POINTS_PER_ROOM,
                  noise_sigma: tuple[float, float] = (0.002, 0.006), outlier_ratio: float = 0.002
                  ) -> dict[str, np.ndarray]:
    """One procedural room, reproducible from ``(seed, room_id)`` alone.

    Args:
        seed: dataset seed; with ``room_id`` it seeds :func:`vision.labels.seeding.sample_rng`.
        room_id: the room's name, e.g. ``"train_003"``.
        points_per_room: inclusive range of the room's point count (drawn per room).
        noise_sigma: range of the per-room Gaussian noise along normals, metres.
        outlier_ratio: fraction of points pushed 5-30 cm off their surface.

    Returns:
        ``coords`` (N, 3) float32 metres (room corner at the origin, z up), ``colors`` (N, 3) uint8,
        ``semantic`` (N,) int32 index into :data:`ROOM_CLASSES`, ``instance`` (N,) int32.
    """
    low, high = (int(v) for v in points_per_room)
    if not 0 < low <= high:
        raise ValueError(f"points_per_room must be 0 < low <= high, got {points_per_room}")
    rng = sample_rng(seed, room_id)
    scene = build_scene(rng, ROOM_CLASSES, lambda name: _object_colours(rng, name))
    target = int(rng.integers(low, high + 1))
    points, normals, part_index = _scene_candidates(rng, scene, int(target * _OVERSAMPLE))
    visible = ~hidden_mask(scene.parts, scene.cutters, points, part_index)
    points, normals, part_index = points[visible], normals[visible], part_index[visible]

    scanner = np.array([rng.uniform(0.8, scene.size[0] - 0.8), rng.uniform(0.8, scene.size[1] - 0.8),
                        rng.uniform(1.2, 1.8)])
    keep = _thin_by_distance(rng, points, scanner, rng.uniform(1.5, 3.0), target)
    points, normals, part_index = points[keep], normals[keep], part_index[keep]

    part_colour = np.stack([p.colour for p in scene.parts])
    light = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), 1.0])
    brightness = rng.uniform(0.75, 1.1)
    colors = _shade(rng, part_colour[part_index], normals, brightness, light / np.linalg.norm(light))

    sigma = rng.uniform(*noise_sigma)
    points = points + normals * rng.normal(0, sigma, (points.shape[0], 1))
    outliers = rng.random(points.shape[0]) < outlier_ratio
    offsets = normals[outliers] * rng.uniform(0.05, 0.3, (int(outliers.sum()), 1))
    points[outliers] += offsets + rng.normal(0, 0.05, offsets.shape)
    return {
        "coords": points.astype(np.float32),
        "colors": colors,
        "semantic": np.array([p.label for p in scene.parts], dtype=np.int32)[part_index],
        "instance": np.array([p.instance for p in scene.parts], dtype=np.int32)[part_index],
    }


def write_room_ply(path: str | Path, room: dict[str, np.ndarray]) -> None:
    """Write one room as binary little-endian PLY with :data:`PLY_VERTEX_DTYPE` vertices."""
    vertex = np.empty(room["coords"].shape[0], dtype=PLY_VERTEX_DTYPE)
    for i, axis in enumerate("xyz"):
        vertex[axis] = room["coords"][:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = room["colors"][:, i]
    vertex["label"], vertex["instance"] = room["semantic"], room["instance"]
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(path))


def write_room_dataset(out_dir: str | Path, num_train: int = 30, num_val: int = 8, num_test: int = 8,
                       seed: int = 0, points_per_room: tuple[int, int] = DEFAULT_POINTS_PER_ROOM) -> Path:
    """Write ``<out_dir>/{train,val,test}/<room_id>.ply`` and ``<out_dir>/meta.json``.

    Room ids are ``<split>_<index:03d>``; each room is seeded by ``(seed, room_id)`` only, so a
    room does not change when the number of rooms does. ``meta.json`` holds the classes, the room
    ids per split and point counts per split and class.
    """
    out = Path(out_dir)
    splits = {"train": num_train, "val": num_val, "test": num_test}
    meta: dict[str, Any] = {"generator": "rooms", "version": ROOMS_VERSION, "seed": int(seed),
                            "classes": ROOM_CLASSES, "points_per_room": list(points_per_room),
                            "splits": {}, "counts": {}}
    for split, count in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        ids = [f"{split}_{i:03d}" for i in range(int(count))]
        per_class = np.zeros(len(ROOM_CLASSES), dtype=np.int64)
        for room_id in ids:
            room = generate_room(seed, room_id, points_per_room=points_per_room)
            write_room_ply(out / split / f"{room_id}.ply", room)
            per_class += np.bincount(room["semantic"], minlength=len(ROOM_CLASSES))
        meta["splits"][split] = ids
        meta["counts"][split] = {"rooms": len(ids), "points": int(per_class.sum()),
                                 "per_class": dict(zip(ROOM_CLASSES, per_class.tolist()))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ensure_room_dataset(seed: int = 0, num_train: int = 30, num_val: int = 8, num_test: int = 8,
                        points_per_room: tuple[int, int] = DEFAULT_POINTS_PER_ROOM) -> Path:
    """The cached room dataset for these parameters, generated on first use (DataModule.prepare_data).

    Lives in ``dataset_dir("pointcloud", "rooms", ROOMS_VERSION, seed, params)``, built with
    :func:`build_once` so an interrupted build is never mistaken for a finished one.
    """
    params = {"num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test),
              "points_per_room": [int(v) for v in points_per_room]}
    target = dataset_dir("pointcloud", "rooms", ROOMS_VERSION, seed, params)
    return build_once(target, lambda folder: write_room_dataset(folder, seed=seed, **params), params=params)
