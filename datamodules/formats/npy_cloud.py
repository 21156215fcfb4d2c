"""Point clouds stored as NumPy ``.npy`` / ``.npz`` files.

* ``.npy`` plain array ``(N, C)``, ``C >= 3``: columns named by ``columns``; by default
  ``C = 3`` is ``x y z``, ``4`` is ``x y z label``, ``6`` is ``x y z r g b`` and ``7`` is
  ``x y z r g b label`` (any other width needs ``columns``).
* ``.npy`` structured array: fields named as in :data:`COLUMN_ROLES` (``x``, ``red``, ``label``...).
* ``.npz``: coordinates under ``coord`` / ``xyz`` / ``points`` (an ``(N, C>3)`` array there is split
  like a plain ``.npy``), colours under ``color`` / ``rgb``, labels under ``segment`` / ``label`` /
  ``semantic``, instances under ``instance``, intensity under ``intensity``; other ``(N, ...)``
  arrays go to ``scene.extra``.

Predictions for an NPY/NPZ input are written beside it as ``<stem>.pred.npy`` (int64 labels) and
``<stem>.conf.npy`` (float32 confidence) by :func:`write_npy_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.formats.pointcloud_scene import (
    PointCloudScene,
    as_integer_ids,
    as_semantic_labels,
    colors_to_unit,
    load_npy,
    validate_scene,
)
from vision.atomic import atomic_path, atomic_write, refuse_existing
from vision.errors import DataError, PathLike

#: Column / field names understood in ``columns`` and structured arrays, and what they hold.
COLUMN_ROLES = {
    "x": "x", "y": "y", "z": "z",
    "r": "red", "red": "red", "g": "green", "green": "green", "b": "blue", "blue": "blue",
    "intensity": "intensity", "remission": "intensity",
    "label": "semantic", "semantic": "semantic", "segment": "semantic", "class": "semantic",
    "instance": "instance", "instance_id": "instance",
}
DEFAULT_COLUMNS = {
    3: ("x", "y", "z"),
    4: ("x", "y", "z", "label"),
    6: ("x", "y", "z", "r", "g", "b"),
    7: ("x", "y", "z", "r", "g", "b", "label"),
}
NPZ_KEYS = {
    "coords": ("coord", "xyz", "points"),
    "colors": ("color", "rgb"),
    "semantic": ("segment", "label", "semantic"),
    "instance": ("instance",),
    "intensity": ("intensity",),
}


def _scene_from_named(named: dict[str, np.ndarray], path: Path, color_scale: Optional[float],
                      class_names: Optional[list[str]]) -> PointCloudScene:
    """Build a scene from per-point 1-D arrays keyed by column name."""
    roles: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for name, values in named.items():
        role = COLUMN_ROLES.get(name)
        if role is None or role in roles:
            extra[name] = np.ascontiguousarray(values)
        else:
            roles[role] = values
    missing = [axis for axis in "xyz" if axis not in roles]
    if missing:
        raise DataError(path, f"no coordinate columns {missing} (columns: {list(named)})")
    has_color = all(c in roles for c in ("red", "green", "blue"))
    if not has_color:
        extra.update({c: roles.pop(c) for c in ("red", "green", "blue") if c in roles})
    return PointCloudScene(
        coords=np.column_stack([roles[a] for a in "xyz"]).astype(np.float64),
        colors=(colors_to_unit(np.column_stack([roles[c] for c in ("red", "green", "blue")]), path,
                               color_scale) if has_color else None),
        intensity=roles["intensity"].astype(np.float32) if "intensity" in roles else None,
        semantic=as_semantic_labels(roles["semantic"], path) if "semantic" in roles else None,
        instance=as_integer_ids(roles["instance"], path) if "instance" in roles else None,
        extra=extra,
        class_names=class_names,
        source_path=str(path),
    )


def _split_columns(array: np.ndarray, path: Path, columns: Optional[Sequence[str]]) -> dict[str, np.ndarray]:
    if array.ndim != 2 or array.shape[1] < 3:
        raise DataError(path, f"expected an (N, >=3) array, got shape {array.shape}")
    if columns is None:
        columns = DEFAULT_COLUMNS.get(array.shape[1])
        if columns is None:
            raise DataError(path, f"{array.shape[1]} columns: pass columns=(...) to name them")
    if len(columns) != array.shape[1]:
        raise DataError(path, f"columns= names {len(columns)} columns but the array has {array.shape[1]}")
    if array.dtype.kind not in "iuf":
        raise DataError(path, f"array must be numeric, got dtype {array.dtype}")
    return {name: array[:, i] for i, name in enumerate(columns)}


def read_npy_cloud(path: PathLike, columns: Optional[Sequence[str]] = None,
                   color_scale: Optional[float] = None,
                   class_names: Optional[list[str]] = None) -> PointCloudScene:
    """Read a ``.npy`` point cloud (plain ``(N, C)`` or structured array; see module docstring).

    Args:
        columns: one name per column (e.g. ``("x", "y", "z", "intensity", "label")``); names not in
            :data:`COLUMN_ROLES` go to ``scene.extra``.
        color_scale: colour divisor; None infers it (values above 1 are taken as 0-255).
    """
    path = Path(path)
    array = load_npy(path)
    if array.dtype.names:
        if array.ndim != 1:
            raise DataError(path, f"structured array must be 1-D, got shape {array.shape}")
        named = {name: array[name] for name in array.dtype.names}
    else:
        named = _split_columns(array, path, columns)
    return validate_scene(_scene_from_named(named, path, color_scale, class_names), path)


def read_npz_cloud(path: PathLike, columns: Optional[Sequence[str]] = None,
                   color_scale: Optional[float] = None,
                   class_names: Optional[list[str]] = None) -> PointCloudScene:
    """Read a ``.npz`` point cloud (keys in :data:`NPZ_KEYS`; see module docstring)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    except Exception as err:  # zip, zlib and .npy header errors all mean "unreadable"
        raise DataError(path, f"unreadable .npz file (truncated or not numpy): {type(err).__name__}: {err}") from err
    found = {role: next((k for k in keys if k in arrays), None) for role, keys in NPZ_KEYS.items()}
    if found["coords"] is None:
        raise DataError(path, f"no coordinates: expected one of {NPZ_KEYS['coords']} (keys: {sorted(arrays)})")
    named = _split_columns(arrays[found["coords"]], path, columns)
    for role, name in (("colors", None), ("intensity", "intensity"), ("semantic", "label"),
                       ("instance", "instance")):
        key = found[role]
        if key is None:
            continue
        if role == "colors":
            color = arrays[key]
            if color.ndim != 2 or color.shape[1] != 3:
                raise DataError(path, f"{key} must be (N, 3), got shape {color.shape}")
            named.update({"r": color[:, 0], "g": color[:, 1], "b": color[:, 2]})
        else:
            named[name] = arrays[key].reshape(-1) if arrays[key].ndim == 2 else arrays[key]
    used = {key for key in found.values() if key is not None}
    scene = _scene_from_named(named, path, color_scale, class_names)
    n = scene.num_points  # per-point arrays only: an npz may also hold per-scene metadata
    scene.extra.update({k: v for k, v in arrays.items() if k not in used and v.ndim >= 1 and len(v) == n})
    return validate_scene(scene, path)


def write_npz_cloud(path: PathLike, scene: PointCloudScene, overwrite: bool = False) -> Path:
    """Write ``scene`` as ``.npz`` with keys ``coord``, ``color``, ``intensity``, ``segment``,
    ``instance`` (those present) plus ``scene.extra``; read back exactly by :func:`read_npz_cloud`."""
    path = Path(path)
    validate_scene(scene, path)
    arrays = {"coord": scene.coords}
    for key, value in (("color", scene.colors), ("intensity", scene.intensity),
                       ("segment", scene.semantic), ("instance", scene.instance)):
        if value is not None:
            arrays[key] = value
    arrays.update({k: v for k, v in scene.extra.items() if k not in arrays})
    with atomic_path(path, overwrite) as temp:
        with open(temp, "wb") as handle:  # a file handle stops numpy appending another ".npz"
            np.savez(handle, **arrays)
    return path


def prediction_paths(input_path: PathLike, out_path: Optional[PathLike] = None) -> tuple[Path, Path]:
    """``(<stem>.pred.npy, <stem>.conf.npy)`` beside ``input_path``, or derived from ``out_path``."""
    if out_path is not None:
        pred = Path(out_path)
        stem = pred.name.removesuffix(".npy").removesuffix(".pred")
        return pred, pred.with_name(f"{stem}.conf.npy")
    source = Path(input_path)
    stem = source.name.removesuffix(source.suffix) if source.suffix in (".npy", ".npz") else source.name
    return source.with_name(f"{stem}.pred.npy"), source.with_name(f"{stem}.conf.npy")


def write_npy_predictions(input_path: PathLike, labels: np.ndarray, confidence: Optional[np.ndarray] = None,
                          out_path: Optional[PathLike] = None, overwrite: bool = False) -> Path:
    """Write ``labels`` ``(N,)`` as int64 ``<stem>.pred.npy`` and ``confidence`` ``(N,)`` as float32
    ``<stem>.conf.npy`` beside ``input_path`` (or at ``out_path``); returns the labels path.

    The caller checks that ``N`` matches the input cloud (``pointcloud_io.write_predictions`` does).
    """
    pred_path, conf_path = prediction_paths(input_path, out_path)
    for target in (pred_path, conf_path if confidence is not None else None):
        if target is not None:
            refuse_existing(target, overwrite)
    atomic_write(pred_path, lambda handle: np.save(handle, np.asarray(labels).astype(np.int64).reshape(-1)))
    if confidence is not None:
        atomic_write(conf_path, lambda handle: np.save(handle, np.asarray(confidence).astype(np.float32).reshape(-1)))
    return pred_path
