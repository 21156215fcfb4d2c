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

This module holds :class:`WeakLabelSet` and the ways to make one (:func:`sparsify`,
:func:`import_scannet_indices`); reading and checking the two files is in
:mod:`vision.labels.weakfile_format`, the hash in :mod:`vision.labels.source_hash`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

import vision
from vision.atomic import atomic_write, atomic_write_text, refuse_existing
from vision.errors import DataError, PathLike
from vision.labels.conversions import pixel_of, positions_to_points, read_scannet_indices
from vision.labels.protocols import WeakLabelProtocol

# the on-disk format and the source hash live in their own modules; their names stay importable from here
from vision.labels.source_hash import FullLabels, SourceHasher, source_sha256
from vision.labels.types import HUMAN, IGNORE_INDEX, PSEUDO, BoxLabels, DenseLabels, PointLabels
from vision.labels.weakfile_format import (
    FORMAT_VERSION,
    HEADER_KEYS,
    JSON_SUFFIX,
    NPZ_SUFFIX,
    Labels,
    arrays_equal,
    read_header,
    read_npz,
    sample_arrays,
    weak_file_paths,
)

__all__ = ["FORMAT_VERSION", "HEADER_KEYS", "JSON_SUFFIX", "NPZ_SUFFIX", "FullLabels", "Labels",
           "SourceHasher", "WeakLabelSet", "import_scannet_indices", "source_sha256", "sparsify",
           "weak_file_paths"]


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
            arrays_equal(sample_arrays(s, self[s]), sample_arrays(s, other[s])) for s in self)

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
            arrays.update(sample_arrays(sample_id, self[sample_id]))
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
        header = read_header(json_path)
        labels = read_npz(npz_path)
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
