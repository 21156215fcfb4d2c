"""RandLA-Net's point pyramid, precomputed in dataloader workers.

RandLA-Net (Hu et al., CVPR 2020, "RandLA-Net: Efficient Semantic Segmentation of Large-Scale Point
Clouds", Sec. 3.3) downsamples by *random sampling*: each level keeps a random ``1 / ratio`` of the
previous level's points. Neighbour searches do not depend on the network's weights, so they are done
once per sample here, with numpy and :class:`scipy.spatial.cKDTree`, and the network only gathers by
index (plain torch, CPU or GPU).

For a cloud of ``N_0 = N`` points and ``L = num_layers`` levels (``N_{l+1} = N_l // sub_ratios[l]``):

============  ===========================  ====================================================
key           entries (l = 0 .. L-1)        meaning
============  ===========================  ====================================================
``xyz``       ``(N_l, 3)`` float32          level-l points; holds ``L + 1`` entries, the last one
                                            (``xyz[L]``) being the coarsest level
``neighbors`` ``(N_l, k)`` int64            k nearest level-l points of each level-l point
                                            (the point itself first)
``subsample`` ``(N_{l+1}, k)`` int64        k nearest level-l points of each level-(l+1) point:
                                            the window pooled when going down
``upsample``  ``(N_l, 1)`` int64            nearest level-(l+1) point of each level-l point:
                                            where a decoder copies features from when going up
``query``     ``(N_0, q)`` int64            only with ``query_k = q > 0``: the q nearest
                                            level-(l+1) points of each level-0 point, what the
                                            SQN head interpolates from (saves its brute-force
                                            search on every forward pass)
============  ===========================  ====================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from vision.errors import DataError

#: Keys of :func:`build_pyramid` whose values are per-level lists.
PYRAMID_KEYS = ("xyz", "neighbors", "subsample", "upsample", "query")


def _validated_coords(coords, source: str) -> np.ndarray:
    xyz = np.asarray(coords)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DataError(source, f"coordinates must have shape (N, 3), got {xyz.shape}")
    if not np.issubdtype(xyz.dtype, np.number):
        raise DataError(source, f"coordinates must be numbers, got dtype {xyz.dtype}")
    xyz = xyz.astype(np.float32, copy=False)
    if not np.isfinite(xyz).all():
        raise DataError(source, "coordinates contain NaN or infinite values")
    return xyz


def knn_indices(tree: cKDTree, queries: np.ndarray, k: int) -> np.ndarray:
    """``(M, k)`` int64 indices of the ``k`` nearest tree points of each query, nearest first.

    When the tree holds fewer than ``k`` points (deep levels of a small cloud), the farthest found
    neighbour is repeated so every row still has ``k`` entries (harmless for max and attentive pooling).
    """
    found = min(k, tree.n)
    # workers=1: the DataLoader already runs one process per worker, more threads would oversubscribe.
    _, index = tree.query(queries, k=found, workers=1)
    index = np.asarray(index, dtype=np.int64).reshape(len(queries), found)
    if found < k:
        index = np.concatenate([index, np.repeat(index[:, -1:], k - found, axis=1)], axis=1)
    return index


def build_pyramid(coords: np.ndarray, num_layers: int = 4, k: int = 16,
                  sub_ratios: Sequence[int] = (4, 4, 4, 4), rng: Optional[np.random.Generator] = None,
                  source: str = "<coords>", query_k: int = 0) -> dict:
    """Random-sampling pyramid of one cloud (RandLA-Net Sec. 3.3); the keys are in the module docstring.

    Args:
        coords: ``(N, 3)`` point coordinates.
        num_layers: number of downsampling steps ``L``.
        k: neighbours per point.
        sub_ratios: level ``l + 1`` keeps ``N_l // sub_ratios[l]`` points (at least ``L`` entries).
        rng: the generator that draws the random subsets (seed it for reproducible batches; None draws
            a fresh unseeded one).
        source: names the cloud in :class:`~vision.errors.DataError` messages.
        query_k: also store the ``query_k`` nearest points of every coarser level for each input point
            (key ``query``; 0: not stored).

    >>> pyramid = build_pyramid(np.random.rand(64, 3), num_layers=2, k=4, sub_ratios=(4, 2),
    ...                         rng=np.random.default_rng(0))
    >>> [x.shape for x in pyramid["xyz"]], pyramid["subsample"][1].shape, pyramid["upsample"][0].shape
    ([(64, 3), (16, 3), (8, 3)], (8, 4), (64, 1))
    """
    if num_layers < 1 or k < 1:
        raise ValueError(f"num_layers and k must be >= 1, got {num_layers} and {k}")
    if len(sub_ratios) < num_layers or any(int(r) < 1 for r in sub_ratios[:num_layers]):
        raise ValueError(f"sub_ratios needs {num_layers} entries >= 1, got {tuple(sub_ratios)}")
    rng = np.random.default_rng() if rng is None else rng
    current = _validated_coords(coords, source)
    pyramid: dict = {key: [] for key in PYRAMID_KEYS if key != "query" or query_k > 0}
    pyramid["xyz"].append(current)
    finest = current
    for level in range(num_layers):
        n_next = current.shape[0] // int(sub_ratios[level])
        if n_next < 1:
            raise DataError(source, f"level {level} has {current.shape[0]} points, too few to keep "
                                    f"1/{sub_ratios[level]} of them; use a larger crop or fewer layers")
        neighbors = knn_indices(cKDTree(current), current, k)
        keep = rng.permutation(current.shape[0])[:n_next]
        coarser = current[keep]
        pyramid["neighbors"].append(neighbors)
        pyramid["subsample"].append(neighbors[keep])  # the kept points' own neighbourhoods in level l
        coarser_tree = cKDTree(coarser)
        pyramid["upsample"].append(knn_indices(coarser_tree, current, 1))
        if query_k > 0:
            pyramid["query"].append(knn_indices(coarser_tree, finest, query_k))
        pyramid["xyz"].append(coarser)
        current = coarser
    return pyramid


def _stack(values: list, key: str) -> torch.Tensor:
    shapes = {tuple(np.shape(v)) for v in values}
    if len(shapes) != 1:
        raise DataError("<batch>", f"'{key}' has different shapes across the batch: {sorted(shapes)}; "
                                   "training crops must all have the same number of points")
    return torch.stack([torch.as_tensor(np.asarray(v)) for v in values])


def collate_pyramids(samples: Sequence[dict]) -> dict:
    """Batch :func:`build_pyramid` dicts for a DataLoader (``collate_fn``), batch dimension first.

    Every cloud in a batch must have the same number of points (training crops have a fixed size,
    as in RandLA-Net), so each level stacks into one tensor: ``xyz[l]: (B, N_l, 3)``,
    ``neighbors[l]: (B, N_l, k)``, ``subsample[l]: (B, N_{l+1}, k)``, ``upsample[l]: (B, N_l, 1)``.
    Other keys of the samples are stacked too when they are arrays or tensors (e.g.
    ``features: (B, N, C)``, per-point targets ``(B, N)``) and gathered into a list otherwise
    (e.g. sample ids).

    >>> rng = np.random.default_rng(0)
    >>> clouds = [build_pyramid(rng.random((32, 3)), 1, 4, (4,), rng) for _ in range(2)]
    >>> batch = collate_pyramids(clouds)
    >>> batch["xyz"][1].shape, batch["neighbors"][0].dtype
    (torch.Size([2, 8, 3]), torch.int64)
    """
    if not samples:
        raise DataError("<batch>", "cannot collate an empty batch")
    batch: dict = {}
    for key in samples[0]:
        if any(key not in sample for sample in samples):
            raise DataError("<batch>", f"key '{key}' is missing from some samples of the batch")
        values = [sample[key] for sample in samples]
        if key in PYRAMID_KEYS:
            depths = {len(v) for v in values}
            if len(depths) != 1:
                raise DataError("<batch>", f"'{key}' has different numbers of levels: {sorted(depths)}")
            batch[key] = [_stack([v[level] for v in values], f"{key}[{level}]") for level in range(len(values[0]))]
        elif isinstance(values[0], (np.ndarray, torch.Tensor)):
            batch[key] = _stack(values, key)
        else:
            batch[key] = values
    return batch
