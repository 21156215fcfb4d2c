"""EventSegmentationDataModule (EV-WSSS data): windows, reversed stream, weak point targets, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.events import EventSegmentationDataModule, FrameAugment
from datamodules.formats.dsec import write_dsec_events, write_label_png
from datamodules.formats.events_common import EventArray
from vision.errors import DataError
from vision.labels.protocols import PerClass
from vision.labels.types import IGNORE_INDEX

T0 = 1_600_000_000_000_000  # absolute µs, like DSEC's t_offset
HEIGHT, WIDTH = 32, 40
LABEL_STEP = 100_000  # label k of a sequence is at T0 + (k + 1) * LABEL_STEP


def label_map(k: int, rows: int = HEIGHT) -> np.ndarray:
    """Class 0 everywhere, a class-1 block, and a class-2 block on every frame but the first."""
    labels = np.zeros((rows, WIDTH), np.int64)
    labels[4:12, 5 + k:15 + k] = 1
    if k > 0:
        labels[18:26, 22:34] = 2
    labels[0, 0] = IGNORE_INDEX  # an unlabelled pixel, as DSEC's 255
    return labels


def write_recording(folder: Path, num_labels: int = 3, label_rows: int = HEIGHT) -> None:
    """One flattened DSEC sequence: per label k, an ON event 5 ms before it at (x=1+k, y=1) and an ON
    event 20 ms after it at (x=30, y=20+k); labels ``label_map(k)``; timestamps.txt."""
    times, xs, ys = [], [], []
    for k in range(num_labels):
        t = T0 + (k + 1) * LABEL_STEP
        times += [t - 5_000, t + 20_000]
        xs += [1 + k, 30]
        ys += [1, 20 + k]
    (folder / "labels").mkdir(parents=True)
    write_dsec_events(folder / "events.h5", EventArray.from_arrays(xs, ys, times, [1] * len(times), WIDTH, HEIGHT),
                      t_offset=T0)
    for k in range(num_labels):
        write_label_png(folder / "labels" / f"{k:06d}.png", label_map(k, label_rows))
    (folder / "timestamps.txt").write_text("".join(f"{T0 + (k + 1) * LABEL_STEP}\n" for k in range(num_labels)))


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))  # weak-label files go here
    for split in ("train", "val", "test"):
        for name in ("seq_a", "seq_b"):
            write_recording(tmp_path / "data" / split / name)
    return tmp_path / "data"


def datamodule(root: Path, **options) -> EventSegmentationDataModule:
    defaults = dict(data_root=str(root), num_classes=3, window_us=10_000, normalize_voxels=False,
                    weak_labels=PerClass(k=1), augment=False, batch_size=2)
    dm = EventSegmentationDataModule(**{**defaults, **options})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def training_items(dm: EventSegmentationDataModule, epoch: int = 0) -> dict[str, dict]:
    """Epoch ``epoch``'s items by sample id (the sampler gives global indices ``epoch * len + j``)."""
    dataset = dm.dataset("train")
    return {item["sample_id"]: item for item in (dataset[epoch * len(dataset) + j] for j in range(len(dataset)))}


def test_frames_are_named_split_sequence_label_index(root):
    dm = datamodule(root)
    assert [f.sample_id for f in dm.frames("train")] == [
        "train/seq_a/000000", "train/seq_a/000001", "train/seq_a/000002",
        "train/seq_b/000000", "train/seq_b/000001", "train/seq_b/000002"]
    assert dm.label_path("test/seq_b/000001") == root / "test" / "seq_b" / "labels" / "000001.png"
    assert dm.sequence_folder("val/seq_a/000002") == root / "val" / "seq_a"


def test_forward_voxel_holds_the_events_before_the_label_time(root):
    item = training_items(datamodule(root))["train/seq_a/000001"]  # label k=1
    voxel = item["voxel"]
    assert voxel.shape == (5, HEIGHT, WIDTH) and voxel.dtype == torch.float32
    # the ON event 5 ms before t in a 10 ms window: t* = 4 * 5000 / 10000 = 2 -> bin 2, weight +1
    assert torch.nonzero(voxel).tolist() == [[2, 1, 2]]
    assert voxel[2, 1, 2].item() == 1.0


def test_reversed_voxel_holds_the_events_after_the_label_time_played_backwards(root):
    item = training_items(datamodule(root))["train/seq_a/000001"]
    reversed_voxel = item["voxel_reversed"]
    assert reversed_voxel.shape == (5, HEIGHT, WIDTH)
    # the event 20 ms after t (x=30, y=21) mirrored to t - 20001 in the 50 ms window [t - 50000, t):
    # t* = 4 * 29999 / 50000 = 2.39992 -> bins 2 and 3; ON becomes OFF, so the weights are negative
    assert torch.nonzero(reversed_voxel).tolist() == [[2, 21, 30], [3, 21, 30]]
    assert reversed_voxel[2, 21, 30].item() == pytest.approx(-0.60008, abs=1e-5)
    assert reversed_voxel[3, 21, 30].item() == pytest.approx(-0.39992, abs=1e-5)


def test_count_windows_take_the_last_events_before_and_five_times_as_many_after(root):
    item = training_items(datamodule(root, window_events=1))["train/seq_a/000001"]
    assert torch.nonzero(item["voxel"])[:, 1:].unique(dim=0).tolist() == [[1, 2]]  # one event: bin 0
    # up to 5 events from t = 200 ms on: 220 ms (x=30, y=21), 295 ms (x=3, y=1), 320 ms (x=30, y=22)
    assert torch.nonzero(item["voxel_reversed"])[:, 1:].unique(dim=0).tolist() == [[1, 3], [21, 30], [22, 30]]


def test_weak_target_has_one_point_per_present_class_with_its_true_class(root):
    dm = datamodule(root)
    for sample_id, item in training_items(dm).items():
        k = int(sample_id[-1])
        full = label_map(k)
        target = item["target"].numpy()
        rows, cols = np.nonzero(target != IGNORE_INDEX)
        classes_in_frame = [0, 1] if k == 0 else [0, 1, 2]
        assert sorted(target[rows, cols].tolist()) == classes_in_frame  # exactly one pixel per class
        assert (full[rows, cols] == target[rows, cols]).all()  # on a pixel of that class
        assert item["present"].tolist() == [c in classes_in_frame for c in range(3)]
        assert "labels" not in item  # full labels never reach training
    assert dm.label_budget() == {"labelled": 16, "total": 6 * HEIGHT * WIDTH, "fraction": 16 / (6 * HEIGHT * WIDTH)}


def test_same_label_seed_gives_the_same_points_and_another_seed_other_points(root, tmp_path, monkeypatch):
    first = {s: i["target"] for s, i in training_items(datamodule(root)).items()}
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "other-cache"))  # drawn again, not loaded
    again = {s: i["target"] for s, i in training_items(datamodule(root)).items()}
    other = {s: i["target"] for s, i in training_items(datamodule(root, weak_label_seed=1)).items()}
    assert all(torch.equal(first[s], again[s]) for s in first)
    assert not all(torch.equal(first[s], other[s]) for s in first)


def test_full_supervision_targets_are_the_full_labels(root):
    item = training_items(datamodule(root, weak_labels=None))["train/seq_b/000002"]
    assert np.array_equal(item["target"].numpy(), label_map(2))
    assert item["present"].tolist() == [True, True, True]


def test_evaluation_items_carry_full_labels_and_no_reversed_stream(root):
    dm = datamodule(root)
    item = dm.dataset("val")[3]
    assert item["sample_id"] == "val/seq_b/000000"
    assert np.array_equal(item["labels"].numpy(), label_map(0))
    assert item["present"].tolist() == [True, True, False]
    assert set(item) == {"sample_id", "voxel", "labels", "present"}
    batch = next(iter(dm.val_dataloader()))
    assert batch["voxel"].shape == (2, 5, HEIGHT, WIDTH) and batch["labels"].shape == (2, HEIGHT, WIDTH)


def test_label_crop_keeps_the_top_rows_the_labels_cover(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    write_recording(tmp_path / "data" / "train" / "seq_a", label_rows=28)
    dm = datamodule(tmp_path / "data", label_crop=28)
    item = dm.dataset("train")[0]
    assert item["voxel"].shape == item["voxel_reversed"].shape == (5, 28, WIDTH)
    assert item["target"].shape == (28, WIDTH)
    with pytest.raises(DataError, match=r"labels/00000\d.png: label shape"):  # labels and sensor rows disagree
        datamodule(tmp_path / "data", weak_labels=None).dataset("train")[0]


def test_each_epoch_visits_every_frame_once_in_a_seeded_order(root):
    dm = datamodule(root, augment=True)
    dataset = dm.dataset("train")
    epoch0 = [dataset[j]["sample_id"] for j in range(6)]
    epoch1 = [dataset[6 + j]["sample_id"] for j in range(6)]
    assert sorted(epoch0) == sorted(epoch1) == [f.sample_id for f in dm.frames("train")]
    assert epoch0 != epoch1
    assert torch.equal(dataset[7]["voxel_reversed"], dm.dataset("train")[7]["voxel_reversed"])  # same draw


def test_flip_moves_voxels_of_both_streams_and_the_points_together(root):
    plain = training_items(datamodule(root))
    flipped = training_items(datamodule(root, augment=True, flip_prob=1.0, crop_scale=(1.0, 1.0)))
    for sample_id, item in flipped.items():
        for key in ("voxel", "voxel_reversed", "target"):
            assert torch.equal(item[key], plain[sample_id][key].flip(-1)), key


def test_crop_rescale_moves_sparse_points_one_to_one_and_resamples_dense_maps():
    target = torch.full((4, 4), IGNORE_INDEX)
    target[1, 2], target[0, 0] = 1, 2
    box = (1, 1, 2, 2, False)  # rows 1-2, columns 1-2, zoomed x2
    sparse = FrameAugment.apply_target(target, box, sparse=True)
    # (row 1, col 2) -> (floor(0.5 * 2), floor(1.5 * 2)) = (1, 3); (0, 0) lies outside the crop
    assert torch.nonzero(sparse != IGNORE_INDEX).tolist() == [[1, 3]] and sparse[1, 3] == 1
    dense = FrameAugment.apply_target(torch.arange(16).view(4, 4), box, sparse=False)
    assert dense.tolist() == [[5, 5, 6, 6], [5, 5, 6, 6], [9, 9, 10, 10], [9, 9, 10, 10]]


def test_weak_label_file_from_other_labels_is_refused(root, tmp_path):
    dm = datamodule(root)
    weak_file = tmp_path / "one"
    dm.weak.save(weak_file)
    write_label_png(root / "train" / "seq_a" / "labels" / "000000.png", label_map(2))  # the labels change
    with pytest.raises(DataError, match="made from other labels"):
        datamodule(root, weak_labels=None, weak_label_file=str(weak_file))


def test_batches_do_not_depend_on_the_number_of_workers(root):
    def two_epochs(num_workers: int) -> list[torch.Tensor]:
        loader = datamodule(root, augment=True, num_workers=num_workers).train_dataloader()
        batches = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)  # what Lightning does before each epoch
            batches += [torch.cat([b["voxel_reversed"].flatten(), b["target"].flatten().float()]) for b in loader]
        return batches

    in_process, in_workers = two_epochs(0), two_epochs(2)
    assert len(in_process) == 6  # 6 frames, batches of 2, two epochs
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))
