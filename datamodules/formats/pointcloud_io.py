"""One entry point for every point-cloud format: read a scene, write predictions back.

:func:`read_point_cloud` picks the reader from the file extension or the folder layout:

==========================  ===============================================
``.ply``                    :func:`~datamodules.formats.ply.read_ply`
``.npy`` / ``.npz``         :mod:`~datamodules.formats.npy_cloud`
``<scene>_vert.npy``        :func:`~datamodules.formats.scannet.read_scannet_vert`
``.las`` / ``.laz``         :func:`~datamodules.formats.las.read_las`
``.bin``                    :func:`~datamodules.formats.semantickitti.read_semantickitti_scan`
folder with ``meta.json``   :func:`~datamodules.formats.pointcloud_scene.read_canonical`
folder with ``coord.npy``   :func:`~datamodules.formats.scannet.read_pointcept_scene`
folder with ``Annotations`` :func:`~datamodules.formats.s3dis.read_s3dis_room`
==========================  ===============================================

:func:`write_predictions` writes labels back in the user's format: LAS/LAZ ``classification``
(+ ``confidence`` extra bytes), PLY ``pred_label`` / ``pred_confidence`` properties, a
SemanticKITTI ``.label`` file, or ``<stem>.pred.npy`` + ``<stem>.conf.npy`` beside anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from datamodules.formats import las, npy_cloud, ply, s3dis, scannet, semantickitti
from datamodules.formats.pointcloud_scene import PointCloudScene, read_canonical
from vision.atomic import atomic_path
from vision.errors import DataError, PathLike

SUFFIXES = (".ply", ".npy", ".npz", ".las", ".laz", ".bin")


def read_point_cloud(path: PathLike, **opts: Any) -> PointCloudScene:
    """Read any supported point cloud; ``opts`` go to the chosen reader (e.g. ``class_map=`` for LAS).

    Raises DataError for a missing path, an unknown extension or an unrecognised folder.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "does not exist")
    if path.is_dir():
        if (path / "meta.json").exists():
            return read_canonical(path, **opts)
        if (path / "coord.npy").exists():
            return scannet.read_pointcept_scene(path, **opts)
        if s3dis.is_s3dis_room(path):
            return s3dis.read_s3dis_room(path, **opts)
        raise DataError(path, "unrecognised folder: expected meta.json (canonical), coord.npy "
                              "(Pointcept) or Annotations/ (S3DIS room)")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return ply.read_ply(path, **opts)
    if path.name.endswith("_vert.npy"):
        return scannet.read_scannet_vert(path, **opts)
    if suffix == ".npy":
        return npy_cloud.read_npy_cloud(path, **opts)
    if suffix == ".npz":
        return npy_cloud.read_npz_cloud(path, **opts)
    if suffix in (".las", ".laz"):
        return las.read_las(path, **opts)
    if suffix == ".bin":
        return semantickitti.read_semantickitti_scan(path, **opts)
    raise DataError(path, f"unknown point-cloud extension {path.suffix!r} (supported: {', '.join(SUFFIXES)})")


def _checked(input_path: Path, labels: np.ndarray, confidence: Optional[np.ndarray],
             num_points: Optional[int]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise DataError(input_path, f"predicted labels must be integers, got {labels.dtype}")
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if confidence.shape != labels.shape:
            raise DataError(input_path, f"{confidence.shape[0]} confidences but {labels.shape[0]} labels")
        if not np.isfinite(confidence).all():
            raise DataError(input_path, "NaN or infinite confidence")
    if num_points is not None and labels.shape[0] != num_points:
        raise DataError(input_path, f"{labels.shape[0]} labels but the cloud has {num_points} points")
    return labels, confidence


def _default_out(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}.pred{suffix}")


def write_predictions(input_path: PathLike, labels: np.ndarray, confidence: Optional[np.ndarray] = None,
                      out_path: Optional[PathLike] = None, overwrite: bool = False, **opts: Any) -> Path:
    """Write per-point predictions for the cloud at ``input_path`` in its own format.

    Args:
        labels: ``(N,)`` integer predicted class per point, in the reader's original point order.
        confidence: ``(N,)`` float confidence of each prediction, or None.
        out_path: destination; default beside the input: ``<stem>.pred.las|laz|ply``,
            ``<stem>.pred.label`` (SemanticKITTI, confidence in
            ``<stem>.conf.npy`` beside it), ``<stem>.pred.npy`` (+ ``<stem>.conf.npy``).
        opts: ``class_map`` (LAS) or ``learning_map`` (SemanticKITTI) to map training ids back to raw
            codes.
    Returns the path of the written labels. Raises FileExistsError rather than replace a file
    unless ``overwrite``.
    """
    path = Path(input_path)
    suffix = "" if path.is_dir() else path.suffix.lower()
    if suffix in (".las", ".laz"):  # the LAS writer re-reads the file and checks the count itself
        labels, confidence = _checked(path, labels, confidence, None)
        return las.write_las_predictions(path, out_path or _default_out(path, path.suffix), labels, confidence,
                                         class_map=opts.get("class_map"), overwrite=overwrite)
    if suffix == ".ply":
        labels, confidence = _checked(path, labels, confidence, None)
        return ply.add_predictions_to_ply(path, out_path or _default_out(path, ".ply"), labels, confidence,
                                          overwrite=overwrite)
    scene = read_point_cloud(path, **opts)
    labels, confidence = _checked(path, labels, confidence, scene.num_points)
    if suffix == ".bin":
        written = semantickitti.write_semantickitti_labels(
            out_path or path.with_name(f"{path.stem}.pred.label"), labels,
            learning_map=opts.get("learning_map"), overwrite=overwrite)
        if confidence is not None:  # .label has no room for it: keep it beside, as for NPY inputs
            with atomic_path(written.with_name(f"{path.stem}.conf.npy"), overwrite) as temp, open(temp, "wb") as f:
                np.save(f, confidence)
        return written
    return npy_cloud.write_npy_predictions(path, labels, confidence, out_path=out_path, overwrite=overwrite)


#: Alias named after what it does, for callers outside the formats package.
write_point_cloud_predictions = write_predictions
