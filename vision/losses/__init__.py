"""The sparse-label engine's learning side: one loss per file, each naming its paper.

Layout shared by every loss: class (or feature) dim = 1, i.e. ``(B, C, N)`` for points,
``(B, C, H, W)`` for pixels, or ``(N, C)`` rows; per-entry targets drop the class dim and use
:data:`vision.labels.types.IGNORE_INDEX` where unlabelled.
"""

from vision.losses.consistency import ConsistencyLoss
from vision.losses.partial_cross_entropy import PartialCrossEntropy, class_weights_from_counts
from vision.losses.prototype_contrastive import PrototypeContrastiveLoss
from vision.losses.pseudo_label import PseudoLabelLoss
from vision.losses.pseudo_positive import (
    PseudoPositiveMining,
    ignore_pseudo_positives,
    mine_pseudo_positives,
)

__all__ = [
    "ConsistencyLoss",
    "PartialCrossEntropy",
    "PrototypeContrastiveLoss",
    "PseudoLabelLoss",
    "PseudoPositiveMining",
    "class_weights_from_counts",
    "ignore_pseudo_positives",
    "mine_pseudo_positives",
]
