"""Objects, distractors, colours and textures of the synthetic detection scenes (:mod:`.detection_scenes`).

A shape is a list of ``(part, polygon)`` pairs painted in order. ``polygon`` is ``(P, 2)`` float64 xy;
``part`` is :data:`MAIN` or :data:`ACCENT` (the two colours of one object) or :data:`HOLE` (erases what
was painted before, so the background shows through, e.g. the gap between a car's wheels).
Builders return shapes in a unit frame (centred, larger side 1 after :func:`normalise`);
:func:`place` scales, stretches, mirrors, rotates and moves them into pixels; :func:`rasterise`
turns them into a small label patch (0 = not the object, 1 = main, 2 = accent).

The classes differ by structure (a roof on a box, wheels under a body, a head above legs, stacked
tiers on a trunk, concentric rings, points around a centre), never by colour: every class and every
distractor draws its colours from all of :data:`COLOUR_FAMILIES`. Distractors are things that are no
class but share its parts: a lone triangle (roof, tree tier), box (house body), disc (wheel, head),
ring arc (bullseye), plus blobs, strokes, crosses and textured patches.

>>> shape = normalise(star(np.random.default_rng(0)))
>>> points = np.concatenate([polygon for _, polygon in shape])
>>> float(np.ptp(points, axis=0).max())
1.0
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

HOLE, MAIN, ACCENT = 0, 1, 2
Shape = list[tuple[int, np.ndarray]]

#: Colour families (RGB anchors); an object, a distractor or a background picks one at random.
COLOUR_FAMILIES: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "orange": (230, 130, 30), "yellow": (225, 205, 50), "green": (60, 150, 60),
    "teal": (40, 150, 150), "blue": (50, 80, 190), "purple": (120, 60, 160), "pink": (225, 130, 170),
    "brown": (120, 80, 45), "white": (235, 235, 230), "grey": (128, 128, 128), "black": (30, 30, 32),
}
_FAMILY_RGB = np.array(list(COLOUR_FAMILIES.values()), dtype=np.float32)


# ---- geometry primitives (unit frame, y grows downwards as in images) ---------------------------

def ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, stop: float = 2 * np.pi,
            n: int = 28) -> np.ndarray:
    """``(n, 2)`` polygon of an ellipse (or of its arc from ``start`` to ``stop`` closed by a chord)."""
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def segment(p0, p1, width: float) -> np.ndarray:
    """The quad of a straight stroke of ``width`` from ``p0`` to ``p1`` (a limb, a branch, a line)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * width / 2
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def star_polygon(points: int, inner: float, radius: float = 0.5) -> np.ndarray:
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, radius, radius * inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def normalise(shape: Shape) -> Shape:
    """Centre ``shape`` on its bounding box and scale its larger side to 1."""
    points = np.concatenate([polygon for _, polygon in shape])
    low, high = points.min(axis=0), points.max(axis=0)
    centre, scale = (low + high) / 2, float((high - low).max())
    return [(part, (polygon - centre) / scale) for part, polygon in shape]


# ---- the classes ---------------------------------------------------------------------------------

def star(rng: np.random.Generator) -> Shape:
    """5 or 6 points around a centre, sometimes with an accent disc in the middle."""
    inner = rng.uniform(0.38, 0.55)
    shape = [(MAIN, star_polygon(int(rng.integers(5, 7)), inner))]
    if rng.uniform() < 0.35:
        shape.append((ACCENT, ellipse(0, 0, 0.2 * inner, 0.2 * inner)))
    return shape


def house(rng: np.random.Generator) -> Shape:
    """A box under a triangular roof, with a door and sometimes windows and a chimney."""
    half, wall_top, overhang = rng.uniform(0.28, 0.4), rng.uniform(-0.1, 0.05), rng.uniform(0.03, 0.1)
    shape = [(MAIN, rect(-half, wall_top, half, 0.5)),
             (MAIN, np.array([[-half - overhang, wall_top], [0.0, -0.5], [half + overhang, wall_top]]))]
    if rng.uniform() < 0.4:
        x = rng.uniform(0.1, 0.6) * half
        shape.insert(0, (MAIN, rect(x, -0.45, x + 0.08, wall_top)))  # chimney, half hidden by the roof
    door_x = rng.uniform(-0.5, 0.5) * half
    door_part = ACCENT if rng.uniform() < 0.7 else HOLE
    shape.append((door_part, rect(door_x - 0.07, 0.5 - rng.uniform(0.2, 0.3), door_x + 0.07, 0.5)))
    if rng.uniform() < 0.5:
        y = wall_top + 0.08
        for x in (-half * 0.65, half * 0.65 - 0.12):
            if abs(x + 0.06 - door_x) > 0.16:
                shape.append((ACCENT, rect(x, y, x + 0.12, y + 0.11)))
    return shape


def car(rng: np.random.Generator) -> Shape:
    """A long body with a cabin on top and two wheels below (the gap between them shows background)."""
    body_top, body_bottom = rng.uniform(-0.05, 0.02), rng.uniform(0.16, 0.24)
    c0, c1 = rng.uniform(-0.3, -0.15), rng.uniform(0.1, 0.3)
    cabin_top = body_top - rng.uniform(0.14, 0.22)
    shape = [(MAIN, rect(-0.5, body_top, 0.5, body_bottom)),
             (MAIN, np.array([[c0 - 0.08, body_top], [c0 + 0.04, cabin_top], [c1 - 0.06, cabin_top],
                              [c1 + 0.1, body_top]]))]
    if rng.uniform() < 0.6:
        mid = (c0 + c1) / 2
        shape.append((ACCENT, np.array([[c0 + 0.02, body_top - 0.02], [c0 + 0.07, cabin_top + 0.04],
                                        [mid, cabin_top + 0.04], [mid, body_top - 0.02]])))
    radius = rng.uniform(0.09, 0.12)
    for x in (-0.3, 0.3):
        shape.append((ACCENT, ellipse(x, body_bottom, radius, radius)))
        if rng.uniform() < 0.4:
            shape.append((MAIN, ellipse(x, body_bottom, radius * 0.45, radius * 0.45, n=12)))  # hub cap
    return shape


def person(rng: np.random.Generator) -> Shape:
    """A head above a torso, two arms and two legs, in a random stance."""
    limb = rng.uniform(0.06, 0.09)
    head_r = rng.uniform(0.07, 0.09)
    hip_y, shoulder_y = rng.uniform(0.02, 0.1), -0.5 + 2 * head_r + 0.03
    shape = [(MAIN, ellipse(0, -0.5 + head_r, head_r, head_r)),
             (ACCENT, rect(-0.1, shoulder_y, 0.1, hip_y))]
    for side in (-1, 1):
        spread = rng.uniform(0.02, 0.22)
        shape.append((MAIN, segment((side * 0.05, hip_y - 0.02), (side * spread, 0.5 - limb / 2), limb)))
        hand = (side * rng.uniform(0.15, 0.3), shoulder_y + rng.uniform(-0.15, 0.35))
        shape.append((ACCENT, segment((side * 0.08, shoulder_y + limb / 2), hand, limb * 0.85)))
    return shape


def tree(rng: np.random.Generator) -> Shape:
    """A trunk under a crown: stacked triangle tiers (conifer) or a cluster of round lobes."""
    trunk = rng.uniform(0.05, 0.09)
    crown_bottom = rng.uniform(0.15, 0.3)
    shape = [(ACCENT, rect(-trunk, crown_bottom - 0.05, trunk, 0.5))]
    if rng.uniform() < 0.5:
        tiers = int(rng.integers(2, 4))
        height = (crown_bottom + 0.5) / tiers
        for i in range(tiers):
            bottom, half = crown_bottom - i * height * 0.75, 0.35 - i * 0.07
            shape.append((MAIN, np.array([[-half, bottom], [0.0, bottom - height * 1.3], [half, bottom]])))
    else:
        for cx, cy, r in ((0, -0.18, 0.3), (-0.18, 0.0, 0.2), (0.18, 0.0, 0.2), (0, -0.32, 0.18)):
            shape.append((MAIN, ellipse(cx + rng.uniform(-0.04, 0.04), cy, r, r * rng.uniform(0.8, 1.0))))
    return shape


def bullseye(rng: np.random.Generator) -> Shape:
    """Concentric rings: main disc, accent or empty ring, main centre."""
    ring = ACCENT if rng.uniform() < 0.6 else HOLE
    inner = rng.uniform(0.28, 0.36)
    return [(MAIN, ellipse(0, 0, 0.5, 0.5, n=36)), (ring, ellipse(0, 0, inner, inner, n=32)),
            (MAIN, ellipse(0, 0, inner * 0.5, inner * 0.5, n=20))]


#: Class name -> shape builder; the order is the class-id order of :data:`.detection_scenes.DETECTION_CLASSES`.
CLASS_SHAPES: dict[str, Callable[[np.random.Generator], Shape]] = {
    "star": star, "house": house, "car": car, "person": person, "tree": tree, "bullseye": bullseye,
}
#: Classes drawn upright (small tilt only) and classes that may be mirrored left-right.
UPRIGHT = {"house", "car", "person", "tree"}
MIRRORED = {"car", "person", "tree", "house"}


# ---- distractors: no class, but built from the same parts and colours -----------------------------

def blob(rng: np.random.Generator) -> Shape:
    """A smooth random closed outline (radius = sum of low-frequency waves)."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 0.5 + sum(rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    return [(MAIN, np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1))]


def stroke(rng: np.random.Generator) -> Shape:
    """A thick polyline (a cable, a branch, a road marking)."""
    points = np.cumsum(rng.uniform(-0.5, 0.5, (int(rng.integers(2, 5)), 2)), axis=0)
    width = rng.uniform(0.03, 0.08) * float(np.ptp(points, axis=0).max() + 1e-3)
    return [(MAIN, segment(a, b, width)) for a, b in zip(points[:-1], points[1:])]


def polygon_piece(rng: np.random.Generator) -> Shape:
    """A lone triangle, box or quad: the parts of a roof, tree tier or house body, alone."""
    corners = int(rng.integers(3, 5))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    return [(MAIN, np.stack([np.cos(angles), np.sin(angles)], axis=1) * rng.uniform(0.6, 1.0, (corners, 1)))]


def disc_piece(rng: np.random.Generator) -> Shape:
    """A plain disc or a crescent (like a wheel or a head, alone)."""
    shape = [(MAIN, ellipse(0, 0, 0.5, 0.5 * rng.uniform(0.6, 1.0)))]
    if rng.uniform() < 0.4:
        shape.append((HOLE, ellipse(rng.uniform(0.2, 0.4), 0, 0.45, 0.45)))
    return shape


def ring_arc(rng: np.random.Generator) -> Shape:
    """Part of a ring (a bullseye's band, broken)."""
    start = rng.uniform(0, 2 * np.pi)
    stop = start + rng.uniform(0.6, 1.5) * np.pi
    outer = ellipse(0, 0, 0.5, 0.5, start, stop, n=24)
    inner = ellipse(0, 0, 0.32, 0.32, start, stop, n=24)[::-1]
    return [(MAIN, np.concatenate([outer, inner]))]


def cross(rng: np.random.Generator) -> Shape:
    """A plus or an L made of two bars."""
    width = rng.uniform(0.12, 0.25)
    if rng.uniform() < 0.5:
        return [(MAIN, rect(-0.5, -width / 2, 0.5, width / 2)), (MAIN, rect(-width / 2, -0.5, width / 2, 0.5))]
    return [(MAIN, rect(-0.5, 0.5 - width, 0.5, 0.5)), (MAIN, rect(-0.5, -0.5, -0.5 + width, 0.5))]


def patch(rng: np.random.Generator) -> Shape:
    """A textured rectangle (a poster, a rug): object-like texture and colour, no structure."""
    return [(MAIN, rect(-0.5, -0.5 * rng.uniform(0.3, 1.0), 0.5, 0.5 * rng.uniform(0.3, 1.0)))]


DISTRACTOR_SHAPES: list[Callable[[np.random.Generator], Shape]] = [
    blob, stroke, polygon_piece, disc_piece, ring_arc, cross, patch]


# ---- pixels --------------------------------------------------------------------------------------

def place(shape: Shape, size: float, angle: float, stretch: float, mirror: bool,
          centre: tuple[float, float]) -> Shape:
    """Unit-frame ``shape`` into pixels: larger side ``size`` px, x stretched, mirrored, rotated, moved."""
    scale = np.array([(-1.0 if mirror else 1.0) * stretch, 1.0]) * size / max(stretch, 1.0)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    return [(part, (polygon * scale) @ rotation.T + np.asarray(centre)) for part, polygon in shape]


def extent(shape: Shape) -> np.ndarray:
    """``(4,)`` xyxy bounding box of a placed shape's polygons."""
    points = np.concatenate([polygon for _, polygon in shape])
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def rasterise(shape: Shape) -> tuple[np.ndarray, int, int]:
    """Paint a placed shape into a label patch: ``(labels (h, w) uint8, x0, y0)`` of its top-left pixel.

    Labels are 0 outside the object, :data:`MAIN` or :data:`ACCENT` inside; PIL fills the polygons
    (hard edges; the scene's blur softens them later, so the label is the exact drawn extent).
    """
    x0, y0, x1, y1 = extent(shape)
    left, top = int(np.floor(x0)) - 1, int(np.floor(y0)) - 1
    patch_size = (int(np.ceil(x1)) - left + 2, int(np.ceil(y1)) - top + 2)
    canvas = Image.new("L", patch_size, 0)
    draw = ImageDraw.Draw(canvas)
    for part, polygon in shape:
        draw.polygon([(float(x), float(y)) for x, y in polygon - (left, top)], fill=part)
    return np.asarray(canvas), left, top


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """``(3,)`` float RGB: a random family's anchor, brightened or darkened, with per-channel jitter."""
    anchor = _FAMILY_RGB[rng.integers(len(_FAMILY_RGB))]
    return np.clip(anchor * rng.uniform(0.75, 1.15) + rng.normal(0, 12, 3), 0, 255).astype(np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """``(height, width)`` float32 noise in about [-1, 1] with features ``cell`` pixels wide (bicubic)."""
    grid = rng.uniform(-1, 1, (int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width)`` float32 in [-1, 1]: plain, stripes, checks, blotches or fine grain."""
    kind = int(rng.integers(5))
    if kind == 0:
        return np.zeros((height, width), np.float32)
    y, x = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]
    period, phi = rng.uniform(3, 12), rng.uniform(0, np.pi)
    if kind == 1:
        return np.sin(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / period + rng.uniform(0, 6.3))
    if kind == 2:
        return np.sign(np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)).astype(np.float32)
    return smooth_noise(rng, height, width, rng.uniform(3, 8) if kind == 3 else 1.5)


def paint(rng: np.random.Generator, labels: np.ndarray, main: np.ndarray, accent: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` float32 colours for a label patch: two colours, a light gradient and a texture."""
    height, width = labels.shape
    colour = np.where((labels == ACCENT)[..., None], accent, main)
    y, x = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]
    gx, gy = rng.normal(0, 0.25, 2) / max(height, width)
    shade = 1 + gx * (x - width / 2) + gy * (y - height / 2)
    shade = shade * (1 + rng.uniform(0.05, 0.3) * texture(rng, height, width))
    return colour * shade[..., None]
