"""Which weak labels a run trains on: made once from a protocol + seed, or read from a file.

Every DataModule calls :func:`resolve_weak_labels` with its training split's full labels, so the
rules of ARCHITECTURE.md hold for all tasks in one place:

* ``weak_label_file`` given: load it and refuse it (``DataError`` with both hashes) when it was made
  from other full labels than the dataset's.
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

from vision.labels.protocols import WeakLabelProtocol
from vision.labels.weakfile import FullLabels, WeakLabelSet, source_sha256, sparsify, weak_file_paths

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
        return WeakLabelSet.load(weak_label_file, expected_sha256=source_sha256(full_labels()))
    if protocol is None:
        return None
    source_hash = source_sha256(full_labels())
    prefix = cached_weak_label_path(task, source_hash, protocol, seed)
    if weak_file_paths(prefix)[0].is_file():
        return WeakLabelSet.load(prefix, expected_sha256=source_hash)
    weak = sparsify(full_labels(), protocol, seed, task=task, coords=coords)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        weak.save(prefix)
    except FileExistsError:  # another process wrote the same labels first: use its file
        return WeakLabelSet.load(prefix, expected_sha256=source_hash)
    return weak
