"""Which weak labels a run trains on: made once from a protocol + seed, or read from a file.

Every DataModule calls :func:`resolve_weak_labels` with its training split's full labels, so the
rules of ARCHITECTURE.md hold for all tasks in one place:

* ``weak_label_file`` given: load it and refuse it (``DataError`` with both hashes) when it was made
  from other full labels than the dataset's, for another task, or holds labels that do not fit the
  dataset (:func:`load_checked`).
* ``protocol`` given: draw the labels once with ``sample_rng(seed, sample_id)`` and save them under
  ``$SPARSEVISION_CACHE/weak_labels/<task>/<source-sha16>/<name>-<params-sha8>-seed<S>.weak.{json,npz}``;
  later runs (and other ranks) load that file instead of drawing again.
* neither: None, i.e. full supervision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

import numpy as np

from vision.errors import DataError, PathLike
from vision.labels.conversions import pixel_of
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.types import HUMAN, BoxLabels
from vision.labels.weakfile import (
    FullLabels,
    SourceHasher,
    WeakLabelSet,
    source_sha256,
    sparsify,
    weak_file_paths,
)

FullLabelSource = Callable[[], Iterable[tuple[str, FullLabels]]]


def weak_cache_root() -> Path:
    from datamodules.synthetic.cache import cache_root

    return cache_root() / "weak_labels"


def protocol_file_stem(protocol: WeakLabelProtocol, seed: int) -> str:
    """``<name>-<sha8 of params>-seed<S>``: the cached file name of a protocol's labels."""
    params = json.dumps(protocol.params(), sort_keys=True, separators=(",", ":"))
    return f"{protocol.name}-{hashlib.sha256(params.encode()).hexdigest()[:8]}-seed{int(seed)}"


def cached_weak_label_path(task: str, source_hash: str, protocol: WeakLabelProtocol, seed: int) -> Path:
    return weak_cache_root() / task / source_hash[:16] / protocol_file_stem(protocol, seed)


def resolve_weak_labels(full_labels: FullLabelSource, task: str, protocol: Optional[WeakLabelProtocol] = None,
                        seed: int = 0, weak_label_file: Optional[str] = None,
                        coords: Optional[Callable] = None) -> Optional[WeakLabelSet]:
    """The weak labels of the training split, or None for full supervision.

    Args:
        full_labels: called (possibly more than once) to iterate ``(sample_id, full labels)``.
        task: ``pointcloud``, ``events`` or ``detection`` (header and cache folder).
        protocol, seed: draw labels with this protocol (made once, cached, reused).
        weak_label_file: use this file instead (``NAME``, ``NAME.weak.json`` or ``NAME.weak.npz``).
        coords: ``sample_id -> coordinates`` for protocols that need them (``PerInstance`` centroids).

    Raises:
        DataError: the file is malformed or was made from other full labels.
        ValueError: both a protocol and a file were given.
    """
    if protocol is not None and weak_label_file is not None:
        raise ValueError("give either weak_labels (a protocol) or weak_label_file, not both")
    if weak_label_file is not None:
        return load_checked(weak_label_file, full_labels, task)
    if protocol is None:
        return None
    source_hash = source_sha256(full_labels())
    prefix = cached_weak_label_path(task, source_hash, protocol, seed)
    json_path, npz_path = weak_file_paths(prefix)
    if json_path.is_file():
        return WeakLabelSet.load(prefix, expected_sha256=source_hash)
    weak = sparsify(full_labels(), protocol, seed, task=task, coords=coords)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        # an npz without its json is what a run killed between the two writes leaves: replace it
        weak.save(prefix, overwrite=npz_path.is_file())
    except FileExistsError:  # another process wrote the same labels first: use its file
        return WeakLabelSet.load(prefix, expected_sha256=source_hash)
    return weak


def load_checked(path: PathLike, full_labels: FullLabelSource, task: str) -> WeakLabelSet:
    """Load the weak-label file ``path`` and check it against the dataset it is about to train.

    Beyond :meth:`WeakLabelSet.load` (a readable, consistent pair): the file's ``task`` must be
    ``task``, its ``source_sha256`` the dataset's, every sample id one of the dataset's, every
    label inside its sample (point index below ``N``, pixel inside ``H x W``, class id >= 0), and a
    human label's class the full label at its position. A file made for another dataset, or edited
    by hand, raises :class:`DataError` naming the json file instead of training on wrong targets.
    """
    weak = WeakLabelSet.load(path)
    json_path = weak_file_paths(path)[0]
    if weak.task != task:
        raise DataError(json_path, f"weak labels for task {weak.task!r}, but this dataset is {task!r}")
    hasher, seen, problem = SourceHasher(), set(), None
    for sample_id, full in full_labels():
        sample_id = str(sample_id)
        hasher.add(sample_id, full)
        seen.add(sample_id)
        if sample_id in weak.labels and problem is None:
            try:
                check_sample(json_path, sample_id, weak.labels[sample_id], full)
            except DataError as err:  # reported after the hash: "another dataset" says more
                problem = err
    weak.check_source(hasher.hexdigest(), json_path)
    if problem is not None:
        raise problem
    unknown = sorted(set(weak.labels) - seen)
    if unknown:
        raise DataError(json_path, f"{len(unknown)} samples are not in the dataset, e.g. {unknown[0]!r}")
    return weak


def check_sample(where: PathLike, sample_id: str, labels, full: FullLabels) -> None:
    """DataError (naming ``where`` and ``sample_id``) when weak ``labels`` do not fit their full labels."""
    if np.any(labels.class_id < 0):
        raise DataError(where, f"sample {sample_id!r}: negative class id {int(labels.class_id.min())}")
    if isinstance(labels, BoxLabels) or isinstance(full, BoxLabels):
        if isinstance(labels, BoxLabels) and not np.all(labels.boxes[:, 2:] > labels.boxes[:, :2]):
            raise DataError(where, f"sample {sample_id!r}: a box has x2 <= x1 or y2 <= y1")
        return
    semantic = full.semantic
    if labels.is_3d:
        if semantic.ndim != 1:
            raise DataError(where, f"sample {sample_id!r}: point indices for {semantic.ndim}-D labels")
        if labels.index.size and (labels.index.min() < 0 or labels.index.max() >= semantic.shape[0]):
            bad = labels.index[(labels.index < 0) | (labels.index >= semantic.shape[0])][0]
            raise DataError(where, f"sample {sample_id!r}: point index {int(bad)} outside its "
                                   f"{semantic.shape[0]} points")
        at = semantic[labels.index]
    else:
        if semantic.ndim != 2:
            raise DataError(where, f"sample {sample_id!r}: pixel labels for {semantic.ndim}-D labels")
        cols, rows = pixel_of(labels.xy).T
        height, width = semantic.shape
        outside = (cols < 0) | (cols >= width) | (rows < 0) | (rows >= height)
        if outside.any():
            raise DataError(where, f"sample {sample_id!r}: {int(outside.sum())} points outside the "
                                   f"{width}x{height} frame")
        at = semantic[rows, cols]
    wrong = (labels.source == HUMAN) & (labels.class_id != at)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(where, f"sample {sample_id!r}: label {i} has class {int(labels.class_id[i])} but the "
                               f"full label there is {int(at[i])}")
