"""sparsevision.models.detection: torchvision detectors with ignore regions (SparseDet) and point-to-box MIL."""

from vision.models.detection.factory import Detector, build_backbone, build_detector
from vision.models.detection.ignore_losses import (
    IgnoreAwareFasterRCNN,
    IgnoreAwareFCOS,
    IgnoreAwareRetinaNet,
)
from vision.models.detection.point_to_box import PointToBoxMIL, mean_size_boxes, point_bags

__all__ = ["Detector", "IgnoreAwareFCOS", "IgnoreAwareFasterRCNN", "IgnoreAwareRetinaNet", "PointToBoxMIL",
           "build_backbone", "build_detector", "mean_size_boxes", "point_bags"]
