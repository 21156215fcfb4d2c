"""The sparse-label engine's training strategies, as reusable pieces.

- :class:`EMATeacher` - mean teacher (Tarvainen & Valpola 2017).
- :class:`DualStudent` - two students with cross pseudo-labels and feature distillation (EV-WSSS,
  Cho et al. 2024).
- :func:`select_confident_per_class` and the precision helpers - pseudo-label selection for offline
  self-training (SQN-style top fraction, per class).
- :class:`LabelledScoreCalibration` - pseudo-box / mining score thresholds that follow the teacher's
  scores on the labelled boxes (for detectors trained from scratch, which never reach SparseDet's 0.8 / 0.9).
- :class:`PseudoLabelWriter` / :func:`load_predictions` - distributed prediction for self-training rounds.
- :class:`ExactResume` - a resumed run ends with the weights of an uninterrupted one (training-step
  randomness from ``(seed, epoch, batch)``, loader position restored).
"""

from vision.engine.dual_student import DualStudent, confident_targets
from vision.engine.ema_teacher import EMATeacher
from vision.engine.pseudo_selection import (
    pseudo_label_precision,
    pseudo_label_precision_per_class,
    select_confident_per_class,
)
from vision.engine.score_calibration import LabelledScoreCalibration

__all__ = [
    "DualStudent",
    "EMATeacher",
    "LabelledScoreCalibration",
    "PseudoLabelWriter",
    "ExactResume",
    "confident_targets",
    "load_predictions",
    "pseudo_label_precision",
    "pseudo_label_precision_per_class",
    "select_confident_per_class",
]


def __getattr__(name: str):
    # these import lightning (seconds to load); only pay for it when they are used
    if name in ("PseudoLabelWriter", "load_predictions"):
        from vision.engine import prediction_writer

        return getattr(prediction_writer, name)
    if name == "ExactResume":
        from vision.engine.exact_resume import ExactResume

        return ExactResume
    raise AttributeError(f"module 'vision.engine' has no attribute {name!r}")
