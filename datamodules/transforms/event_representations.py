"""Dense tensors from event streams: voxel grid, per-polarity histogram, time surface.

All three are vectorised torch (scatter-adds on flat pixel indices), run on any device, and accept
numpy arrays or tensors for ``x, y, t, p`` (``(N,)`` each; ``t`` in µs, ``p`` in ``{0, 1}`` or
``{-1, 1}``). They never modify the caller's arrays. Output is float32 on ``device`` (default: the
device of the first tensor input, else CPU). Coordinates outside ``width x height`` raise
ValueError instead of landing silently in a neighbouring pixel.

Hand-written rather than taken from tonic because tonic is numpy-only (no GPU) and, for voxel
grids, normalises time by ``num_bins`` instead of ``num_bins - 1`` and flips the caller's polarity
array in place; the definitions here follow the papers named below.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def _device_of(arrays, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    tensors = [a for a in arrays if isinstance(a, torch.Tensor)]
    return tensors[0].device if tensors else torch.device("cpu")


def _tensor(values: ArrayLike, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D tensor of ``dtype`` on ``device``; may share memory with the input, which is never written."""
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).to(device=device, dtype=dtype)
    np_dtype = np.int64 if dtype == torch.int64 else np.float64
    return torch.as_tensor(np.asarray(values).reshape(-1).astype(np_dtype, copy=False), device=device)


def _pixel_index(x: torch.Tensor, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N,)`` flat index ``y * width + x``; ValueError when a coordinate is outside the image."""
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= width or int(y.min()) < 0 or int(y.max()) >= height):
        raise ValueError(f"event coordinates outside the {width}x{height} image "
                         f"(x in [{int(x.min())}, {int(x.max())}], y in [{int(y.min())}, {int(y.max())}])")
    return y * width + x


def _inputs(x, y, p, height, width, device, t=None):
    device = _device_of((x, y, t, p), device)
    xt, yt = _tensor(x, torch.int64, device), _tensor(y, torch.int64, device)
    positive = _tensor(p, torch.int64, device) > 0
    tt = _tensor(t, torch.int64, device) if t is not None else None
    lengths = {xt.numel(), yt.numel(), positive.numel()} | ({tt.numel()} if tt is not None else set())
    if len(lengths) != 1:
        raise ValueError(f"x, y, t, p have different lengths {sorted(lengths)}")
    return _pixel_index(xt, yt, height, width), tt, positive, device


def voxel_grid(x: ArrayLike, y: ArrayLike, t: ArrayLike, p: ArrayLike, num_bins: int = 5, *,
               height: int, width: int, normalize: bool = False,
               t_range: Optional[tuple[int, int]] = None, device=None) -> torch.Tensor:
    """Events -> ``(num_bins, H, W)`` float32 voxel grid with bilinear interpolation in time.

    Zhu et al., "Unsupervised Event-based Learning of Optical Flow, Depth, and Egomotion" (CVPR 2019),
    eq. 1: with ``t* = (num_bins - 1) * (t - t0) / (t1 - t0)``, each event adds
    ``s * max(0, 1 - |b - t*|)`` to bin ``b`` at its pixel, ``s = +1`` for ON and ``-1`` for OFF.
    ``(t0, t1)`` is ``t_range`` when given (so that windows of a fixed length share one time axis),
    else the first and last event times; a zero span puts every event in bin 0.

    ``normalize=True`` standardises the non-zero cells (mean 0, unbiased std 1; zeros stay zero), the
    practice of E-RAFT and ESS; with one non-zero cell or zero std only the mean is subtracted.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    flat, tt, positive, device = _inputs(x, y, p, height, width, device, t=t)
    grid = torch.zeros(num_bins * height * width, dtype=torch.float32, device=device)
    if flat.numel() == 0:
        return grid.view(num_bins, height, width)
    t0, t1 = (int(tt.min()), int(tt.max())) if t_range is None else (int(t_range[0]), int(t_range[1]))
    if t1 > t0:  # subtract t0 in int64 first: epoch µs do not fit float32, offsets within a window do
        t_star = (tt - t0).to(torch.float32) * ((num_bins - 1) / (t1 - t0))
    else:
        t_star = torch.zeros(flat.shape, dtype=torch.float32, device=device)
    left = torch.floor(t_star)
    frac = t_star - left
    left = left.to(torch.int64)
    sign = positive.to(torch.float32) * 2 - 1
    right_weight = sign * frac
    for bins, weight in ((left, sign - right_weight), (left + 1, right_weight)):
        # clamp + zero weight instead of boolean masking: no nonzero() pass, same result
        inside = (bins >= 0) & (bins < num_bins)
        index = bins.clamp(0, num_bins - 1) * (height * width) + flat
        grid.index_add_(0, index, torch.where(inside, weight, torch.zeros_like(weight)))
    grid = grid.view(num_bins, height, width)
    return _standardise_nonzero(grid) if normalize else grid


def _standardise_nonzero(grid: torch.Tensor) -> torch.Tensor:
    nonzero = grid != 0
    count = int(nonzero.sum())
    if count == 0:
        return grid
    values = grid[nonzero]
    mean = values.mean()
    std = values.std() if count > 1 else torch.zeros((), device=grid.device)
    scaled = (grid - mean) / std if float(std) > 0 else grid - mean
    return torch.where(nonzero, scaled, grid)


def event_histogram(x: ArrayLike, y: ArrayLike, p: ArrayLike, height: int, width: int,
                    device=None) -> torch.Tensor:
    """``(2, H, W)`` float32 event counts per pixel: channel 0 = OFF (p <= 0), channel 1 = ON (p > 0).

    The two-channel histogram of Maqueda et al., "Event-based Vision meets Deep Learning on
    Steering Prediction for Self-driving Cars" (CVPR 2018).
    """
    flat, _, positive, device = _inputs(x, y, p, height, width, device)
    index = positive.to(torch.int64) * (height * width) + flat
    counts = torch.bincount(index, minlength=2 * height * width)
    return counts.to(torch.float32).view(2, height, width)


def time_surface(x: ArrayLike, y: ArrayLike, t: ArrayLike, p: ArrayLike, height: int, width: int,
                 tau_us: float, t_ref: Optional[int] = None, device=None) -> torch.Tensor:
    """``(2, H, W)`` float32 exponentially decaying time surface per polarity (OFF, ON).

    Lagorce et al., "HOTS: A Hierarchy of Event-Based Time-Surfaces" (TPAMI 2017), taken over the
    whole frame: ``exp(-(t_ref - t_last) / tau_us)`` where ``t_last`` is the latest event of that
    polarity at the pixel, 0 where the pixel has none. ``t_ref`` defaults to the last event time;
    events after ``t_ref`` are ignored (the surface as seen at ``t_ref``).
    """
    if tau_us <= 0:
        raise ValueError(f"tau_us must be positive, got {tau_us}")
    flat, tt, positive, device = _inputs(x, y, p, height, width, device, t=t)
    if flat.numel() == 0:
        return torch.zeros(2, height, width, dtype=torch.float32, device=device)
    t_ref = int(tt.max()) if t_ref is None else int(t_ref)
    keep = tt <= t_ref
    index = (positive.to(torch.int64) * (height * width) + flat)[keep]
    never = torch.iinfo(torch.int64).min
    last = torch.full((2 * height * width,), never, dtype=torch.int64, device=device)
    last = last.scatter_reduce(0, index, tt[keep], reduce="amax", include_self=True)
    seen = last != never
    age = torch.where(seen, t_ref - last, torch.zeros_like(last)).to(torch.float64)
    surface = torch.where(seen, torch.exp(-age / float(tau_us)), torch.zeros_like(age))
    return surface.to(torch.float32).view(2, height, width)
