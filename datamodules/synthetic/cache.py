"""The generated-data cache: one folder per (task, generator, version, seed, params), built once.

Layout (CONVENTIONS.md)::

    $SPARSEVISION_CACHE (default ~/.cache/sparsevision)/synthetic/<task>/
        <generator>-v<version>-seed<seed>-<sha8 of canonical JSON of params>/
            ... the generator's files ...
            DONE.json      {"params": ..., "created": ...}; written last, before the rename

A folder is built in a temporary sibling ``.tmp-<name>-<pid>-<random>`` and renamed into place only when the
build finished, so an interrupted build never leaves a folder that looks complete, and two processes
that build the same folder at once both end with the same complete folder (the one that loses the
rename race discards its copy).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> target = root / "rooms-v1-seed0-abcd1234"
>>> def build(folder):
...     (folder / "a.txt").write_text("hello")
>>> build_once(target, build, params={"n": 1}) == target, (target / "a.txt").read_text()
(True, 'hello')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from vision.errors import DataError

DONE_FILE = "DONE.json"


def cache_root() -> Path:
    """``$SPARSEVISION_CACHE`` or ``~/.cache/sparsevision``."""
    env = os.environ.get("SPARSEVISION_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparsevision"


def params_hash(params: dict[str, Any]) -> str:
    """First 8 hex digits of the SHA-256 of the canonical JSON of ``params``.

    Canonical = sorted keys, no spaces, tuples written as lists, so ``{"a": (1, 2)}`` and
    ``{"a": [1, 2]}`` name the same folder.

    >>> params_hash({"b": 2, "a": [1, 2]}) == params_hash({"a": (1, 2), "b": 2})
    True
    """
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def dataset_dir(task: str, generator: str, version: int, seed: int, params: dict[str, Any]) -> Path:
    """``<cache_root>/synthetic/<task>/<generator>-v<version>-seed<seed>-<params sha8>``.

    >>> dataset_dir("pointcloud", "rooms", 1, 0, {"n": 3}).name
    'rooms-v1-seed0-215ddd55'
    """
    name = f"{generator}-v{int(version)}-seed{int(seed)}-{params_hash(params)}"
    return cache_root() / "synthetic" / task / name


def is_complete(target_dir: Path) -> bool:
    """True when ``target_dir`` holds a finished build (its ``DONE.json``)."""
    return (Path(target_dir) / DONE_FILE).is_file()


def build_once(target_dir: str | os.PathLike, build_fn: Callable[[Path], Any],
               params: Optional[dict[str, Any]] = None) -> Path:
    """Build ``target_dir`` with ``build_fn(temp_dir)`` unless it is already complete.

    Args:
        target_dir: the final folder (usually from :func:`dataset_dir`).
        build_fn: writes the dataset into the empty folder it is given; may raise.
        params: recorded in ``DONE.json`` so a folder says what made it.

    Returns:
        ``target_dir`` as a Path, complete.

    Raises:
        DataError: ``target_dir`` exists but has no ``DONE.json`` (not made by this function, or
            damaged by hand); it is left alone for the user to delete.
    """
    target = Path(target_dir)
    if is_complete(target):
        return target
    if target.exists():
        raise DataError(target, f"cache folder exists but has no {DONE_FILE}; delete it to rebuild")
    target.parent.mkdir(parents=True, exist_ok=True)
    # unique even for two builds in one process (threads); the pid tells whose leftover a crash left
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=target.parent))
    try:
        build_fn(temp)
        done = {"params": params or {}, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (temp / DONE_FILE).write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(temp, target)  # atomic on one filesystem: the folder appears complete or not at all
        except OSError:
            if not is_complete(target):  # not a lost race but a real failure
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # no-op after a successful rename
    return target
