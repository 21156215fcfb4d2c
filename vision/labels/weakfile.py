"""The weak-label file: the sparse labels a run trains on, saved once with how they were made.

A weak-label file is a pair (CONVENTIONS.md):

``NAME.weak.json`` - the header::

    {"format_version": 1, "task": "pointcloud", "protocol": {"name": "ratio", "params": {"ratio": 0.001}},
     "seed": 0, "source_sha256": "<64 hex>", "created": "2025-01-31T12:00:00Z", "tool_version": "0.1.0",
     "counts": {"per_class": {"0": 12, "3": 4}, "human": 16, "pseudo": 0, "total": 16,
                "source_labelled": 16000}}

``counts.per_class`` counts every kept label (human and pseudo) by class id; ``source_labelled`` is
the number of labelled entries (or boxes) in the full labels, when known. ``seed`` is null for
imported files.

``NAME.weak.npz`` - per sample id ``S``: ``S/index`` int64 ``(K,)`` (3D, into the reader's original
point order) or ``S/xy`` float32 ``(K, 2)`` (0-based pixels) or ``S/boxes`` float32 ``(K, 4)`` xyxy;
``S/class_id`` int32 ``(K,)``; ``S/source`` uint8 ``(K,)`` (0 = human, 1 = pseudo); ``S/confidence``
float16 ``(K,)``; for boxes also ``S/complete``, a 0-d bool array. Sample ids may contain ``/``; the
field is what follows the last one.

``source_sha256`` ties the file to the labels it was drawn from, so training refuses weak labels made
from another version of the dataset (see :func:`source_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

import numpy as np

import vision
from vision.atomic import atomic_write, atomic_write_text, refuse_existing
from vision.errors import DataError, PathLike
from vision.labels.conversions import pixel_of, positions_to_points, read_scannet_indices
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.types import HUMAN, IGNORE_INDEX, PSEUDO, BoxLabels, DenseLabels, PointLabels

FORMAT_VERSION = 1
JSON_SUFFIX = ".weak.json"
NPZ_SUFFIX = ".weak.npz"
HEADER_KEYS = ("format_version", "task", "protocol", "seed", "source_sha256", "created", "tool_version", "counts")

Labels = Union[PointLabels, BoxLabels]
FullLabels = Union[DenseLabels, BoxLabels]


def weak_file_paths(path: PathLike) -> tuple[Path, Path]:
    """``(NAME.weak.json, NAME.weak.npz)`` from ``NAME``, ``NAME.weak.json`` or ``NAME.weak.npz``."""
    text = os.fspath(path)
    for suffix in (JSON_SUFFIX, NPZ_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return Path(text + JSON_SUFFIX), Path(text + NPZ_SUFFIX)


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)
class WeakLabelSet(Mapping):
    """Weak labels of a dataset split: a mapping ``sample_id -> PointLabels | BoxLabels`` plus header.

    Args:
        labels: the labels per sample id.
        task: ``pointcloud``, ``events`` or ``detection``.
        protocol: ``{"name": ..., "params": {...}}`` of the protocol that made them.
        seed: the label seed (None for imported labels).
        source_sha256: :func:`source_sha256` of the full labels they were drawn from.
        source_labelled: labelled entries (or boxes) in those full labels, when known.
    """

    labels: dict
    task: str
    protocol: dict
    seed: Optional[int]
    source_sha256: str
    source_labelled: Optional[int] = None
    created: str = field(default_factory=_utc_now)
    tool_version: str = vision.__version__
    format_version: int = FORMAT_VERSION

    def __getitem__(self, sample_id: str) -> Labels:
        return self.labels[sample_id]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other) -> bool:
        if not isinstance(other, WeakLabelSet) or self.header() != other.header():
            return False
        return sorted(self.labels) == sorted(other.labels) and all(
            _arrays_equal(_sample_arrays(s, self[s]), _sample_arrays(s, other[s])) for s in self)

    __hash__ = None

    def counts(self) -> dict:
        """``{"per_class": {"<class_id>": n}, "human": n, "pseudo": n, "total": n[, "source_labelled": n]}``."""
        per_class: Counter = Counter()
        sources: Counter = Counter()
        for labels in self.labels.values():
            per_class.update(labels.class_id.tolist())
            sources.update(labels.source.tolist())
        counts = {"per_class": {str(c): per_class[c] for c in sorted(per_class)}, "human": sources[HUMAN],
                  "pseudo": sources[PSEUDO], "total": sum(per_class.values())}
        if self.source_labelled is not None:
            counts["source_labelled"] = int(self.source_labelled)
        return counts

    def header(self) -> dict:
        """The JSON header (module docstring)."""
        return {"format_version": self.format_version, "task": self.task, "protocol": self.protocol,
                "seed": self.seed, "source_sha256": self.source_sha256, "created": self.created,
                "tool_version": self.tool_version, "counts": self.counts()}

    def save(self, path_prefix: PathLike, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``PREFIX.weak.json`` and ``PREFIX.weak.npz`` atomically; returns both paths.

        Raises:
            OutputExistsError: (a FileExistsError) either file exists and ``overwrite`` is False.
        """
        json_path, npz_path = weak_file_paths(path_prefix)
        for existing in (json_path, npz_path):
            refuse_existing(existing, overwrite)
        if "" in self.labels:
            raise ValueError("an empty sample id cannot be stored (npz keys are '<sample_id>/<field>')")
        arrays = {}
        for sample_id in self:
            arrays.update(_sample_arrays(sample_id, self[sample_id]))
        text = json.dumps(self.header(), indent=2) + "\n"
        # the npz goes first: a reader opens the json, so a crash in between leaves no half-written pair
        atomic_write(npz_path, lambda f: np.savez_compressed(f, **arrays))
        atomic_write_text(json_path, text)
        return json_path, npz_path

    @classmethod
    def load(cls, path: PathLike, expected_sha256: Optional[str] = None) -> WeakLabelSet:
        """Read a weak-label file from ``NAME``, ``NAME.weak.json`` or ``NAME.weak.npz``.

        Args:
            expected_sha256: :func:`source_sha256` of the dataset about to be trained on; a file made
                from other labels raises DataError naming both hashes.

        Raises:
            DataError: missing, malformed or truncated files, missing keys, or a hash mismatch.
        """
        json_path, npz_path = weak_file_paths(path)
        header = _read_header(json_path)
        labels = _read_npz(npz_path)
        counts = header["counts"]
        weak = cls(labels=labels, task=header["task"], protocol=header["protocol"], seed=header["seed"],
                   source_sha256=header["source_sha256"], source_labelled=counts.get("source_labelled"),
                   created=header["created"], tool_version=header["tool_version"])
        if weak.counts()["total"] != counts.get("total"):
            raise DataError(npz_path, f"holds {weak.counts()['total']} labels but {json_path.name} counts "
                                      f"{counts.get('total')}; the two files come from different runs")
        if expected_sha256 is not None:
            weak.check_source(expected_sha256, json_path)
        return weak

    def check_source(self, expected_sha256: str, where: PathLike = "weak labels") -> None:
        """DataError (naming ``where`` and both hashes) unless these labels were drawn from the full labels
        that hash to ``expected_sha256`` (:func:`source_sha256` of the dataset about to be trained on)."""
        if expected_sha256 != self.source_sha256:
            raise DataError(where, f"made from other labels: file records source_sha256 {self.source_sha256}"
                                   f" but the dataset hashes to {expected_sha256}; re-run sparsevision sparsify")

    def merge_pseudo(self, pseudo: Mapping[str, PointLabels]) -> WeakLabelSet:
        """A new set with this set's human labels plus ``pseudo`` where no human label sits (self-training).

        Earlier pseudo-labels are replaced, not accumulated. Pseudo points on a human-labelled entry
        (3D: same index; 2D: same nearest pixel) and repeated points are dropped (the first is kept);
        the rest get ``source = PSEUDO`` and keep their confidence. Each sample holds its human labels
        first, then its pseudo-labels sorted by position.
        """
        unknown = sorted(set(pseudo) - set(self.labels))
        if unknown:
            raise ValueError(f"pseudo-labels for {len(unknown)} unknown sample ids, e.g. {unknown[0]!r}")
        merged = {}
        for sample_id, labels in self.labels.items():
            if not isinstance(labels, PointLabels):
                raise ValueError("pseudo-labels can only be merged into point labels, not boxes")
            human = labels.select(labels.source == HUMAN)
            extra = pseudo.get(sample_id)
            if extra is None or len(extra) == 0:
                merged[sample_id] = human
                continue
            if extra.is_3d != human.is_3d:
                raise ValueError(f"{sample_id}: cannot merge {'xy' if human.is_3d else 'index'} pseudo-labels "
                                 f"into {'index' if human.is_3d else 'xy'} labels")
            keys, human_keys = _point_keys(extra), _point_keys(human)
            _, first = np.unique(keys, return_index=True)
            first = first[~np.isin(keys[first], human_keys)]
            new = extra.select(first)
            new.source = np.full(len(new), PSEUDO, np.uint8)
            merged[sample_id] = PointLabels.concatenate([human, new])
        return replace(self, labels=merged, created=_utc_now())


def _point_keys(labels: PointLabels) -> np.ndarray:
    """One int64 key per point: its index (3D) or nearest pixel packed as ``row * 2**32 + col`` (2D)."""
    if labels.is_3d:
        return labels.index
    cols, rows = pixel_of(labels.xy).T
    return rows * (1 << 32) + cols


def _sample_arrays(sample_id: str, labels: Labels) -> dict:
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


def _arrays_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def _read_header(path: Path) -> dict:
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


def _read_npz(path: Path) -> dict:
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


class SourceHasher:
    """Incremental :func:`source_sha256`: feed ``(sample_id, full_labels)`` in any order."""

    def __init__(self) -> None:
        self._digests: dict[str, bytes] = {}

    def add(self, sample_id: str, full: FullLabels) -> None:
        sample_id = str(sample_id)
        if sample_id in self._digests:
            raise DataError(sample_id, "this sample id appears twice in the dataset")
        digest = hashlib.sha256()
        if isinstance(full, BoxLabels):
            parts = [b"boxes", full.boxes.astype("<f4"), full.class_id.astype("<i4"), bytes([full.complete])]
        elif isinstance(full, DenseLabels):
            parts = [b"dense", full.semantic.astype("<i8")]
            parts += [b"no-instance"] if full.instance is None else [b"instance", full.instance.astype("<i8")]
        else:
            raise DataError(sample_id, f"full labels must be DenseLabels or BoxLabels, got {type(full).__name__}")
        for part in parts:
            if isinstance(part, np.ndarray):  # the shape goes in too, so (2, 3) and (3, 2) differ
                digest.update(np.asarray(part.shape, dtype="<i8").tobytes())
                part = np.ascontiguousarray(part).tobytes()
            digest.update(len(part).to_bytes(8, "little") + part)
        self._digests[sample_id] = digest.digest()

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for sample_id in sorted(self._digests):
            encoded = sample_id.encode("utf-8")
            total.update(len(encoded).to_bytes(8, "little") + encoded + self._digests[sample_id])
        return total.hexdigest()


def source_sha256(items: Iterable[tuple[str, FullLabels]]) -> str:
    """SHA-256 of a dataset's full labels, independent of sample order and of the file format.

    Each sample's labels are hashed as canonical little-endian arrays, each preceded by its shape and
    byte length: dense labels as ``b"dense"``, semantic ``<i8``, then ``b"instance"`` + instance ``<i8``
    or ``b"no-instance"``; boxes as ``b"boxes"``, boxes ``<f4``, class ids ``<i4``, the complete flag.
    The result hashes, in sorted sample-id order, each length-prefixed UTF-8 id followed by its sample
    digest (two levels, so a large dataset streams through without being held in memory).
    """
    hasher = SourceHasher()
    for sample_id, full in items:
        hasher.add(sample_id, full)
    return hasher.hexdigest()


def _labelled_count(full: FullLabels) -> int:
    return len(full) if isinstance(full, BoxLabels) else int(np.count_nonzero(full.semantic != IGNORE_INDEX))


def _task_of(full: FullLabels) -> str:
    if isinstance(full, BoxLabels):
        return "detection"
    return "events" if full.is_image else "pointcloud"


def sparsify(items: Iterable[tuple[str, FullLabels]], protocol: WeakLabelProtocol, seed: int,
             task: Optional[str] = None, coords: Optional[Callable[[str], np.ndarray]] = None) -> WeakLabelSet:
    """Draw weak labels for every sample with ``sample_rng(seed, sample_id)``.

    Each sample's labels depend only on ``(protocol, seed, sample_id, its full labels)``, so any order
    or subset of ``items`` gives the same labels for the samples it holds.

    Args:
        items: ``(sample_id, full labels)`` pairs, e.g. ``datamodule.full_labels("train")``.
        task: header task; inferred from the labels when None (``(N,)`` pointcloud, ``(H, W)`` events,
            boxes detection).
        coords: ``sample_id -> (N, D)`` point coordinates, for ``PerInstance(where="centroid")`` on 3D.

    Raises:
        DataError: a sample the protocol cannot use (named by its sample id).
    """
    hasher, labels, labelled = SourceHasher(), {}, 0
    for sample_id, full in items:
        sample_id = str(sample_id)
        hasher.add(sample_id, full)
        labelled += _labelled_count(full)
        task = task or _task_of(full)
        labels[sample_id] = protocol.draw(full, seed, sample_id, None if coords is None else coords(sample_id))
    return WeakLabelSet(labels=labels, task=task or "unknown", protocol={"name": protocol.name,
                        "params": protocol.params()}, seed=int(seed), source_sha256=hasher.hexdigest(),
                        source_labelled=labelled)


def import_scannet_indices(path: PathLike, items: Iterable[tuple[str, DenseLabels]],
                           task: str = "pointcloud") -> WeakLabelSet:
    """Weak labels from a ScanNet data-efficient index file, classes taken from the full labels.

    Indices are into each scene's original point order; repeats are merged and indices whose full
    label is :data:`IGNORE_INDEX` are skipped (they carry no class). The header records the protocol
    ``{"name": "scannet_indices", "params": {"file": <name>, "file_sha256": <hash>}}`` and seed null.

    Raises:
        DataError: an unreadable file, an index outside its scene, a scene the dataset lacks, or a
            dataset sample the file lacks.
    """
    path = Path(path)
    indices = read_scannet_indices(path)
    hasher, labels, labelled = SourceHasher(), {}, 0
    for sample_id, full in items:
        sample_id = str(sample_id)
        hasher.add(sample_id, full)
        labelled += _labelled_count(full)
        if not isinstance(full, DenseLabels) or full.semantic.ndim != 1:
            raise DataError(path, f"sample {sample_id!r}: point indices need (N,) per-point labels")
        if sample_id not in indices:
            raise DataError(path, f"no entry for dataset sample {sample_id!r}")
        index, n = np.unique(indices[sample_id]), full.semantic.shape[0]
        if index.size and (index[0] < 0 or index[-1] >= n):
            raise DataError(path, f"scene {sample_id!r}: index {index[0] if index[0] < 0 else index[-1]} "
                                  f"outside its {n} points")
        labels[sample_id] = positions_to_points(full.semantic, index[full.semantic[index] != IGNORE_INDEX])
    unknown = sorted(set(indices) - set(labels))
    if unknown:
        raise DataError(path, f"{len(unknown)} scenes are not in the dataset, e.g. {unknown[0]!r}")
    params = {"file": path.name, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return WeakLabelSet(labels=labels, task=task, protocol={"name": "scannet_indices", "params": params},
                        seed=None, source_sha256=hasher.hexdigest(), source_labelled=labelled)
