"""PseudoLabelWriter + load_predictions: per-rank NPZ predictions for self-training rounds."""

from __future__ import annotations

import os
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vision.engine import PseudoLabelWriter, load_predictions
from vision.errors import DataError

# five "scans" of 3 points; the model predicts class (x > 0) with confidence |x| / 10
POINTS = {f"scan_{i}": torch.tensor([float(i), -2.0, 3.0 * i - 4.0]) for i in range(5)}


class ThresholdModel(L.LightningModule):
    """A stand-in segmentation model whose predictions are easy to write down by hand."""

    def __init__(self, as_list: bool = False):
        super().__init__()
        self.as_list = as_list

    def predict_step(self, batch, batch_idx):
        points = batch["points"]  # (B, N)
        label, confidence = (points > 0).long(), points.abs() / 10
        if self.as_list:  # variable-size samples come as a list of (N_i,) tensors
            label, confidence = list(label), list(confidence)
        return {"sample_id": batch["sample_id"], "label": label, "confidence": confidence}


def loader() -> DataLoader:
    items = [{"sample_id": sid, "points": x} for sid, x in POINTS.items()]
    return DataLoader(items, batch_size=2)  # default collate: ids -> list[str], points -> (B, N)


def predict(output_dir, model: L.LightningModule, write_interval: str = "batch", **kwargs) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PseudoLabelWriter(output_dir, write_interval=write_interval)])
    trainer.predict(model, dataloaders=loader(), **kwargs)


def write_rank_file(output_dir, rank: int, world_size: int, samples: dict) -> None:
    """A rank file as rank ``rank`` of a ``world_size``-process run would write it."""
    writer = PseudoLabelWriter(output_dir)
    for sample_id, (label, confidence) in samples.items():
        writer.add({"sample_id": [sample_id], "label": [torch.tensor(label)],
                    "confidence": [torch.tensor(confidence)]})
    writer.on_predict_end(SimpleNamespace(global_rank=rank, world_size=world_size), None)


def test_predict_writes_one_rank_file_that_loads_back(tmp_path):
    predict(tmp_path, ThresholdModel(), return_predictions=False)

    assert sorted(os.listdir(tmp_path)) == ["predictions-rank0.npz"]  # no temporary file left
    predictions = load_predictions(tmp_path)
    assert sorted(predictions) == sorted(POINTS)
    label, confidence = predictions["scan_2"]  # points (2, -2, 2)
    assert label.dtype == np.int32 and label.tolist() == [1, 0, 1]
    assert confidence.dtype == np.float16
    np.testing.assert_allclose(confidence, [0.2, 0.2, 0.2], atol=1e-3)
    assert predictions["scan_0"][0].tolist() == [0, 0, 0]  # points (0, -2, -4)


def test_list_outputs_epoch_interval_and_stale_files_removed(tmp_path):
    (tmp_path / "predictions-rank3.npz").write_bytes(b"left over from a 4-GPU run")
    predict(tmp_path, ThresholdModel(as_list=True), write_interval="epoch", return_predictions=True)

    assert sorted(os.listdir(tmp_path)) == ["predictions-rank0.npz"]
    label, confidence = load_predictions(tmp_path)["scan_4"]  # points (4, -2, 8)
    assert label.tolist() == [1, 0, 1]
    np.testing.assert_allclose(confidence, [0.4, 0.2, 0.8], atol=1e-3)


def test_rank_files_merge_and_padded_duplicates_are_accepted(tmp_path):
    write_rank_file(tmp_path, 0, 2, {"a": ([1, 2], [0.5, 0.25]), "b": ([0], [1.0])})
    write_rank_file(tmp_path, 1, 2, {"c": ([3], [0.75]), "a": ([1, 2], [0.5, 0.25])})  # DistributedSampler pad

    merged = load_predictions(tmp_path)

    assert sorted(merged) == ["a", "b", "c"]
    assert merged["a"][0].tolist() == [1, 2] and merged["a"][1].tolist() == [0.5, 0.25]
    assert merged["c"][0].tolist() == [3]


def test_sample_ids_with_slashes_survive(tmp_path):
    write_rank_file(tmp_path, 0, 1, {"area_1/office_2": ([4], [0.5])})
    assert load_predictions(tmp_path)["area_1/office_2"][0].tolist() == [4]


def test_conflicting_duplicates_raise(tmp_path):
    write_rank_file(tmp_path, 0, 2, {"a": ([1, 2], [0.5, 0.25])})
    write_rank_file(tmp_path, 1, 2, {"a": ([1, 3], [0.5, 0.25])})
    with pytest.raises(DataError, match="'a' predicted twice with different values") as error:
        load_predictions(tmp_path)
    assert error.value.path.endswith("predictions-rank1.npz")


def test_missing_rank_unreadable_file_and_empty_folder_raise(tmp_path):
    with pytest.raises(DataError, match="no predictions-rank"):
        load_predictions(tmp_path)
    write_rank_file(tmp_path, 0, 2, {"a": ([1], [0.5])})
    with pytest.raises(DataError, match="do not form one run"):
        load_predictions(tmp_path)  # rank 1 of 2 is missing
    (tmp_path / "predictions-rank1.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read predictions NPZ") as error:
        load_predictions(tmp_path)
    assert str(error.value).startswith(str(tmp_path / "predictions-rank1.npz"))


def test_malformed_predict_step_output_is_rejected(tmp_path):
    writer = PseudoLabelWriter(tmp_path)
    with pytest.raises(ValueError, match="must return a dict"):
        writer.add(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="'label' has 1 samples"):
        writer.add({"sample_id": ["a", "b"], "label": torch.zeros(1, 3), "confidence": torch.zeros(2, 3)})
    writer.add({"sample_id": ["a"], "label": torch.tensor([[1, 2]]), "confidence": torch.tensor([[0.5, 0.5]])})
    with pytest.raises(DataError, match="'a' predicted twice"):
        writer.add({"sample_id": ["a"], "label": torch.tensor([[1, 0]]), "confidence": torch.tensor([[0.5, 0.5]])})
