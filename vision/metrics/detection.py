"""COCO mAP that syncs across processes holding different numbers of images.

torchmetrics' ``MeanAveragePrecision`` keeps one tensor per image in list states with no reduction,
and its default sync runs one ``all_gather`` *per list element*: when ranks scored different numbers
of images (what a non-padding evaluation sampler gives, see ``datamodules/distributed.py``), the
ranks issue different numbers of collectives and hang or fail ("Received data size doesn't match",
torchmetrics issues #626 and #3199). Here every state list is gathered with one
``all_gather_object`` per state, which allows any length on any rank; the rest is torchmetrics'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.distributed as dist
from lightning_utilities.core.apply_func import apply_to_collection
from torchmetrics.detection import MeanAveragePrecision as _TorchmetricsMeanAveragePrecision


class MeanAveragePrecision(_TorchmetricsMeanAveragePrecision):
    """``torchmetrics.detection.MeanAveragePrecision`` (same arguments) with an uneven-rank-safe sync.

    After a sync, the images of rank 0 come first, then those of rank 1, and so on; COCO evaluation
    does not depend on the order of images.
    """

    def _sync_dist(self, dist_sync_fn: Optional[Callable] = None, process_group: Optional[Any] = None) -> None:
        group = process_group or self.process_group
        # pickled on CPU so that any backend (gloo, nccl) can carry them; moved back afterwards
        local = {attr: apply_to_collection(getattr(self, attr), torch.Tensor, lambda t: t.detach().cpu())
                 for attr in self._reductions}
        gathered: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, local, group=group)
        for attr in self._reductions:
            merged = [item for part in gathered for item in part[attr]]
            setattr(self, attr, apply_to_collection(merged, torch.Tensor, lambda t: t.to(self.device)))
