"""A U-Net for event-camera voxel grids: ``forward(voxel) -> {"logits", "features"}``.

U-Net (Ronneberger et al., MICCAI 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation") with three changes that suit small CPU models: pre-activation residual blocks (He et al.,
ECCV 2016, "Identity Mappings in Deep Residual Networks") instead of plain double convolutions,
stride-2 3x3 convolutions instead of max-pooling, and bilinear upsampling instead of transposed
convolutions (no checkerboard artefacts, no extra weights).

Input is an event voxel grid ``voxel: (B, T_bins, H, W)`` (e.g. from ``datamodules.transforms``). ``H`` and
``W`` need not be divisible by ``2 ** depth``: the grid is zero-padded at the bottom and right (zero = "no
events", so padding adds no signal) and the outputs are cropped back, so pixel ``(y, x)`` of the output is
pixel ``(y, x)`` of the input.

Output (the contract every event segmentation model follows)::

    {"logits": (B, C, H, W), "features": (B, D, H, W)}   # D = model.feature_dim = base_channels

``features`` are the last decoder block's output at full resolution, before the head's norm + ReLU, so
they are signed (useful for cosine similarities in the prototype contrastive loss and for feature
distillation).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError

NORMS = ("batch", "group")


def make_norm(norm: str, channels: int) -> nn.Module:
    """BatchNorm2d, or GroupNorm with up to 8 groups (Wu & He, ECCV 2018) for small or size-1 batches."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal convolutions for ReLU (He et al., ICCV 2015), zero biases, unit/zero norm affines."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def check_model_args(where: str, in_channels: int, num_classes: int, base_channels: int, depth: int,
                     norm: str, dropout: float) -> None:
    """Raise :class:`DataError` naming ``where`` for arguments no U-Net can be built from."""
    if min(in_channels, num_classes, base_channels, depth) < 1:
        raise DataError(where, "in_channels, num_classes, base_channels and depth must be >= 1, got "
                               f"{in_channels}, {num_classes}, {base_channels}, {depth}")
    if norm not in NORMS:
        raise DataError(where, f"norm must be one of {NORMS}, got {norm!r}")
    if not 0.0 <= dropout < 1.0:
        raise DataError(where, f"dropout must be in [0, 1), got {dropout}")


def check_voxel(voxel: Tensor, in_channels: int, where: str = "<voxel>") -> None:
    """Raise :class:`DataError` unless ``voxel`` is a non-empty floating-point ``(B, in_channels, H, W)``."""
    if not isinstance(voxel, Tensor) or voxel.ndim != 4 or voxel.shape[1] != in_channels:
        shape = tuple(voxel.shape) if isinstance(voxel, Tensor) else type(voxel).__name__
        raise DataError(where, f"expected a voxel grid (B, {in_channels}, H, W), got {shape}")
    if not voxel.is_floating_point():
        raise DataError(where, f"voxel grid must be floating point, got {voxel.dtype}")
    if voxel.shape[0] < 1 or voxel.shape[2] < 1 or voxel.shape[3] < 1:
        raise DataError(where, f"voxel grid is empty: {tuple(voxel.shape)}")


def pad_to_multiple(voxel: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``(..., H, W)`` at the bottom and right so that ``H`` and ``W`` are multiples of ``multiple``."""
    height, width = voxel.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return voxel
    return F.pad(voxel, (0, pad_w, 0, pad_h))


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x -> shortcut(x) + conv(relu(norm(conv(relu(norm(x))))))``.

    ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)``; the shortcut is a 1x1 convolution when the
    shape changes. ``dropout`` (Dropout2d, between the two convolutions as in wide ResNets) drops channels.
    """

    def __init__(self, c_in: int, c_out: int, norm: str = "batch", stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = make_norm(norm, c_out)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (nn.Identity() if c_in == c_out and stride == 1
                         else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(self.dropout(F.relu(self.norm2(y))))
        return self.shortcut(x) + y


def level_channels(base_channels: int, depth: int) -> list[int]:
    """Widths of levels ``0 .. depth``: ``base * 2 ** level`` (level 0 = full resolution)."""
    return [base_channels * 2**level for level in range(depth + 1)]


class EventUNetEncoder(nn.Module):
    """Stem + ``depth`` stages, each one stride-2 residual block.

    ``voxel: (B, T_bins, H, W)`` with ``H, W`` divisible by ``2 ** depth`` -> list of ``depth + 1`` maps,
    level ``l`` being ``(B, base * 2 ** l, H / 2 ** l, W / 2 ** l)``; the last one is the bottleneck.
    """

    def __init__(self, in_channels: int, base_channels: int = 16, depth: int = 4, norm: str = "batch",
                 dropout: float = 0.0) -> None:
        super().__init__()
        widths = level_channels(base_channels, depth)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  ResidualBlock(widths[0], widths[0], norm))
        # one block per stage: at full resolution and with doubling widths, every level costs the same FLOPs
        self.stages = nn.ModuleList(
            ResidualBlock(widths[level], widths[level + 1], norm, stride=2, dropout=dropout)
            for level in range(depth))
        self.out_channels = widths

    def forward(self, voxel: Tensor) -> list[Tensor]:
        levels = [self.stem(voxel)]
        for stage in self.stages:
            levels.append(stage(levels[-1]))
        return levels


class UpBlock(nn.Module):
    """One decoder step: ``deep (B, 2c, h, w)``, ``skip (B, c, 2h, 2w)`` -> ``(B, c, 2h, 2w)``.

    The deep map is reduced to ``c`` channels by a pre-activation 1x1 convolution *before* the bilinear
    upsampling (4x fewer pixels to convolve), concatenated with the skip, and fused by a residual block.
    """

    def __init__(self, deep_channels: int, skip_channels: int, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = make_norm(norm, deep_channels)
        self.reduce = nn.Conv2d(deep_channels, skip_channels, 1, bias=False)
        self.fuse = ResidualBlock(2 * skip_channels, skip_channels, norm, dropout=dropout)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        reduced = self.reduce(F.relu(self.norm(deep)))
        # size= instead of scale_factor=2: same result, as the input was padded to a multiple of 2 ** depth
        upsampled = F.interpolate(reduced, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([upsampled, skip], dim=1))


class EventUNetDecoder(nn.Module):
    """``depth`` :class:`UpBlock` steps from the bottleneck back to full resolution.

    ``levels``: the encoder's output, bottleneck last (it may be replaced, e.g. by a ConvLSTM state of
    ``bottleneck_channels``, default ``base * 2 ** depth``) -> ``features: (B, base_channels, H, W)`` at full
    (padded) resolution.
    """

    def __init__(self, base_channels: int = 16, depth: int = 4, norm: str = "batch", dropout: float = 0.0,
                 bottleneck_channels: Optional[int] = None) -> None:
        super().__init__()
        widths = level_channels(base_channels, depth)
        if bottleneck_channels is not None:
            widths[depth] = bottleneck_channels
        self.blocks = nn.ModuleList(UpBlock(widths[level + 1], widths[level], norm, dropout)
                                    for level in reversed(range(depth)))

    def forward(self, levels: list[Tensor]) -> Tensor:
        features = levels[-1]
        for skip, block in zip(reversed(levels[:-1]), self.blocks):
            features = block(features, skip)
        return features


class SegmentationHead(nn.Module):
    """Pre-activation classifier: ``features (B, D, H, W) -> logits (B, C, H, W)`` via norm, ReLU, 1x1 conv."""

    def __init__(self, feature_dim: int, num_classes: int, norm: str = "batch") -> None:
        super().__init__()
        self.norm = make_norm(norm, feature_dim)
        self.classifier = nn.Conv2d(feature_dim, num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier(F.relu(self.norm(features)))


class EventUNet(nn.Module):
    """U-Net segmentation of event voxel grids: ``voxel (B, T_bins, H, W) -> {"logits", "features"}``.

    Args:
        in_channels: ``T_bins`` of the voxel grid.
        num_classes: ``C``.
        base_channels: width at full resolution; level ``l`` has ``base * 2 ** l`` channels and
            ``feature_dim == base_channels``.
        depth: number of stride-2 stages; inputs are padded internally to a multiple of ``2 ** depth``.
        norm: ``"batch"`` or ``"group"`` (GroupNorm for batch size 1-2).
        dropout: Dropout2d rate inside every residual block but the stem's.

    The defaults (16, depth 4, 1.9 M parameters, 4.1 GMAC forward for B=4 at 128x160) train on CPU: forward +
    backward for B=4 at 128x160 took 0.6 s of CPU time on one thread (0.2 s with ``base_channels=8``).
    Widen ``base_channels`` for a GPU.

    >>> model = EventUNet(in_channels=5, num_classes=3, base_channels=4, depth=2).eval()
    >>> out = model(torch.zeros(1, 5, 13, 18))
    >>> tuple(out["logits"].shape), tuple(out["features"].shape), model.feature_dim
    ((1, 3, 13, 18), (1, 4, 13, 18), 4)
    """

    def __init__(self, in_channels: int = 5, num_classes: int = 2, base_channels: int = 16, depth: int = 4,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        check_model_args(type(self).__name__, in_channels, num_classes, base_channels, depth, norm, dropout)
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.feature_dim = base_channels
        self.encoder = EventUNetEncoder(in_channels, base_channels, depth, norm, dropout)
        self.decoder = EventUNetDecoder(base_channels, depth, norm, dropout)
        self.head = SegmentationHead(base_channels, num_classes, norm)
        kaiming_init(self)

    def forward(self, voxel: Tensor) -> dict[str, Tensor]:
        """``voxel: (B, T_bins, H, W)`` -> ``logits: (B, C, H, W)``, ``features: (B, D, H, W)``."""
        check_voxel(voxel, self.in_channels)
        height, width = voxel.shape[-2:]
        features = self.decoder(self.encoder(pad_to_multiple(voxel, 2**self.depth)))
        features = features[..., :height, :width]  # crop after the decoder: padded pixels never reach a loss
        return {"logits": self.head(features), "features": features}
