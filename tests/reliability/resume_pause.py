"""A callback that parks a ``sparsevision fit`` process at a known step, so a test can SIGKILL it there.

Used by ``test_resume.py`` through an extra ``--config`` (the subprocess gets this folder on
``PYTHONPATH``)::

    trainer:
      callbacks:
        - class_path: resume_pause.PauseAtStep
          init_args: {step: 6, flag_file: /tmp/.../paused}
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseAtStep(Callback):
    """Before the batch that would make optimizer step ``step + 1``, write ``flag_file`` and wait to be killed.

    The checkpoints of step ``step`` are already on disk then (ModelCheckpoint writes them at the end
    of the previous batch). Gives up after ``timeout_s`` so that a broken test never hangs.
    """

    def __init__(self, step: int, flag_file: str, timeout_s: float = 120.0) -> None:
        self.step, self.flag_file, self.timeout_s = int(step), flag_file, float(timeout_s)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        Path(self.flag_file).write_text(f"{trainer.current_epoch} {batch_idx}\n")
        time.sleep(self.timeout_s)
        raise RuntimeError(f"PauseAtStep: not killed within {self.timeout_s} s")
