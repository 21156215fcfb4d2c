"""The two files of a weak-label set on disk: names, the JSON header and the npz arrays, checked.

The layout (CONVENTIONS.md) is described in :mod:`vision.labels.weakfile`, whose
:class:`~vision.labels.weakfile.WeakLabelSet` saves and loads through these helpers. Every reader
failure is a :class:`~vision.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import numpy as np

from vision.errors import DataError, PathLike
from vision.labels.types import PSEUDO, BoxLabels, PointLabels

FORMAT_VERSION = 1
JSON_SUFFIX = ".weak.json"
NPZ_SUFFIX = ".weak.npz"
HEADER_KEYS = ("format_version", "task", "protocol", "seed", "source_sha256", "created", "tool_version", "counts")

Labels = Union[PointLabels, BoxLabels]


def weak_file_paths(path: PathLike) -> tuple[Path, Path]:
    """``(NAME.weak.json, NAME.weak.npz)`` from ``NAME``, ``NAME.weak.json`` or ``NAME.weak.npz``."""
    text = os.fspath(path)
    for suffix in (JSON_SUFFIX, NPZ_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return Path(text + JSON_SUFFIX), Path(text + NPZ_SUFFIX)


def sample_arrays(sample_id: str, labels: Labels) -> dict:
    """The npz entries of one sample, in the dtypes CONVENTIONS.md fixes."""
    if isinstance(labels, BoxLabels):
        arrays = {"boxes": labels.boxes.astype("<f4"), "complete": np.array(bool(labels.complete))}
    elif labels.is_3d:
        arrays = {"index": labels.index.astype("<i8")}
    else:
        arrays = {"xy": labels.xy.astype("<f4").reshape(-1, 2)}
    arrays.update(class_id=labels.class_id.astype("<i4"), source=labels.source.astype(np.uint8),
                  confidence=labels.confidence.astype("<f2"))
    return {f"{sample_id}/{key}": value for key, value in arrays.items()}


def arrays_equal(a: dict, b: dict) -> bool:
    """Same keys, dtypes and values (two :func:`sample_arrays` results)."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def read_header(path: Path) -> dict:
    """The checked JSON header of a weak-label file; DataError(path) when it is missing or malformed."""
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "weak-label header not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a readable weak-label header ({exc})") from None
    if not isinstance(header, dict):
        raise DataError(path, "weak-label header must be a JSON object")
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise DataError(path, f"weak-label header lacks {', '.join(missing)}")
    if header["format_version"] != FORMAT_VERSION:
        raise DataError(path, f"format_version {header['format_version']!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    protocol, counts = header["protocol"], header["counts"]
    if not isinstance(protocol, dict) or "name" not in protocol or not isinstance(protocol.get("params"), dict):
        raise DataError(path, "protocol must be {\"name\": ..., \"params\": {...}}")
    if not isinstance(counts, dict) or not isinstance(header["source_sha256"], str):
        raise DataError(path, "counts must be an object and source_sha256 a string")
    return header


_FIELD_KINDS = {"index": "iu", "xy": "f", "boxes": "f", "class_id": "iu", "source": "u", "confidence": "f",
                "complete": "b"}


def read_npz(path: Path) -> dict:
    """``{sample_id: labels}`` from a weak-label npz; every failure becomes DataError(path)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(path, "weak-label arrays not found") from None
    except Exception as exc:  # zip, zlib and .npy header errors (even TokenError) mean "unreadable"
        raise DataError(path, f"malformed or truncated weak-label arrays ({type(exc).__name__}: {exc})") from None
    samples: dict = {}
    for key, value in arrays.items():
        sample_id, _, name = key.rpartition("/")
        if not sample_id or name not in _FIELD_KINDS:
            raise DataError(path, f"unexpected key {key!r} (want '<sample_id>/<field>')")
        if value.dtype.kind not in _FIELD_KINDS[name]:
            raise DataError(path, f"{key} has dtype {value.dtype}, expected kind {_FIELD_KINDS[name]!r}")
        samples.setdefault(sample_id, {})[name] = value
    return {sample_id: _labels_from_fields(path, sample_id, fields) for sample_id, fields in samples.items()}


def _labels_from_fields(path: Path, sample_id: str, fields: dict) -> Labels:
    kinds = [name for name in ("index", "xy", "boxes") if name in fields]
    required = ["class_id", "source", "confidence"] + (["complete"] if kinds == ["boxes"] else [])
    missing = [name for name in required if name not in fields]
    if len(kinds) != 1 or missing:
        raise DataError(path, f"sample {sample_id!r}: needs exactly one of index/xy/boxes (has {kinds}) "
                              f"and {', '.join(required)}" + (f"; missing {', '.join(missing)}" if missing else ""))
    if np.any(fields["source"] > PSEUDO):
        raise DataError(path, f"sample {sample_id!r}: source must be 0 (human) or 1 (pseudo)")
    common = {"class_id": fields["class_id"], "source": fields["source"], "confidence": fields["confidence"]}
    try:
        if kinds == ["boxes"]:
            if fields["complete"].shape != ():
                raise ValueError("complete must be a 0-d bool array")
            return BoxLabels(boxes=fields["boxes"], complete=bool(fields["complete"]), **common)
        if kinds == ["xy"] and (fields["xy"].ndim != 2 or fields["xy"].shape[1:] != (2,)):
            raise ValueError(f"xy must have shape (K, 2), got {fields['xy'].shape}")
        return PointLabels(index=fields.get("index"), xy=fields.get("xy"), **common)
    except ValueError as exc:
        raise DataError(path, f"sample {sample_id!r}: {exc}") from None
