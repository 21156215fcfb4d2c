"""Scenes, crops and views for the point-cloud task (RandLA-Net / SQN data pipeline).

A :class:`PreparedScene` is one scene after grid subsampling: the sub-cloud the network sees, the
map from every original point to its voxel (to carry predictions back), and a KD-tree. Training and
inference both work on fixed-size *crops* (the ``crop_points`` nearest sub-points of a centre, as in
RandLA-Net), so memory is bounded whatever the scene size. A *coverage plan* lists crop centres
chosen so that every sub-point lies in at least one crop.

Two augmented *views* of a crop share one neighbour pyramid (built on the un-augmented crop):
rotation about z and scaling are linear, so they are applied to every level's coordinates, while
per-point jitter and colour changes touch only the input features. View pairs feed the engine's
consistency and teacher losses without a second neighbour search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from datamodules.transforms.pointcloud_ops import grid_subsample
from vision.labels.types import IGNORE_INDEX
from vision.models.pointcloud.pyramid import build_pyramid


@dataclass
class PreparedScene:
    """One grid-subsampled scene.

    Attributes:
        scene_id: sample id (weak-label files are keyed by it).
        coords: ``(M, 3)`` float32 sub-cloud coordinates (voxel means, shifted so min z = 0 and the
            x/y centre is 0; large LAS coordinates lose no precision this way).
        colors: ``(M, 3)`` float32 in [0, 1] (zeros when the file has none).
        labels: ``(M,)`` int64 voxel labels by majority vote of the full labels (IGNORE_INDEX if none).
        target: ``(M,)`` int64 training targets: the weak labels mapped to voxels, or ``labels``
            under full supervision.
        inverse: ``(N,)`` int64 voxel of each original point.
        full_labels: ``(N,)`` int64 original per-point labels, or None.
    """

    scene_id: str
    coords: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    inverse: np.ndarray
    full_labels: Optional[np.ndarray]
    source_path: Optional[str] = None
    tree: cKDTree = field(repr=False, default=None)

    def __post_init__(self) -> None:
        if self.tree is None:
            self.tree = cKDTree(self.coords)

    @property
    def num_points(self) -> int:
        return int(self.coords.shape[0])


def prepare_scene(scene_id: str, coords: np.ndarray, colors: Optional[np.ndarray], labels: Optional[np.ndarray],
                  voxel_size: float, num_classes: int, source_path: Optional[str] = None) -> PreparedScene:
    """Grid-subsample a scene (``coords (N, 3)`` float64, ``colors (N, 3)`` in [0, 1], ``labels (N,)``)."""
    offset = np.array([*(coords[:, :2].min(0) + coords[:, :2].max(0)) / 2.0, coords[:, 2].min()])
    local = (coords - offset).astype(np.float32)
    features = np.zeros((len(local), 3), np.float32) if colors is None else colors.astype(np.float32)
    sub_coords, sub_colors, sub_labels, inverse = grid_subsample(
        local, voxel_size, features=features, labels=labels, num_classes=num_classes)
    if sub_labels is None:
        sub_labels = np.full(len(sub_coords), IGNORE_INDEX, np.int64)
    return PreparedScene(scene_id, sub_coords.astype(np.float32), sub_colors.astype(np.float32),
                         sub_labels.astype(np.int64), sub_labels.astype(np.int64).copy(),
                         inverse.astype(np.int64), None if labels is None else labels.astype(np.int64),
                         source_path)


def weak_target(scene: PreparedScene, index: np.ndarray, class_id: np.ndarray) -> np.ndarray:
    """Voxel targets from weak labels given as original-point ``index`` with ``class_id``."""
    target = np.full(scene.num_points, IGNORE_INDEX, np.int64)
    # reversed so that the first label of a voxel wins when two labelled points share one
    target[scene.inverse[index[::-1]]] = class_id[::-1]
    return target


def spread_target(scene: PreparedScene, target: np.ndarray, radius: float,
                  color_tolerance: Optional[float] = None) -> np.ndarray:
    """Grow each labelled voxel's label to unlabelled voxels within ``radius`` metres of it.

    A click labels a surface patch, not a single point: an annotator's point sits on an object whose
    immediate surroundings almost surely share its class (the premise of label propagation in One Thing
    One Click, Liu et al., CVPR 2021, which grows clicks over super-voxels). Each unlabelled voxel takes
    the label of its nearest labelled voxel if that one is within ``radius`` and, when
    ``color_tolerance`` is given, their colours (in [0, 1]) differ by less than it in Euclidean
    distance, so that a click near an edge does not leak onto a differently coloured neighbour. Human
    labels are never changed. ``target (M,)`` int64 with IGNORE_INDEX for unlabelled; returns a copy.

    Measured on the synthetic training rooms (10 rooms, 5 cm voxels, 0.1% clicks, ~61 per room): radius
    0.2 m with colour tolerance 0.15 labels ~1,970 voxels per room at 98% precision; without the colour
    gate ~2,250 at 92%; 0.3 m with the gate ~4,180 at 98%.
    """
    labelled = np.nonzero(target != IGNORE_INDEX)[0]
    out = target.copy()
    if radius <= 0 or labelled.size == 0:
        return out
    distance, nearest = cKDTree(scene.coords[labelled]).query(scene.coords, k=1, distance_upper_bound=radius)
    grow = np.isfinite(distance) & (target == IGNORE_INDEX)
    source = labelled[np.minimum(nearest, labelled.size - 1)]
    if color_tolerance is not None:
        grow &= np.linalg.norm(scene.colors - scene.colors[source], axis=1) < color_tolerance
    out[grow] = target[source[grow]]
    return out


def coverage_plan(scene: PreparedScene, crop_points: int, rng: np.random.Generator) -> np.ndarray:
    """Crop centres (sub-point indices) such that every sub-point lies in some crop.

    Greedy RandLA-style coverage: visit points in a random order and start a crop at the first one not
    yet covered. Deterministic for a given ``rng``.
    """
    covered = np.zeros(scene.num_points, bool)
    centres = []
    k = min(crop_points, scene.num_points)
    for candidate in rng.permutation(scene.num_points):
        if covered[candidate]:
            continue
        _, index = scene.tree.query(scene.coords[candidate], k=k)
        covered[np.atleast_1d(index)] = True
        centres.append(candidate)
    return np.asarray(centres, np.int64)


def crop_indices(scene: PreparedScene, centre: np.ndarray, crop_points: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``(crop_points,)`` sub-point indices nearest to ``centre``; repeats points of small scenes."""
    k = min(crop_points, scene.num_points)
    _, index = scene.tree.query(centre, k=k)
    index = np.atleast_1d(np.asarray(index, np.int64))
    if k < crop_points:  # fixed-size crops batch together; duplicates only re-weight a small scene
        index = np.concatenate([index, rng.choice(index, crop_points - k)])
    return index


def _augment_matrix(rng: np.random.Generator, rotate_z: bool, scale: tuple[float, float]) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi) if rotate_z else 0.0
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    factors = rng.uniform(scale[0], scale[1], size=3)
    factors[:2] *= rng.choice([-1.0, 1.0], size=2)  # random mirror in x and y
    return (rotation * factors[None, :]).astype(np.float32)


@dataclass
class ViewAugment:
    """Random view of a crop: rotation about z, anisotropic scale with mirroring, jitter, colour drop.

    Identity when ``enabled`` is False (evaluation).
    """

    enabled: bool = True
    rotate_z: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    color_drop: float = 0.2

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        if not self.enabled:
            return np.eye(3, dtype=np.float32)
        return _augment_matrix(rng, self.rotate_z, self.scale)

    def features(self, xyz: np.ndarray, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(N, 6)`` float32 input features: jittered xyz and (maybe dropped) colours."""
        if self.enabled:
            noise = np.clip(rng.normal(0.0, self.jitter_sigma, xyz.shape), -self.jitter_clip, self.jitter_clip)
            xyz = xyz + noise.astype(np.float32)
            if rng.random() < self.color_drop:
                colors = np.zeros_like(colors)
        return np.concatenate([xyz, colors], axis=1).astype(np.float32)


def make_crop(scene: PreparedScene, centre: np.ndarray, crop_points: int, rng: np.random.Generator,
              augment: ViewAugment, num_views: int = 1, num_layers: int = 4, k: int = 16,
              sub_ratios: tuple[int, ...] = (4, 4, 4, 4), query_k: int = 0) -> dict:
    """One training or inference crop with ``num_views`` augmented views sharing a pyramid.

    Returns a dict of numpy arrays: ``point_index (N,)`` into the scene's sub-cloud, ``target (N,)``,
    the shared pyramid indices (``neighbors``, ``subsample``, ``upsample``) and per view ``v``:
    ``xyz`` (list for view 0, ``view{v}_xyz`` for the others) and ``features`` / ``view{v}_features``
    ``(N, 6)``; with ``query_k > 0`` also ``query``, the SQN head's neighbours (see
    :func:`~vision.models.pointcloud.pyramid.build_pyramid`).
    """
    index = crop_indices(scene, centre, crop_points, rng)
    local = scene.coords[index] - np.array([centre[0], centre[1], 0.0], np.float32)
    pyramid = build_pyramid(local, num_layers=num_layers, k=k, sub_ratios=sub_ratios, rng=rng,
                            source=scene.scene_id, query_k=query_k)
    crop = {"point_index": index, "target": scene.target[index],
            "neighbors": pyramid["neighbors"], "subsample": pyramid["subsample"], "upsample": pyramid["upsample"]}
    if query_k > 0:
        crop["query"] = pyramid["query"]
    for view in range(num_views):
        matrix = augment.matrix(rng)
        levels = [level @ matrix.T for level in pyramid["xyz"]]
        features = augment.features(levels[0], scene.colors[index], rng)
        prefix = "" if view == 0 else f"view{view}_"
        crop[f"{prefix}xyz"] = levels
        crop[f"{prefix}features"] = features
    return crop


def collate_crops(crops: list[dict]) -> dict:
    """Batch crops: :func:`collate_pyramids` plus the per-level coordinates of the extra views."""
    from vision.models.pointcloud.pyramid import collate_pyramids

    level_keys = [key for key in crops[0] if key.startswith("view") and key.endswith("_xyz")]
    batch = collate_pyramids([{k: v for k, v in crop.items() if k not in level_keys} for crop in crops])
    for key in level_keys:
        batch[key] = [torch.as_tensor(np.stack(levels)) for levels in zip(*(crop[key] for crop in crops))]
    return batch


def view_batch(batch: dict, view: int) -> dict:
    """The model input of one view from a collated crop batch (shared pyramid indices)."""
    prefix = "" if view == 0 else f"view{view}_"
    inputs = {"xyz": batch[f"{prefix}xyz"], "features": batch[f"{prefix}features"],
              "neighbors": batch["neighbors"], "subsample": batch["subsample"], "upsample": batch["upsample"]}
    if "query" in batch:  # shared by the views, like the encoder's (rotation and +-10% scaling hardly move neighbours)
        inputs["query"] = batch["query"]
    return inputs


def to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            out[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            out[key] = value
    return out


@torch.no_grad()
def predict_scene(logits_fn, scene: PreparedScene, num_classes: int, crop_points: int, seed: int = 0,
                  batch_size: int = 4, device: Optional[torch.device] = None, num_layers: int = 4, k: int = 16,
                  sub_ratios: tuple[int, ...] = (4, 4, 4, 4), query_k: int = 0) -> torch.Tensor:
    """Class probabilities ``(M, C)`` of every sub-point of a scene, by RandLA-style coverage voting.

    The scene is cut into the crops of a coverage plan (so every point is predicted at least once),
    each crop is labelled by ``logits_fn(batch) -> (B, C, N)``, and the softmax of overlapping crops
    is averaged. Memory is bounded by ``batch_size`` crops whatever the scene size. Carry the result to
    the original points with ``probs[scene.inverse]``.
    """
    rng = np.random.default_rng(seed)
    centres = coverage_plan(scene, crop_points, rng)
    votes = torch.zeros(scene.num_points, num_classes, dtype=torch.float32)
    counts = torch.zeros(scene.num_points, dtype=torch.float32)
    identity = ViewAugment(enabled=False)
    for start in range(0, len(centres), batch_size):
        crops = [make_crop(scene, scene.coords[c], crop_points, rng, identity, 1, num_layers, k, sub_ratios, query_k)
                 for c in centres[start:start + batch_size]]
        batch = collate_crops(crops)
        if device is not None:
            batch = to_device(batch, device)
        probs = logits_fn(view_batch(batch, 0)).softmax(1).transpose(1, 2).float().cpu()  # (B, N, C)
        index = batch["point_index"].cpu().reshape(-1)
        votes.index_add_(0, index, probs.reshape(-1, num_classes))
        counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
    return votes / counts.clamp(min=1)[:, None]
