"""Procedural photograph-like scenes with boxes, written as JPEG + COCO JSON: the default 2D detection data.

Each image (default 192 x 256, H x W) has a textured background (a low-frequency "photo" colour
field with lighting, plus sometimes stripes, tiles or grain), 6-14 objects of the
:data:`DETECTION_CLASSES` (shapes from :mod:`.detection_shapes`: classes differ by structure, colours
come from families shared by every class and by the distractors), 4-12 distractors that are no class
(blobs, strokes, lone triangles/boxes/discs, ring arcs, crosses, textured patches), a light field over
everything, mild Gaussian blur and sensor noise; the writer adds JPEG compression (quality 60-92).
Object sizes (larger side) are log-uniform over 5%-50% of the shorter image side (about 10-96 px at the
default size, a 1:10 range). Objects are painted back to front among the distractors, so they overlap.

Annotation rule (COCO-style: every object visible enough has a box, so ``boxes_complete`` is true):
an object is annotated iff its visible fraction (pixels still showing after everything painted over it
and after the image border cut it, over all pixels of its drawn mask) is at least
:data:`VISIBLE_FRACTION_MIN`. Its box is the tight box of the visible pixels (not of the nominal
shape): ``x1 = first column, x2 = last column + 1`` in 0-based pixel-edge coordinates.

Every image is seeded by ``(seed, image_id)`` only (:func:`vision.labels.seeding.sample_rng`), so an
image does not change when the dataset size does.

>>> image, boxes, class_ids = generate_image(0, "train_00000")
>>> image.shape, image.dtype, boxes.shape[1], bool(len(boxes) == len(class_ids) >= 5)
((192, 256, 3), dtype('uint8'), 4, True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFilter

from datamodules.formats.coco import write_coco
from datamodules.formats.detection_common import DetectionDataset, ImageRecord
from datamodules.synthetic import detection_shapes as shapes
from datamodules.synthetic.cache import build_once, dataset_dir
from vision.errors import DataError
from vision.labels.seeding import sample_rng
from vision.labels.types import BoxLabels

DETECTION_CLASSES: list[str] = list(shapes.CLASS_SHAPES)
SCENES_VERSION = 1
#: An object with less than this fraction of its drawn pixels visible gets no box.
VISIBLE_FRACTION_MIN = 0.35
DEFAULT_OBJECTS = (6, 14)
DEFAULT_DISTRACTORS = (4, 12)
DEFAULT_OBJECT_SIZE = (0.05, 0.5)  # of the shorter image side
JPEG_QUALITY = (60, 92)
_MAX_OVERLAP = 0.45  # placement tries to keep box overlap / smaller box area below this
_PLACEMENT_TRIES = 8
_MIN_CONTRAST = 60.0  # RGB distance between an object's main colour and what lies under it
DISTRACTOR, BACKGROUND = -2, -1  # owner-map values of pixels that show no object


@dataclass
class SceneMasks:
    """What :func:`generate_image` drew, for tests and debugging (``return_masks=True``).

    Args:
        masks: ``(K, H, W)`` bool, the visible pixels of each annotated object (row k = ``boxes[k]``).
        owner: ``(H, W)`` int16, the object seen at each pixel (an index into ``object_class_ids``),
            :data:`BACKGROUND` or :data:`DISTRACTOR`.
        object_class_ids: ``(N,)`` int32, class of every object painted, annotated or not (plan order).
        drawn_pixels: ``(N,)`` int64, pixels of each object's whole drawn mask (outside the image too).
        visible_fraction: ``(N,)`` float32, visible pixels / drawn-mask pixels per object.
        annotated: ``(N,)`` bool, ``visible_fraction >= VISIBLE_FRACTION_MIN``.
    """

    masks: np.ndarray
    owner: np.ndarray
    object_class_ids: np.ndarray
    drawn_pixels: np.ndarray
    visible_fraction: np.ndarray
    annotated: np.ndarray


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row ``(H, 1)`` and column ``(1, W)`` coordinates, float32 (broadcast instead of a full grid)."""
    return (np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :])


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(H, W, 3)`` float32: two colours blended by low-frequency noise, plus a pattern or grain."""
    grey = np.float32(128)
    colours = [c * (1 - w) + grey * w for c, w in
               ((shapes.random_colour(rng), rng.uniform(0.2, 0.7)) for _ in range(2))]
    blend = np.clip(0.5 + 0.8 * shapes.smooth_noise(rng, height, width, rng.uniform(24, 96)), 0, 1)
    image = colours[0] * blend[..., None] + colours[1] * (1 - blend[..., None])
    kind = int(rng.integers(4))  # 0: photo only, 1: stripes, 2: tiles, 3: grain
    if kind:
        y, x = _grid(height, width)
        period, phi = rng.uniform(8, 40), rng.uniform(0, np.pi)
        if kind == 1:
            pattern = np.sin(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / period)
        elif kind == 2:
            pattern = ((x // period + y // period) % 2) * 2 - 1
        else:
            pattern = shapes.smooth_noise(rng, height, width, rng.uniform(1.5, 4))
        image = image * (1 + rng.uniform(0.06, 0.2) * pattern[..., None])
    return image.astype(np.float32)


def _light(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Photo-like lighting over the whole scene: a directional gradient times soft light blotches."""
    height, width = image.shape[:2]
    y, x = _grid(height, width)
    gx, gy = rng.normal(0, 0.25, 2)
    field = 1 + gx * (x / width - 0.5) + gy * (y / height - 0.5)
    field = field * (1 + 0.12 * shapes.smooth_noise(rng, height, width, rng.uniform(48, 128)))
    return image * (field * rng.uniform(0.8, 1.15))[..., None]


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Mild blur (lens) and Gaussian sensor noise; ``(H, W, 3)`` uint8."""
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    blurred = blurred.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    sigma = np.float32(rng.uniform(1.5, 5.0))
    noisy = np.asarray(blurred, np.float32) + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Largest intersection / smaller box area between ``box`` and ``others`` (0 when none)."""
    worst = 0.0
    area = np.prod(box[2:] - box[:2])
    for other in others:
        inter = np.prod(np.clip(np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]), 0, None))
        worst = max(worst, float(inter / max(min(area, np.prod(other[2:] - other[:2])), 1e-6)))
    return worst


def _random_placement(rng, shape, size, height, width, upright: bool, mirrorable: bool) -> shapes.Shape:
    """``shape`` at a random pose; up to ~20% of it may lie outside the image."""
    angle = rng.normal(0, 0.17) if upright else rng.uniform(0, 2 * np.pi)
    stretch = rng.uniform(0.8, 1.25)
    mirror = bool(mirrorable and rng.uniform() < 0.5)
    placed = shapes.place(shape, size, angle, stretch, mirror, (0.0, 0.0))
    x0, y0, x1, y1 = shapes.extent(placed)
    cx = rng.uniform(-x0 - 0.2 * (x1 - x0), width - x1 + 0.2 * (x1 - x0))
    cy = rng.uniform(-y0 - 0.2 * (y1 - y0), height - y1 + 0.2 * (y1 - y0))
    return [(part, polygon + (cx, cy)) for part, polygon in placed]


def _plan_objects(rng, height, width, count, size_range) -> list[tuple[int, shapes.Shape]]:
    """``count`` (class id, placed shape) pairs, each placed to overlap the earlier ones moderately."""
    short = min(height, width)
    log_low, log_high = np.log(size_range[0] * short), np.log(size_range[1] * short)
    planned, boxes = [], []
    for _ in range(count):
        class_id = int(rng.integers(len(DETECTION_CLASSES)))
        name = DETECTION_CLASSES[class_id]
        shape = shapes.normalise(shapes.CLASS_SHAPES[name](rng))
        size = float(np.exp(rng.uniform(log_low, log_high)))
        best, best_overlap = None, np.inf
        for _ in range(_PLACEMENT_TRIES):  # keep the pose that hides the least of the others
            placed = _random_placement(rng, shape, size, height, width, name in shapes.UPRIGHT,
                                       name in shapes.MIRRORED)
            overlap = _overlap(shapes.extent(placed), boxes)
            if overlap < best_overlap:
                best, best_overlap = placed, overlap
            if overlap < _MAX_OVERLAP:
                break
        planned.append((class_id, best))
        boxes.append(shapes.extent(best))
    return planned


def _plan_distractors(rng, height, width, count, size_range) -> list[shapes.Shape]:
    short = min(height, width)
    log_low, log_high = np.log(size_range[0] * short), np.log(size_range[1] * short)
    planned = []
    for _ in range(count):
        builder = shapes.DISTRACTOR_SHAPES[rng.integers(len(shapes.DISTRACTOR_SHAPES))]
        shape = shapes.normalise(builder(rng))
        size = float(np.exp(rng.uniform(log_low, log_high)))
        planned.append(_random_placement(rng, shape, size, height, width, False, True))
    return planned


def _composite(rng, canvas: np.ndarray, owner: np.ndarray, shape: shapes.Shape, owner_value: int) -> int:
    """Paint ``shape`` onto ``canvas`` (in place) and mark its pixels in ``owner``; returns its mask size."""
    labels, left, top = shapes.rasterise(shape)
    height, width = owner.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + labels.shape[1], width), min(top + labels.shape[0], height)
    if x1 <= x0 or y1 <= y0:
        return int(np.count_nonzero(labels))
    region = labels[y0 - top:y1 - top, x0 - left:x1 - left]
    under = canvas[y0:y1, x0:x1]
    main = shapes.random_colour(rng)
    for _ in range(4):  # a few tries for a colour that stands out from what lies underneath
        if region.any() and np.linalg.norm(under[region > 0].mean(axis=0) - main) >= _MIN_CONTRAST:
            break
        main = shapes.random_colour(rng)
    colours = shapes.paint(rng, region, main, shapes.random_colour(rng))
    inside = region > 0
    under[inside] = colours[inside]
    owner[y0:y1, x0:x1][inside] = owner_value
    return int(np.count_nonzero(labels))


def visible_boxes(owner: np.ndarray, drawn_pixels: np.ndarray, min_fraction: float = VISIBLE_FRACTION_MIN):
    """The annotation rule: which objects get a box, and the tight box of what is visible of each.

    Args:
        owner: ``(H, W)`` int, object index seen at each pixel (negative: background or distractor).
        drawn_pixels: ``(N,)`` size of each object's whole drawn mask, outside the image included.

    Returns:
        ``visible_fraction (N,) float32``, ``annotated (N,) bool`` (fraction >= ``min_fraction``),
        ``boxes (K, 4) float32`` xyxy (``x2`` = last visible column + 1) and ``masks (K, H, W) bool``
        of the annotated objects in index order.

    >>> owner = np.full((4, 6), -1); owner[1:3, 2:5] = 0; owner[0, 0] = 1
    >>> fraction, annotated, boxes, masks = visible_boxes(owner, np.array([6, 4]))
    >>> fraction.tolist(), annotated.tolist(), boxes.tolist()
    ([1.0, 0.25], [True, False], [[2.0, 1.0, 5.0, 3.0]])
    """
    drawn_pixels = np.asarray(drawn_pixels)
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(drawn_pixels))[:len(drawn_pixels)]
    fraction = (visible / np.maximum(drawn_pixels, 1)).astype(np.float32)
    annotated = fraction >= min_fraction
    masks = np.zeros((int(annotated.sum()),) + owner.shape, bool)
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, index in enumerate(np.flatnonzero(annotated)):
        masks[k] = owner == index
        rows, cols = np.flatnonzero(masks[k].any(axis=1)), np.flatnonzero(masks[k].any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return fraction, annotated, boxes, masks


def generate_image(seed: int, image_id: str, height: int = 192, width: int = 256,
                   objects_per_image: tuple[int, int] = DEFAULT_OBJECTS,
                   distractors_per_image: tuple[int, int] = DEFAULT_DISTRACTORS,
                   object_size: tuple[float, float] = DEFAULT_OBJECT_SIZE, return_masks: bool = False):
    """One scene, seeded by ``(seed, image_id)``.

    Args:
        objects_per_image, distractors_per_image: inclusive ranges of how many are painted.
        object_size: range of an object's larger side as a fraction of ``min(height, width)``
            (sampled log-uniformly).
        return_masks: also return a :class:`SceneMasks`.

    Returns:
        ``image (H, W, 3) uint8``, ``boxes (K, 4) float32`` xyxy pixels, ``class_ids (K,) int32``
        (indices into :data:`DETECTION_CLASSES`), and with ``return_masks`` a :class:`SceneMasks`.
    """
    if min(int(height), int(width)) < 32:
        raise ValueError(f"image size {height}x{width} is too small (at least 32x32)")
    if not (0 < object_size[0] <= object_size[1] <= 1):
        raise ValueError(f"object_size {object_size} must satisfy 0 < low <= high <= 1")
    if not (0 <= objects_per_image[0] <= objects_per_image[1] and 0 <= distractors_per_image[0]
            <= distractors_per_image[1]):
        raise ValueError("objects_per_image and distractors_per_image must be ranges (low <= high) >= 0")
    rng = sample_rng(seed, str(image_id))
    canvas = _background(rng, height, width)
    owner = np.full((height, width), BACKGROUND, np.int16)
    objects = _plan_objects(rng, height, width, int(rng.integers(objects_per_image[0],
                                                                  objects_per_image[1] + 1)), object_size)
    distractors = _plan_distractors(rng, height, width, int(rng.integers(distractors_per_image[0],
                                                                          distractors_per_image[1] + 1)),
                                    object_size)
    order = rng.permutation(len(objects) + len(distractors))  # objects and distractors interleave
    drawn = np.zeros(len(objects), np.int64)
    for item in order:
        if item < len(objects):
            drawn[item] = _composite(rng, canvas, owner, objects[item][1], int(item))
        else:
            _composite(rng, canvas, owner, distractors[item - len(objects)], DISTRACTOR)
    image = _finish(rng, _light(rng, canvas))
    fraction, annotated, boxes, masks = visible_boxes(owner, drawn)
    all_classes = np.array([class_id for class_id, _ in objects], np.int32)
    class_ids = all_classes[annotated]
    if not return_masks:
        return image, boxes, class_ids
    return image, boxes, class_ids, SceneMasks(masks, owner, all_classes, drawn, fraction, annotated)


def jpeg_quality(seed: int, image_id: str) -> int:
    """The JPEG quality of one image in :data:`JPEG_QUALITY`, seeded apart from the scene itself."""
    return int(sample_rng(seed, f"{image_id}/jpeg").integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))


def _split_stats(dataset: DetectionDataset) -> dict[str, Any]:
    """Counts for ``meta.json``; a box's size is its larger side in pixels."""
    boxes = [record.boxes.boxes for record in dataset.images]
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return {"images": len(dataset.images), "boxes": int(len(boxes)),
            "boxes_per_class": dataset.class_counts(),
            "mean_objects_per_image": round(len(boxes) / max(len(dataset.images), 1), 3),
            "box_size_px": {"min": float(sizes.min()) if len(sizes) else None,
                            "max": float(sizes.max()) if len(sizes) else None}}


def _check_params(out_dir: Path, counts: dict[str, int], height: int, width: int) -> None:
    if min(int(height), int(width)) < 32:
        raise DataError(out_dir, f"image size {height}x{width} is too small (at least 32x32)")
    for split, count in counts.items():
        if int(count) < 0:
            raise DataError(out_dir, f"num_{split} must be >= 0, got {count}")


def write_detection_dataset(out_dir: Union[str, Path], num_train: int = 400, num_val: int = 100,
                            num_test: int = 100, seed: int = 0, height: int = 192, width: int = 256) -> Path:
    """Write ``<out_dir>/images/<split>/<image_id>.jpg``, ``<out_dir>/annotations/<split>.json`` and ``meta.json``.

    Image ids are ``<split>_<index:05d>`` (COCO ids 1..N in that order, as :func:`write_coco`
    numbers non-numeric ids); every object visible enough has a box, so images are written with
    ``boxes_complete`` true. ``meta.json`` holds the classes, the annotation rule and per split the
    image and box counts, boxes per class, mean objects per image and box size range (larger side, px).
    Raises DataError on bad sizes or counts, or when an annotation file already exists.
    """
    out = Path(out_dir)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    _check_params(out, counts, height, width)
    meta: dict[str, Any] = {"generator": "scenes", "version": SCENES_VERSION, "seed": int(seed),
                            "classes": DETECTION_CLASSES, "height": int(height), "width": int(width),
                            "visible_fraction_min": VISIBLE_FRACTION_MIN, "splits": {}}
    for split, count in counts.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        records = []
        for index in range(int(count)):
            image_id = f"{split}_{index:05d}"
            image, boxes, class_ids = generate_image(seed, image_id, int(height), int(width))
            file_name = f"{split}/{image_id}.jpg"
            Image.fromarray(image).save(out / "images" / file_name, quality=jpeg_quality(seed, image_id))
            records.append(ImageRecord(image_id, file_name, int(width), int(height),
                                       BoxLabels(boxes, class_ids, complete=True)))
        dataset = DetectionDataset(list(DETECTION_CLASSES), records, out / "images")
        write_coco(dataset, out / "annotations" / f"{split}.json")
        meta["splits"][split] = _split_stats(dataset)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ensure_detection_dataset(seed: int = 0, num_train: int = 400, num_val: int = 100, num_test: int = 100,
                             height: int = 192, width: int = 256) -> Path:
    """The cached scene dataset for these parameters, generated on first use (DataModule.prepare_data).

    Lives in ``dataset_dir("detection", "scenes", SCENES_VERSION, seed, params)``, built with
    :func:`build_once` so an interrupted build is never mistaken for a finished one.
    """
    params = {"num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test),
              "height": int(height), "width": int(width)}
    target = dataset_dir("detection", "scenes", SCENES_VERSION, seed, params)
    return build_once(target, lambda folder: write_detection_dataset(folder, seed=seed, **params), params=params)
