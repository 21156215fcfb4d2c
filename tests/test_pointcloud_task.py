"""Point-cloud task end to end on a tiny fixed room: weak labels, crops, whole-scene inference, training."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.pointcloud import PointCloudDataModule
from datamodules.pointcloud_crops import predict_scene
from datamodules.synthetic.rooms import ROOM_CLASSES, generate_room, write_room_ply
from vision.labels.protocols import Count
from vision.labels.types import IGNORE_INDEX
from vision.models.pointcloud import SQN
from vision.tasks.pointcloud import PointCloudSegmentation

SMALL = {"num_layers": 3, "k": 8, "sub_ratios": (4, 4, 4)}


@pytest.fixture
def room_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    room = generate_room(7, "fixed", points_per_room=(6000, 7000))
    for split in ("train", "val", "test"):
        (tmp_path / "rooms" / split).mkdir(parents=True)
        write_room_ply(tmp_path / "rooms" / split / "room.ply", room)
    return tmp_path / "rooms", room


def make_datamodule(root, **kwargs) -> PointCloudDataModule:
    options = dict(data_root=str(root), class_names=ROOM_CLASSES, voxel_size=0.05, crop_points=1024,
                   batch_size=2, crops_per_epoch=8, **SMALL)
    options.update(kwargs)
    return PointCloudDataModule(**options)


def small_sqn() -> SQN:
    return SQN(6, len(ROOM_CLASSES), encoder_kwargs={"dims": (8, 16, 32), "k": 8}, head_kwargs={"hidden": (64,)})


def test_weak_labels_are_drawn_once_and_reach_training_crops_only_as_targets(room_root):
    root, room = room_root
    datamodule = make_datamodule(root, weak_labels=Count(20), weak_label_seed=3)
    datamodule.prepare_data()
    datamodule.setup("fit")
    weak = datamodule.weak["train/room"]
    assert len(weak) == 20 and datamodule.label_budget()["labelled"] == 20
    assert np.array_equal(weak.class_id, room["semantic"][weak.index])  # classes agree with the full labels
    scene = datamodule.scenes("train")[0]
    labelled = scene.target != IGNORE_INDEX
    assert 0 < labelled.sum() <= 20  # two labelled points may share a voxel
    assert set(np.unique(scene.target[labelled])) <= set(weak.class_id.tolist())
    batch = next(iter(datamodule.train_dataloader()))
    assert "labels" not in batch and batch["target"].shape == (2, 1024)
    assert batch["features"].shape == (2, 1024, 6) and "view1_features" in batch
    # the same seed gives the same labels in a fresh datamodule (read back from the cache)
    again = make_datamodule(root, weak_labels=Count(20), weak_label_seed=3)
    again.setup("fit")
    assert np.array_equal(again.weak["train/room"].index, weak.index)
    other = make_datamodule(root, weak_labels=Count(20), weak_label_seed=4)
    other.setup("fit")
    assert not np.array_equal(other.weak["train/room"].index, weak.index)


def test_training_crops_are_reproducible_and_differ_between_epochs(room_root):
    root, _ = room_root
    datamodule = make_datamodule(root, weak_labels=Count(20))
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    first = next(iter(loader))["point_index"]
    assert torch.equal(first, next(iter(datamodule.train_dataloader()))["point_index"])
    loader.sampler.set_epoch(1)
    assert not torch.equal(first, next(iter(loader))["point_index"])


def test_labelled_crop_fraction_centres_crops_on_the_few_labels(room_root):
    root, _ = room_root

    def crops_with_a_label(fraction: float) -> int:
        datamodule = make_datamodule(root, weak_labels=Count(2), crop_points=256, crops_per_epoch=16,
                                     labelled_crop_fraction=fraction)
        datamodule.setup("fit")
        targets = torch.cat([batch["target"] for batch in datamodule.train_dataloader()])
        assert targets.shape == (16, 256)
        return int((targets != IGNORE_INDEX).any(1).sum())

    # two clicks in a ~3,000-voxel room: most coverage crops hold neither of them
    assert crops_with_a_label(0.0) <= 8
    assert crops_with_a_label(1.0) == 16
    with pytest.raises(ValueError, match="labelled_crop_fraction"):
        make_datamodule(root, labelled_crop_fraction=1.5).train_dataloader()


def test_query_points_trains_the_head_at_the_labelled_points_first(room_root):
    root, _ = room_root
    task = PointCloudSegmentation(small_sqn(), len(ROOM_CLASSES), query_points=64)
    target = torch.full((2, 1024), IGNORE_INDEX)
    target[0, [5, 900]] = 3
    target[1, 7] = 1
    torch.manual_seed(0)
    index = task.query_index(target)
    assert index.shape == (2, 64) and all(len(set(row.tolist())) == 64 for row in index)
    assert set(index[0, :2].tolist()) == {5, 900} and index[1, 0] == 7  # labelled points come first
    assert task.query_index(torch.zeros(1, 10, dtype=torch.long)).shape == (1, 10)  # capped at the crop
    assert PointCloudSegmentation(small_sqn(), len(ROOM_CLASSES)).query_index(target) is None
    with pytest.raises(ValueError, match="query_points"):
        PointCloudSegmentation(small_sqn(), len(ROOM_CLASSES), query_points=0)
    datamodule = make_datamodule(root, weak_labels=Count(20))
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0)
    trainer.fit(PointCloudSegmentation(small_sqn(), len(ROOM_CLASSES), query_points=128, rampup_steps=1),
                datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/loss_pseudo" in trainer.callback_metrics


def test_whole_scene_inference_covers_every_point(room_root):
    root, room = room_root
    datamodule = make_datamodule(root)
    scene = datamodule.scenes("test")[0]

    def logits_fn(inputs):  # uniform predictions: the votes then show only coverage
        return torch.zeros(inputs["features"].shape[0], len(ROOM_CLASSES), inputs["features"].shape[1])

    probs = predict_scene(logits_fn, scene, len(ROOM_CLASSES), crop_points=512, **SMALL)
    assert probs.shape == (scene.num_points, len(ROOM_CLASSES))
    assert torch.allclose(probs.sum(1), torch.ones(scene.num_points))  # every sub-point got at least one vote
    per_point = probs[torch.as_tensor(scene.inverse)]
    assert per_point.shape[0] == len(room["semantic"])


@pytest.mark.slow
def test_short_training_beats_twice_the_best_constant_prediction(room_root):
    root, room = room_root
    L.seed_everything(0)
    datamodule = make_datamodule(root, weak_labels=Count(300), crops_per_epoch=16)
    model = PointCloudSegmentation(small_sqn(), num_classes=len(ROOM_CLASSES), class_names=ROOM_CLASSES, lr=0.01,
                                   rampup_steps=20, eval_batch_size=2)
    trainer = L.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        check_val_every_n_epoch=100)
    trainer.fit(model, datamodule=datamodule)
    miou = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/miou"]
    labels = room["semantic"]
    present = np.unique(labels)
    best_constant = max(np.mean(labels == c) for c in present) / len(present)  # IoU of the majority class / C
    assert miou >= 2 * best_constant, (miou, best_constant)


def test_label_propagation_scores_only_the_points_not_given(room_root):
    root, room = room_root
    datamodule = make_datamodule(root, weak_labels=Count(20), splits={s: ["train/*"] for s in ("train", "val", "test")},
                                 score_unlabelled_only=True)
    datamodule.setup("fit")
    given = datamodule.weak["train/room"].index
    scored = datamodule.scenes("test")[0].full_labels
    assert (scored[given] == IGNORE_INDEX).all()
    assert np.array_equal(np.delete(scored, given), np.delete(room["semantic"], given))
    assert np.array_equal(datamodule.scenes("train")[0].full_labels, room["semantic"])  # training copy untouched


def test_spread_grows_each_click_to_its_close_same_coloured_neighbours(room_root):
    root, room = room_root
    plain = make_datamodule(root, weak_labels=Count(20), weak_label_seed=1)
    plain.setup("fit")
    grown = make_datamodule(root, weak_labels=Count(20), weak_label_seed=1, spread_voxels=6,
                            spread_color_tolerance=0.15)
    grown.setup("fit")
    before, after = plain.scenes("train")[0].target, grown.scenes("train")[0].target
    clicked = before != IGNORE_INDEX
    assert np.array_equal(after[clicked], before[clicked])  # human labels are kept as they are
    new = (after != IGNORE_INDEX) & ~clicked
    assert new.sum() > 2 * clicked.sum()  # each click labels a patch
    scene = grown.scenes("train")[0]
    assert np.mean(after[new] == scene.labels[new]) > 0.9  # and the patches are mostly right
    assert grown.label_budget()["labelled"] == 20  # the budget counts clicks, not grown targets
    # the colour gate only removes grown targets; radius 0 is off
    no_gate = make_datamodule(root, weak_labels=Count(20), weak_label_seed=1, spread_voxels=6)
    no_gate.setup("fit")
    assert (no_gate.scenes("train")[0].target != IGNORE_INDEX).sum() >= (after != IGNORE_INDEX).sum()
    off = make_datamodule(root, weak_labels=Count(20), weak_label_seed=1, spread_voxels=0)
    off.setup("fit")
    assert np.array_equal(off.scenes("train")[0].target, before)


def test_burn_in_trains_partial_cross_entropy_alone_then_the_engine(room_root):
    root, _ = room_root
    datamodule = make_datamodule(root, weak_labels=Count(50))
    model = PointCloudSegmentation(small_sqn(), num_classes=len(ROOM_CLASSES), class_names=ROOM_CLASSES,
                                   burn_in_steps=2, rampup_steps=2)
    logged = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            logged.append(sorted(k for k in trainer.callback_metrics if k.startswith("train/loss_")))

    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[Record()])
    trainer.fit(model, datamodule=datamodule)
    assert logged[0] == logged[1] == ["train/loss_ce"]
    assert logged[3] == ["train/loss_ce", "train/loss_consistency", "train/loss_contrastive", "train/loss_pseudo"]
