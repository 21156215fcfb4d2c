"""Dense tensors from event streams: voxel grid, per-polarity histogram, time surface.

All three are scatter-adds on flat pixel indices in torch, run on any device (the voxel grid on CPU
in cache-sized chunks, the form that is fastest there), and accept numpy arrays, tensors or fields
of a structured array for ``x, y, t, p`` (``(N,)`` each; ``t`` in µs, ``p`` in ``{0, 1}`` or
``{-1, 1}``). They never modify the caller's arrays. Output is float32 on ``device`` (default: the
device of the first tensor input, else CPU). Coordinates outside ``width x height`` raise
ValueError instead of landing silently in a neighbouring pixel.

Hand-written rather than taken from tonic because tonic is numpy-only (no GPU) and, for voxel
grids, normalises time by ``num_bins`` instead of ``num_bins - 1``, flips the caller's polarity
array in place and is several times slower on CPU (``sparsevision benchmark events-voxel``); the
definitions here follow the papers named below.
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
    # ascontiguousarray: a field of a structured event array is a strided view torch cannot wrap
    return torch.as_tensor(np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=np_dtype), device=device)


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

    On CPU the events are processed in cache-sized chunks (:func:`_voxel_grid_cpu`); on other devices
    in one vectorised pass. Both equal the per-event loop of the definition (up to float32 rounding).
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    device = _device_of((x, y, t, p), device)
    if device.type == "cpu":
        grid = _voxel_grid_cpu(x, y, t, p, num_bins, height, width, t_range)
    else:
        grid = _voxel_grid_vectorised(x, y, t, p, num_bins, height, width, t_range, device)
    return _standardise_nonzero(grid) if normalize else grid


def _voxel_grid_vectorised(x, y, t, p, num_bins, height, width, t_range, device) -> torch.Tensor:
    """The voxel grid in one pass of whole-array torch ops (GPU): ``(num_bins, H, W)`` float32."""
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
    return grid.view(num_bins, height, width)


def _numpy_events(x, y, t, p, height: int, width: int):
    """``x, y, t, p`` as 1-D numpy arrays (integer dtypes kept, others -> int64), checked like :func:`_inputs`."""
    arrays = []
    for values in (x, y, t, p):
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        array = np.asarray(values).reshape(-1)
        arrays.append(array if array.dtype.kind in "iub" else array.astype(np.int64))
    x, y, t, p = arrays
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"x, y, t, p have different lengths {sorted({a.shape[0] for a in arrays})}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >= width or int(y.min()) < 0 or int(y.max()) >= height):
        raise ValueError(f"event coordinates outside the {width}x{height} image "
                         f"(x in [{int(x.min())}, {int(x.max())}], y in [{int(y.min())}, {int(y.max())}])")
    return x, y, t, p


#: Events per chunk on CPU: a chunk's temporaries (about 300 kB) stay in cache between the passes.
CPU_CHUNK_EVENTS = 16384


def _voxel_grid_cpu(x, y, t, p, num_bins, height, width, t_range) -> torch.Tensor:
    """The voxel grid on CPU, chunk by chunk: ``(num_bins, H, W)`` float32.

    Hand-written because whole-array numpy/torch (and tonic's ``ToVoxelGrid``) make a dozen passes
    over 8-byte arrays of N events, which is memory-bound; here each chunk's bin index and weights are
    computed in preallocated int32/float32 buffers that stay in cache, and two ``index_add_`` calls
    scatter them (left bin ``floor(t*)``, right bin ``floor(t*) + 1``). No event needs a mask: when all
    events lie in ``[t0, t1]`` the left bin is capped at ``num_bins - 2`` (an event at ``t* = num_bins - 1``
    then gives weight 0 to the left bin and all of it to the right one, the same result); otherwise
    ``t*`` is clipped to ``[-1, num_bins]`` and scattered into a grid padded with one bin before and two
    after the real ones, where the weights that fall outside are dropped.
    """
    x, y, t, p = _numpy_events(x, y, t, p, height, width)
    if t.shape[0] == 0:
        return torch.zeros(num_bins, height, width, dtype=torch.float32)
    t_min, t_max = int(t.min()), int(t.max())
    t0, t1 = (t_min, t_max) if t_range is None else (int(t_range[0]), int(t_range[1]))
    scale = (num_bins - 1) / (t1 - t0) if t1 > t0 else 0.0
    front = 1 if num_bins == 1 or t_min < t0 or t_max > t1 else 0  # padding bins before bin 0
    grid_bins = num_bins + 3 * front
    grid = torch.zeros(grid_bins * height * width, dtype=torch.float32)
    _scatter_bilinear(grid, x, y, t, p, t0, scale, num_bins, width, height * width, front)
    grid = grid.view(grid_bins, height, width)
    # clone: the result owns its storage, so the padding bins are neither kept alive nor saved with it
    return grid[front:front + num_bins].clone() if front else grid


def _scatter_bilinear(grid: torch.Tensor, x, y, t, p, t0: int, scale: float, num_bins: int, width: int,
                      pixels: int, front: int) -> None:
    """Add every event's two time-bin weights to the flat ``grid``, CPU_CHUNK_EVENTS events at a time."""
    count = t.shape[0]
    index_dtype = np.int32 if grid.numel() < 2**31 else np.int64
    size = min(CPU_CHUNK_EVENTS, count)
    index_buf, pixel_buf = np.empty(size, index_dtype), np.empty(size, index_dtype)
    t_buf, floor_buf, sign_buf = (np.empty(size, np.float32) for _ in range(3))
    positive_buf = np.empty(size, bool)
    right_grid = grid[pixels:]
    for start in range(0, count, CPU_CHUNK_EVENTS):
        stop = min(start + CPU_CHUNK_EVENTS, count)
        n = stop - start
        pixel, t_star, left, sign = pixel_buf[:n], t_buf[:n], floor_buf[:n], sign_buf[:n]
        index, positive = index_buf[:n], positive_buf[:n]
        np.multiply(y[start:stop], width, out=pixel, dtype=index_dtype, casting="unsafe")
        np.add(pixel, x[start:stop], out=pixel, casting="unsafe")
        # t - t0 in int64 (epoch µs do not fit float32, offsets within a window do), stored as float32
        np.subtract(t[start:stop], t0, out=t_star, dtype=np.int64, casting="unsafe")
        t_star *= np.float32(scale)
        if front:
            t_star += front
            np.clip(t_star, 0, num_bins + 1, out=t_star)
            np.floor(t_star, out=left)
        else:
            np.floor(t_star, out=left)
            np.minimum(left, num_bins - 2, out=left)
        t_star -= left  # now the fraction that goes to the right bin
        np.copyto(index, left, casting="unsafe")
        index *= pixels
        index += pixel
        np.greater(p[start:stop], 0, out=positive)
        np.copyto(sign, positive)
        sign *= 2
        sign -= 1
        t_star *= sign  # right weight s * frac
        sign -= t_star  # left weight s * (1 - frac)
        index_tensor = torch.from_numpy(index)
        grid.index_add_(0, index_tensor, torch.from_numpy(sign))
        right_grid.index_add_(0, index_tensor, torch.from_numpy(t_star))


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
