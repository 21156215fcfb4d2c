"""The sparse-label engine's data side: label types, weak-label protocols and the weak-label file.

>>> import numpy as np
>>> from vision.labels import DenseLabels, Ratio, sparsify
>>> items = [("scene_a", DenseLabels(np.arange(100) % 4)), ("scene_b", DenseLabels(np.zeros(50, int)))]
>>> weak = sparsify(items, Ratio(0.1), seed=0)
>>> [len(weak[s]) for s in weak], weak.counts()["total"], weak.task
([10, 5], 15, 'pointcloud')
"""

from vision.labels.conversions import (
    boxes_to_points,
    labelled_positions,
    mask_to_points,
    points_to_mask,
    positions_to_points,
    read_scannet_indices,
)
from vision.labels.protocols import (
    PROTOCOLS,
    BoxToPoint,
    Count,
    DropBoxes,
    Full,
    KeepBoxes,
    PerClass,
    PerInstance,
    Ratio,
    WeakLabelProtocol,
    protocol_from_name,
)
from vision.labels.seeding import sample_rng
from vision.labels.types import HUMAN, IGNORE_INDEX, PSEUDO, BoxLabels, DenseLabels, PointLabels
from vision.labels.weakfile import (
    SourceHasher,
    WeakLabelSet,
    import_scannet_indices,
    source_sha256,
    sparsify,
    weak_file_paths,
)

__all__ = [
    "BoxLabels", "DenseLabels", "PointLabels", "IGNORE_INDEX", "HUMAN", "PSEUDO", "sample_rng",
    "WeakLabelProtocol", "Ratio", "Count", "PerClass", "PerInstance", "DropBoxes", "KeepBoxes", "BoxToPoint",
    "Full", "PROTOCOLS", "protocol_from_name",
    "mask_to_points", "boxes_to_points", "points_to_mask", "labelled_positions", "positions_to_points",
    "read_scannet_indices",
    "WeakLabelSet", "SourceHasher", "source_sha256", "sparsify", "import_scannet_indices", "weak_file_paths",
]
