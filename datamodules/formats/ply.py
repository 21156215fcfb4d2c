"""PLY point clouds (ascii and binary) via ``plyfile``.

Reads the ``vertex`` element: ``x, y, z``; colours from ``red, green, blue`` (uint8 / 255,
uint16 / 65535, floats as in :func:`colors_to_unit`); intensity from ``intensity`` or
``scalar_Intensity``; semantic labels from the first property named one of :data:`LABEL_FIELDS`
(or ``label_field``); instances from ``instance`` / ``instance_id``. Every other vertex property
goes into ``scene.extra``.

Writers always store ``x, y, z`` as float64 ("double"): aerial coordinates need it, every common
viewer (CloudCompare, MeshLab, Open3D) reads it, and round trips are exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import plyfile

from datamodules.formats.pointcloud_scene import (
    PointCloudScene,
    as_integer_ids,
    as_semantic_labels,
    colors_to_unit,
    validate_scene,
)
from vision.atomic import atomic_path
from vision.errors import DataError, PathLike

#: Vertex properties searched, in order, for per-point semantic labels.
LABEL_FIELDS = ("label", "class", "semantic", "scalar_Classification", "classification")
#: Vertex properties searched, in order, for per-point instance ids.
INSTANCE_FIELDS = ("instance", "instance_id")
INTENSITY_FIELDS = ("intensity", "scalar_Intensity")


def _read_plydata(path: Path) -> plyfile.PlyData:
    try:
        return plyfile.PlyData.read(str(path))
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    except plyfile.PlyParseError as err:  # truncated data, bad header, wrong property count
        raise DataError(path, f"malformed PLY ({err})") from err
    except (ValueError, UnicodeDecodeError, EOFError) as err:
        raise DataError(path, f"malformed PLY ({err})") from err


def _vertex_data(data: plyfile.PlyData, path: Path) -> np.ndarray:
    if "vertex" not in data:
        raise DataError(path, "no 'vertex' element")
    vertex = data["vertex"].data
    missing = [axis for axis in "xyz" if axis not in vertex.dtype.names]
    if missing:
        raise DataError(path, f"vertex element lacks coordinate properties {missing}")
    return vertex


def _first_field(names: tuple[str, ...], candidates: tuple[str, ...]) -> Optional[str]:
    return next((name for name in candidates if name in names), None)


def read_ply(path: PathLike, label_field: Optional[str] = None, color_scale: Optional[float] = None,
             class_names: Optional[list[str]] = None) -> PointCloudScene:
    """Read a PLY point cloud into a :class:`PointCloudScene`.

    Args:
        path: ``.ply`` file, ascii or binary (either byte order).
        label_field: vertex property holding semantic labels; None searches :data:`LABEL_FIELDS`.
            Negative labels mean unlabelled and become IGNORE_INDEX.
        color_scale: divisor for colours; None infers it from the dtype (see ``colors_to_unit``).
        class_names: names of the label ids, kept on the scene.
    """
    path = Path(path)
    vertex = _vertex_data(_read_plydata(path), path)
    names = vertex.dtype.names
    if label_field is not None and label_field not in names:
        raise DataError(path, f"no vertex property {label_field!r} (has {list(names)})")
    label_name = label_field or _first_field(names, LABEL_FIELDS)
    instance_name = _first_field(names, INSTANCE_FIELDS)
    intensity_name = _first_field(names, INTENSITY_FIELDS)
    has_color = all(c in names for c in ("red", "green", "blue"))
    used = {"x", "y", "z", label_name, instance_name, intensity_name}
    if has_color:
        used |= {"red", "green", "blue"}
    scene = PointCloudScene(
        coords=np.column_stack([vertex[a] for a in "xyz"]).astype(np.float64),
        colors=(colors_to_unit(np.column_stack([vertex[c] for c in ("red", "green", "blue")]), path,
                               color_scale) if has_color else None),
        intensity=None if intensity_name is None else vertex[intensity_name].astype(np.float32),
        semantic=None if label_name is None else as_semantic_labels(vertex[label_name], path, label_name),
        instance=None if instance_name is None else as_integer_ids(vertex[instance_name], path,
                                                                   instance_name),
        extra={name: np.ascontiguousarray(vertex[name]) for name in names
               if name not in used and vertex.dtype[name].kind != "O"},
        class_names=class_names,
        source_path=str(path),
    )
    return validate_scene(scene, path)


def _per_point(values, n: int, dtype, name: str, path: Path) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.shape[0] != n:
        raise DataError(path, f"{name} has {array.shape[0]} entries but the cloud has {n} points")
    return array.astype(dtype)


def write_ply(path: PathLike, scene: PointCloudScene, labels: Optional[np.ndarray] = None,
              confidence: Optional[np.ndarray] = None, overwrite: bool = False,
              text: bool = False) -> Path:
    """Write ``scene`` as a PLY (binary little endian, or ascii with ``text=True``).

    Properties: ``x, y, z`` float64; ``red, green, blue`` uint8 (colours * 255, rounded);
    ``intensity`` float32; ``label`` int32 (``labels`` if given, else ``scene.semantic``);
    ``instance`` int32; ``confidence`` float32; then 1-D numeric ``scene.extra`` fields.
    Raises FileExistsError when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    validate_scene(scene, path)
    n = scene.num_points
    columns: list[tuple[str, np.ndarray]] = [(a, scene.coords[:, i]) for i, a in enumerate("xyz")]
    if scene.colors is not None:
        rgb = np.round(scene.colors * 255.0).astype(np.uint8)
        columns += [(c, rgb[:, i]) for i, c in enumerate(("red", "green", "blue"))]
    if scene.intensity is not None:
        columns.append(("intensity", scene.intensity))
    semantic = labels if labels is not None else scene.semantic
    if semantic is not None:
        columns.append(("label", _per_point(semantic, n, np.int32, "labels", path)))
    if scene.instance is not None:
        columns.append(("instance", scene.instance.astype(np.int32)))
    if confidence is not None:
        columns.append(("confidence", _per_point(confidence, n, np.float32, "confidence", path)))
    taken = {name for name, _ in columns}
    columns += [(name, value) for name, value in scene.extra.items()
                if value.ndim == 1 and value.dtype.kind in "iuf" and name not in taken]
    vertex = np.empty(n, dtype=[(name, _ply_dtype(value)) for name, value in columns])
    for name, value in columns:
        vertex[name] = value
    data = plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=text, byte_order="<")
    with atomic_path(path, overwrite) as temp:
        data.write(str(temp))
    return path


def _ply_dtype(value: np.ndarray) -> np.dtype:
    # PLY has no 64-bit integers: store them as int32 (labels, ids)
    if value.dtype.kind in "iu" and value.dtype.itemsize == 8:
        return np.dtype("<i4")
    return value.dtype.newbyteorder("<")


def add_predictions_to_ply(src: PathLike, dst: PathLike, labels: np.ndarray,
                           confidence: Optional[np.ndarray] = None, overwrite: bool = False) -> Path:
    """Copy the PLY ``src`` to ``dst`` with ``pred_label`` (int32) and ``pred_confidence`` (float32)
    vertex properties added; every original property, element, comment and the encoding are kept.

    Args:
        labels: ``(N,)`` predicted class per vertex, in the file's vertex order.
        confidence: ``(N,)`` probability of the predicted class, or None.
    Existing ``pred_*`` properties in ``src`` are replaced. Raises FileExistsError when ``dst``
    exists and ``overwrite`` is False.
    """
    src, dst = Path(src), Path(dst)
    data = _read_plydata(src)
    vertex = _vertex_data(data, src)
    n = vertex.shape[0]
    added = [("pred_label", _per_point(labels, n, np.int32, "labels", src))]
    if confidence is not None:
        added.append(("pred_confidence", _per_point(confidence, n, np.float32, "confidence", src)))
    kept = [name for name in vertex.dtype.names if name not in ("pred_label", "pred_confidence")]
    descr = [(name, vertex.dtype[name]) for name in kept] + [(name, value.dtype) for name, value in added]
    merged = np.empty(n, dtype=descr)
    for name in kept:
        merged[name] = vertex[name]
    for name, value in added:
        merged[name] = value
    old = data["vertex"]
    list_types = {p.name: (p.len_dtype, p.val_dtype) for p in old.properties if hasattr(p, "len_dtype")}
    new_vertex = plyfile.PlyElement.describe(merged, "vertex", len_types={k: v[0] for k, v in list_types.items()},
                                             val_types={k: v[1] for k, v in list_types.items()},
                                             comments=list(old.comments))
    elements = [new_vertex if element.name == "vertex" else element for element in data.elements]
    out = plyfile.PlyData(elements, text=data.text, byte_order=data.byte_order,
                          comments=list(data.comments), obj_info=list(data.obj_info))
    with atomic_path(dst, overwrite) as temp:
        out.write(str(temp))
    return dst
