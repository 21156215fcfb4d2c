"""The hash that ties a weak-label file to the full labels it was drawn from (``source_sha256``).

Independent of sample order and of the file format the labels came from (CONVENTIONS.md), so a
dataset converted from PLY to LAS keeps its weak labels, and another version of it does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Union

import numpy as np

from vision.errors import DataError
from vision.labels.types import BoxLabels, DenseLabels

FullLabels = Union[DenseLabels, BoxLabels]


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
