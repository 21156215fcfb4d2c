"""SemanticKITTI scans (Behley et al., ICCV 2019): ``velodyne/NNNNNN.bin`` + ``labels/NNNNNN.label``.

* ``.bin``: float32 ``(N, 4)`` rows ``x, y, z, remission`` (16 bytes per point, little endian).
* ``.label``: uint32 ``(N,)``; lower 16 bits the semantic class (raw ids such as 10 car, 40 road),
  upper 16 bits the instance id.

Raw ids become training ids through a learning map: the dataset's ``semantic-kitti.yaml`` (keys
``labels``, ``learning_map``, ``learning_map_inv``, ``learning_ignore``) or a plain dict raw ->
training id. From the YAML, ignored learning ids (``learning_ignore: {0: true}``: "unlabeled")
become IGNORE_INDEX and the others are renumbered 0..K-1 in order (the usual 19 classes, car = 0),
so that the ignored class never becomes a model output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import yaml

from datamodules.formats.pointcloud_scene import PointCloudScene, validate_scene
from vision.atomic import atomic_path
from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX

_NUM_RAW = 1 << 16  # semantic ids fill the lower 16 bits of a label


@dataclass
class KittiLabelMap:
    """Raw SemanticKITTI ids <-> contiguous training ids.

    Args:
        to_train: raw id -> training id (IGNORE_INDEX for ignored classes).
        to_raw: training id -> the raw id written back for predictions.
        class_names: training id -> name, or None.
    """

    to_train: dict[int, int]
    to_raw: dict[int, int]
    class_names: Optional[list[str]] = None

    def raw_to_train(self, raw: np.ndarray) -> np.ndarray:
        """``(N,)`` raw ids -> ``(N,)`` int64 training ids; ids absent from the map -> IGNORE_INDEX."""
        table = np.full(_NUM_RAW, IGNORE_INDEX, dtype=np.int64)  # lookup table: one pass over N
        for raw_id, train_id in self.to_train.items():
            table[raw_id] = train_id
        return table[raw]

    def train_to_raw(self, labels: np.ndarray, path: PathLike) -> np.ndarray:
        """``(N,)`` training ids -> ``(N,)`` uint32 raw ids (IGNORE_INDEX -> raw 0 "unlabeled")."""
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        raw = np.zeros(labels.shape, dtype=np.uint32)
        known = np.isin(labels, list(self.to_raw)) | (labels == IGNORE_INDEX)
        if not known.all():
            raise DataError(path, f"labels {np.unique(labels[~known]).tolist()} are not training ids")
        for train_id, raw_id in self.to_raw.items():
            raw[labels == train_id] = raw_id
        return raw


def load_learning_map(source: Union[PathLike, Mapping[int, int]]) -> KittiLabelMap:
    """A :class:`KittiLabelMap` from a ``semantic-kitti.yaml`` path or a raw -> training id dict."""
    if isinstance(source, Mapping):
        to_train = {int(k): int(v) for k, v in source.items()}
        to_raw: dict[int, int] = {}
        for raw_id, train_id in sorted(to_train.items()):
            if train_id != IGNORE_INDEX:
                to_raw.setdefault(train_id, raw_id)  # the smallest raw id stands for its class
        return KittiLabelMap(to_train, to_raw)
    path = Path(source)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        learning_map = {int(k): int(v) for k, v in config["learning_map"].items()}
        ignored = {int(k) for k, v in config.get("learning_ignore", {}).items() if v}
        learning_inv = {int(k): int(v) for k, v in config.get("learning_map_inv", {}).items()}
        names = {int(k): str(v) for k, v in config.get("labels", {}).items()}
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a SemanticKITTI label config (needs learning_map): {err!r}") from err
    kept = sorted(set(learning_map.values()) - ignored)
    compact = {learning_id: i for i, learning_id in enumerate(kept)}
    to_train = {raw: compact.get(lid, IGNORE_INDEX) for raw, lid in learning_map.items()}
    to_raw = {i: learning_inv.get(lid, min(r for r, v in learning_map.items() if v == lid))
              for lid, i in compact.items()}
    class_names = [names.get(to_raw[i], f"class {i}") for i in range(len(kept))]
    return KittiLabelMap(to_train, to_raw, class_names)


def default_label_path(bin_path: Path) -> Path:
    """``sequences/SS/velodyne/NNNNNN.bin`` -> ``sequences/SS/labels/NNNNNN.label``."""
    return bin_path.parent.parent / "labels" / f"{bin_path.stem}.label"


def _read_raw(path: Path, dtype, row: int) -> np.ndarray:
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    if size % (row * 4):
        raise DataError(path, f"size {size} bytes is not a multiple of {row * 4} (truncated or not "
                              f"a SemanticKITTI {'scan' if row == 4 else 'label'} file)")
    return np.fromfile(path, dtype=dtype).reshape(-1, row) if row > 1 else np.fromfile(path, dtype=dtype)


def read_semantickitti_scan(bin_path: PathLike, label_path: Optional[PathLike] = None,
                            learning_map: Union[PathLike, Mapping[int, int], KittiLabelMap, None] = None,
                            ) -> PointCloudScene:
    """Read one SemanticKITTI scan; ``scene.intensity`` holds the remission ``(N,)``.

    Args:
        bin_path: the ``.bin`` scan.
        label_path: its ``.label`` file; None looks in the sibling ``labels/`` folder and reads no
            labels when there is none (test scans).
        learning_map: YAML path, raw -> training id dict or :class:`KittiLabelMap`; None keeps the
            raw semantic ids.
    """
    bin_path = Path(bin_path)
    points = _read_raw(bin_path, "<f4", 4)
    scene = PointCloudScene(coords=points[:, :3].astype(np.float64),
                            intensity=np.ascontiguousarray(points[:, 3]), source_path=str(bin_path))
    if label_path is None and default_label_path(bin_path).exists():
        label_path = default_label_path(bin_path)
    if label_path is not None:
        label_path = Path(label_path)
        packed = _read_raw(label_path, "<u4", 1)
        if packed.shape[0] != points.shape[0]:
            raise DataError(label_path, f"{packed.shape[0]} labels but the scan {bin_path.name} has "
                                        f"{points.shape[0]} points")
        raw = (packed & 0xFFFF).astype(np.int64)
        scene.instance = (packed >> 16).astype(np.int64)
        scene.semantic = raw
        if learning_map is not None:
            label_map = learning_map if isinstance(learning_map, KittiLabelMap) else load_learning_map(learning_map)
            scene.semantic = label_map.raw_to_train(raw)
            scene.class_names = label_map.class_names
    return validate_scene(scene, bin_path)


def write_semantickitti_scan(bin_path: PathLike, scene: PointCloudScene, overwrite: bool = False) -> Path:
    """Write ``scene`` as a ``.bin`` scan: float32 x, y, z and remission (``scene.intensity``, else 0)."""
    bin_path = Path(bin_path)
    validate_scene(scene, bin_path)
    points = np.zeros((scene.num_points, 4), dtype="<f4")
    points[:, :3] = scene.coords
    if scene.intensity is not None:
        points[:, 3] = scene.intensity
    with atomic_path(bin_path, overwrite) as temp:
        points.tofile(temp)
    return bin_path


def write_semantickitti_labels(label_path: PathLike, labels: np.ndarray, instance: Optional[np.ndarray] = None,
                               learning_map: Union[PathLike, Mapping[int, int], KittiLabelMap, None] = None,
                               overwrite: bool = False) -> Path:
    """Write ``labels`` ``(N,)`` (and ``instance`` ``(N,)``) as a packed uint32 ``.label`` file.

    With ``learning_map`` the labels are training ids and are written as raw ids (the benchmark's
    submission format); without it they must already be raw ids in 0..65535.
    """
    label_path = Path(label_path)
    labels = np.asarray(labels).reshape(-1)
    if learning_map is not None:
        label_map = learning_map if isinstance(learning_map, KittiLabelMap) else load_learning_map(learning_map)
        raw = label_map.train_to_raw(labels, label_path)
    else:
        if labels.size and (labels.min() < 0 or labels.max() >= _NUM_RAW):
            raise DataError(label_path, "raw labels must lie in 0..65535 (pass learning_map for training ids)")
        raw = labels.astype(np.uint32)
    if instance is not None:
        instance = np.asarray(instance).reshape(-1)
        if instance.shape != raw.shape:
            raise DataError(label_path, f"{instance.shape[0]} instance ids but {raw.shape[0]} labels")
        raw = raw | (instance.astype(np.uint32) << np.uint32(16))
    with atomic_path(label_path, overwrite) as temp:
        raw.astype("<u4").tofile(temp)
    return label_path
