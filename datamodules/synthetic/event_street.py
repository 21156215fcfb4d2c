"""Street layout for :mod:`datamodules.synthetic.event_scenes`: textures, sprites and the builder.

:class:`StreetBuilder` places the layers of one street (sky, skyline, facades, ground, sprites) with
the :class:`Painter` helpers; the scene model (layers, camera, compositing) lives in ``event_scenes``.
"""

from __future__ import annotations

import math

import numpy as np

from datamodules.synthetic.event_scenes import (
    BUILDING,
    CAMERA_HEIGHT_M,
    PEDESTRIAN,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    VEGETATION,
    VEHICLE,
    Layer,
    StreetScene,
    make_layer,
    value_noise,
)


class Painter:
    """Anti-aliased painting of a ``w_m x h_m`` metre sprite at ``px_per_m``, supersampled ``ss`` times.

    Coordinates are metres: ``x`` from the sprite's left edge, ``y`` up from the ground. Shapes give
    boolean masks; :meth:`paint` fills one with a value (scalar or per-sample array) and a class.
    """

    def __init__(self, rng: np.random.Generator, w_m: float, h_m: float, px_per_m: float, ss: int = 3):
        self.rng, self.ss, self.px_per_m = rng, ss, px_per_m
        self.h, self.w = max(1, math.ceil(h_m * px_per_m)), max(1, math.ceil(w_m * px_per_m))
        step = 1.0 / (px_per_m * ss)
        self.x = ((np.arange(self.w * ss) + 0.5) * step)[None, :]
        self.y = (self.h / px_per_m - (np.arange(self.h * ss) + 0.5) * step)[:, None]
        self.value = np.zeros((self.h * ss, self.w * ss), np.float32)
        self.alpha = np.zeros_like(self.value)
        self.label = np.full(self.value.shape, 255, np.uint8)

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        return (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 <= 1.0

    def convex(self, points: list[tuple[float, float]]) -> np.ndarray:
        """Inside a convex polygon given counter-clockwise."""
        inside = np.ones(self.value.shape, bool)
        for (ax, ay), (bx, by) in zip(points, points[1:] + points[:1]):
            inside &= (bx - ax) * (self.y - ay) - (by - ay) * (self.x - ax) >= 0
        return inside

    def noise(self, cell_m: float) -> np.ndarray:
        return value_noise(self.rng, self.value.shape, cell_m * self.px_per_m * self.ss)

    def paint(self, mask: np.ndarray, value, label: int) -> None:
        value = np.broadcast_to(np.asarray(value, np.float32), self.value.shape)
        self.value[mask], self.alpha[mask], self.label[mask] = value[mask], 1.0, label

    def finish(self, main_label: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(h, w)`` premultiplied intensity, alpha (block means) and labels (block centres)."""
        n = self.ss
        def block_mean(a):
            return a.reshape(self.h, n, self.w, n).mean(axis=(1, 3))
        premultiplied = block_mean(np.clip(self.value, 0, 1) * self.alpha)
        alpha, label = block_mean(self.alpha), self.label[n // 2::n, n // 2::n].copy()
        label[label == 255] = main_label  # a partly covered border pixel takes the sprite's class
        out = (premultiplied, alpha, label)
        return tuple(np.ascontiguousarray(a[:, ::-1]) for a in out) if flip else out


def paint_tree(p: Painter, rng: np.random.Generator) -> None:
    """Trunk and a crown of overlapping ellipses with foliage noise (all vegetation)."""
    w_m, h_m = p.w / p.px_per_m, p.h / p.px_per_m
    radius, cx = w_m / 2.6, w_m / 2
    cy = h_m - 1.1 * radius
    p.paint(p.rect(cx - 0.15, cx + 0.15, 0, cy), rng.uniform(0.1, 0.4) + 0.05 * p.noise(0.1), VEGETATION)
    crown = np.zeros(p.value.shape, bool)
    for _ in range(rng.integers(4, 8)):
        ox, oy = rng.normal(0, 0.35 * radius), rng.normal(0, 0.25 * radius)
        crown |= p.ellipse(cx + ox, cy + oy, radius * rng.uniform(0.5, 0.8), radius * rng.uniform(0.5, 0.8))
    leaves = rng.uniform(0.15, 0.6) + 0.18 * p.noise(0.12) + 0.08 * p.noise(0.6) - 0.1 * (cy - p.y) / radius
    p.paint(crown, leaves, VEGETATION)


def paint_pole(p: Painter, rng: np.random.Generator) -> None:
    """A pole (brightness from the facade range), maybe a lamp arm, maybe a sign plate."""
    w_m, h_m = p.w / p.px_per_m, p.h / p.px_per_m
    cx, width = 0.5, rng.uniform(0.12, 0.25)
    shade = rng.uniform(0.2, 0.8) + 0.03 * p.noise(0.2) + 0.05 * (p.y / h_m - 0.5)
    p.paint(p.rect(cx - width / 2, cx + width / 2, 0, h_m - 0.1), shade, POLE)
    if w_m > 1.5:  # a lamp arm
        p.paint(p.rect(cx, w_m - 0.3, h_m - 0.35, h_m - 0.22), shade, POLE)
        p.paint(p.ellipse(w_m - 0.35, h_m - 0.35, 0.3, 0.12), rng.uniform(0.3, 1.0), POLE)
    if rng.random() < 0.75:
        size, height = rng.uniform(0.6, 1.1), rng.uniform(1.9, 2.8)
        x0, x1, y0, y1 = cx - size / 2, cx + size / 2, height, height + size
        shape = rng.integers(4)
        outer = [p.rect(x0, x1, y0, y1), p.ellipse(cx, height + size / 2, size / 2, size / 2),
                 p.convex([(x0, y1), (cx, y0), (x1, y1)]),
                 p.convex([(cx, y0), (x1, y0 + size / 2), (cx, y1), (x0, y0 + size / 2)])][shape]
        p.paint(outer, rng.uniform(0.05, 0.95), SIGN)
        inner = outer & p.ellipse(cx, height + size / 2, 0.38 * size, 0.38 * size)
        p.paint(inner, rng.uniform(0.45, 0.98), SIGN)
        p.paint(inner & p.rect(cx - 0.12 * size, cx + 0.12 * size, y0, y1), rng.uniform(0.05, 0.95), SIGN)


def paint_pedestrian(p: Painter, rng: np.random.Generator) -> None:
    """Legs in a stride, torso, swinging arms, head; clothing of any brightness."""
    h_m = p.h / p.px_per_m - 0.05
    k, cx = h_m / 1.75, p.w / p.px_per_m / 2
    stride, swing = rng.uniform(0, 0.2) * k, rng.uniform(0, 0.15) * k
    hip, shoulder = 0.5 * h_m, 0.82 * h_m
    trousers, top, skin = rng.uniform(0.05, 0.85), rng.uniform(0.05, 0.95), rng.uniform(0.3, 0.85)
    for sign in (-1, 1):
        foot = cx + sign * stride
        p.paint(p.convex([(foot - 0.07 * k, 0), (foot + 0.07 * k, 0), (cx + sign * 0.05 * k + 0.08 * k, hip),
                          (cx + sign * 0.05 * k - 0.08 * k, hip)]), trousers + 0.04 * p.noise(0.05), PEDESTRIAN)
        hand = cx + sign * (0.22 * k) - sign * swing
        p.paint(p.convex([(hand - 0.04 * k, hip - 0.02), (hand + 0.04 * k, hip - 0.02),
                          (cx + sign * 0.19 * k + 0.045 * k, shoulder), (cx + sign * 0.19 * k - 0.045 * k, shoulder)]),
                top, PEDESTRIAN)
    p.paint(p.rect(cx - 0.19 * k, cx + 0.19 * k, hip - 0.03, shoulder + 0.02), top + 0.04 * p.noise(0.08), PEDESTRIAN)
    p.paint(p.ellipse(cx, 0.91 * h_m, 0.1 * k, 0.12 * k), skin, PEDESTRIAN)


def paint_vehicle(p: Painter, rng: np.random.Generator, bus: bool) -> None:
    """A car (body, cabin with windows, wheels, lights) or a bus/van (box with a window band)."""
    length, height = p.w / p.px_per_m, p.h / p.px_per_m
    paint = rng.uniform(0.08, 0.92) + 0.1 * (p.y - 0.6) + 0.02 * p.noise(0.3)
    glass = (rng.uniform(0.05, 0.3) if rng.random() < 0.6 else rng.uniform(0.5, 0.85)) + 0.1 * p.x / length
    wheel_r = 0.45 if bus else 0.31
    if bus:
        p.paint(p.rect(0, length, 0.3, height), paint, VEHICLE)
        for x in np.arange(0.4, length - 1.2, 1.3):
            p.paint(p.rect(x, x + 1.1, height - 1.3, height - 0.35), glass, VEHICLE)
    else:
        cabin = height - rng.uniform(0.0, 0.1)
        p.paint(p.rect(0, length, 0.28, 0.92), paint, VEHICLE)
        p.paint(p.convex([(0.18 * length, 0.9), (0.82 * length, 0.9), (0.68 * length, cabin),
                          (0.3 * length, cabin)]), paint, VEHICLE)
        p.paint(p.convex([(0.24 * length, 0.96), (0.76 * length, 0.96), (0.66 * length, cabin - 0.07),
                          (0.32 * length, cabin - 0.07)]) & ~p.rect(0.5 * length, 0.53 * length, 0, 3), glass, VEHICLE)
        p.paint(p.rect(0, length, 0.78, 0.81), np.clip(paint + 0.15, 0, 1), VEHICLE)  # chrome / crease line
    for x in (0.17 * length, 0.83 * length):
        p.paint(p.ellipse(x, wheel_r, wheel_r, wheel_r), rng.uniform(0.03, 0.15), VEHICLE)
        p.paint(p.ellipse(x, wheel_r, 0.45 * wheel_r, 0.45 * wheel_r), rng.uniform(0.3, 0.7), VEHICLE)
    p.paint(p.rect(length - 0.12, length, 0.6, 0.72), 0.95, VEHICLE)
    p.paint(p.rect(0, 0.08, 0.6, 0.72), rng.uniform(0.2, 0.6), VEHICLE)


def facade_texture(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, tall: float, px_per_m: float,
                   trees: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One building ``tall`` metres high (or, when ``trees``, sometimes a tree line).

    ``x``: ``(n,)`` metres from its left edge, ``y``: ``(h,)`` metres above the ground per row.
    Returns ``(h, n)`` values (NaN where the building is not) and ``(h, n)`` class ids.
    """
    X, Y, shape = x[None, :], y[:, None], (y.size, x.size)
    if trees and rng.random() < 0.3:
        top = tall * 0.35 + 2.0 * value_noise(rng, (1, x.size), 3 * px_per_m)
        value = rng.uniform(0.15, 0.6) + 0.15 * value_noise(rng, shape, 1)
        return np.where((Y >= 0) & (Y < top), value, np.nan), np.full(shape, VEGETATION)
    base = rng.uniform(0.15, 0.85)
    value = base + rng.uniform(0.02, 0.08) * value_noise(rng, shape, rng.uniform(2, 10))
    style = rng.random()
    if style < 0.7:
        value = paint_windows(rng, value, X, Y, base, tall)
    elif style < 0.85:  # siding
        value = value - 0.08 * ((Y % rng.uniform(0.25, 0.5)) < 0.06)
    else:  # panels
        value = value + 0.06 * ((X % rng.uniform(1.5, 3.0)) < 0.1)
    value = np.where(Y > tall - 0.4, value * rng.uniform(0.6, 1.3), value)  # cornice
    klass = np.full(shape, BUILDING)
    if not trees and rng.random() < 0.4:  # a hedge in front of the ground floor
        hedge = Y < rng.uniform(0.6, 1.4) + 0.2 * value_noise(rng, (1, x.size), 0.5 * px_per_m)
        value = np.where(hedge, rng.uniform(0.15, 0.55) + 0.15 * value_noise(rng, shape, 1), value)
        klass = np.where(hedge, VEGETATION, klass)
    return np.where((Y >= 0) & (Y < tall), value, np.nan), klass


def paint_windows(rng: np.random.Generator, value: np.ndarray, X: np.ndarray, Y: np.ndarray, base: float,
                  tall: float) -> np.ndarray:
    """Window grid (dark or reflective, some lit) on 3 m floors, shop windows or a door below."""
    spacing = rng.uniform(1.8, 3.5)
    width, height, offset = rng.uniform(0.6, spacing - 0.5), rng.uniform(1.0, 1.8), rng.uniform(0, 1.0)
    in_floor = (Y - 1.0) % 3.0
    inside = ((X - offset) % spacing < width) & (in_floor > 0.8) & (in_floor < 0.8 + height) & (Y > 3.0)
    glass = base * rng.uniform(0.2, 0.5) if rng.random() < 0.6 else rng.uniform(0.6, 0.95)
    table = glass + rng.uniform(-0.12, 0.12, (64, 64))
    table[rng.random((64, 64)) < 0.15] = rng.uniform(0.8, 1.0)  # lit windows
    ix, iy = np.floor((X - offset) / spacing).astype(np.int64), np.floor((Y - 1.0) / 3.0).astype(np.int64)
    value = np.where(inside & (Y < tall - 0.8), table[ix % 64, iy % 64], value)
    if rng.random() < 0.5:  # shop windows
        return np.where((Y > 0.5) & (Y < 2.6) & ((X % rng.uniform(2.5, 4.0)) > 0.3), glass, value)
    door = rng.uniform(0, max(0.1, float(X.max()) - 1.2))
    return np.where((X > door) & (X < door + 1.2) & (Y < 2.2), base * rng.uniform(0.3, 0.7), value)


def ground_texture(rng: np.random.Generator, x: np.ndarray, depth: np.ndarray, curb: float,
                   span: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Road (asphalt, lane dashes, maybe an edge line and a crossing, patches) before ``curb``, then
    curb stone and tiled sidewalk with grass pits.

    ``x``: ``(R, C)`` world X (m), ``depth``: ``(R, 1)`` metres. Returns values, class ids and the
    centres (world X) of the grass pits, where trees are planted.
    """
    shape = x.shape
    value = rng.uniform(0.15, 0.5) + 0.05 * value_noise(rng, shape, 1) + 0.06 * value_noise(rng, shape, 16)
    lane = rng.uniform(0.45, 0.6) * curb
    marks = (np.abs(depth - lane) < 0.08) & ((x % rng.uniform(6, 9)) < rng.uniform(2, 3.5))
    if rng.random() < 0.5:
        marks = marks | (np.abs(depth - (curb - 0.4)) < 0.06)
    if rng.random() < 0.4:  # a zebra crossing: bars along the street, one per metre of depth
        start = rng.uniform(span[0], span[1] - 5)
        marks = marks | ((x > start) & (x < start + rng.uniform(3, 5)) & (depth < curb - 0.3) & (depth % 1.0 < 0.5))
    value = np.where(marks, rng.uniform(0.6, 0.95), value)
    for _ in range(rng.integers(1, 5)):  # repair patches
        x0, d0 = rng.uniform(*span), rng.uniform(3, curb)
        patch = (x > x0) & (x < x0 + rng.uniform(1, 4)) & (depth > d0) & (depth < d0 + rng.uniform(0.5, 2))
        value = np.where(patch, value + rng.uniform(-0.1, 0.1), value)
    tile = rng.uniform(0.4, 1.0)
    grout = ((x % tile) < 0.04) | (((depth - curb) % tile) < 0.04)
    walk = rng.uniform(0.3, 0.75) + 0.04 * value_noise(rng, shape, 1) + 0.04 * value_noise(rng, shape, 10) - 0.12 * grout
    walk = np.where(depth < curb + 0.15, rng.uniform(0.4, 0.9), walk)  # curb stone
    value, label = np.where(depth < curb, value, walk), np.where(depth < curb, ROAD, SIDEWALK)
    pits, cursor = [], span[0] + rng.uniform(0, 8)
    if rng.random() < 0.2:  # a street without grass pits (and so without trees)
        cursor = span[1]
    while cursor < span[1]:
        length = rng.uniform(1.0, 2.0)
        pits.append(cursor + length / 2)
        pit = (x > cursor) & (x < cursor + length) & (depth > curb + 0.4) & (depth < curb + 1.4)
        value = np.where(pit, rng.uniform(0.15, 0.55) + 0.15 * value_noise(rng, shape, 1), value)
        label = np.where(pit, VEGETATION, label)
        cursor += rng.uniform(6, 14)
    return value.astype(np.float32), label, pits


class StreetBuilder:
    """Lays out one street for a :class:`StreetScene`: curb and facade depths, then every layer and sprite."""

    def __init__(self, rng: np.random.Generator, scene: StreetScene):
        self.rng, self.scene = rng, scene
        self.curb = rng.uniform(8.5, 12.0)  # depth of the far curb (m); the road lies in front of it
        self.facade = self.curb + rng.uniform(5.0, 8.0)
        cam = scene.camera
        self.duration, self.x_end, self.cruise = float(cam.t[-1]) - 0.1, float(cam.x[-1]), float(cam.speed.mean())
        self.yaw_max = float(np.abs(cam.yaw).max())
        self.margin = scene.pad + 2.0  # the compositing grid's margin, plus slack
        self.sky_horizon = 0.7

    def row(self, depth: float) -> float:
        """Screen row where the ground at ``depth`` metres meets the image (unzoomed)."""
        return self.scene.horizon + self.scene.focal * CAMERA_HEIGHT_M / depth

    def span(self, depth: float) -> tuple[float, float]:
        """World X range (m) visible at ``depth`` at some time of the drive."""
        reach = (self.scene.width / 2 + self.margin + self.yaw_max) * depth / self.scene.focal
        return -reach, self.x_end + reach

    def build(self) -> list[Layer]:
        layers = [self.sky(), self.facades(self.rng.uniform(40.0, 70.0), far=True), self.ground(),
                  self.facades(self.facade, far=False)]
        sprites = self.trees() + self.poles() + self.pedestrians() + self.vehicles()
        return layers + sorted(sprites, key=lambda layer: -layer.depth)

    def sky(self) -> Layer:
        s, rng, m = self.scene, self.rng, int(self.margin + self.yaw_max) + 2
        h, w = s.height + 2 * m, s.width + 2 * m
        zenith = rng.uniform(0.45, 0.85)
        self.sky_horizon = min(1.0, zenith + rng.uniform(0.0, 0.2))
        rows = np.clip((np.arange(h) - m) / s.horizon, 0, 1)[:, None]
        clouds = rng.uniform(0.02, 0.08) * value_noise(rng, (h, w), w / 4) + 0.02 * value_noise(rng, (h, w), w / 12)
        value = np.clip(zenith + (self.sky_horizon - zenith) * rows + clouds, 0, 1)
        return make_layer(value, np.ones((h, w)), np.full((h, w), SKY), depth=math.inf, x0=m, top=-m)

    def facades(self, depth: float, far: bool) -> Layer:
        """A row of buildings (far: hazy, taller, with tree lines) standing at ``depth``."""
        rng, m = self.rng, int(self.margin) + 2
        lo, hi = self.span(depth)
        px_per_m, base = self.scene.focal / depth, self.row(depth)
        h, w = int(math.ceil(base)) + m + 1, int(math.ceil((hi - lo) * px_per_m)) + 1
        heights = (base - (np.arange(h) - m)) / px_per_m  # metres above the ground per canvas row
        x = lo + np.arange(w) / px_per_m
        value, alpha, label = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32), np.full((h, w), BUILDING)
        haze, haze_value = rng.uniform(0.6, 0.85), self.sky_horizon * rng.uniform(0.8, 1.0)
        cursor = lo - rng.uniform(0, 10)
        while cursor < hi:
            width = rng.uniform(8, 30) if far else rng.uniform(6, 20)
            cols = np.flatnonzero((x >= cursor) & (x < cursor + width))
            cursor += width + (rng.uniform(0.5, 6.0) if rng.random() < (0.5 if far else 0.35) else 0.0)
            if cols.size == 0:
                continue
            tall = rng.uniform(5, 25) if far else rng.uniform(3, 8) if rng.random() < 0.5 else rng.uniform(8, 20)
            patch, klass = facade_texture(rng, x[cols] - x[cols[0]], heights, tall, px_per_m, trees=far)
            if far:
                patch = haze_value + (patch - haze_value) * (1 - haze)
            covered = ~np.isnan(patch)
            value[:, cols] = np.where(covered, patch, value[:, cols])
            alpha[:, cols] = np.where(covered, 1.0, alpha[:, cols])
            label[:, cols] = np.where(covered, klass, label[:, cols])
        return make_layer(np.clip(value, 0, 1) * alpha, alpha, label, depth=depth, x0=lo, top=-m)

    def ground(self) -> Layer:
        """Road, curb and sidewalk on the ground plane, supersampled 2x against aliasing of thin lines."""
        s, rng, m, ss = self.scene, self.rng, int(self.margin) + 2, 2
        top = int(math.floor(s.horizon)) - 1
        c_off = s.width / 2 + m + self.yaw_max
        h = s.height + m - top
        w = int(math.ceil(2 * c_off + self.x_end * (s.height + m - s.horizon) / CAMERA_HEIGHT_M)) + 2
        rows = (top + (np.arange(h * ss) + 0.5) / ss - 0.5)[:, None]
        depth = s.focal * CAMERA_HEIGHT_M / np.maximum(rows - s.horizon, 1e-3)
        x = ((np.arange(w * ss) + 0.5) / ss - 0.5 - c_off)[None, :] * depth / s.focal
        value, label, self.pits = ground_texture(rng, x, depth, self.curb, self.span(self.curb))
        alpha = (rows >= s.horizon) * np.ones_like(value)

        def block_mean(a):
            return a.reshape(h, ss, w, ss).mean(axis=(1, 3))
        return make_layer(block_mean(value * alpha), block_mean(alpha), label[::ss, ::ss], depth=math.nan,
                          x0=c_off, top=top, ground=True)

    def sprite(self, paint, w_m: float, h_m: float, depth: float, x_left: float, main: int,
               velocity: float = 0.0, flip: bool = False, walk: tuple[float, float, float] = (0, 0, 0)) -> Layer:
        """A painted sprite standing on the ground at ``depth``, its left edge at world ``x_left``."""
        painter = Painter(self.rng, w_m, h_m, self.scene.focal / depth)
        paint(painter)
        premultiplied, alpha, label = painter.finish(main, flip)
        return make_layer(premultiplied, alpha, label, depth=depth, x0=x_left, top=self.row(depth) - painter.h + 0.5,
                          velocity=velocity, walk=walk)

    def visible_x(self, depth: float, velocity: float, width_m: float) -> float:
        """Left edge at t = 0 of an object that is in view at a random moment of the drive."""
        rng, s = self.rng, self.scene
        t_seen = rng.uniform(0.1, 0.9) * self.duration
        u_seen = rng.uniform(0.15, 0.85) * s.width
        x_seen = float(np.interp(t_seen, s.camera.t, s.camera.x)) + (u_seen - s.width / 2) * depth / s.focal
        return x_seen - velocity * t_seen - width_m / 2

    def trees(self) -> list[Layer]:
        rng, out = self.rng, []
        for centre in self.pits:
            if rng.random() < 0.7:
                radius = rng.uniform(1.2, 2.4)
                w_m, h_m = 2.6 * radius, rng.uniform(3.0, 5.5) + 1.1 * radius
                out.append(self.sprite(lambda p: paint_tree(p, rng), w_m, h_m, self.curb + rng.uniform(0.7, 1.1),
                                       centre - w_m / 2, VEGETATION))
        return out

    def poles(self) -> list[Layer]:
        rng, out = self.rng, []
        lo, hi = self.span(self.curb + 0.6)
        cursor = lo + rng.uniform(0, 8)
        while cursor < hi:
            w_m = rng.uniform(1.6, 2.2) if rng.random() < 0.4 else 1.0
            out.append(self.sprite(lambda p: paint_pole(p, rng), w_m, rng.uniform(3.9, 8.0),
                                   self.curb + rng.uniform(0.25, 0.6), cursor - 0.5, POLE))
            cursor += rng.uniform(5, 12)
        return out

    def pedestrians(self) -> list[Layer]:
        rng, out = self.rng, []
        for _ in range(rng.integers(3, 8)):  # a quarter of them walk on the road, nearer and larger
            depth = (rng.uniform(self.curb + 0.3, self.facade - 0.3) if rng.random() < 0.75
                     else rng.uniform(5.0, self.curb - 0.8))
            velocity = rng.choice([-1, 1]) * rng.uniform(0.6, 1.6) if rng.random() < 0.75 else 0.0
            walk = (0.03 * self.scene.focal / depth, 2.0 if velocity else 0.0, rng.uniform(0, 2 * np.pi))
            x_left = self.visible_x(depth, velocity, 0.9)
            out.append(self.sprite(lambda p: paint_pedestrian(p, rng), 0.9, rng.uniform(1.55, 1.95), depth, x_left,
                                   PEDESTRIAN, velocity=velocity, walk=walk))
        return out

    def vehicles(self) -> list[Layer]:
        """Parked cars along the curb, plus up to two driving ones, with or against the camera."""
        rng, out = self.rng, []

        def vehicle(depth: float, velocity: float, x_left: float | None, flip: bool) -> Layer:
            bus = rng.random() < 0.12
            length = rng.uniform(5.5, 11.0) if bus else rng.uniform(3.7, 4.8)
            height = rng.uniform(2.3, 3.1) if bus else rng.uniform(1.35, 1.6)
            x_left = self.visible_x(depth, velocity, length) if x_left is None else x_left
            return self.sprite(lambda p: paint_vehicle(p, rng, bus), length, height, depth, x_left, VEHICLE,
                               velocity=velocity, flip=flip)

        lo, hi = self.span(self.curb - 1.0)
        cursor = lo - rng.uniform(0, 6)
        while cursor < hi:
            if rng.random() < 0.35:
                out.append(vehicle(self.curb - rng.uniform(1.0, 1.3), 0.0, cursor, bool(rng.random() < 0.5)))
            cursor += rng.uniform(6.0, 18.0)
        for _ in range(rng.integers(1, 3)):
            if rng.random() < 0.6:
                depth, velocity = rng.uniform(5.0, self.curb - 2.6), self.cruise + rng.uniform(-3, 3)
            else:
                depth, velocity = rng.uniform(0.6 * self.curb, self.curb - 2.6), -rng.uniform(2.0, 6.0)
            out.append(vehicle(depth, velocity, None, velocity < 0))
        return out
