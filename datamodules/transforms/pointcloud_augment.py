"""Seeded point-cloud augmentations on numpy arrays: ``coords`` (N, 3), ``colors`` (N, 3).

The usual RandLA-Net / Pointcept training set: rotation about the vertical axis, anisotropic
scaling, clipped Gaussian jitter, and dropping the colours of a whole sample (so the network
cannot lean on colour alone). Every draw comes from the ``rng`` passed in, never from global
state, so an augmentation is reproducible from the dataset's seed.

Rotation and scaling act about the origin: centre a crop (subtract its seed point) first.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def rotate_z(coords: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 3) points about the z axis through the origin by ``angle`` radians (z unchanged).

    >>> rotate_z(np.array([[1.0, 0.0, 2.0]]), np.pi / 2).round(6).tolist()
    [[0.0, 1.0, 2.0]]
    """
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=coords.dtype)
    return coords @ rotation.T


def random_scale(coords: np.ndarray, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply each axis by its own factor drawn uniformly from ``[low, high]``."""
    return coords * rng.uniform(low, high, size=3).astype(coords.dtype)


def jitter(coords: np.ndarray, sigma: float, clip: float, rng: np.random.Generator) -> np.ndarray:
    """Add per-point Gaussian noise ``N(0, sigma)`` clipped to ``[-clip, clip]`` on every axis."""
    noise = np.clip(rng.normal(0.0, sigma, size=coords.shape), -clip, clip)
    return coords + noise.astype(coords.dtype)


def color_jitter(colors: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` x full range (255 for integer colours, 1 for float) and clip."""
    full = 255.0 if np.issubdtype(colors.dtype, np.integer) else 1.0
    noisy = colors.astype(np.float64) + rng.normal(0.0, sigma * full, size=colors.shape)
    noisy = np.clip(noisy, 0.0, full)
    return (np.rint(noisy) if full == 255.0 else noisy).astype(colors.dtype)


class PointCloudAugment:
    """Rotation about z, anisotropic scale, jitter, colour drop and colour jitter, in that order.

    Configurable from YAML (jsonargparse reads these type hints), e.g.::

        augment:
          class_path: datamodules.transforms.pointcloud_augment.PointCloudAugment
          init_args: {scale: [0.9, 1.1], jitter_sigma: 0.005, color_drop: 0.2}

    Args:
        rotate_z: rotate by an angle uniform in [0, 2 pi).
        scale: ``(low, high)`` range of the per-axis scale factors, or None for no scaling.
        jitter_sigma: std of the per-point noise, coordinate units (0 = off).
        jitter_clip: the noise is clipped to this magnitude per axis.
        color_drop: probability that all colours of the sample are set to zero.
        color_jitter: std of colour noise as a fraction of the colour range (0 = off).

    >>> augment = PointCloudAugment(color_drop=1.0)
    >>> xyz, rgb = augment(np.zeros((4, 3), np.float32), np.full((4, 3), 200, np.uint8),
    ...                    np.random.default_rng(0))
    >>> int(rgb.max()), xyz.dtype.name
    (0, 'float32')
    """

    def __init__(self, rotate_z: bool = True, scale: Optional[tuple[float, float]] = (0.9, 1.1),
                 jitter_sigma: float = 0.005, jitter_clip: float = 0.02, color_drop: float = 0.2,
                 color_jitter: float = 0.0) -> None:
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if jitter_sigma < 0 or jitter_clip < 0 or color_jitter < 0:
            raise ValueError("jitter_sigma, jitter_clip and color_jitter must be >= 0")
        if not 0 <= color_drop <= 1:
            raise ValueError(f"color_drop is a probability, got {color_drop}")
        self.rotate_z = rotate_z
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.jitter_sigma, self.jitter_clip = float(jitter_sigma), float(jitter_clip)
        self.color_drop, self.color_jitter = float(color_drop), float(color_jitter)

    def __call__(self, coords: np.ndarray, colors: Optional[np.ndarray],
                 rng: np.random.Generator) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Augmented copies of ``coords`` (N, 3) float and ``colors`` (N, 3) or None; dtypes kept."""
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"coords must have shape (N, 3), got {coords.shape}")
        coords = coords.astype(coords.dtype if np.issubdtype(coords.dtype, np.floating) else np.float32)
        if self.rotate_z:
            coords = rotate_z(coords, rng.uniform(0.0, 2.0 * np.pi))
        if self.scale is not None:
            coords = random_scale(coords, *self.scale, rng)
        if self.jitter_sigma > 0:
            coords = jitter(coords, self.jitter_sigma, self.jitter_clip, rng)
        if colors is None:
            return coords, None
        colors = np.asarray(colors)
        if colors.shape[0] != coords.shape[0]:
            raise ValueError(f"colors has {colors.shape[0]} rows, coords has {coords.shape[0]}")
        if rng.uniform() < self.color_drop:
            return coords, np.zeros_like(colors)
        if self.color_jitter > 0:
            colors = color_jitter(colors, self.color_jitter, rng)
        return coords, colors.copy()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rotate_z={self.rotate_z}, scale={self.scale}, "
                f"jitter_sigma={self.jitter_sigma}, jitter_clip={self.jitter_clip}, "
                f"color_drop={self.color_drop}, color_jitter={self.color_jitter})")
