"""Weak and strong views of a detection image, with boxes and point labels moved together (albumentations).

FixMatch-style training (Sohn et al., NeurIPS 2020) and SparseDet's consistency (Suri et al., ICCV 2023)
compare a teacher's predictions on a WEAK view with a student's on a STRONG view. Here both views share
one geometric transform (horizontal flip + small scale / translation jitter), so a box or point found
in one view is at the same place in the other; the strong view differs only photometrically (colour
jitter, blur, noise, cutout). That keeps the relation between the views the identity, and the
teacher's boxes from the weak view are directly the student's targets on the strong one.

Coordinates follow :mod:`vision.labels.types`: boxes ``xyxy`` and points ``xy`` in 0-based pixel-edge
coordinates (the image spans ``[0, W] x [0, H]``). albumentations' keypoint flip and affine treat a
point as a pixel *index* (``x' = W - 1 - x``), so points are shifted by half a pixel on the way in and
out; with that, a box's centre and the point at that centre stay together exactly (tests check it).

Boxes and points carry their row ids through albumentations (``label_fields``), which returns them as
floats: they are cast back and used to keep class ids aligned with what survived. A box that leaves
the image is dropped (clipped otherwise); a point that leaves it is dropped.

>>> import numpy as np
>>> views = DetectionViews(DetectionAugment(hflip=1.0, scale=(1.0, 1.0), translate=0.0))
>>> out = views(np.zeros((10, 20, 3), np.uint8), np.array([[1., 2., 5., 6.]]), np.array([3]),
...             np.array([[3., 4.]]), np.array([3]), seed=0)
>>> out["boxes"].tolist(), out["points"].tolist(), out["labels"].tolist()
([[15.0, 2.0, 19.0, 6.0]], [[17.0, 4.0]], [3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import albumentations as A
import numpy as np

#: Boxes thinner than this (pixels) after clipping are dropped: nothing of the object is left to learn from.
MIN_BOX_SIDE = 1.0


@dataclass
class DetectionAugment:
    """Augmentation settings of the two views (YAML: ``augment: {class_path: ..., init_args: {...}}``).

    Args:
        hflip: probability of a horizontal flip (both views).
        scale: range of the isotropic scale jitter (both views); ``(1, 1)`` disables it.
        translate: largest shift as a fraction of the image side (both views).
        geometric_p: probability that the scale/translation jitter is applied at all.
        colour: strength of the strong view's colour jitter (brightness, contrast, saturation; hue / 4).
        blur_p, noise_p, cutout_p: probabilities of the strong view's blur, Gaussian noise and cutout.
        cutout_holes: range of cutout holes; each is 5%-20% of the image side.
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 0.1
    geometric_p: float = 0.5
    colour: float = 0.4
    blur_p: float = 0.3
    noise_p: float = 0.2
    cutout_p: float = 0.5
    cutout_holes: tuple[int, int] = (1, 4)

    def geometric(self) -> A.Compose:
        """The shared transform: flip + scale/translate jitter, moving ``bboxes`` and ``keypoints``."""
        transforms = [A.HorizontalFlip(p=self.hflip)]
        if tuple(self.scale) != (1.0, 1.0) or self.translate > 0:
            transforms.append(A.Affine(scale=tuple(self.scale), translate_percent=(-self.translate, self.translate),
                                       keep_ratio=True, p=self.geometric_p))
        return A.Compose(
            transforms,
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True,
                                     min_visibility=0.0, min_area=0.0),
            keypoint_params=A.KeypointParams(format="xy", label_fields=["point_ids"], remove_invisible=False),
        )

    def photometric(self) -> A.Compose:
        """The strong view's extra, image-only transforms (they move no label)."""
        c = self.colour
        return A.Compose([
            A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=c / 4, p=0.8),
            A.GaussianBlur(blur_limit=(3, 5), p=self.blur_p),
            A.GaussNoise(std_range=(0.02, 0.06), p=self.noise_p),
            A.CoarseDropout(num_holes_range=tuple(self.cutout_holes), hole_height_range=(0.05, 0.2),
                            hole_width_range=(0.05, 0.2), fill="random_uniform", p=self.cutout_p),
        ])


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


class DetectionViews:
    """Seeded weak/strong views of one image with its boxes and points.

    ``__call__(image (H, W, 3) uint8, boxes (K, 4), labels (K,), points (P, 2), point_labels (P,), seed,
    strong=True)`` returns ``image`` (the weak view), ``image_strong`` (or None), ``boxes (K', 4)`` float32,
    ``labels (K',)`` int64, ``points (P', 2)`` float32, ``point_labels (P',)`` int64 - the same geometry in
    both views. ``seed`` fixes every random choice (derive it from ``(seed, epoch, index)``).
    """

    def __init__(self, augment: Optional[DetectionAugment] = None) -> None:
        self.augment = augment or DetectionAugment()
        self._geometric = self.augment.geometric()
        self._photometric = self.augment.photometric()

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, points: Optional[np.ndarray] = None,
                 point_labels: Optional[np.ndarray] = None, seed: int = 0, strong: bool = True) -> dict:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(labels, np.int64).reshape(-1)
        points = _empty_points() if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        point_labels = np.zeros(0, np.int64) if point_labels is None else np.asarray(point_labels, np.int64)
        height, width = image.shape[:2]
        # clip first: albumentations rejects boxes outside [0, W] x [0, H] instead of clipping them
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        self._geometric.set_random_seed(int(seed))
        out = self._geometric(image=image, bboxes=boxes, box_ids=np.arange(len(boxes)),
                              keypoints=points.astype(np.float64) - 0.5, point_ids=np.arange(len(points)))
        new_boxes, box_ids = _kept_boxes(out["bboxes"], out["box_ids"])
        new_points, point_ids = _kept_points(np.asarray(out["keypoints"]).reshape(-1, 2) + 0.5, out["point_ids"],
                                             *out["image"].shape[:2])
        weak = out["image"]
        strong_image = None
        if strong:
            self._photometric.set_random_seed(int(seed) + 1)
            strong_image = self._photometric(image=weak)["image"]
        return {"image": weak, "image_strong": strong_image, "boxes": new_boxes, "labels": labels[box_ids],
                "points": new_points, "point_labels": point_labels[point_ids]}


def _empty_points() -> np.ndarray:
    return np.zeros((0, 2), np.float32)


def _kept_boxes(boxes, ids) -> tuple[np.ndarray, np.ndarray]:
    """Transformed boxes with enough left of them, and their original row ids (albumentations gives floats)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:, :4] if len(boxes) else _empty_boxes()
    ids = np.rint(np.asarray(ids, np.float64)).astype(np.int64).reshape(-1)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
    return boxes[keep], ids[keep]


def _kept_points(points: np.ndarray, ids, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Points still inside the ``[0, W] x [0, H]`` image, and their original row ids."""
    ids = np.rint(np.asarray(ids, np.float64)).astype(np.int64).reshape(-1)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
    return points[inside].astype(np.float32), ids[inside]
