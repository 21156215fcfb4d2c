"""``on_bad_sample: raise | skip``: what a DataModule does with a sample whose files are bad.

``raise`` (the default): the first :class:`~vision.errors.DataError` stops the run, naming the file.

``skip``: the DataModule validates every sample when it builds a split (at ``setup``, before any
training step), drops each one that raises DataError, logs it (``WARNING``: the file and the reason)
and keeps it in :attr:`BadSamples.skipped` as ``(path, reason)``; :meth:`BadSamples.report` then logs
the count to the trainer's loggers as ``data/skipped_samples`` and one summary line. Use it for large
real datasets with a few broken files; the count in the run's logs says how much data was left out.

>>> import logging
>>> bad = BadSamples("skip", logging.getLogger("example"))
>>> def read_broken():
...     raise DataError("scene_7.ply", "NaN coordinates")
>>> bad.attempt(read_broken) is None, bad.skipped
(True, [('scene_7.ply', 'NaN coordinates')])
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Optional, TypeVar

from vision.errors import DataError

OnBadSample = Literal["raise", "skip"]
T = TypeVar("T")
#: Name of the count in the trainer's loggers.
SKIPPED_METRIC = "data/skipped_samples"


class BadSamples:
    """The ``on_bad_sample`` policy of one DataModule and the samples it skipped.

    Args:
        policy: ``"raise"`` or ``"skip"``.
        logger: where each skipped sample is logged (the DataModule's module logger).
    """

    def __init__(self, policy: OnBadSample, logger: logging.Logger) -> None:
        if policy not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {policy!r}")
        self.policy, self.logger = policy, logger
        self.skipped: list[tuple[str, str]] = []
        self._reported = 0

    @property
    def skipping(self) -> bool:
        return self.policy == "skip"

    def attempt(self, read: Callable[[], T]) -> Optional[T]:
        """``read()``; under ``skip`` a DataError is recorded and None returned instead of raised."""
        try:
            return read()
        except DataError as err:
            if not self.skipping:
                raise
            self.record(err)
            return None

    def record(self, err: DataError) -> None:
        """Count and log one skipped sample (once, however often its file is read)."""
        entry = (err.path, err.reason)
        if entry not in self.skipped:
            self.skipped.append(entry)
            self.logger.warning("on_bad_sample=skip: skipping %s: %s", err.path, err.reason)

    def summary(self) -> str:
        """One line: how many samples were skipped and the first few files."""
        if not self.skipped:
            return "on_bad_sample=skip: no bad samples"
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.skipped[:3])
        more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        return f"on_bad_sample=skip: skipped {len(self.skipped)} bad sample(s): {shown}{more}"

    def report(self, trainer=None) -> None:
        """Log the count to ``trainer``'s loggers and the summary line, when new samples were skipped."""
        if not self.skipping or len(self.skipped) == self._reported:
            return
        self._reported = len(self.skipped)
        self.logger.warning(self.summary())
        for run_logger in getattr(trainer, "loggers", None) or []:
            run_logger.log_metrics({SKIPPED_METRIC: float(len(self.skipped))}, step=trainer.global_step)
