"""SQN's point-query head and the SQN network (encoder + head), written from the paper.

SQN (Hu et al., ECCV 2022, "SQN: Weakly-Supervised Semantic Segmentation of Large-Scale 3D Point
Clouds", Sec. 3.2-3.3): the encoder's features at every level are shared by neighbouring points, so a
labelled point's feature is *queried* from each level by interpolating its k nearest level points,
the per-level features are concatenated, and an MLP classifies only the queried points. Training
queries the labelled points; inference queries every point.

Neighbour search is plain torch (``cdist`` + ``topk``), processed in chunks of queries so that the
``(B, chunk, N_l)`` distance matrix, not ``(B, M, N_l)``, bounds memory: about
``4 * B * query_chunk_size * N_l`` bytes (2 x 1024 x 2048 points: 16 MiB).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from vision.errors import DataError
from vision.models.pointcloud.randla import PointwiseMLP, RandLAEncoder, gather_neighbors

WEIGHTINGS = ("inverse_distance", "equal")


@torch.no_grad()
def knn_query(query_xyz: torch.Tensor, xyz: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``xyz: (B, N, 3)`` points of each ``query_xyz: (B, M, 3)``, nearest first.

    Returns ``distances: (B, M, k)`` (Euclidean, recomputed from the coordinates because ``cdist``'s
    matrix-product form loses precision near 0) and ``index: (B, M, k)`` int64. ``k`` is capped at N.
    """
    k = min(k, xyz.shape[1])
    index = torch.cdist(query_xyz, xyz).topk(k, dim=-1, largest=False).indices
    neighbors = gather_neighbors(xyz, index)  # (B, M, k, 3)
    distances = (query_xyz.unsqueeze(2) - neighbors).norm(dim=-1)
    return distances, index


def interpolation_weights(distances: torch.Tensor, weighting: str = "inverse_distance",
                          eps: float = 1e-8) -> torch.Tensor:
    """``(B, M, k)`` weights summing to 1 over k: ``1 / (d + eps)`` normalised, or ``1 / k`` ("equal")."""
    if weighting == "equal":
        return torch.full_like(distances, 1.0 / distances.shape[-1])
    if weighting != "inverse_distance":
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    inverse = 1.0 / (distances + eps)
    return inverse / inverse.sum(dim=-1, keepdim=True)


def interpolate_features(query_xyz: torch.Tensor, xyz: torch.Tensor, features: torch.Tensor, k: int = 3,
                         weighting: str = "inverse_distance", query_chunk_size: int = 1024,
                         neighbor_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Features at query points from their ``k`` nearest points (SQN Sec. 3.2).

    ``query_xyz: (B, M, 3)``, ``xyz: (B, N, 3)``, ``features: (B, D, N)`` -> ``(B, D, M)``; the
    queries go ``query_chunk_size`` at a time to bound memory. Gradients flow to ``features``.
    ``neighbor_index: (B, M, k)``: the queries' k nearest points when already known (precomputed with
    the pyramid in dataloader workers); None searches them here by brute force.
    """
    return _interpolate_channels_last(query_xyz, xyz, features.transpose(1, 2), k, weighting, query_chunk_size,
                                      neighbor_index).transpose(1, 2)


def _interpolate_channels_last(query_xyz: torch.Tensor, xyz: torch.Tensor, table: torch.Tensor, k: int,
                               weighting: str, query_chunk_size: int,
                               neighbor_index: Optional[torch.Tensor]) -> torch.Tensor:
    """:func:`interpolate_features` on ``table: (B, N, D)`` (rows to gather), returning ``(B, M, D)``."""
    chunks = []
    for start in range(0, query_xyz.shape[1], query_chunk_size):
        queries = query_xyz[:, start:start + query_chunk_size]
        if neighbor_index is None:
            distances, index = knn_query(queries, xyz, k)
        else:
            index = neighbor_index[:, start:start + query_chunk_size]
            distances = (queries.unsqueeze(2) - gather_neighbors(xyz, index)).norm(dim=-1)
        weights = interpolation_weights(distances, weighting).unsqueeze(-1)  # (B, m, k, 1)
        chunks.append((gather_neighbors(table, index) * weights).sum(dim=2))
    return torch.cat(chunks, dim=1)


class SQNQueryHead(nn.Module):
    """SQN point-query head: interpolate every encoder level at the queries, concatenate, classify.

    Args:
        level_dims: channels ``D_l`` of each encoder level (e.g. ``RandLAEncoder.out_dims``).
        num_classes: ``C``.
        hidden: widths of the point-wise MLP (linear + BN + LeakyReLU on channel-last features: on CPU a
            1x1 Conv1d here ran PyTorch's slow im2col convolution, ~17% of a training step, measured).
        k: level points interpolated per query.
        weighting: "inverse_distance" (normalised ``1 / d``) or "equal" (plain mean of the k).
        dropout: before the last layer.
        query_chunk_size: queries per neighbour-search chunk (memory bound, see the module docstring).

    ``forward(query_xyz: (B, M, 3), level_xyz: [(B, N_l, 3)], level_features: [(B, D_l, N_l)])`` returns
    ``(logits: (B, C, M), features: (B, sum(D_l), M))``; the features feed prototype / contrastive losses.
    """

    def __init__(self, level_dims: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128, 64),
                 k: int = 3, weighting: str = "inverse_distance", dropout: float = 0.5,
                 query_chunk_size: int = 1024) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.level_dims, self.k, self.weighting = list(level_dims), k, weighting
        self.query_chunk_size = query_chunk_size
        layers, width = [], sum(self.level_dims)
        for size in hidden:
            layers.append(PointwiseMLP(width, size))
            width = size
        self.classifier = nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(width, num_classes))

    def query_features(self, query_xyz: torch.Tensor, level_xyz: Sequence[torch.Tensor],
                       level_features: Sequence[torch.Tensor],
                       level_index: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """``(B, sum(D_l), M)``: every level interpolated at the queries, concatenated.

        ``level_index``: per level, ``(B, M, k)`` indices of each query's k nearest level points (the
        pyramid's ``query`` key); used only when it has this head's ``k``, else searched here.
        """
        if len(level_xyz) != len(self.level_dims) or len(level_features) != len(self.level_dims):
            raise DataError("<batch>", f"the head expects {len(self.level_dims)} levels, got "
                                       f"{len(level_xyz)} coordinate and {len(level_features)} feature levels")
        if query_xyz.dim() != 3 or query_xyz.shape[-1] != 3:
            raise DataError("<batch>", f"query_xyz must be (B, M, 3), got {tuple(query_xyz.shape)}")
        usable = (level_index is not None and len(level_index) == len(level_xyz)
                  and all(tuple(i.shape) == (*query_xyz.shape[:2], min(self.k, x.shape[1]))
                          for i, x in zip(level_index, level_xyz)))
        indices = level_index if usable else [None] * len(level_xyz)
        parts = [_interpolate_channels_last(query_xyz, xyz, features.transpose(1, 2), self.k, self.weighting,
                                            self.query_chunk_size, index)
                 for xyz, features, index in zip(level_xyz, level_features, indices)]
        return torch.cat(parts, dim=-1).transpose(1, 2)  # built channel-last for the MLP, returned (B, D, M)

    def forward(self, query_xyz: torch.Tensor, level_xyz: Sequence[torch.Tensor],
                level_features: Sequence[torch.Tensor],
                level_index: Optional[Sequence[torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.query_features(query_xyz, level_xyz, level_features, level_index)
        logits = self.classifier(features.transpose(1, 2)).transpose(1, 2)  # channel-last through the MLP
        return logits, features


class SQN(nn.Module):
    """SQN: a :class:`RandLAEncoder` and a :class:`SQNQueryHead` over all of its levels.

    Args:
        in_channels: ``C_in`` of ``batch["features"]: (B, N, C_in)``.
        num_classes: ``C``.
        encoder_kwargs: extra :class:`RandLAEncoder` arguments (``dims``, ``k``, ``stem_dim``).
        head_kwargs: extra :class:`SQNQueryHead` arguments (``hidden``, ``k``, ``weighting``, ...).

    ``forward(batch, query_xyz: (B, M, 3))`` -> ``{"logits": (B, C, M), "features": (B, D, M)}``; pass
    ``query_xyz=batch["xyz"][0]`` to label every point of the cloud, or ``query_index: (B, M)`` (int64
    indices into the cloud's points) to label only those, as SQN does in training: the head then costs
    ``M / N`` of a whole-cloud query, and the pyramid's precomputed neighbours are reused for them.
    """

    def __init__(self, in_channels: int, num_classes: int, encoder_kwargs: Optional[dict] = None,
                 head_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.encoder = RandLAEncoder(in_channels, **(encoder_kwargs or {}))
        self.head = SQNQueryHead(self.encoder.out_dims, num_classes, **(head_kwargs or {}))

    def forward(self, batch: dict, query_xyz: Optional[torch.Tensor] = None,
                query_index: Optional[torch.Tensor] = None) -> dict:
        if (query_xyz is None) == (query_index is None):
            raise ValueError("pass exactly one of query_xyz and query_index")
        levels, _ = self.encoder(batch)
        level_xyz = batch["xyz"][1:len(levels) + 1]  # level l's features sit at the (l+1)-th pyramid level
        cloud = batch["xyz"][0]
        if query_index is not None:
            if query_index.dim() != 2 or query_index.shape[0] != cloud.shape[0]:
                raise DataError("<batch>", f"query_index must be (B, M) with B = {cloud.shape[0]}, "
                                           f"got {tuple(query_index.shape)}")
            query_xyz = gather_neighbors(cloud, query_index.unsqueeze(-1)).squeeze(2)
            level_index = ([gather_neighbors(index, query_index.unsqueeze(-1)).squeeze(2) for index in batch["query"]]
                           if "query" in batch else None)
        else:  # the pyramid's precomputed neighbours hold for the cloud's own points only
            level_index = batch.get("query") if query_xyz is cloud else None
        logits, features = self.head(query_xyz.to(level_xyz[0].dtype), level_xyz, levels, level_index)
        return {"logits": logits, "features": features}
