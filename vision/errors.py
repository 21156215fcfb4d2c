"""The one exception for bad input.

Every reader, converter and weak-label loader raises :class:`DataError` for input it cannot use,
naming the file and the problem, so that a user sees ``path: reason`` instead of a traceback from
deep inside numpy or torch.
"""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """Bad input data: a file that is missing, malformed or inconsistent.

    Args:
        path: the file (or folder) at fault; it starts the message.
        reason: what is wrong with it, in words a user can act on.

    >>> err = DataError("scene.ply", "point count 10 != label count 9")
    >>> str(err)
    'scene.ply: point count 10 != label count 9'
    >>> err.path, err.reason
    ('scene.ply', 'point count 10 != label count 9')
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep pickling (dataloader workers) working with two arguments
        return (type(self), (self.path, self.reason))
