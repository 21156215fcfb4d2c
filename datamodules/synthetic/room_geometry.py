"""Surface primitives of the synthetic rooms: area, uniform sampling, hidden faces, solids.

A :class:`Part` is one box, rectangle, vertical cylinder, open cone or sphere in world coordinates
(metres, z up, room corner at the origin). Faces that touch a room surface (a cabinet's back against
its wall, a table leg's foot) are never sampled, and :func:`hidden_mask` drops sampled points that
lie inside another solid (floor under a cabinet, table top under a mug) or inside a wall opening.
Used by :mod:`datamodules.synthetic.rooms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MARGIN = 0.02  # a point this close inside another solid is hidden (wall behind a cabinet's back)


@dataclass
class Part:
    """One surface in world coordinates; ``geom`` depends on ``kind``:

    box ``(centre (3,), size (3,), yaw)``; rect ``(origin, u, v)`` single-sided, normal ``u x v``;
    cylinder ``(base centre, radius, height)`` vertical; cone ``(base centre, r_bottom, r_top,
    height)`` open; sphere ``(centre, radius)``.
    """

    kind: str
    geom: tuple
    label: int
    instance: int
    colour: np.ndarray


def rotz(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate ``(..., 3)`` vectors about z by ``yaw`` radians."""
    v = np.asarray(vectors, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1], v[..., 2]], axis=-1)


def _faces_into_room_surface(probe: np.ndarray, normal: np.ndarray, room: np.ndarray) -> bool:
    """True when a face looks, from within 5 cm, into the floor, ceiling or a wall (never seen)."""
    return bool(np.any(((normal > 0.5) & (probe > room)) | ((normal < -0.5) & (probe < 0))))


def _visible_faces(part: Part, room: np.ndarray) -> list[tuple[int, float, float]]:
    """``(axis, sign, area)`` of the box faces a scanner inside the room can see."""
    centre, size, yaw = part.geom
    faces = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            normal = rotz(np.eye(3)[axis] * sign, yaw)
            if not _faces_into_room_surface(centre + normal * (size[axis] / 2 + 0.05), normal, room):
                others = [a for a in range(3) if a != axis]
                faces.append((axis, sign, float(size[others[0]] * size[others[1]])))
    return faces


def _cylinder_pieces(part: Part, room: np.ndarray) -> list[tuple[str, float]]:
    base, radius, height = part.geom
    pieces = [("side", 2 * np.pi * radius * height)]
    for name, z, direction in (("bottom", base[2], -1.0), ("top", base[2] + height, 1.0)):
        probe = np.array([base[0], base[1], z + 0.05 * direction])
        if not _faces_into_room_surface(probe, np.array([0.0, 0.0, direction]), room):
            pieces.append((name, np.pi * radius**2))
    return pieces


def part_area(part: Part, room: np.ndarray) -> float:
    """Visible surface area of a part, m^2."""
    if part.kind == "box":
        return sum(area for _, _, area in _visible_faces(part, room))
    if part.kind == "rect":
        return float(np.linalg.norm(np.cross(part.geom[1], part.geom[2])))
    if part.kind == "cylinder":
        return float(sum(area for _, area in _cylinder_pieces(part, room)))
    if part.kind == "cone":
        _, r0, r1, h = part.geom
        return float(np.pi * (r0 + r1) * np.hypot(r0 - r1, h))
    return float(4 * np.pi * part.geom[1] ** 2)


def sample_part(part: Part, n: int, rng: np.random.Generator, room: np.ndarray):
    """``n`` points uniform on the visible surface, and their outward normals, both ``(n, 3)``."""
    if n == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    if part.kind == "box":
        centre, size, yaw = part.geom
        faces = _visible_faces(part, room)
        areas = np.array([f[2] for f in faces])
        pick = rng.choice(len(faces), size=n, p=areas / areas.sum())
        axis = np.array([f[0] for f in faces])[pick]
        sign = np.array([f[1] for f in faces])[pick]
        local = rng.uniform(-0.5, 0.5, (n, 3)) * size
        local[np.arange(n), axis] = sign * size[axis] / 2
        normals = np.zeros((n, 3))
        normals[np.arange(n), axis] = sign
        return centre + rotz(local, yaw), rotz(normals, yaw)
    if part.kind == "rect":
        origin, u, v = part.geom
        a, b = rng.random((2, n, 1))
        normal = np.cross(u, v) / np.linalg.norm(np.cross(u, v))
        return origin + a * u + b * v, np.broadcast_to(normal, (n, 3)).copy()
    if part.kind == "sphere":
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return part.geom[0] + part.geom[1] * normals, normals
    theta = rng.uniform(0, 2 * np.pi, n)
    radial = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], axis=1)
    if part.kind == "cone":
        base, r0, r1, h = part.geom
        u = rng.random(n)  # height fraction with density proportional to the radius there
        t = u if abs(r1 - r0) < 1e-9 else (-r0 + np.sqrt(r0**2 + (r1 - r0) * (r0 + r1) * u)) / (r1 - r0)
        radius = r0 + (r1 - r0) * t
        normals = radial + np.array([0.0, 0.0, (r0 - r1) / h])
        points = base + radial * radius[:, None] + np.outer(t * h, [0, 0, 1])
        return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)
    base, radius, height = part.geom
    pieces = _cylinder_pieces(part, room)
    areas = np.array([a for _, a in pieces])
    pick = rng.choice(len(pieces), size=n, p=areas / areas.sum())
    z = rng.uniform(0, height, n)
    rim = np.sqrt(rng.random(n)) * radius  # uniform on a disc
    points = base + radial * radius + np.outer(z, [0, 0, 1])
    normals = radial.copy()
    for index, (name, _) in enumerate(pieces):
        cap = pick == index
        if name != "side":
            points[cap] = base + radial[cap] * rim[cap, None] + [0, 0, height if name == "top" else 0]
            normals[cap] = [0, 0, 1 if name == "top" else -1]
    return points, normals


def _inside(kind: str, geom: tuple, points: np.ndarray, margin: float) -> np.ndarray:
    """Boolean ``(M,)``: points inside a solid box, cylinder or sphere grown by ``margin``."""
    if kind == "box":
        centre, size, yaw = geom
        local = rotz(points - centre, -yaw)
        return np.all(np.abs(local) <= size / 2 + margin, axis=1)
    if kind == "cylinder":
        base, radius, height = geom
        radial = np.hypot(points[:, 0] - base[0], points[:, 1] - base[1])
        z = points[:, 2] - base[2]
        return (radial <= radius + margin) & (z >= -margin) & (z <= height + margin)
    return np.linalg.norm(points - geom[0], axis=1) <= geom[1] + margin


def _solid_bounds(kind: str, geom: tuple, margin: float) -> tuple[np.ndarray, np.ndarray]:
    if kind == "box":
        centre, size, yaw = geom
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        half = np.array([c * size[0] + s * size[1], s * size[0] + c * size[1], size[2]]) / 2 + margin
        return centre - half, centre + half
    if kind == "cylinder":
        base, radius, height = geom
        reach = radius + margin
        return base - [reach, reach, margin], base + [reach, reach, height + margin]
    return geom[0] - geom[1] - margin, geom[0] + geom[1] + margin


def hidden_mask(parts_list: list[Part], cutters: list[tuple[tuple, int]], points: np.ndarray,
                part_index: np.ndarray) -> np.ndarray:
    """Boolean ``(M,)``: points inside another part's solid, or cut out of a wall by an opening.

    ``part_index`` must be sorted (points grouped by part); each solid is tested only against the
    parts whose point bounding box meets its own, which keeps this at a few million point tests.
    """
    hidden = np.zeros(points.shape[0], dtype=bool)
    starts = np.searchsorted(part_index, np.arange(len(parts_list)))
    ends = np.searchsorted(part_index, np.arange(len(parts_list)), side="right")
    present = np.flatnonzero(ends > starts)
    lows = np.minimum.reduceat(points, starts[present])
    highs = np.maximum.reduceat(points, starts[present])
    tests = [(p.kind, p.geom, i, None, _MARGIN) for i, p in enumerate(parts_list)
             if p.kind in ("box", "cylinder", "sphere")]
    tests += [("box", geom, -1, target, 0.0) for geom, target in cutters]
    for kind, geom, own, target, margin in tests:
        low, high = _solid_bounds(kind, geom, margin)
        meets = np.all(lows <= high, axis=1) & np.all(highs >= low, axis=1)
        for slot in np.flatnonzero(meets):
            other = present[slot]
            if other == own or (target is not None and other != target):
                continue
            block = slice(starts[other], ends[other])
            hidden[block] |= _inside(kind, geom, points[block], margin)
    return hidden
