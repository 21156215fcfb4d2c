"""Label types of the sparse-label engine.

Three kinds of labels cover every task:

* :class:`PointLabels` - a few labelled points. For 3D clouds they are ``index`` values into the
  reader's original point order; for images and event frames they are ``xy`` pixel coordinates
  (0-based, x to the right, y down, float so that sub-pixel clicks survive).
* :class:`BoxLabels` - axis-aligned ``xyxy`` boxes. ``complete=False`` says the image may hold
  objects without a box: unlabelled regions are *unknown*, not background (SparseDet's setting).
* :class:`DenseLabels` - one class id per point or pixel, the full labels that weak labels are
  drawn from and that validation scores against. :data:`IGNORE_INDEX` marks unlabelled entries.

Every label carries a per-label ``source`` (:data:`HUMAN` or :data:`PSEUDO`) and ``confidence``
(1.0 for human labels), so self-training can add pseudo-labels beside the human ones and a
training step can weight or filter them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: Class id of an entry without a label, in dense masks and per-point targets. Matches the default
#: ``ignore_index`` of :func:`torch.nn.functional.cross_entropy`, so targets pass straight through.
IGNORE_INDEX: int = -100

#: ``source`` value of a label given by a person.
HUMAN: int = 0
#: ``source`` value of a label made by a model (self-training, teacher).
PSEUDO: int = 1


def _as_1d(values, dtype, name: str, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries, expected {n}")
    return array


@dataclass
class PointLabels:
    """Sparse point labels for one sample.

    Exactly one of ``index`` (3D: ``(K,)`` int64 into the original point order) and ``xy``
    (2D: ``(K, 2)`` float32 pixel coordinates) is set.

    Args:
        class_id: ``(K,)`` int32 class of each labelled point.
        index: ``(K,)`` int64 point indices, or None.
        xy: ``(K, 2)`` float32 pixel coordinates, or None.
        source: ``(K,)`` uint8, :data:`HUMAN` (default) or :data:`PSEUDO`.
        confidence: ``(K,)`` float16, 1.0 for human labels (default).

    >>> labels = PointLabels(class_id=[2, 0], index=[10, 4])
    >>> labels.index.dtype, labels.class_id.dtype, labels.source.tolist(), len(labels)
    (dtype('int64'), dtype('int32'), [0, 0], 2)
    """

    class_id: np.ndarray
    index: Optional[np.ndarray] = None
    xy: Optional[np.ndarray] = None
    source: Optional[np.ndarray] = None
    confidence: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        n = self.class_id.shape[0]
        if (self.index is None) == (self.xy is None):
            raise ValueError("PointLabels needs exactly one of index (3D) or xy (2D)")
        if self.index is not None:
            self.index = _as_1d(self.index, np.int64, "index", n)
        else:
            self.xy = np.asarray(self.xy, dtype=np.float32).reshape(-1, 2)
            if self.xy.shape[0] != n:
                raise ValueError(f"xy has {self.xy.shape[0]} rows, expected {n}")
        self.source = (np.full(n, HUMAN, np.uint8) if self.source is None
                       else _as_1d(self.source, np.uint8, "source", n))
        self.confidence = (np.ones(n, np.float16) if self.confidence is None
                           else _as_1d(self.confidence, np.float16, "confidence", n))

    def __len__(self) -> int:
        return int(self.class_id.shape[0])

    @property
    def is_3d(self) -> bool:
        return self.index is not None

    def select(self, keep: np.ndarray) -> PointLabels:
        """The labels at ``keep`` (boolean mask or integer positions)."""
        return PointLabels(
            class_id=self.class_id[keep],
            index=None if self.index is None else self.index[keep],
            xy=None if self.xy is None else self.xy[keep],
            source=self.source[keep],
            confidence=self.confidence[keep],
        )

    @staticmethod
    def concatenate(parts: list[PointLabels]) -> PointLabels:
        """Join label sets of the same kind (e.g. human labels and pseudo-labels)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        is_3d = parts[0].is_3d
        if any(p.is_3d != is_3d for p in parts):
            raise ValueError("cannot mix index (3D) and xy (2D) point labels")
        return PointLabels(
            class_id=np.concatenate([p.class_id for p in parts]),
            index=np.concatenate([p.index for p in parts]) if is_3d else None,
            xy=None if is_3d else np.concatenate([p.xy for p in parts]),
            source=np.concatenate([p.source for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
        )


@dataclass
class BoxLabels:
    """Box labels for one image.

    Args:
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2`` in pixels, ``x2 > x1`` and ``y2 > y1``.
        class_id: ``(K,)`` int32.
        complete: True when every object in the image has a box (unlabelled = background);
            False when boxes may be missing (unlabelled = unknown).
        source, confidence: as in :class:`PointLabels`.

    >>> boxes = BoxLabels(boxes=[[0, 0, 4, 2]], class_id=[1], complete=False)
    >>> boxes.boxes.shape, boxes.complete
    ((1, 4), False)
    """

    boxes: np.ndarray
    class_id: np.ndarray
    complete: bool = True
    source: Optional[np.ndarray] = None
    confidence: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        n = self.class_id.shape[0]
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if self.boxes.shape[0] != n:
            raise ValueError(f"boxes has {self.boxes.shape[0]} rows, expected {n}")
        self.source = (np.full(n, HUMAN, np.uint8) if self.source is None
                       else _as_1d(self.source, np.uint8, "source", n))
        self.confidence = (np.ones(n, np.float16) if self.confidence is None
                           else _as_1d(self.confidence, np.float16, "confidence", n))

    def __len__(self) -> int:
        return int(self.class_id.shape[0])

    def select(self, keep: np.ndarray, complete: Optional[bool] = None) -> BoxLabels:
        """The boxes at ``keep``; ``complete`` defaults to False when anything was dropped."""
        picked = self.class_id[keep]
        if complete is None:
            complete = self.complete and picked.shape[0] == len(self)
        return BoxLabels(self.boxes[keep], picked, complete, self.source[keep], self.confidence[keep])


@dataclass
class DenseLabels:
    """Full labels of one sample: a class id per point ``(N,)`` or per pixel ``(H, W)``.

    Args:
        semantic: int array, :data:`IGNORE_INDEX` where unlabelled.
        instance: same shape, instance ids (any int, negative = no instance), or None.
    """

    semantic: np.ndarray
    instance: Optional[np.ndarray] = field(default=None)

    def __post_init__(self) -> None:
        self.semantic = np.asarray(self.semantic)
        if not np.issubdtype(self.semantic.dtype, np.integer):
            raise ValueError(f"semantic labels must be integers, got {self.semantic.dtype}")
        self.semantic = self.semantic.astype(np.int64, copy=False)
        if self.instance is not None:
            self.instance = np.asarray(self.instance).astype(np.int64, copy=False)
            if self.instance.shape != self.semantic.shape:
                raise ValueError(f"instance shape {self.instance.shape} != semantic shape {self.semantic.shape}")

    @property
    def is_image(self) -> bool:
        return self.semantic.ndim == 2
