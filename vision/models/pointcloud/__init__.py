"""Point-cloud models: RandLA-Net (encoder, encoder-decoder) and SQN's point-query head.

Batches come from :func:`build_pyramid` (in dataloader workers) and :func:`collate_pyramids`.
"""

from vision.models.pointcloud.pyramid import build_pyramid, collate_pyramids
from vision.models.pointcloud.randla import RandLAEncoder, RandLANet
from vision.models.pointcloud.sqn_head import SQN, SQNQueryHead

__all__ = ["SQN", "RandLAEncoder", "RandLANet", "SQNQueryHead", "build_pyramid", "collate_pyramids"]
