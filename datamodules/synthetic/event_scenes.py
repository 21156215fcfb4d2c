"""Procedural street scenes seen sideways from a moving car: the world the event simulator films.

The camera (focal ``f = 0.8 W`` px, 1.4 m above the road, horizon at 36-46 % of the image height)
drives along the street (world X) with a speed that changes and sometimes stops, and yaws, bobs and
zooms a little. What it sees, far to near (each a textured canvas, :class:`Layer`):

* sky, infinitely far, so it moves only with the yaw: a gradient with faint clouds;
* a hazy skyline and tree line 40-70 m away;
* the ground plane, whose depth grows row by row towards the horizon, so each row slides at its own
  speed: asphalt with lane dashes, crossings and patches, a curb, a tiled sidewalk with grass pits;
* building facades 11-17 m away: window grids, siding, doors, cornices, hedges;
* sprites standing on the ground at their own depth: trees, poles with signs, walking pedestrians,
  parked and driving vehicles.

Parallax follows ``image speed = f * (V_camera - V_object) / depth``; layers are composited far to
near with alpha, and the label of a pixel is the class of the front-most surface covering it.
Brightness is a weak cue on purpose: every class draws from overlapping brightness ranges and the
textures are shared (window grids, sign plates and zebra stripes; foliage and facade noise), so shape,
position and motion are what tell classes apart. Where nothing moves (the sky, a stopped camera)
the event camera sees little, as a real one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

EVENT_CLASSES: list[str] = ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "pedestrian",
                            "pole", "sign"]
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, VEHICLE, PEDESTRIAN, POLE, SIGN = range(len(EVENT_CLASSES))
CAMERA_HEIGHT_M = 1.4


@dataclass
class Layer:
    """A textured canvas placed in the world.

    ``canvas``: ``(2, h + 2, w + 2)`` float32, alpha-premultiplied intensity and alpha, with a
    transparent 1-px border so that bilinear sampling fades out at the edges; ``label``:
    ``(h + 2, w + 2)`` uint8 class ids. Canvas column 0 is world X ``x0`` metres at ``t = 0`` (moving
    with ``velocity`` m/s); for the sky ``x0`` is in pixels; for the ground it is the pixel column
    offset and each row has its own depth. ``top`` is the screen row of canvas row 0.
    """

    canvas: np.ndarray
    label: np.ndarray
    depth: float
    x0: float
    top: float
    velocity: float = 0.0
    ground: bool = False
    walk: tuple[float, float, float] = (0.0, 0.0, 0.0)  # vertical bob of a walker: px, Hz, phase


def make_layer(premultiplied: np.ndarray, alpha: np.ndarray, label: np.ndarray, **placement) -> Layer:
    """A :class:`Layer` from ``(h, w)`` premultiplied intensity, alpha and labels (border added)."""
    canvas = np.pad(np.stack([premultiplied, alpha]).astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    return Layer(canvas, np.pad(label.astype(np.uint8), 1, mode="edge"), **placement)


@dataclass
class CameraPath:
    """Camera motion on a 1 ms grid: position ``x`` (m), speed (m/s), yaw, bob (px) and zoom, all ``(T,)``."""

    t: np.ndarray
    x: np.ndarray
    speed: np.ndarray
    yaw: np.ndarray
    bob: np.ndarray
    zoom: np.ndarray

    def at(self, t: float) -> tuple[float, float, float, float]:
        """``(x, yaw, bob, zoom)`` at time ``t`` seconds (linear between grid points)."""
        return tuple(float(np.interp(t, self.t, values)) for values in (self.x, self.yaw, self.bob, self.zoom))


@dataclass
class StreetScene:
    """A scene that renders intensity ``(H, W)`` float32 in [0, 1] and labels ``(H, W)`` int64 at any time."""

    height: int
    width: int
    focal: float
    horizon: float
    camera: CameraPath
    layers: list[Layer] = field(default_factory=list)  # drawing order, far to near

    @cached_property
    def pad(self) -> int:
        """Margin (px) of the unzoomed compositing grid around the screen, enough for zoom and bob."""
        cam = self.camera
        reach = float(np.abs(cam.zoom - 1).max()) * max(self.height, self.width) / 2 + float(np.abs(cam.bob).max())
        return int(math.ceil(reach)) + 2

    def render(self, t: float, with_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The frame at ``t`` seconds: intensity, and the front-most class per pixel if asked.

        Layers slide horizontally only, so they are composited with shifted slices (no gathers) on a
        padded grid; zoom and bob are one separable resampling of the composite at the end.
        """
        x_cam, yaw, bob, zoom = self.camera.at(t)
        m = self.pad
        image = np.zeros((self.height + 2 * m, self.width + 2 * m), np.float32)
        labels = np.full(image.shape, SKY, np.int64) if with_labels else None
        for layer in self.layers:
            if layer.ground:
                self._composite_ground(image, labels, layer, x_cam, yaw)
                continue
            walk_px, walk_hz, walk_phase = layer.walk
            top = layer.top + walk_px * math.sin(2 * math.pi * walk_hz * t + walk_phase)
            composite(image, labels, layer, -m - top, self._shift(layer, t, x_cam, yaw) - m)
        return self._to_screen(image, labels, bob, zoom)

    def _shift(self, layer: Layer, t: float, x_cam: float, yaw: float) -> float:
        """Canvas column minus unzoomed screen column."""
        if math.isinf(layer.depth):
            return layer.x0 - yaw
        world = x_cam - layer.x0 - layer.velocity * t
        return world * self.focal / layer.depth - self.width / 2.0 - yaw

    def _composite_ground(self, image: np.ndarray, labels: np.ndarray | None, layer: Layer, x_cam: float,
                          yaw: float) -> None:
        """The ground plane: row ``v`` lies at depth ``f h / (v - horizon)``, so each row has its own shift."""
        m, (height, width) = self.pad, layer.label.shape
        first, last = max(0, m + int(layer.top)), min(image.shape[0], m + int(layer.top) + height - 2)
        ideal_rows = np.arange(first, last) - m
        shift = layer.x0 - self.width / 2.0 - yaw + x_cam * (ideal_rows - self.horizon) / CAMERA_HEIGHT_M
        start = shift - m + 1.0  # + 1: the transparent border
        col = np.floor(start)
        frac = (start - col).astype(np.float32)[:, None]
        index = np.clip(col.astype(np.int64)[:, None] + np.arange(image.shape[1]), 0, width - 2)
        index += (ideal_rows - int(layer.top) + 1)[:, None] * width
        flat = layer.canvas.reshape(2, -1)
        premultiplied, alpha = flat[:, index] * (1 - frac) + flat[:, index + 1] * frac
        image[first:last] = image[first:last] * (1 - alpha) + premultiplied
        if labels is not None:
            nearest = index + (frac >= 0.5)
            labels[first:last] = np.where(alpha >= 0.5, layer.label.reshape(-1)[nearest], labels[first:last])

    def _to_screen(self, image: np.ndarray, labels: np.ndarray | None, bob: float, zoom: float):
        """Zoom about the image centre and bob vertically: bilinear for intensity, nearest for labels."""
        m = self.pad
        rows = self.height / 2 + (np.arange(self.height) - self.height / 2) / zoom - bob + m
        cols = self.width / 2 + (np.arange(self.width) - self.width / 2) / zoom + m
        r0 = np.clip(np.floor(rows).astype(np.int64), 0, image.shape[0] - 2)
        c0 = np.clip(np.floor(cols).astype(np.int64), 0, image.shape[1] - 2)
        fr, fc = (rows - r0).astype(np.float32)[:, None], (cols - c0).astype(np.float32)
        blended = image[r0] * (1 - fr) + image[r0 + 1] * fr
        out = np.clip(blended[:, c0] * (1 - fc) + blended[:, c0 + 1] * fc, 0.0, 1.0)
        if labels is not None:
            labels = labels[np.rint(rows).astype(np.int64)][:, np.rint(cols).astype(np.int64)]
        return out, labels

    def max_flow(self) -> np.ndarray:
        """``(T,)`` an upper bound of image motion (px/s) on the camera grid, for adaptive time steps."""
        cam = self.camera
        step = np.gradient(cam.t)
        rates = [np.abs(np.gradient(values) / step) for values in (cam.yaw, cam.bob)]
        rates.append(np.abs(np.gradient(cam.zoom) / step) * max(self.width, self.height))
        ground_rows = self.height * 1.05 - self.horizon
        flow = np.abs(cam.speed) * ground_rows / CAMERA_HEIGHT_M
        for layer in self.layers:
            if not layer.ground and math.isfinite(layer.depth):
                relative = np.abs(cam.speed - layer.velocity) * self.focal / layer.depth
                walk = 2 * math.pi * layer.walk[0] * layer.walk[1]
                flow = np.maximum(flow, relative + walk)
        return flow + sum(rates)


def composite(image: np.ndarray, labels: np.ndarray | None, layer: Layer, row_offset: float,
              col_offset: float) -> None:
    """Alpha-composite ``layer`` over ``image`` ``(H, W)`` where pixel ``(i, j)`` sees canvas point
    ``(i + row_offset, j + col_offset)``: bilinear from four shifted slices; labels (nearest) where
    the layer covers at least half a pixel."""
    height, width = layer.label.shape
    r_start, c_start = row_offset + 1.0, col_offset + 1.0  # + 1: the transparent border
    kr, kc = math.floor(r_start), math.floor(c_start)
    fr, fc = np.float32(r_start - kr), np.float32(c_start - kc)
    i0, i1 = max(0, -kr), min(image.shape[0], height - 1 - kr)
    j0, j1 = max(0, -kc), min(image.shape[1], width - 1 - kc)
    if i0 >= i1 or j0 >= j1:
        return
    block = layer.canvas[:, kr + i0: kr + i1 + 1, kc + j0: kc + j1 + 1]
    across = block[:, :, :-1] * (1 - fc) + block[:, :, 1:] * fc
    premultiplied, alpha = across[:, :-1] * (1 - fr) + across[:, 1:] * fr
    image[i0:i1, j0:j1] = image[i0:i1, j0:j1] * (1 - alpha) + premultiplied
    if labels is not None:
        lr, lc = kr + int(fr >= 0.5), kc + int(fc >= 0.5)
        near = layer.label[lr + i0: lr + i1, lc + j0: lc + j1]
        labels[i0:i1, j0:j1] = np.where(alpha >= 0.5, near, labels[i0:i1, j0:j1])


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """``shape`` float32 smooth noise in [-1, 1] with features about ``cell`` pixels wide."""
    if cell <= 1:
        return (rng.random(shape, dtype=np.float32) * 2 - 1)
    coarse = rng.random((int(shape[0] / cell) + 3, int(shape[1] / cell) + 3)).astype(np.float32)
    fine = ndimage.zoom(coarse, cell, order=1, grid_mode=False)
    return fine[: shape[0], : shape[1]] * 2 - 1


def camera_path(rng: np.random.Generator, duration_s: float, focal: float, height: int) -> CameraPath:
    """Speed from knots every 0.5 s (cruise 1-4 m/s, 20 % of knots a stop), small yaw, bob and zoom."""
    t = np.arange(0.0, duration_s + 0.1, 0.001)
    knots = np.arange(0.0, duration_s + 0.6, 0.5)
    cruise = rng.uniform(1.0, 4.0)
    knot_speed = cruise * rng.uniform(0.5, 1.2, knots.size)
    knot_speed[rng.random(knots.size) < 0.2] = 0.0  # stops: only moving objects make events then
    speed = np.interp(t, knots, knot_speed)
    x = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) * 0.0005)])

    def wave(amplitude: float, low: float, high: float) -> np.ndarray:
        return amplitude * np.sin(2 * np.pi * rng.uniform(low, high) * t + rng.uniform(0, 2 * np.pi))

    yaw = wave(focal * rng.uniform(0.003, 0.015), 0.2, 0.8)
    bob = wave(height / 128 * rng.uniform(0.2, 0.8), 2.0, 5.0)
    zoom = 1.0 + wave(rng.uniform(0.0, 0.03), 0.2, 0.6)
    return CameraPath(t, x, speed, yaw, bob, zoom)


def make_street_scene(rng: np.random.Generator, height: int = 128, width: int = 160,
                      duration_s: float = 2.0) -> StreetScene:
    """A random street for a ``duration_s`` drive, filmed at ``height x width`` (up to 480 x 640)."""
    focal = 0.8 * width
    horizon = height * rng.uniform(0.36, 0.46)
    camera = camera_path(rng, duration_s, focal, height)
    from datamodules.synthetic.event_street import StreetBuilder  # the layout imports this module's types

    scene = StreetScene(height, width, focal, horizon, camera)
    scene.layers = StreetBuilder(rng, scene).build()
    return scene
