"""Projection head for prototype exchange between two students (EV-WSSS).

EV-WSSS (Cho et al., ECCV 2024, "Finding Meaning in Points: Weakly Supervised Semantic Segmentation for
Event Cameras") trains two students, on forward and on longer reversed event streams, and lets each one
learn from the other's class prototypes: a student's features are mapped by a small projection head
into the other student's prototype space, where the prototype contrastive loss compares them. The head
is the usual 1x1-convolution MLP (as SimCLR's projection head, Chen et al., ICML 2020, applied per
pixel), with an L2-normalised output so that dot products are cosine similarities.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError

HEAD_NORMS = ("batch", "group", "none")


class ProjectionHead(nn.Module):
    """Per-pixel MLP ``D -> hidden -> out_dim``, output L2-normalised along the channel dim.

    ``features: (B, D, H, W)`` or ``(B, D, N)`` -> ``(B, out_dim, H, W)`` or ``(B, out_dim, N)``, each
    pixel a unit vector (an all-zero projection stays zero instead of becoming NaN).

    Args:
        in_dim: ``D``, the student's ``feature_dim``.
        out_dim: dimension of the prototype space.
        hidden: width of the hidden layer.
        norm: normalisation after the hidden layer: ``"batch"``, ``"group"`` (batch size 1) or ``"none"``.

    >>> import torch
    >>> head = ProjectionHead(16, out_dim=8).eval()
    >>> out = head(torch.randn(2, 16, 5, 7))
    >>> tuple(out.shape), bool(torch.allclose(out.norm(dim=1), torch.ones(2, 5, 7)))
    ((2, 8, 5, 7), True)
    """

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int = 128, norm: str = "batch") -> None:
        super().__init__()
        if min(in_dim, out_dim, hidden) < 1:
            raise DataError(type(self).__name__, f"in_dim, out_dim and hidden must be >= 1, got "
                                                 f"{in_dim}, {out_dim}, {hidden}")
        if norm not in HEAD_NORMS:
            raise DataError(type(self).__name__, f"norm must be one of {HEAD_NORMS}, got {norm!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers = {"batch": nn.BatchNorm2d(hidden), "group": nn.GroupNorm(1, hidden), "none": nn.Identity()}
        self.mlp = nn.Sequential(nn.Conv2d(in_dim, hidden, 1, bias=norm == "none"), layers[norm],
                                 nn.ReLU(inplace=True), nn.Conv2d(hidden, out_dim, 1))

    def forward(self, features: Tensor) -> Tensor:
        """``features: (B, D, H, W) | (B, D, N)`` -> unit vectors ``(B, out_dim, H, W) | (B, out_dim, N)``."""
        if not isinstance(features, Tensor) or features.ndim not in (3, 4) or features.shape[1] != self.in_dim:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise DataError("<features>", f"expected (B, {self.in_dim}, H, W) or (B, {self.in_dim}, N), got {shape}")
        flat = features.ndim == 3
        projected = self.mlp(features.unsqueeze(-1) if flat else features)
        projected = F.normalize(projected, dim=1)
        return projected.squeeze(-1) if flat else projected
