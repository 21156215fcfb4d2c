"""Write output files so that nothing is lost: atomically, and never over an existing file by accident.

Every writer in the project (converters, weak-label files, predictions, pictures) goes through
these helpers:

* :func:`refuse_existing` raises :class:`OutputExistsError` when the output is already there and
  ``overwrite`` is False, so a second run never replaces the first one's results silently;
* :func:`atomic_write` / :func:`atomic_path` write into a temporary file in the same folder and
  :func:`os.replace` it onto the final name only when the write completed. An interrupted run
  (exception, Ctrl-C, killed process) never leaves a half-written file under the final name; the
  temporary name starts with ``.`` and ends in ``.tmp-XXXX<suffix>`` so folder scans skip it.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "labels.txt"
>>> atomic_write(out, lambda f: f.write(b"1 2 3\\n")).read_text()
'1 2 3\\n'
>>> try:
...     refuse_existing(out, overwrite=False)
... except FileExistsError as err:
...     print(err.reason)
already exists; pass --overwrite (overwrite=True in Python) to replace it
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from vision.errors import DataError, PathLike

__all__ = ["OutputExistsError", "atomic_path", "atomic_write", "atomic_write_text", "refuse_existing"]


class OutputExistsError(DataError, FileExistsError):
    """An output file or folder exists and ``overwrite`` was not given.

    Both a :class:`FileExistsError` (what it is) and a :class:`~vision.errors.DataError` (so the
    message starts with the path and command-line tools report it like any other bad input).
    """

    def __init__(self, path: PathLike, reason: str = "already exists; pass --overwrite (overwrite=True in "
                                                         "Python) to replace it") -> None:
        # errno/filename stay unset: OSError.__str__ would replace the "path: reason" message
        super().__init__(path, reason)


def refuse_existing(path: PathLike, overwrite: bool) -> Path:
    """``path`` as a Path; :class:`OutputExistsError` when it exists and ``overwrite`` is False."""
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(path)
    return path


def _temporary_beside(path: Path) -> Path:
    """Create an empty hidden temporary file in ``path``'s folder; it keeps ``path``'s suffix.

    The suffix matters for libraries that choose the format by extension (laspy: ``.laz``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=path.suffix)
    os.close(handle)
    return Path(name)


@contextmanager
def atomic_path(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    For libraries that write by file name (h5py, laspy, matplotlib). Raises
    :class:`OutputExistsError` first when ``path`` exists and ``overwrite`` is False; when the block
    raises, the temporary file is removed and ``path`` is untouched.
    """
    path = refuse_existing(path, overwrite)
    temp = _temporary_beside(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a binary file beside ``path``, then rename it onto ``path``; returns ``path``.

    Replaces an existing ``path`` (call :func:`refuse_existing` first to protect it). The data is
    flushed to disk before the rename, so after a crash ``path`` holds either the old or the new
    complete file.
    """
    path = Path(path)
    temp = _temporary_beside(path)
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
