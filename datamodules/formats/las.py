"""LAS / LAZ aerial and terrestrial LiDAR via ``laspy`` (LAZ through its ``lazrs`` backend).

Coordinates are the scaled ``x, y, z`` (float64: projected coordinates are large), intensity the raw
uint16 value as float32, colours ``red, green, blue`` divided by 65535 - or by 255 when every value
is <= 255 (8-bit colours stored in the 16-bit fields, common in exported tiles). ``classification``
is the semantic label: raw ASPRS codes (:data:`ASPRS_CLASSES`), or contiguous training ids through
``class_map`` (raw code -> training id).

Predictions go back into a copy of the source file: ``classification`` holds the predicted class
(mapped back through the inverse class map) and an extra-bytes dimension ``confidence`` (float32)
holds the confidence; every other dimension, VLR and header field is kept.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Optional

import laspy
import numpy as np

from datamodules.formats.pointcloud_scene import PointCloudScene, validate_scene
from vision.atomic import atomic_path, refuse_existing
from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX

#: ASPRS LAS 1.4 standard point classes (R15, table 17); 19-63 are reserved, 64-255 user-definable.
ASPRS_CLASSES: dict[int, str] = {
    0: "never classified", 1: "unclassified", 2: "ground", 3: "low vegetation",
    4: "medium vegetation", 5: "high vegetation", 6: "building", 7: "low point (noise)",
    8: "model key-point", 9: "water", 10: "rail", 11: "road surface", 12: "overlap",
    13: "wire guard (shield)", 14: "wire conductor (phase)", 15: "transmission tower",
    16: "wire-structure connector (insulator)", 17: "bridge deck", 18: "high noise",
}
#: Class written for points labelled IGNORE_INDEX: ASPRS "never classified".
UNLABELLED_CLASS = 0
#: Per-point dimensions copied into ``scene.extra`` when the file has them (plus all extra bytes).
EXTRA_DIMENSIONS = ("return_number", "number_of_returns", "nir")

try:  # the LAZ backend raises its own error type (a RuntimeError) on truncated compressed data
    from lazrs import LazrsError as _LazError
except ImportError:  # pragma: no cover - laspy[lazrs] is a dependency; LAS still reads without it
    _LazError = laspy.errors.LaspyException


#: LAZ compresses points about 5-10x; a header promising more than this times the file size is corrupt.
MAX_LAZ_RATIO = 100
_HEADER = struct.Struct("<4s20xBB68xHIIBHI")  # signature, version, header size .. legacy point count
_HEADER_14 = struct.Struct("<QIQ")  # LAS 1.4 at byte 235: first EVLR offset, EVLR count, point count
_EVLR_HEADER = 60  # user id 16, record id 2, then the uint64 record length at byte 20


def _check_header_sizes(path: Path) -> None:
    """DataError when the header promises more bytes than the file holds.

    laspy trusts these numbers and allocates what they ask for before reading, so a corrupt
    point count or EVLR length would exhaust memory instead of failing; hand-checked here
    (LAS 1.4 R15, table 3) because laspy offers no size check before it reads.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size + 512)
        if len(head) < _HEADER.size:
            raise DataError(path, f"malformed or truncated LAS/LAZ file ({size} bytes, shorter than a header)")
        signature, major, minor, header_size, offset, _, point_format, record_length, count = \
            _HEADER.unpack_from(head)
        if signature != b"LASF":
            raise DataError(path, "malformed or truncated LAS/LAZ file (no LASF signature)")
        evlr_start = evlr_count = 0
        if (major, minor) >= (1, 4) and len(head) >= 235 + _HEADER_14.size:
            evlr_start, evlr_count, count_14 = _HEADER_14.unpack_from(head, 235)
            count = count_14 or count
        if offset > size or header_size > offset:
            raise DataError(path, f"truncated or corrupt: points start at byte {offset} of {size}")
        if point_format & 0x80:  # bit 7: LAZ-compressed points
            if count * record_length > (size - offset) * MAX_LAZ_RATIO:
                raise DataError(path, f"malformed or truncated LAS/LAZ file: header says {count} points, far "
                                      f"more than {size - offset} compressed bytes can hold")
        elif count * record_length > size - offset:
            raise DataError(path, f"truncated: header says {count} points, file holds "
                                  f"{(size - offset) // max(record_length, 1)}")
        position = evlr_start
        for _ in range(evlr_count if evlr_start else 0):
            handle.seek(position + 20)
            length = handle.read(8)
            if position + _EVLR_HEADER > size or len(length) < 8:
                raise DataError(path, f"truncated: extended VLR at byte {position} lies past the end ({size})")
            position += _EVLR_HEADER + struct.unpack("<Q", length)[0]
            if position > size:
                raise DataError(path, f"truncated: an extended VLR ends at byte {position}, past the end ({size})")


def _read_las(path: Path) -> laspy.LasData:
    if not path.is_file():
        raise DataError(path, "file does not exist")
    try:
        _check_header_sizes(path)
    except (OSError, struct.error) as err:
        raise DataError(path, f"malformed or truncated LAS/LAZ file ({err})") from err
    try:
        las = laspy.read(str(path))
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    except (laspy.errors.LaspyException, _LazError, ValueError, OSError, EOFError, OverflowError,
            MemoryError, struct.error) as err:
        raise DataError(path, f"malformed or truncated LAS/LAZ file ({type(err).__name__}: {err})") from err
    if len(las.points) != las.header.point_count:
        raise DataError(path, f"truncated: header says {las.header.point_count} points, "
                              f"file holds {len(las.points)}")
    return las


def _las_colors(las: laspy.LasData) -> Optional[np.ndarray]:
    names = set(las.point_format.dimension_names)
    if not {"red", "green", "blue"} <= names:
        return None
    rgb = np.column_stack([np.asarray(las[c]) for c in ("red", "green", "blue")])
    # 8-bit colours are often stored unscaled in the 16-bit fields
    scale = 255.0 if rgb.size and rgb.max() <= 255 else 65535.0
    return (rgb.astype(np.float64) / scale).astype(np.float32)


def remap_classes(raw: np.ndarray, class_map: Mapping[int, int], path: PathLike,
                  unmapped: Literal["ignore", "error"] = "ignore") -> np.ndarray:
    """Map raw class codes ``(N,)`` to training ids ``(N,)`` int64 through ``class_map``.

    Codes absent from ``class_map`` become IGNORE_INDEX (``unmapped="ignore"``) or raise
    DataError (``unmapped="error"``).

    >>> remap_classes(np.array([2, 6, 1, 2]), {2: 0, 6: 1}, "tile.las").tolist()
    [0, 1, -100, 0]
    """
    raw = np.asarray(raw).astype(np.int64)
    size = max(int(raw.max(initial=0)), max(class_map, default=0)) + 1
    table = np.full(size, IGNORE_INDEX, dtype=np.int64)  # a lookup table maps N points in one pass
    for code, train_id in class_map.items():
        table[int(code)] = int(train_id)
    labels = table[raw]
    if unmapped == "error":
        missing = np.setdiff1d(np.unique(raw[labels == IGNORE_INDEX]),
                               [c for c, t in class_map.items() if t == IGNORE_INDEX])
        if missing.size:
            raise DataError(path, f"classes {missing.tolist()} are not in class_map")
    elif unmapped != "ignore":
        raise ValueError(f"unmapped must be 'ignore' or 'error', got {unmapped!r}")
    return labels


def class_names_for(class_map: Mapping[int, int]) -> list[str]:
    """Names of the training ids of ``class_map`` from :data:`ASPRS_CLASSES` (merged codes joined by '+').

    >>> class_names_for({2: 0, 6: 1, 3: 2, 4: 2, 5: 2})
    ['ground', 'building', 'low vegetation+medium vegetation+high vegetation']
    """
    ids = sorted({t for t in class_map.values() if t != IGNORE_INDEX})
    if ids != list(range(len(ids))):
        raise ValueError(f"class_map training ids must be 0..K-1, got {ids}")
    return ["+".join(ASPRS_CLASSES.get(code, f"class {code}") for code, t in class_map.items() if t == i)
            for i in ids]


def read_las(path: PathLike, class_map: Optional[Mapping[int, int]] = None,
             unmapped: Literal["ignore", "error"] = "ignore",
             class_names: Optional[list[str]] = None) -> PointCloudScene:
    """Read a LAS or LAZ file into a :class:`PointCloudScene`.

    Args:
        class_map: raw ASPRS code -> contiguous training id (e.g. ``{2: 0, 6: 1}``); None keeps the
            raw codes as labels.
        unmapped: what raw codes outside ``class_map`` become: ``"ignore"`` (IGNORE_INDEX) or
            ``"error"`` (DataError).
        class_names: names of the training ids; default from :func:`class_names_for` when
            ``class_map`` is given, else None.
    """
    path = Path(path)
    las = _read_las(path)
    raw = np.asarray(las.classification).astype(np.int64)
    semantic = raw if class_map is None else remap_classes(raw, class_map, path, unmapped)
    if class_names is None and class_map is not None:
        class_names = class_names_for(class_map)
    names = set(las.point_format.dimension_names)
    extra = {d: np.asarray(las[d]) for d in EXTRA_DIMENSIONS if d in names}
    extra.update({d: np.asarray(las[d]) for d in las.point_format.extra_dimension_names})
    scene = PointCloudScene(
        coords=np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)]).astype(np.float64),
        colors=_las_colors(las),
        intensity=np.asarray(las.intensity).astype(np.float32),
        semantic=semantic,
        extra=extra,
        class_names=class_names,
        source_path=str(path),
    )
    return validate_scene(scene, path)


def _raw_classes(labels: np.ndarray, class_map: Optional[Mapping[int, int]], path: Path,
                 max_code: int) -> np.ndarray:
    """Training ids ``(N,)`` -> raw classification codes, through the inverse of ``class_map``.

    When several raw codes share a training id, the first one in ``class_map`` is written.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    raw = labels.copy()
    if class_map is not None:
        inverse: dict[int, int] = {}
        for code, train_id in class_map.items():
            inverse.setdefault(int(train_id), int(code))
        known = np.isin(labels, list(inverse)) | (labels == IGNORE_INDEX)
        if not known.all():
            raise DataError(path, f"labels {np.unique(labels[~known]).tolist()} are not training ids "
                                  f"of class_map")
        for train_id, code in inverse.items():
            raw[labels == train_id] = code
    raw[labels == IGNORE_INDEX] = UNLABELLED_CLASS
    if raw.size and (raw.min() < 0 or raw.max() > max_code):
        raise DataError(path, f"class codes must lie in 0..{max_code} for this point format, "
                              f"got {raw.min()}..{raw.max()}")
    return raw


def _set_predictions(las: laspy.LasData, labels: np.ndarray, confidence: Optional[np.ndarray],
                     class_map: Optional[Mapping[int, int]], path: Path) -> None:
    n = len(las.points)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise DataError(path, f"{labels.shape[0]} labels but the file has {n} points")
    max_code = 255 if las.point_format.id >= 6 else 31  # formats 0-5 keep 5-bit classes
    las.classification = _raw_classes(labels, class_map, path, max_code).astype(np.uint8)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if confidence.shape[0] != n:
            raise DataError(path, f"{confidence.shape[0]} confidences but the file has {n} points")
        if "confidence" not in las.point_format.extra_dimension_names:
            las.add_extra_dim(laspy.ExtraBytesParams(name="confidence", type=np.float32,
                                                     description="prediction confidence"))
        las.confidence = confidence


def _write(las: laspy.LasData, dst: Path, overwrite: bool) -> Path:
    with atomic_path(dst, overwrite) as temp:
        try:
            las.write(str(temp), do_compress=dst.suffix.lower() == ".laz")
        except laspy.errors.LaspyException as err:
            raise DataError(dst, f"cannot write LAS/LAZ ({err})") from err
    return dst


def write_las_predictions(src: PathLike, dst: PathLike, labels: np.ndarray,
                          confidence: Optional[np.ndarray] = None,
                          class_map: Optional[Mapping[int, int]] = None, overwrite: bool = False) -> Path:
    """Copy ``src`` to ``dst`` (LAS, or LAZ when ``dst`` ends in ``.laz``) with predictions in it.

    Args:
        labels: ``(N,)`` predicted training ids in the file's point order; written to
            ``classification`` through the inverse of ``class_map`` (IGNORE_INDEX -> class 0).
        confidence: ``(N,)`` float, stored in the extra-bytes dimension ``confidence`` (float32).
    Raises FileExistsError when ``dst`` exists and ``overwrite`` is False.
    """
    src, dst = Path(src), Path(dst)
    refuse_existing(dst, overwrite)  # before reading: a refused run costs no time
    las = _read_las(src)
    _set_predictions(las, labels, confidence, class_map, src)
    return _write(las, dst, overwrite)


def write_las(path: PathLike, scene: PointCloudScene, class_map: Optional[Mapping[int, int]] = None,
              scale: float = 0.001, overwrite: bool = False) -> Path:
    """Write ``scene`` as a LAS 1.4 file (LAZ when ``path`` ends in ``.laz``).

    Point format 7 (with RGB) when the scene has colours, else 6. Coordinates are stored as
    integers of ``scale`` metres (default millimetres) from an offset at the scene's minimum;
    colours as 16-bit; intensity rounded to uint16; semantic labels as classification through the
    inverse ``class_map``.
    """
    path = Path(path)
    validate_scene(scene, path)
    las = laspy.LasData(laspy.LasHeader(point_format=7 if scene.colors is not None else 6, version="1.4"))
    las.header.offsets = np.floor(scene.coords.min(axis=0))
    las.header.scales = np.full(3, scale)
    las.x, las.y, las.z = scene.coords[:, 0], scene.coords[:, 1], scene.coords[:, 2]
    if scene.colors is not None:
        rgb = np.round(scene.colors.astype(np.float64) * 65535.0).astype(np.uint16)
        las.red, las.green, las.blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    if scene.intensity is not None:
        las.intensity = np.clip(np.round(scene.intensity), 0, 65535).astype(np.uint16)
    if scene.semantic is not None:
        las.classification = _raw_classes(scene.semantic, class_map, path, 255).astype(np.uint8)
    return _write(las, path, overwrite)
