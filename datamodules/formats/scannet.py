"""ScanNet v2 scenes (Dai et al., CVPR 2017) in the two common preprocessed layouts.

* VoteNet-style files: ``<scene>_vert.npy`` ``(N, >=6)`` rows ``x y z r g b ...`` (colours 0-255),
  ``<scene>_sem_label.npy`` ``(N,)`` NYU40 ids, optional ``<scene>_ins_label.npy`` ``(N,)``.
* Pointcept-style folder: ``coord.npy`` ``(N, 3)``, ``color.npy`` ``(N, 3)`` 0-255,
  ``segment20.npy`` (or ``segment.npy``) ``(N,)`` training ids with -1 = ignore, ``instance.npy``
  ``(N,)`` with -1 = no instance.

Labels are either NYU40 ids, mapped to the 20 benchmark classes through
:data:`SCANNET20_NYU40_IDS` (other ids -> IGNORE_INDEX), or already training ids 0..19 (negative ->
IGNORE_INDEX). ``label_space=None`` takes each layout's convention: NYU40 for ``_sem_label.npy``,
training ids for ``segment20.npy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np

from datamodules.formats.pointcloud_scene import (
    PointCloudScene,
    as_integer_ids,
    as_semantic_labels,
    colors_to_unit,
    load_npy,
    validate_scene,
)
from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX

#: The 20 ScanNet benchmark classes; training id = position.
SCANNET20_CLASSES = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
                     "bookshelf", "picture", "counter", "desk", "curtain", "refrigerator",
                     "shower curtain", "toilet", "sink", "bathtub", "otherfurniture"]
#: NYU40 id of each benchmark class, in :data:`SCANNET20_CLASSES` order.
SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
LabelSpace = Literal["nyu40", "train"]


def nyu40_to_scannet20(nyu40: np.ndarray) -> np.ndarray:
    """``(N,)`` NYU40 ids -> ``(N,)`` int64 ScanNet-20 training ids (others -> IGNORE_INDEX).

    >>> nyu40_to_scannet20(np.array([1, 39, 13, 0])).tolist()
    [0, 19, -100, -100]
    """
    nyu40 = np.asarray(nyu40).astype(np.int64)
    table = np.full(max(41, int(nyu40.max(initial=0)) + 1), IGNORE_INDEX, dtype=np.int64)
    table[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS))
    out = np.full(nyu40.shape, IGNORE_INDEX, dtype=np.int64)
    valid = nyu40 >= 0
    out[valid] = table[nyu40[valid]]
    return out


def _labels(values: np.ndarray, space: LabelSpace, path: Path) -> np.ndarray:
    labels = as_semantic_labels(values, path)
    if space == "train":
        return labels
    if space != "nyu40":
        raise ValueError(f"label_space must be 'nyu40' or 'train', got {space!r}")
    if labels.max(initial=0) > 40:
        raise DataError(path, f"label {int(labels.max())} is not an NYU40 id (0..40)")
    return nyu40_to_scannet20(labels)


def _vert_siblings(vert_path: Path) -> tuple[str, Path]:
    if not vert_path.name.endswith("_vert.npy"):
        raise DataError(vert_path, "expected a <scene>_vert.npy file")
    scene_id = vert_path.name.removesuffix("_vert.npy")
    return scene_id, vert_path.parent


def read_scannet_vert(vert_path: PathLike, label_space: Optional[LabelSpace] = None) -> PointCloudScene:
    """Read ``<scene>_vert.npy`` with its ``_sem_label.npy`` / ``_ins_label.npy`` siblings.

    Extra vertex columns after ``r g b`` (e.g. normals) go to ``scene.extra["vert_columns"]``.
    """
    vert_path = Path(vert_path)
    scene_id, folder = _vert_siblings(vert_path)
    vert = load_npy(vert_path)
    if vert.ndim != 2 or vert.shape[1] < 6 or vert.dtype.kind not in "iuf":
        raise DataError(vert_path, f"expected numeric (N, >=6) rows x y z r g b, got {vert.dtype} {vert.shape}")
    scene = PointCloudScene(coords=vert[:, :3].astype(np.float64),
                            colors=colors_to_unit(vert[:, 3:6], vert_path, 255.0),
                            source_path=str(vert_path))
    if vert.shape[1] > 6:
        scene.extra["vert_columns"] = np.ascontiguousarray(vert[:, 6:])
    n = vert.shape[0]
    sem_path = folder / f"{scene_id}_sem_label.npy"
    if sem_path.exists():
        scene.semantic = _labels(_per_point(load_npy(sem_path), n, sem_path, vert_path), label_space or "nyu40",
                                 sem_path)
        scene.class_names = list(SCANNET20_CLASSES)
    ins_path = folder / f"{scene_id}_ins_label.npy"
    if ins_path.exists():
        scene.instance = as_integer_ids(_per_point(load_npy(ins_path), n, ins_path, vert_path), ins_path)
    return validate_scene(scene, vert_path)


def _per_point(values: np.ndarray, n: int, path: Path, cloud: Path) -> np.ndarray:
    if values.reshape(-1).shape[0] != n or values.ndim > 2:
        raise DataError(path, f"{values.size} labels but {cloud.name} has {n} points")
    return values.reshape(-1)


def read_pointcept_scene(folder: PathLike, segment_file: Optional[str] = None,
                         label_space: Optional[LabelSpace] = None,
                         class_names: Optional[list[str]] = None) -> PointCloudScene:
    """Read a Pointcept-style scene folder (``coord.npy``, ``color.npy``, ``segment20.npy``...).

    Args:
        segment_file: labels file name; None tries ``segment20.npy`` then ``segment.npy``.
        label_space: ``"train"`` (default) or ``"nyu40"``.
        class_names: names for the labels; default ScanNet-20 for ``segment20.npy`` / NYU40 input.
    """
    folder = Path(folder)
    coord_path = folder / "coord.npy"
    coords = load_npy(coord_path, folder)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise DataError(coord_path, f"expected (N, 3) coordinates, got shape {coords.shape}")
    n = coords.shape[0]
    scene = PointCloudScene(coords=coords.astype(np.float64), source_path=str(folder), class_names=class_names)
    color_path = folder / "color.npy"
    if color_path.exists():
        color = load_npy(color_path)
        if color.shape != (n, 3):
            raise DataError(color_path, f"color has shape {color.shape}, expected ({n}, 3)")
        scene.colors = colors_to_unit(color, color_path, 255.0)  # Pointcept stores 0-255 colours
    candidates = [segment_file] if segment_file else ["segment20.npy", "segment.npy"]
    seg_path = next((folder / name for name in candidates if (folder / name).exists()), None)
    if segment_file and seg_path is None:
        raise DataError(folder, f"missing file {segment_file}")
    if seg_path is not None:
        space = label_space or "train"
        scene.semantic = _labels(_per_point(load_npy(seg_path), n, seg_path, coord_path), space, seg_path)
        if class_names is None and (seg_path.name == "segment20.npy" or space == "nyu40"):
            scene.class_names = list(SCANNET20_CLASSES)
    ins_path = folder / "instance.npy"
    if ins_path.exists():
        scene.instance = as_integer_ids(_per_point(load_npy(ins_path), n, ins_path, coord_path), ins_path)
    for name in ("normal", "strength"):  # other Pointcept per-point arrays
        if (folder / f"{name}.npy").exists():
            scene.extra[name] = load_npy(folder / f"{name}.npy")
    return validate_scene(scene, folder)
