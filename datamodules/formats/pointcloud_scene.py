"""The in-memory point-cloud scene every 3D reader returns, and the canonical per-scene folder.

:class:`PointCloudScene` holds one scene of ``N`` points:

* ``coords`` ``(N, 3)`` float64 - kept in float64 because LAS / aerial coordinates are large
  (e.g. Lambert-93 eastings near 870000 m with centimetre precision); models centre them
  (subtract a per-scene origin) before casting to float32.
* ``colors`` ``(N, 3)`` float32 in ``[0, 1]``, ``intensity`` ``(N,)`` float32 (the sensor's raw
  scale), ``semantic`` ``(N,)`` int64 with :data:`IGNORE_INDEX` for unlabelled points,
  ``instance`` ``(N,)`` int64 (negative = no instance), all optional.
* ``extra`` - any other per-point field (normals, return number, ...) keyed by name.

The canonical layout (:func:`write_canonical` / :func:`read_canonical`) is one folder per scene,
close to Pointcept's preprocessed layout::

    scene/coord.npy      float64 (N, 3)
    scene/color.npy      float32 (N, 3) in [0, 1]   (optional)
    scene/intensity.npy  float32 (N,)               (optional)
    scene/segment.npy    int64 (N,)                 (optional)
    scene/instance.npy   int64 (N,)                 (optional)
    scene/extra.<name>.npy                          (optional, one per extra field)
    scene/meta.json      format_version, num_points, class_names, source_path, extra_fields
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from vision.atomic import refuse_existing
from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX

CANONICAL_FORMAT_VERSION = 1
_EXTRA_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class PointCloudScene:
    """One point-cloud scene (see the module docstring for the fields' shapes and dtypes).

    >>> scene = PointCloudScene(coords=np.zeros((2, 3)), semantic=np.array([0, IGNORE_INDEX]))
    >>> scene.num_points, scene.semantic.tolist()
    (2, [0, -100])
    """

    coords: np.ndarray
    colors: Optional[np.ndarray] = None
    intensity: Optional[np.ndarray] = None
    semantic: Optional[np.ndarray] = None
    instance: Optional[np.ndarray] = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: Optional[list[str]] = None
    source_path: Optional[str] = None

    @property
    def num_points(self) -> int:
        return int(np.shape(self.coords)[0])


_FIELD_DTYPES = {
    "coords": np.float64,
    "colors": np.float32,
    "intensity": np.float32,
    "semantic": np.int64,
    "instance": np.int64,
}
_FIELD_NDIMS = {"coords": 2, "colors": 2, "intensity": 1, "semantic": 1, "instance": 1}


def validate_scene(scene: PointCloudScene, path: Optional[PathLike] = None) -> PointCloudScene:
    """Check shapes, dtypes and values of ``scene``; raise :class:`DataError` naming ``path``.

    Fails on: an empty cloud, NaN/inf coordinates, a per-point field whose length differs from the
    point count (the message names both counts), a field with the wrong dtype, colours outside
    ``[0, 1]``, and negative labels other than :data:`IGNORE_INDEX` or labels beyond ``class_names``.
    Returns ``scene`` so readers can ``return validate_scene(scene, path)``.
    """
    where = path if path is not None else (scene.source_path or "<in-memory scene>")
    coords = scene.coords
    if not isinstance(coords, np.ndarray) or coords.ndim != 2 or coords.shape[1] != 3:
        raise DataError(where, f"coordinates must be an (N, 3) array, got shape {np.shape(coords)}")
    n = coords.shape[0]
    if n == 0:
        raise DataError(where, "empty point cloud (0 points)")
    for name, dtype in _FIELD_DTYPES.items():
        value = getattr(scene, name)
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.dtype != dtype:
            got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise DataError(where, f"{name} must be {np.dtype(dtype).name}, got {got}")
        expected_shape = (n, 3) if _FIELD_NDIMS[name] == 2 else (n,)
        if value.shape[0] != n:
            raise DataError(where, f"{name} has {value.shape[0]} entries but the cloud has {n} points")
        if value.shape != expected_shape:
            raise DataError(where, f"{name} must have shape {expected_shape}, got {value.shape}")
    if not np.isfinite(coords).all():
        bad = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise DataError(where, f"NaN or infinite coordinates (first at point {bad})")
    _validate_values(scene, where, n)
    return scene


def _validate_values(scene: PointCloudScene, where: PathLike, n: int) -> None:
    if scene.colors is not None:
        colors = scene.colors
        if not np.isfinite(colors).all() or colors.min() < 0.0 or colors.max() > 1.0:
            raise DataError(where, f"colors must lie in [0, 1], got range "
                                   f"[{np.nanmin(colors):g}, {np.nanmax(colors):g}]")
    if scene.intensity is not None and not np.isfinite(scene.intensity).all():
        raise DataError(where, "NaN or infinite intensity")
    if scene.semantic is not None:
        labelled = scene.semantic[scene.semantic != IGNORE_INDEX]
        if labelled.size and labelled.min() < 0:
            raise DataError(where, f"negative label {int(labelled.min())}; unlabelled points must be "
                                   f"IGNORE_INDEX ({IGNORE_INDEX})")
        if scene.class_names is not None and labelled.size and labelled.max() >= len(scene.class_names):
            raise DataError(where, f"label {int(labelled.max())} is outside the "
                                   f"{len(scene.class_names)} known classes")
    for name, value in scene.extra.items():
        if not isinstance(value, np.ndarray) or value.ndim == 0 or value.shape[0] != n:
            got = np.shape(value)[0] if np.ndim(value) else 0
            raise DataError(where, f"extra field {name!r} has {got} entries but the cloud has {n} points")


#: Float ids beyond this are not stored exactly (float64 has a 53-bit mantissa) and may not fit int64.
_MAX_FLOAT_ID = 2.0**53


def as_integer_ids(values: np.ndarray, path: PathLike, name: str = "instance") -> np.ndarray:
    """Per-point integer ids as int64; float storage must hold whole numbers below 2**53."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "f":
        if (not np.isfinite(values).all() or (values != np.round(values)).any()
                or (values.size and np.abs(values).max() >= _MAX_FLOAT_ID)):
            raise DataError(path, f"{name} values must be whole numbers below 2**53")
    elif values.dtype.kind not in "iub":
        raise DataError(path, f"{name} must be numeric, got dtype {values.dtype}")
    return values.astype(np.int64)


def as_semantic_labels(values: np.ndarray, path: PathLike, name: str = "label") -> np.ndarray:
    """Per-point labels as int64, negative values (any unlabelled marker) mapped to IGNORE_INDEX.

    Float labels (e.g. CloudCompare's ``scalar_Classification``) must hold whole numbers.
    """
    labels = as_integer_ids(values, path, name)
    labels[labels < 0] = IGNORE_INDEX
    return labels


def colors_to_unit(values: np.ndarray, path: PathLike, scale: Optional[float] = None) -> np.ndarray:
    """``(N, 3)`` colours as float32 in [0, 1].

    ``scale`` divides the values; None picks it from the dtype: uint8 -> 255, uint16 -> 65535,
    other integers and floats -> 255 when the maximum exceeds 1 (0-255 stored as numbers), else 1.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "uif":
        raise DataError(path, f"colors must be numeric, got dtype {values.dtype}")
    if scale is None:
        if values.dtype == np.uint8:
            scale = 255.0
        elif values.dtype == np.uint16:
            scale = 65535.0
        else:
            scale = 255.0 if values.size and float(np.nanmax(values)) > 1.0 else 1.0
    return (values.astype(np.float64) / scale).astype(np.float32)


def write_canonical(scene: PointCloudScene, folder: PathLike, overwrite: bool = False) -> Path:
    """Write ``scene`` as one canonical scene folder (layout in the module docstring).

    The folder is written under a temporary name beside ``folder`` and renamed when complete, so
    a crash never leaves a half-written scene. Raises FileExistsError when ``folder`` exists and
    ``overwrite`` is False.
    """
    folder = Path(folder)
    validate_scene(scene, folder)
    refuse_existing(folder, overwrite)
    for name in scene.extra:
        if not _EXTRA_NAME.match(name):
            raise DataError(folder, f"extra field name {name!r} must be letters, digits or '_'")
    temp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    temp.mkdir(parents=True)
    try:
        _write_canonical_files(scene, temp)
        if folder.exists():  # overwrite: move the old scene aside first, then drop it
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
            os.replace(temp, folder)
            shutil.rmtree(old)
        else:
            os.replace(temp, folder)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    return folder


def _write_canonical_files(scene: PointCloudScene, folder: Path) -> None:
    np.save(folder / "coord.npy", scene.coords)
    for name, value in (("color", scene.colors), ("intensity", scene.intensity),
                        ("segment", scene.semantic), ("instance", scene.instance)):
        if value is not None:
            np.save(folder / f"{name}.npy", value)
    for name, value in scene.extra.items():
        np.save(folder / f"extra.{name}.npy", value)
    meta = {
        "format_version": CANONICAL_FORMAT_VERSION,
        "num_points": scene.num_points,
        "class_names": scene.class_names,
        "source_path": scene.source_path,
        "extra_fields": sorted(scene.extra),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def load_npy(path: Path, where: Optional[PathLike] = None) -> np.ndarray:
    """``np.load`` without pickles, raising DataError (naming ``where`` or ``path``) when unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise DataError(where or path, f"missing file {path.name}") from err
    except Exception as err:  # a corrupt header raises ValueError, SyntaxError, TokenError...
        raise DataError(path, f"unreadable .npy file (truncated or not numpy): {type(err).__name__}: {err}") from err


def read_canonical(folder: PathLike) -> PointCloudScene:
    """Read a scene folder written by :func:`write_canonical`."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as err:
        raise DataError(folder, "not a canonical scene folder (no meta.json)") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(meta_path, f"invalid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format_version") != CANONICAL_FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(meta_path, f"unsupported format_version {version!r} "
                                   f"(expected {CANONICAL_FORMAT_VERSION})")

    def optional(name: str) -> Optional[np.ndarray]:
        path = folder / f"{name}.npy"
        return load_npy(path) if path.exists() else None

    scene = PointCloudScene(
        coords=load_npy(folder / "coord.npy", folder),
        colors=optional("color"),
        intensity=optional("intensity"),
        semantic=optional("segment"),
        instance=optional("instance"),
        extra={name: load_npy(folder / f"extra.{name}.npy", folder) for name in meta.get("extra_fields", [])},
        class_names=meta.get("class_names"),
        source_path=meta.get("source_path"),
    )
    validate_scene(scene, folder)
    if scene.num_points != meta.get("num_points"):
        raise DataError(meta_path, f"meta.json says {meta.get('num_points')} points but coord.npy "
                                   f"has {scene.num_points}")
    return scene
