"""Seeded randomness for weak labels: the same labels on any machine, in any order, on any worker.

Every random draw that makes weak labels comes from a ``numpy.random.Generator(PCG64)`` seeded
from ``(seed, sample_id)`` only (CONVENTIONS.md), never from a global or per-process state, so the
labels of one sample do not depend on which other samples were drawn before it.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_key(sample_id: str) -> int:
    """A stable 64-bit integer for a sample id (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(str(sample_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """The generator for one sample's weak labels.

    >>> a = sample_rng(0, "room_1").integers(0, 1000, 3)
    >>> b = sample_rng(0, "room_1").integers(0, 1000, 3)
    >>> bool((a == b).all())
    True
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), sample_key(sample_id)])))
