"""Voxel grid, event histogram and time surface against direct per-event loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import datamodules.transforms.event_representations as representations
from datamodules.transforms.event_representations import event_histogram, time_surface, voxel_grid

H, W = 6, 8


def random_events(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(1_600_000_000_000_000, 1_600_000_000_050_000, n))  # epoch µs, 50 ms
    return (rng.integers(0, W, n).astype(np.uint16), rng.integers(0, H, n).astype(np.uint16), t,
            rng.integers(0, 2, n).astype(np.int8))


# --- reference loops: one event at a time, straight from the definitions ---------------------------

def voxel_grid_loop(x, y, t, p, num_bins, t_range=None):
    grid = np.zeros((num_bins, H, W))
    t0, t1 = (int(t[0]), int(t[-1])) if t_range is None else t_range
    for xi, yi, ti, pi in zip(x, y, t, p):
        t_star = (num_bins - 1) * (int(ti) - t0) / (t1 - t0)
        for b in range(num_bins):
            grid[b, yi, xi] += (1 if pi > 0 else -1) * max(0.0, 1 - abs(b - t_star))
    return grid


def histogram_loop(x, y, p):
    counts = np.zeros((2, H, W))
    for xi, yi, pi in zip(x, y, p):
        counts[1 if pi > 0 else 0, yi, xi] += 1
    return counts


def time_surface_loop(x, y, t, p, tau, t_ref):
    last = {}
    for xi, yi, ti, pi in zip(x, y, t, p):
        if ti <= t_ref:
            key = (1 if pi > 0 else 0, int(yi), int(xi))
            last[key] = max(last.get(key, -math.inf), int(ti))
    surface = np.zeros((2, H, W))
    for (c, yi, xi), t_last in last.items():
        surface[c, yi, xi] = math.exp(-(t_ref - t_last) / tau)
    return surface


# --- voxel grid -----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_bins", [1, 2, 5])
def test_voxel_grid_equals_the_loop(num_bins):
    x, y, t, p = random_events()
    grid = voxel_grid(x, y, t, p, num_bins, height=H, width=W)
    assert grid.shape == (num_bins, H, W) and grid.dtype == torch.float32
    np.testing.assert_allclose(grid.numpy(), voxel_grid_loop(x, y, t, p, num_bins), atol=1e-5)


def test_voxel_grid_bin_boundaries_and_midpoints():
    # t* = 4 * (t - 0) / 400 = t / 100: t = 0 -> bin 0; t = 150 -> half in bins 1 and 2; t = 400 -> bin 4
    grid = voxel_grid([0, 1, 2], [0, 0, 0], [0, 150, 400], [1, 0, 1], 5, height=1, width=3)
    expected = np.zeros((5, 1, 3))
    expected[0, 0, 0] = 1.0
    expected[1, 0, 1] = expected[2, 0, 1] = -0.5  # OFF event: weight -1 split evenly
    expected[4, 0, 2] = 1.0
    np.testing.assert_allclose(grid.numpy(), expected, atol=1e-6)


def test_voxel_grid_with_a_fixed_time_range_and_torch_minus_one_polarity():
    # t_range (0, 1000) with 3 bins: t* = 2 * 500 / 1000 = 1 -> all in bin 1
    grid = voxel_grid(torch.tensor([2]), torch.tensor([1]), torch.tensor([500]), torch.tensor([-1]), 3,
                      height=2, width=3, t_range=(0, 1000))
    assert grid[1, 1, 2] == -1 and grid.abs().sum() == 1
    # events half a bin outside t_range (100, 500): t* = -0.5 and 4.5 keep half their weight in the edge bins
    edges = voxel_grid([0, 1], [0, 0], [50, 550], [1, 1], 5, height=1, width=2, t_range=(100, 500))
    assert edges[0, 0, 0] == pytest.approx(0.5) and edges[4, 0, 1] == pytest.approx(0.5)
    assert edges.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("num_bins", [1, 2, 5])
def test_voxel_grid_with_events_outside_t_range_equals_the_loop(num_bins):
    # t_range covers the middle fifth of the events' 50 ms: most events lie far outside it
    x, y, t, p = random_events()
    t_range = (int(t[0]) + 20_000, int(t[0]) + 30_000)
    grid = voxel_grid(x, y, t, p, num_bins, height=H, width=W, t_range=t_range)
    np.testing.assert_allclose(grid.numpy(), voxel_grid_loop(x, y, t, p, num_bins, t_range), atol=1e-5)


def test_voxel_grid_across_cpu_chunks_equals_the_loop(monkeypatch):
    monkeypatch.setattr(representations, "CPU_CHUNK_EVENTS", 7)  # 300 events: 43 chunks, the last one short
    x, y, t, p = random_events()
    np.testing.assert_allclose(voxel_grid(x, y, t, p, 4, height=H, width=W).numpy(),
                               voxel_grid_loop(x, y, t, p, 4), atol=1e-5)


def test_voxel_grid_reads_a_structured_event_array_and_minus_one_polarity():
    # tonic's layout: the fields of a structured array are strided views; polarity in {-1, 1}
    x, y, t, p = random_events()
    events = np.zeros(len(t), dtype=[("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "<i1")])
    events["x"], events["y"], events["t"], events["p"] = x, y, t, np.where(p > 0, 1, -1)
    grid = voxel_grid(events["x"], events["y"], events["t"], events["p"], 3, height=H, width=W)
    np.testing.assert_allclose(grid.numpy(), voxel_grid_loop(x, y, t, p, 3), atol=1e-5)


def test_chunked_cpu_path_equals_the_vectorised_path():
    x, y, t, p = random_events(seed=3)
    for t_range in (None, (int(t[0]) + 10_000, int(t[0]) + 40_000)):
        vectorised = representations._voxel_grid_vectorised(x, y, t, p, 5, H, W, t_range, torch.device("cpu"))
        torch.testing.assert_close(voxel_grid(x, y, t, p, 5, height=H, width=W, t_range=t_range), vectorised,
                                   atol=1e-5, rtol=0)


def test_voxel_grid_normalize_standardises_nonzero_cells():
    # two ON events in one cell (value 2) and one in another (value 1): mean 1.5, unbiased std 0.7071
    grid = voxel_grid([0, 0, 1], [0, 0, 0], [5, 5, 5], [1, 1, 1], 1, height=1, width=3, normalize=True)
    np.testing.assert_allclose(grid.numpy().ravel(), [0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5), 0.0],
                               atol=1e-6)


def test_empty_input_gives_zeros():
    empty = np.zeros(0, dtype=np.int64)
    assert voxel_grid(empty, empty, empty, empty, 3, height=H, width=W).abs().sum() == 0
    assert event_histogram(empty, empty, empty, H, W).shape == (2, H, W)
    assert time_surface(empty, empty, empty, empty, H, W, tau_us=1000).abs().sum() == 0


def test_callers_arrays_are_not_modified():
    x, y, t, p = random_events(50)
    copies = [a.copy() for a in (x, y, t, p)]
    tensors = [torch.as_tensor(a.astype(np.int64)) for a in (x, y, t, p)]
    tensor_copies = [a.clone() for a in tensors]
    voxel_grid(x, y, t, p, 4, height=H, width=W, normalize=True)
    voxel_grid(*tensors, 4, height=H, width=W, normalize=True)
    time_surface(*tensors, H, W, tau_us=1e4)
    event_histogram(tensors[0], tensors[1], tensors[3], H, W)
    for original, copy in zip((x, y, t, p), copies):
        np.testing.assert_array_equal(original, copy)
    for original, copy in zip(tensors, tensor_copies):
        assert torch.equal(original, copy)


def test_coordinates_outside_the_image_raise():
    with pytest.raises(ValueError, match="outside the 8x6 image"):
        voxel_grid([8], [0], [0], [1], 2, height=H, width=W)


# --- histogram and time surface -------------------------------------------------------------------

def test_event_histogram_equals_the_loop():
    x, y, _, p = random_events()
    counts = event_histogram(x, y, p, H, W)
    np.testing.assert_array_equal(counts.numpy(), histogram_loop(x, y, p))
    assert counts.sum() == 300


def test_time_surface_equals_the_loop_and_ignores_later_events():
    x, y, t, p = random_events()
    t_ref = int(t[200])  # events after t_ref do not count
    surface = time_surface(x, y, t, p, H, W, tau_us=10_000, t_ref=t_ref)
    np.testing.assert_allclose(surface.numpy(), time_surface_loop(x, y, t, p, 10_000, t_ref), atol=1e-5)


def test_time_surface_hand_values():
    # pixel (0, 0): ON at t=0 and t=500 -> exp(-(1000 - 500) / 1000); pixel (1, 0): OFF at t=1000 -> 1
    surface = time_surface([0, 0, 1], [0, 0, 0], [0, 500, 1000], [1, 1, 0], 1, 2, tau_us=1000)
    assert surface[1, 0, 0].item() == pytest.approx(math.exp(-0.5))
    assert surface[0, 0, 1].item() == 1.0 and surface[0, 0, 0] == 0 and surface[1, 0, 1] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    x, y, t, p = random_events()
    cpu = voxel_grid(x, y, t, p, 5, height=H, width=W)
    gpu = voxel_grid(x, y, t, p, 5, height=H, width=W, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    torch.testing.assert_close(time_surface(x, y, t, p, H, W, 1e4, device="cuda").cpu(),
                               time_surface(x, y, t, p, H, W, 1e4), atol=1e-6, rtol=0)
