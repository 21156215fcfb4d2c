"""Layout of the synthetic rooms: walls, doors, windows, furniture, lamps and clutter.

Objects are written in a local frame (x along, y towards the front, z up, floor at z = 0) as items
``(kind, role, *geometry)`` and posed in the room by :class:`RoomBuilder`; ``role`` picks the colour
("main", "metal", "glass", or "any" for a fresh colour per item, e.g. each group of books).
Used by :mod:`datamodules.synthetic.rooms`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from datamodules.synthetic.room_geometry import Part, rotz

# ---- layout: where the walls, openings and furniture go ------------------------------------------


class RoomBuilder:
    """Places objects in a room ``size = (L, W, H)``; local frames have x along, y in front, z up.

    Wall ``k`` has origin ``O``, tangent ``E`` and inward normal ``N = z x E``, so an object posed
    at ``O + s E + t N`` with the wall's yaw has its front (+y) facing into the room.
    """

    def __init__(self, rng: np.random.Generator, size: np.ndarray, classes: list[str],
                 colours: Callable[[str], dict[str, np.ndarray]]) -> None:
        self.rng, self.size, self.classes, self.colours = rng, size, classes, colours
        L, W, _ = size
        self.walls = [((0, 0), 0.0, L), ((L, 0), np.pi / 2, W), ((L, W), np.pi, L), ((0, W), -np.pi / 2, W)]
        self.parts: list[Part] = []
        self.cutters: list[tuple[tuple, int]] = []
        self.footprints: list[np.ndarray] = []  # (xmin, ymin, xmax, ymax) of floor space in use
        self.openings: list[tuple[int, float, float, float]] = []  # (wall, s0, s1, bottom z)
        self.surfaces: list[tuple[float, float, float, float, float, float]] = []  # x, y, z, yaw, w, d
        self.wall_parts: list[int] = []  # part index of each wall, for openings to cut
        self.num_instances = 0

    def add(self, class_name: str, pose: tuple[float, float, float, float], items: list[tuple]) -> int:
        """Add one object (one instance) made of local-frame items ``(kind, role, *geom)``."""
        label, instance = self.classes.index(class_name), self.num_instances
        self.num_instances += 1
        colours = self.colours(class_name)
        x, y, z, yaw = pose
        origin = np.array([x, y, z], dtype=np.float64)
        first = len(self.parts)
        for kind, role, *g in items:
            if isinstance(role, str):
                colour = self.colours("clutter")["main"] if role == "any" else colours[role]
            else:
                colour = role
            if kind == "box":
                extra_yaw = g[2] if len(g) > 2 else 0.0
                geom = (origin + rotz(g[0], yaw), np.asarray(g[1], dtype=np.float64), yaw + extra_yaw)
            elif kind == "rect":
                geom = (origin + rotz(g[0], yaw), rotz(g[1], yaw), rotz(g[2], yaw))
            else:
                geom = (origin + rotz(g[0], yaw), *g[1:])
            self.parts.append(Part(kind, geom, label, instance, colour))
        return first

    def wall_pose(self, wall: int, s: float, t: float) -> tuple[float, float, float, float]:
        (ox, oy), yaw, _ = self.walls[wall]
        return (ox + s * np.cos(yaw) - t * np.sin(yaw), oy + s * np.sin(yaw) + t * np.cos(yaw), 0.0, yaw)

    def claim(self, x: float, y: float, yaw: float, width: float, depth: float, pad: float = 0.05,
              ignore: int = -1) -> bool:
        """Reserve a rotated footprint if it is inside the room and meets no other (but ``ignore``)."""
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        hx, hy = (c * width + s * depth) / 2, (s * width + c * depth) / 2
        box = np.array([x - hx, y - hy, x + hx, y + hy])
        if np.any(box[:2] < -1e-6) or box[2] > self.size[0] + 1e-6 or box[3] > self.size[1] + 1e-6:
            return False
        for i, other in enumerate(self.footprints):
            if i != ignore and box[0] < other[2] + pad and other[0] < box[2] + pad \
                    and box[1] < other[3] + pad and other[1] < box[3] + pad:
                return False
        self.footprints.append(box)
        return True

    def wall_slot(self, width: float, depth: float, height: float, gap: float = 0.01):
        """Pose against a random wall, clear of doors, and of windows when taller than their sill."""
        for _ in range(40):
            wall = int(self.rng.integers(4))
            length = self.walls[wall][2]
            if width + 0.2 > length:
                continue
            s = self.rng.uniform(width / 2 + 0.1, length - width / 2 - 0.1)
            if any(w == wall and s - width / 2 < s1 + 0.05 and s0 - 0.05 < s + width / 2
                   and height > z0 - 0.05 for w, s0, s1, z0 in self.openings):
                continue
            pose = self.wall_pose(wall, s, gap + depth / 2)
            if self.claim(pose[0], pose[1], pose[3], width, depth):
                return pose
        return None

    def free_slot(self, width: float, depth: float, margin: float = 0.3):
        """Pose anywhere on free floor; mostly aligned with the walls."""
        for _ in range(40):
            aligned = self.rng.uniform() < 0.7
            if aligned:
                yaw = self.rng.integers(2) * np.pi / 2 + self.rng.normal(0, 0.05)
            else:
                yaw = self.rng.uniform(0, np.pi)
            x = self.rng.uniform(margin, self.size[0] - margin)
            y = self.rng.uniform(margin, self.size[1] - margin)
            if self.claim(x, y, yaw, width, depth):
                return (x, y, 0.0, yaw)
        return None

    def opening_slot(self, width: float, bottom: float):
        for _ in range(30):
            wall = int(self.rng.integers(4))
            length = self.walls[wall][2]
            if width + 0.8 > length:
                continue
            s = self.rng.uniform(width / 2 + 0.3, length - width / 2 - 0.3)
            if not any(w == wall and s - width / 2 < s1 + 0.3 and s0 - 0.3 < s + width / 2
                       for w, s0, s1, _ in self.openings):
                self.openings.append((wall, s - width / 2, s + width / 2, bottom))
                return wall, s
        return None


# ---- objects in their local frame: (kind, role, *geometry), front towards +y, floor at z = 0 ------


def _legs(width: float, depth: float, height: float, leg: float, role: str = "metal") -> list[tuple]:
    return [("box", role, (sx * (width / 2 - leg), sy * (depth / 2 - leg), height / 2), (leg, leg, height))
            for sx in (-1, 1) for sy in (-1, 1)]


def _table(rng: np.random.Generator):
    h, top = rng.uniform(0.70, 0.78), rng.uniform(0.03, 0.05)
    if rng.uniform() < 0.25:  # round pedestal table
        r = rng.uniform(0.4, 0.6)
        items = [("cylinder", "main", (0, 0, h - top), r, top),
                 ("cylinder", "metal", (0, 0, 0.03), 0.04, h - top - 0.03),
                 ("cylinder", "metal", (0, 0, 0), rng.uniform(0.2, 0.3), 0.03)]
        return items, 2 * r, 2 * r, h
    w, d = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
    items = [("box", "main", (0, 0, h - top / 2), (w, d, top))]
    items += _legs(w, d, h - top, rng.uniform(0.04, 0.07))
    return items, w, d, h


def _chair(rng: np.random.Generator):
    w, d = rng.uniform(0.4, 0.5), rng.uniform(0.4, 0.5)
    h, seat = rng.uniform(0.42, 0.48), rng.uniform(0.03, 0.07)
    back_h, back_t = rng.uniform(0.35, 0.5), rng.uniform(0.03, 0.06)
    items = [("box", "main", (0, 0, h - seat / 2), (w, d, seat)),
             ("box", "main", (0, -d / 2 + back_t / 2, h + back_h / 2), (w, back_t, back_h))]
    if rng.uniform() < 0.4:  # office chair: column on a round base
        items += [("cylinder", "metal", (0, 0, 0.04), 0.025, h - seat - 0.04),
                  ("cylinder", "metal", (0, 0, 0), rng.uniform(0.25, 0.3), 0.04)]
    else:
        leg = rng.uniform(0.025, 0.04)
        items += _legs(w, d, h - seat, leg, role="metal" if rng.uniform() < 0.5 else "main")
    if rng.uniform() < 0.3:  # armrests
        items += [("box", "main", (sx * (w / 2 - 0.02), 0, h + 0.2), (0.04, d * 0.8, 0.04)) for sx in (-1, 1)]
    return items, w, d, h + back_h


def _sofa(rng: np.random.Generator):
    w, d = rng.uniform(1.5, 2.2), rng.uniform(0.8, 0.95)
    seat, back_h = rng.uniform(0.4, 0.45), rng.uniform(0.75, 0.9)
    arm, arm_h = rng.uniform(0.12, 0.2), rng.uniform(0.55, 0.65)
    leg, back_t = rng.uniform(0.06, 0.1), rng.uniform(0.18, 0.25)
    inner = w - 2 * arm
    items = [("box", "main", (0, back_t / 2, (leg + seat - 0.1) / 2), (inner, d - back_t, seat - 0.1 - leg)),
             ("box", "main", (0, -d / 2 + back_t / 2, (leg + back_h) / 2), (w, back_t, back_h - leg))]
    items += [("box", "main", (sx * (w / 2 - arm / 2), back_t / 2, (leg + arm_h) / 2),
               (arm, d - back_t, arm_h - leg)) for sx in (-1, 1)]
    cushions = int(rng.integers(2, 4))
    items += [("box", "main", (-inner / 2 + (i + 0.5) * inner / cushions, back_t / 2, seat - 0.05),
               (inner / cushions - 0.02, d - back_t - 0.02, 0.1)) for i in range(cushions)]
    items += [("cylinder", "metal", (sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), 0), 0.02, leg)
              for sx in (-1, 1) for sy in (-1, 1)]
    return items, w, d, back_h


def _cabinet(rng: np.random.Generator):
    w, d, h = rng.uniform(0.4, 1.2), rng.uniform(0.35, 0.6), rng.uniform(0.7, 2.0)
    doors = 1 if w < 0.7 else 2
    items = [("box", "main", (0, 0, h / 2), (w, d, h))]
    items += [("box", "metal", ((i - (doors - 1) / 2) * 0.08, d / 2 + 0.015, min(h - 0.15, 1.0)),
               (0.02, 0.03, 0.12)) for i in range(doors)]
    return items, w, d, h


def _bookshelf(rng: np.random.Generator):
    w, d, h, t = rng.uniform(0.7, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.5, 2.2), 0.02
    shelves = int(rng.integers(3, 6))
    levels = np.linspace(0.06, h - t, shelves + 1)
    items = [("box", "main", (sx * (w / 2 - t / 2), 0, h / 2), (t, d, h)) for sx in (-1, 1)]
    items += [("box", "main", (0, -d / 2 + 0.005, h / 2), (w - 2 * t, 0.01, h)),
              ("box", "main", (0, d / 2 - 0.01, 0.03), (w - 2 * t, 0.02, 0.06))]
    items += [("box", "main", (0, 0, z + t / 2), (w - 2 * t, d - 0.01, t)) for z in levels]
    for z0, z1 in zip(levels[:-1] + t, levels[1:]):
        for _ in range(int(rng.integers(1, 4))):  # groups of books, one colour each
            gw, gh = rng.uniform(0.08, 0.35), (z1 - z0) * rng.uniform(0.6, 0.9)
            gd = (d - 0.02) * rng.uniform(0.6, 0.9)
            x = rng.uniform(-w / 2 + t + gw / 2, w / 2 - t - gw / 2)
            items.append(("box", "any", (x, -d / 2 + 0.01 + gd / 2, z0 + gh / 2), (gw, gd, gh)))
    return items, w, d, h


def _lamp(rng: np.random.Generator, scale: float = 1.0):
    """Floor lamp (``scale=1``) or desk lamp (``scale~0.3``): base disc, pole, open conical shade."""
    pole = rng.uniform(1.3, 1.7) * scale
    shade_h, r0 = rng.uniform(0.2, 0.3) * max(scale, 0.5), rng.uniform(0.18, 0.25) * max(scale, 0.45)
    items = [("cylinder", "metal", (0, 0, 0), rng.uniform(0.12, 0.18) * max(scale, 0.45), 0.03),
             ("cylinder", "metal", (0, 0, 0.03), 0.015, pole),
             ("cone", "main", (0, 0, 0.03 + pole - shade_h * 0.3), r0, r0 * rng.uniform(0.5, 0.7), shade_h)]
    return items, 2 * r0, 2 * r0, pole


def _clutter(rng: np.random.Generator):
    shape = rng.choice(3)
    if shape == 0:
        size = (rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.3), rng.uniform(0.03, 0.3))
        yaw, footprint = rng.uniform(0, np.pi), max(size[:2])
        return [("box", "main", (0, 0, size[2] / 2), size, yaw)], footprint, footprint
    if shape == 1:
        r = rng.uniform(0.03, 0.1)
        return [("cylinder", "main", (0, 0, 0), r, rng.uniform(0.06, 0.3))], 2 * r, 2 * r
    r = rng.uniform(0.04, 0.12)
    return [("sphere", "main", (0, 0, r), r)], 2 * r, 2 * r


def _on_surface(rng: np.random.Generator, surface: tuple, width: float) -> tuple[float, float, float, float]:
    """A pose on a table or cabinet top ``(x, y, z, yaw, w, d)`` with the item inside its edges."""
    x, y, z, yaw, w, d = surface
    along, across = rng.uniform(-1, 1, 2)
    local = np.array([along * max(w - width, 0) / 2, across * max(d - width, 0) / 2, 0])
    px, py, _ = rotz(local, yaw)
    return (x + px, y + py, z, rng.uniform(0, 2 * np.pi))


# ---- the room: shell, openings, furniture ---------------------------------------------------------


def _add_shell(room: RoomBuilder) -> None:
    L, W, H = room.size
    room.add("floor", (0, 0, 0, 0), [("rect", "main", (0, 0, 0), (L, 0, 0), (0, W, 0))])
    room.add("ceiling", (0, 0, H, 0), [("rect", "main", (0, 0, 0), (0, W, 0), (L, 0, 0))])
    wall_colours = room.colours("wall")  # one paint for the room; each wall is its own instance
    for wall, (_, _, length) in enumerate(room.walls):
        plane = ("rect", wall_colours["main"], (0, 0, 0), (0, 0, H), (length, 0, 0))
        room.wall_parts.append(room.add("wall", room.wall_pose(wall, 0, 0), [plane]))


def _recess(width: float, bottom: float, height: float, depth: float, role: str, sides: tuple) -> list[tuple]:
    """Panel ``depth`` behind the wall plane plus the reveals joining it to the wall (local frame)."""
    w, b, h, d = width, bottom, height, depth
    reveals = {"panel": ((-w / 2, -d, b), (0, 0, h), (w, 0, 0)),  # (origin, u, v): normal u x v
               "left": ((-w / 2, -d, b), (0, d, 0), (0, 0, h)),
               "right": ((w / 2, -d, b), (0, 0, h), (0, d, 0)),
               "top": ((-w / 2, -d, b + h), (0, d, 0), (w, 0, 0)),
               "bottom": ((-w / 2, -d, b), (w, 0, 0), (0, d, 0))}
    return [("rect", role if name == "panel" else "main", *reveals[name]) for name in ("panel", *sides)]


def _add_door(room: RoomBuilder) -> None:
    rng = room.rng
    width, height = rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.15)
    slot = room.opening_slot(width + 0.2, 0.0)
    if slot is None:
        return
    wall, s = slot
    offset, casing, casing_d = rng.uniform(0.02, 0.06), rng.uniform(0.05, 0.08), rng.uniform(0.015, 0.03)
    if rng.uniform() < 0.5:
        items, front = _recess(width, 0, height, offset, "main", ("left", "right", "top")), -offset
    else:
        items, front = [("box", "main", (0, offset / 2, height / 2), (width, offset, height))], offset
    items += [("box", "main", (sx * (width + casing) / 2, casing_d / 2, (height + casing) / 2),
               (casing, casing_d, height + casing)) for sx in (-1, 1)]
    items += [("box", "main", (0, casing_d / 2, height + casing / 2), (width + 2 * casing, casing_d, casing)),
              ("box", "metal", (rng.choice([-1, 1]) * (width / 2 - 0.1), front + 0.03, 1.0),
               (0.12, 0.05, 0.03))]
    pose = room.wall_pose(wall, s, 0)
    room.add("door", pose, items)
    room.cutters.append(((np.array(pose[:2] + (height / 2,)), np.array([width, 0.2, height]), pose[3]),
                         room.wall_parts[wall]))
    keep_out = room.wall_pose(wall, s, 0.5)
    room.claim(keep_out[0], keep_out[1], keep_out[3], width + 0.3, 1.0, pad=0.0)  # the door swing stays free


def _add_window(room: RoomBuilder) -> None:
    rng = room.rng
    width, sill = rng.uniform(0.8, 2.0), rng.uniform(0.7, 1.0)
    height = min(rng.uniform(0.9, 1.5), room.size[2] - sill - 0.25)
    slot = room.opening_slot(width, sill)
    if slot is None:
        return
    wall, s = slot
    depth, frame, frame_d = rng.uniform(0.08, 0.25), rng.uniform(0.04, 0.07), rng.uniform(0.03, 0.06)
    y = -depth + frame_d / 2
    items = _recess(width, sill, height, depth, "glass", ("left", "right", "top", "bottom"))
    items += [("box", "main", (sx * (width - frame) / 2, y, sill + height / 2), (frame, frame_d, height))
              for sx in (-1, 1)]
    items += [("box", "main", (0, y, z), (width, frame_d, frame))
              for z in (sill + frame / 2, sill + height - frame / 2)]
    if rng.uniform() < 0.6:
        items.append(("box", "main", (0, y, sill + height / 2), (frame * 0.8, frame_d, height)))
    if rng.uniform() < 0.6:
        ledge = rng.uniform(0.05, 0.15)
        items.append(("box", "main", (0, ledge / 2, sill - 0.02), (width + 0.1, ledge, 0.04)))
    pose = room.wall_pose(wall, s, 0)
    room.add("window", pose, items)
    room.cutters.append(((np.array(pose[:2] + (sill + height / 2,)), np.array([width, 0.2, height]), pose[3]),
                         room.wall_parts[wall]))


def _add_table_with_chairs(room: RoomBuilder) -> None:
    rng = room.rng
    items, w, d, h = _table(rng)
    pose = room.free_slot(w, d, margin=0.9)
    if pose is None:
        return
    room.add("table", pose, items)
    table_index = len(room.footprints) - 1
    room.surfaces.append((pose[0], pose[1], h, pose[3], w * 0.7, d * 0.7))
    for side, half in ((0, d / 2), (np.pi, d / 2), (np.pi / 2, w / 2), (-np.pi / 2, w / 2)):
        if rng.uniform() > 0.6:
            continue
        chair, cw, cd, _ = _chair(rng)
        away = rng.uniform(0.02, 0.3) + half + cd / 2  # from the table centre along the side's normal
        yaw = pose[3] + side  # chair front (+y) points back to the table
        x, y = pose[0] + away * np.sin(yaw), pose[1] - away * np.cos(yaw)
        yaw += rng.normal(0, 0.15)
        if room.claim(x, y, yaw, cw, cd, pad=0.0, ignore=table_index):
            room.add("chair", (x, y, 0, yaw), chair)


def build_scene(rng: np.random.Generator, classes: list[str],
                colours: Callable[[str], dict[str, np.ndarray]]) -> RoomBuilder:
    """Lay out one room (4-10 m x 3-8 m x 2.5-3.2 m): shell, 1-2 doors, 1-3 windows, furniture,
    lamps and clutter. ``colours(class_name)`` gives one object's colour per role."""
    size = np.array([rng.uniform(4, 10), rng.uniform(3, 8), rng.uniform(2.5, 3.2)])
    room = RoomBuilder(rng, size, classes, colours)
    _add_shell(room)
    for _ in range(1 + int(rng.uniform() < 0.4)):
        _add_door(room)
    for _ in range(int(rng.integers(1, 4))):
        _add_window(room)
    wall_objects = [("sofa", _sofa)] * int(rng.uniform() < 0.6)
    wall_objects += [("cabinet", _cabinet)] * int(rng.integers(1, 4))
    wall_objects += [("bookshelf", _bookshelf)] * int(rng.integers(0, 3))
    for name, make in wall_objects:
        items, w, d, h = make(rng)
        pose = room.wall_slot(w, d, h, gap=rng.uniform(0.0, 0.015))
        if pose is not None:
            room.add(name, pose, items)
            if name == "cabinet" and h < 1.2:
                room.surfaces.append((pose[0], pose[1], h, pose[3], w, d))
    for _ in range(min(int(rng.integers(1, 2 + int(size[0] * size[1] // 20))), 4)):
        _add_table_with_chairs(room)
    for _ in range(int(rng.integers(0, 3))):
        chair, cw, cd, _ = _chair(rng)
        if (pose := room.free_slot(cw, cd)) is not None:
            room.add("chair", pose, chair)
    _add_lamps_and_clutter(room)
    return room


def _add_lamps_and_clutter(room: RoomBuilder) -> None:
    rng, H = room.rng, room.size[2]
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.choice(["floor", "desk", "pendant"]) if room.surfaces else rng.choice(["floor", "pendant"])
        if kind == "pendant":
            items, _, _, _ = _lamp(rng, 0.6)
            drop = rng.uniform(0.5, 0.9)
            shade = items[2]
            x, y = rng.uniform(0.5, room.size[0] - 0.5), rng.uniform(0.5, room.size[1] - 0.5)
            cord = ("cylinder", "metal", (0, 0, shade[5]), 0.006, drop - shade[5])  # up to the ceiling
            room.add("lamp", (x, y, H - drop, 0), [("cone", "main", (0, 0, 0), *shade[3:]), cord])
        elif kind == "desk":
            items, w, _, _ = _lamp(rng, rng.uniform(0.22, 0.3))
            room.add("lamp", _on_surface(rng, room.surfaces[rng.integers(len(room.surfaces))], w), items)
        else:
            items, w, d, _ = _lamp(rng)
            if (pose := room.free_slot(w, d, margin=0.2)) is not None:
                room.add("lamp", pose, items)
    for _ in range(int(rng.integers(6, 17))):
        items, w, d = _clutter(rng)
        if room.surfaces and rng.uniform() < 0.7:
            room.add("clutter", _on_surface(rng, room.surfaces[rng.integers(len(room.surfaces))], w), items)
        elif (pose := room.free_slot(w, d, margin=0.15)) is not None:
            room.add("clutter", pose, items)
