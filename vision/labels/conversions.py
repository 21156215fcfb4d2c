"""Conversions between the label kinds (dense masks, sparse points, boxes) and from external point lists.

Coordinates follow :mod:`vision.labels.types`: a 3D point is an ``index`` into the cloud's original
point order; a 2D point is ``xy`` in 0-based pixels, ``x`` = column and ``y`` = row, with pixel
centres at integer coordinates (so pixel ``(row=2, col=5)`` is ``xy = (5.0, 2.0)``).

>>> import numpy as np
>>> mask = np.array([[0, -100], [1, 1]])
>>> points = mask_to_points(mask, k=5, rng=np.random.default_rng(0))
>>> points.xy.tolist(), points.class_id.tolist()
([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 1, 1])
>>> points_to_mask(points, (2, 2)).tolist()
[[0, -100], [1, 1]]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX, BoxLabels, PointLabels


def labelled_positions(semantic: np.ndarray) -> np.ndarray:
    """Flat (row-major) positions ``(M,)`` int64 of the entries that are not :data:`IGNORE_INDEX`."""
    return np.flatnonzero(np.asarray(semantic).reshape(-1) != IGNORE_INDEX).astype(np.int64)


def pixel_xy(positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(M, 2)`` float32 ``(x=col, y=row)`` of flat positions in an ``(H, W)`` image."""
    rows, cols = np.unravel_index(np.asarray(positions, dtype=np.int64), shape)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def positions_to_points(semantic: np.ndarray, positions: np.ndarray) -> PointLabels:
    """Human point labels at flat ``positions`` of ``semantic`` (``(N,)`` or ``(H, W)``), sorted.

    Sorting by position makes the output independent of the order in which points were drawn.
    ``(N,)`` labels give ``index``; ``(H, W)`` labels give ``xy``.
    """
    semantic = np.asarray(semantic)
    positions = np.sort(np.asarray(positions, dtype=np.int64).reshape(-1))
    class_id = semantic.reshape(-1)[positions]
    if semantic.ndim == 1:
        return PointLabels(class_id=class_id, index=positions)
    if semantic.ndim == 2:
        return PointLabels(class_id=class_id, xy=pixel_xy(positions, semantic.shape))
    raise ValueError(f"labels must have shape (N,) or (H, W), got {semantic.shape}")


def group_positions(keys: np.ndarray, positions: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``[(key, positions with that key)]`` in ascending key order; positions keep their order.

    A stable argsort groups all keys in one ``O(M log M)`` pass instead of one mask per key.
    """
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if keys.size else []
    ends = list(starts[1:]) + [keys.size]
    return [(int(sorted_keys[s]), positions[order[s:e]]) for s, e in zip(starts, ends)]


def mask_to_points(mask: np.ndarray, k: int, rng: np.random.Generator) -> PointLabels:
    """Up to ``k`` random points of every class present in a dense mask (one-click-per-class labels).

    Args:
        mask: ``(N,)`` or ``(H, W)`` int class ids, :data:`IGNORE_INDEX` where unlabelled.
        k: points per class; a class with fewer entries gives all of them.
        rng: the sample's generator (:func:`vision.labels.seeding.sample_rng`).

    Returns:
        ``sum_c min(k, count_c)`` human labels, sorted by position.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mask = np.asarray(mask)
    positions = labelled_positions(mask)
    chosen = [group[rng.choice(group.size, size=min(k, group.size), replace=False)]
              for _, group in group_positions(mask.reshape(-1)[positions], positions)]
    picked = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return positions_to_points(mask, picked)


def boxes_to_points(boxes: BoxLabels) -> PointLabels:
    """One point per box at its centre ``((x1 + x2) / 2, (y1 + y2) / 2)``; class, source, confidence kept."""
    centres = (boxes.boxes[:, :2] + boxes.boxes[:, 2:]) / 2.0
    return PointLabels(class_id=boxes.class_id, xy=centres, source=boxes.source, confidence=boxes.confidence)


def points_to_mask(labels: PointLabels, shape: tuple[int, ...]) -> np.ndarray:
    """A dense int64 mask of ``shape``: :data:`IGNORE_INDEX` except at the labelled points.

    Args:
        labels: 3D labels (``index``) for ``shape = (N,)``; 2D labels (``xy``) for ``shape = (H, W)``,
            each rounded to the nearest pixel (halves round up).
        shape: ``(N,)`` or ``(H, W)``.

    When two labels fall on the same entry, the later one wins (pseudo-labels are stored after human
    ones by :meth:`vision.labels.weakfile.WeakLabelSet.merge_pseudo`, which never lets them overlap).
    """
    shape = tuple(int(s) for s in shape)
    mask = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    if labels.is_3d:
        if len(shape) != 1:
            raise ValueError(f"index (3D) labels need a shape (N,), got {shape}")
        index = labels.index
        if index.size and (index.min() < 0 or index.max() >= shape[0]):
            raise ValueError(f"point index outside [0, {shape[0]}): min {index.min()}, max {index.max()}")
        mask[index] = labels.class_id
        return mask
    if len(shape) != 2:
        raise ValueError(f"xy (2D) labels need a shape (H, W), got {shape}")
    cols, rows = pixel_of(labels.xy).T
    outside = (cols < 0) | (cols >= shape[1]) | (rows < 0) | (rows >= shape[0])
    if outside.any():
        raise ValueError(f"{int(outside.sum())} xy labels lie outside the {shape[1]}x{shape[0]} image")
    mask[rows, cols] = labels.class_id
    return mask


def pixel_of(xy: np.ndarray) -> np.ndarray:
    """``(K, 2)`` int64 ``(col, row)`` of the nearest pixel to each ``xy``; halves round up, not to even."""
    return np.floor(np.asarray(xy, dtype=np.float64) + 0.5).astype(np.int64).reshape(-1, 2)


def _index_file_globals() -> list:
    """What a numpy-array pickle needs, allowlisted so ``torch.load(weights_only=True)`` runs no code."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    int_types = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
    return [_reconstruct, np.ndarray, np.dtype] + [type(np.dtype(t)) for t in int_types]


def read_scannet_indices(path: PathLike) -> dict[str, np.ndarray]:
    """``{scene: (K,) int64 point indices}`` from a ScanNet data-efficient file.

    Pointcept's ``points20``-style files are ``torch.save``-d dicts ``scene -> indices`` (read with
    ``weights_only=True``); ``.json`` (``{scene: [i, ...]}``) and ``.npz`` (one array per scene) work too.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".pth", ".pt"):
            import torch  # only this reader needs torch; keep `import vision.labels` light

            with torch.serialization.safe_globals(_index_file_globals()):
                raw = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                raw = {key: npz[key] for key in npz.files}
        else:
            raise DataError(path, "ScanNet index file must be .pth, .pt, .json or .npz")
    except DataError:
        raise
    except Exception as exc:  # torch and json raise many types for a bad file; all mean "unreadable"
        raise DataError(path, f"cannot read ScanNet index file ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise DataError(path, f"expected a dict scene -> point indices, got {type(raw).__name__}")
    indices = {}
    for scene, values in raw.items():
        values = np.asarray(values.numpy() if hasattr(values, "numpy") else values)
        if values.size and (values.ndim != 1 or values.dtype.kind not in "iu"):
            raise DataError(path, f"scene {scene!r}: indices must be a 1-D integer list, got "
                                  f"{values.dtype} {values.shape}")
        indices[str(scene)] = values.astype(np.int64).reshape(-1)
    return indices
