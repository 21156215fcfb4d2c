"""Write per-sample predictions during ``trainer.predict`` so self-training rounds run distributed.

A self-training round (predict -> select confident -> write pseudo-label file -> retrain) predicts
the whole training set. :class:`PseudoLabelWriter` lets Lightning spread that over every rank like
training: each rank writes its own ``predictions-rank{R}.npz``, and :func:`load_predictions`
merges them. Samples that a ``DistributedSampler`` repeats to even out the ranks appear in two
files with the same values, which the merge accepts.

NPZ layout (one file per rank): ``"<sample_id>/label"`` int32 and ``"<sample_id>/confidence"``
float16 arrays of the same shape (``(N,)`` for points, ``(H, W)`` for frames), plus the scalars
``"__rank__"`` and ``"__world_size__"`` so a missing or stale rank file is detected.
"""

from __future__ import annotations

import glob
import os
import re
import zipfile
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vision.atomic import atomic_write
from vision.errors import DataError, PathLike

RANK_FILE_PATTERN = "predictions-rank{rank}.npz"
_RANK_FILE_RE = re.compile(r"predictions-rank(\d+)\.npz$")
# float16 keeps ~3 decimal digits; a sample predicted in two batch compositions may differ by that
_CONFIDENCE_ATOL = 2e-3


class PseudoLabelWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs and write ``output_dir/predictions-rank{R}.npz`` per rank.

    ``predict_step`` must return a dict::

        {"sample_id": list[str] (B,),
         "label": (B, N) int tensor or list of B (N_i,) tensors,
         "confidence": same shapes as "label", float}

    Args:
        output_dir: folder for the rank files; created if missing. Stale rank files from an earlier
            run are removed by rank 0 before predicting.
        write_interval: ``"batch"`` (collect in ``on_predict_batch_end``; works with
            ``return_predictions=False``, the usual choice) or ``"epoch"`` (read
            ``trainer.predict_loop.predictions``; needs ``return_predictions=True``).

    The file is written once at the end of prediction, to a temporary file then renamed
    (:func:`vision.atomic.atomic_write`), so a reader never sees half a file.
    """

    def __init__(self, output_dir: PathLike, write_interval: Literal["batch", "epoch"] = "batch") -> None:
        if write_interval not in ("batch", "epoch"):
            raise ValueError(f"write_interval must be 'batch' or 'epoch', got {write_interval!r}")
        super().__init__(write_interval)
        self.output_dir = os.fspath(output_dir)
        self._label: dict[str, np.ndarray] = {}
        self._confidence: dict[str, np.ndarray] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        if trainer.is_global_zero:
            os.makedirs(self.output_dir, exist_ok=True)
            for stale in glob.glob(os.path.join(self.output_dir, "predictions-rank*.npz")):
                os.remove(stale)
        trainer.strategy.barrier("PseudoLabelWriter.setup")  # no rank writes before the cleanup

    def on_predict_start(self, trainer, pl_module) -> None:
        self._label.clear()
        self._confidence.clear()

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int) -> None:
        self.add(prediction)

    def write_on_epoch_end(self, trainer, pl_module, predictions: Sequence[Any], batch_indices) -> None:
        for item in predictions:
            # with several dataloaders Lightning nests one list of batch outputs per loader
            for output in (item if isinstance(item, list) else [item]):
                self.add(output)

    def on_predict_end(self, trainer, pl_module) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "__rank__": np.asarray(trainer.global_rank, dtype=np.int64),
            "__world_size__": np.asarray(trainer.world_size, dtype=np.int64),
        }
        for sample_id, label in self._label.items():
            arrays[f"{sample_id}/label"] = label
            arrays[f"{sample_id}/confidence"] = self._confidence[sample_id]
        target = os.path.join(self.output_dir, RANK_FILE_PATTERN.format(rank=trainer.global_rank))
        atomic_write(target, lambda stream: np.savez(stream, **arrays))

    def add(self, prediction: Any) -> None:
        """Store one ``predict_step`` output (the dict described in the class docstring)."""
        if not isinstance(prediction, dict) or not {"sample_id", "label", "confidence"} <= prediction.keys():
            raise ValueError("predict_step must return a dict with keys 'sample_id', 'label', 'confidence', "
                             f"got {type(prediction).__name__}")
        sample_ids = list(prediction["sample_id"])
        labels = _per_sample(prediction["label"], "label", len(sample_ids))
        confidences = _per_sample(prediction["confidence"], "confidence", len(sample_ids))
        for sample_id, label, confidence in zip(sample_ids, labels, confidences):
            sample_id = str(sample_id)
            if label.shape != confidence.shape:
                raise ValueError(f"sample {sample_id!r}: label shape {label.shape} != confidence shape "
                                 f"{confidence.shape}")
            label, confidence = label.astype(np.int32), confidence.astype(np.float16)
            if sample_id in self._label:
                _check_same(self.output_dir, sample_id, (self._label[sample_id], self._confidence[sample_id]),
                            (label, confidence))
            self._label[sample_id] = label
            self._confidence[sample_id] = confidence


def _per_sample(values: Any, name: str, batch_size: int) -> list[np.ndarray]:
    """A (B, ...) tensor/array or a list of B tensors -> list of B numpy arrays."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        items = list(values)
    elif isinstance(values, (list, tuple)):
        items = list(values)
    else:
        raise ValueError(f"prediction {name!r} must be a tensor or a list of tensors, got {type(values).__name__}")
    if len(items) != batch_size:
        raise ValueError(f"prediction {name!r} has {len(items)} samples, 'sample_id' has {batch_size}")
    out = []
    for item in items:
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        out.append(array.reshape(-1) if array.ndim == 0 else array)
    return out


def _check_same(path: PathLike, sample_id: str, first, second) -> None:
    (label_a, conf_a), (label_b, conf_b) = first, second
    same = (label_a.shape == label_b.shape and np.array_equal(label_a, label_b)
            and np.allclose(conf_a.astype(np.float32), conf_b.astype(np.float32), atol=_CONFIDENCE_ATOL))
    if not same:
        raise DataError(path, f"sample {sample_id!r} predicted twice with different values")


def load_predictions(output_dir: PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Merge every ``predictions-rank{R}.npz`` in ``output_dir``.

    Returns:
        ``{sample_id: (label int32, confidence float16)}``, arrays shaped as ``predict_step`` gave them.

    Raises:
        DataError: no rank file, an unreadable or malformed file, a missing rank, or a sample id
            present twice with different values.
    """
    output_dir = os.fspath(output_dir)
    paths = sorted(p for p in glob.glob(os.path.join(output_dir, "predictions-rank*.npz"))
                   if _RANK_FILE_RE.search(os.path.basename(p)))
    if not paths:
        raise DataError(output_dir, "no predictions-rank*.npz files (run trainer.predict with PseudoLabelWriter)")
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    world_sizes, ranks = set(), set()
    for path in paths:
        rank, world_size, samples = _read_rank_file(path)
        ranks.add(rank)
        world_sizes.add(world_size)
        for sample_id, pair in samples.items():
            if sample_id in merged:
                _check_same(path, sample_id, merged[sample_id], pair)
            merged[sample_id] = pair
    if len(world_sizes) != 1 or ranks != set(range(world_sizes.pop())):
        raise DataError(output_dir, f"rank files {sorted(ranks)} do not form one run "
                                    "(missing or stale predictions-rank*.npz)")
    return merged


def _read_rank_file(path: str) -> tuple[int, int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(path, f"cannot read predictions NPZ: {error}") from error
    if "__rank__" not in contents or "__world_size__" not in contents:
        raise DataError(path, "missing __rank__ / __world_size__ (not written by PseudoLabelWriter)")
    rank = int(contents.pop("__rank__"))
    world_size = int(contents.pop("__world_size__"))
    expected_rank = int(_RANK_FILE_RE.search(os.path.basename(path)).group(1))
    if rank != expected_rank:
        raise DataError(path, f"file name says rank {expected_rank} but it holds rank {rank}")
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in contents:
        sample_id, _, field = key.rpartition("/")
        if field not in ("label", "confidence") or not sample_id:
            raise DataError(path, f"unexpected key {key!r}")
        if field == "label":
            confidence_key = f"{sample_id}/confidence"
            if confidence_key not in contents:
                raise DataError(path, f"sample {sample_id!r} has a label but no confidence")
            label, confidence = contents[key], contents[confidence_key]
            if label.shape != confidence.shape:
                raise DataError(path, f"sample {sample_id!r}: label shape {label.shape} != confidence "
                                      f"shape {confidence.shape}")
            samples[sample_id] = (label.astype(np.int32, copy=False), confidence.astype(np.float16, copy=False))
        elif f"{sample_id}/label" not in contents:
            raise DataError(path, f"sample {sample_id!r} has a confidence but no label")
    return rank, world_size, samples
