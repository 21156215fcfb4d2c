"""DetectionTask: SparseDet mining and teacher boxes, a short training run, point mode against its baseline."""

from __future__ import annotations

import json
import time

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from datamodules.detection import DetectionDataModule
from datamodules.formats.coco import write_coco
from datamodules.formats.detection_common import DetectionDataset, ImageRecord
from datamodules.transforms.detection_augment import DetectionAugment
from vision.errors import DataError
from vision.labels.protocols import BoxToPoint
from vision.labels.types import BoxLabels
from vision.tasks.detection import DetectionTask, TorchvisionDetector


def tiny_detector() -> TorchvisionDetector:
    torch.manual_seed(0)
    return TorchvisionDetector("fcos", num_classes=2, min_size=64, max_size=64, fpn_channels=64)


def shapes_coco(root, sizes: tuple[int, ...], n_train: int = 16, n_eval: int = 8, seed: int = 0):
    """64 x 64 images with two big solid shapes each (class 0 = red square, 1 = blue disc), side by side."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        (root / "images" / split).mkdir(parents=True)
        records = []
        for i in range(count):
            image = Image.new("RGB", (64, 64), (40, 40, 40))
            draw = ImageDraw.Draw(image)
            boxes, classes = [], []
            for left in (True, False):
                side = int(rng.choice(sizes)) if len(sizes) > 2 else int(rng.integers(*sizes))
                x = int(rng.integers(0, 32 - side + 1)) if left and side <= 32 else (0 if left else 64 - side)
                y, c = int(rng.integers(0, 64 - side + 1)), int(rng.integers(2))
                shape = draw.rectangle if c == 0 else draw.ellipse
                shape([x, y, x + side - 1, y + side - 1], fill=(230, 60, 60) if c == 0 else (60, 200, 230))
                boxes.append([x, y, x + side, y + side])
                classes.append(c)
            name = f"{split}/{i:03d}.png"
            image.save(root / "images" / name)
            records.append(ImageRecord(str(i + 1), name, 64, 64, BoxLabels(boxes, classes)))
        write_coco(DetectionDataset(["square", "disc"], records, root / "images"), root / "annotations" / f"{split}.json")
    return root


def quiet_trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     check_val_every_n_epoch=10_000, gradient_clip_val=10.0, **kwargs)


def test_mining_turns_a_confident_far_candidate_into_an_ignored_region():
    task = DetectionTask(tiny_detector(), num_classes=2, teacher=False, burn_in_steps=0, consistency_weight=0)
    labelled = torch.tensor([[4.0, 4.0, 24.0, 24.0]])
    candidates = torch.tensor([[36.0, 36.0, 60.0, 60.0],   # confident, far: pseudo-positive
                               [5.0, 5.0, 24.0, 24.0],     # confident, on the labelled box
                               [36.0, 2.0, 60.0, 20.0]])   # far, not confident enough
    task.model.objectness_candidates = lambda images: [(candidates, torch.tensor([0.95, 0.99, 0.5]))]
    images = [torch.rand(3, 64, 64)]
    mined = task.mine_ignore_boxes(images, [labelled], complete=[False])
    assert mined[0].tolist() == [[36.0, 36.0, 60.0, 60.0]]
    assert task.mine_ignore_boxes(images, [labelled], complete=[True])[0].shape == (0, 4)
    losses = task._detector_losses(images, None, [labelled], [torch.tensor([1])], [False])
    assert task.last_mined == 1 and task.model.last_ignored_negatives > 0
    assert task.last_ignored_negatives == task.model.last_ignored_negatives
    assert torch.isfinite(sum(losses.values()))
    task.hparams.baseline = True  # plain training: the unlabelled object stays background
    task._detector_losses(images, None, [labelled], [torch.tensor([1])], [False])
    assert task.last_mined == 0 and task.model.last_ignored_negatives == 0


def test_teacher_boxes_above_merge_score_away_from_labels_join_the_targets():
    task = DetectionTask(tiny_detector(), num_classes=2, teacher=True, merge_score=0.9)
    detections = {"boxes": torch.tensor([[36.0, 36.0, 60.0, 60.0], [36.0, 2.0, 60.0, 20.0], [4.0, 4.0, 23.0, 24.0]]),
                  "scores": torch.tensor([0.95, 0.6, 0.97]), "labels": torch.tensor([1, 0, 0])}
    task.teacher.forward = lambda images: [detections]
    pseudo = task.teacher_pseudo_boxes([torch.rand(3, 64, 64)], [torch.tensor([[4.0, 4.0, 24.0, 24.0]])], [False])
    boxes, labels = pseudo[0]
    assert boxes.tolist() == [[36.0, 36.0, 60.0, 60.0]] and labels.tolist() == [1]


def test_calibrated_thresholds_take_a_from_scratch_teachers_confident_boxes():
    # the teacher finds the labelled box at 0.4 and an unlabelled one at 0.6: far below SparseDet's 0.9,
    # above 1.25 x 0.4; the one at 0.45 is not
    detections = {"boxes": torch.tensor([[4.0, 4.0, 24.0, 24.0], [36.0, 36.0, 60.0, 60.0], [36.0, 2.0, 60.0, 20.0]]),
                  "scores": torch.tensor([0.4, 0.6, 0.45]), "labels": torch.tensor([1, 1, 1])}
    labelled, labels = [torch.tensor([[4.0, 4.0, 24.0, 24.0]])], [torch.tensor([1])]
    for thresholds, expected in (("fixed", []), ("calibrated", [[36.0, 36.0, 60.0, 60.0]])):
        task = DetectionTask(tiny_detector(), num_classes=2, teacher=True, thresholds=thresholds)
        task.teacher.forward = lambda images: [detections]
        boxes, _ = task.teacher_pseudo_boxes([torch.rand(3, 64, 64)], labelled, [False], labels)[0]
        assert boxes.tolist() == expected
    assert task.merge_calibration.thresholds().tolist() == pytest.approx([0.9, 0.5])


def test_the_teacher_detects_and_mines_in_one_pass_with_the_same_targets_as_two():
    images, labelled, labels = [torch.rand(3, 64, 64) for _ in range(2)], [torch.tensor([[4.0, 4.0, 24.0, 24.0]])] * 2, \
        [torch.tensor([1])] * 2
    results = []
    for one_pass in (True, False):
        task = DetectionTask(tiny_detector(), num_classes=2, thresholds="fixed", merge_score=0.0, mining_score=0.0,
                             burn_in_steps=0, consistency_weight=0)
        passes = []
        task.teacher.model.model.backbone.register_forward_hook(lambda *args, passes=passes: passes.append(1))
        if not one_pass:
            task._teacher_pass = lambda images, complete: (None, None)
        torch.manual_seed(0)
        losses = task._detector_losses(images, None, labelled, labels, [False, True])
        results.append((len(passes), task.last_mined, task.last_pseudo, {k: v.item() for k, v in losses.items()}))
    (one_pass_count, mined, pseudo, losses), (two_pass_count, *expected) = results
    assert (one_pass_count, two_pass_count) == (1, 2)  # only the incomplete image goes to the teacher, once
    assert mined > 0 and [mined, pseudo, losses] == expected


@pytest.mark.slow
def test_short_training_run_detects_big_shapes_and_writes_coco_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    root = shapes_coco(tmp_path / "data", sizes=(16, 30))
    L.seed_everything(0)
    dm = DetectionDataModule(str(root), augment=DetectionAugment(scale=(1.0, 1.0), translate=0.0),
                             strong_view=False, batch_size=4)
    task = DetectionTask(tiny_detector(), 2, ["square", "disc"], teacher=False, mining=False, warmup_steps=10,
                         prediction_dir=str(tmp_path / "predictions"))
    trainer = quiet_trainer(48)
    start = time.perf_counter()
    trainer.fit(task, dm)
    print(f"fcos 64x64 batch 4: {(time.perf_counter() - start) / 48:.2f} s/step")
    scores = trainer.test(task, dm, verbose=False)[0]
    assert scores["test/map_50"] >= 0.3
    assert set(scores) >= {"test/map", "test/map_75", "test/ap/square", "test/ap/disc"}
    trainer.predict(task, dm, return_predictions=False)
    results = json.loads((tmp_path / "predictions" / "test.results.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 9)) and {r["category_id"] for r in results} <= {1, 2}
    with pytest.raises(DataError, match="already exists"):
        trainer.predict(task, dm, return_predictions=False)


@pytest.mark.slow
def test_point_boxes_beat_the_mean_size_baseline(tmp_path, monkeypatch):
    """Objects are 10 or 32 px: a mean-size box fits neither, MIL learns which one each point holds."""
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    root = shapes_coco(tmp_path / "data", sizes=(10, 10, 32))
    L.seed_everything(0)
    dm = DetectionDataModule(str(root), augment=DetectionAugment(scale=(1.0, 1.0), translate=0.0),
                             weak_labels=BoxToPoint("center"), batch_size=4)
    train_boxes = np.concatenate([r.boxes.boxes for r in dm.dataset("train").images])
    train_classes = np.concatenate([r.boxes.class_id for r in dm.dataset("train").images])
    prior = [(train_boxes[train_classes == c, 2:] - train_boxes[train_classes == c, :2]).mean(0).tolist()
             for c in (0, 1)]  # the baseline gets the true mean size of each class
    mil = dict(view2_scale=0.75, mil_kwargs=dict(box_sizes=(8, 11, 16, 22, 32, 45), aspect_ratios=(1.0,),
                                                 centre_shifts=(0.0,), hidden=128))
    task = DetectionTask(tiny_detector(), 2, mode="points", teacher=False, optimizer="adamw", lr=1e-3,
                         warmup_steps=5, point_burn_in_steps=10**6, mil_options=mil, write_predictions=False)
    trainer = quiet_trainer(60)
    trainer.fit(task, dm)
    learned = trainer.validate(task, dm, verbose=False)[0]["val/point_box_iou"]
    baseline = DetectionTask(tiny_detector(), 2, mode="points", point_boxes="mean_size", class_mean_wh=prior,
                             teacher=False, write_predictions=False)
    mean_size = quiet_trainer(1).validate(baseline, dm, verbose=False)[0]["val/point_box_iou"]
    print(f"point boxes: MIL IoU {learned:.3f}, mean-size IoU {mean_size:.3f}")
    assert learned > mean_size + 0.05
