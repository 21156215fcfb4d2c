"""Event-camera segmentation models.

Every model maps ``voxel: (B, T_bins, H, W)`` to ``{"logits": (B, C, H, W), "features": (B, D, H, W)}``
and has ``feature_dim = D``; any ``H, W`` work (padded internally, cropped back).
"""

from vision.models.events.convlstm import ConvLSTMCell, RecurrentEventUNet
from vision.models.events.heads import ProjectionHead
from vision.models.events.unet import EventUNet

__all__ = ["ConvLSTMCell", "EventUNet", "ProjectionHead", "RecurrentEventUNet"]
