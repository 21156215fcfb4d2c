"""DetectionDataModule: weak boxes and points from a tiny COCO set, seeded views that keep labels aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.detection import DetectionDataModule, load_image
from datamodules.formats.coco import write_coco
from datamodules.formats.detection_common import DetectionDataset, ImageRecord
from datamodules.transforms.detection_augment import DetectionAugment, DetectionViews
from vision.labels.protocols import BoxToPoint, DropBoxes
from vision.labels.types import BoxLabels

BOXES = [[4, 4, 20, 20], [30, 8, 50, 30], [10, 36, 28, 60], [40, 40, 60, 62]]


@pytest.fixture
def tiny_coco(tmp_path, monkeypatch):
    """6 training and 2 val/test images (64 x 64) with the same 4 boxes each, classes 0/1 alternating."""
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        (root / "images" / split).mkdir(parents=True)
        records = []
        for i in range(count):
            name = f"{split}/{i}.png"
            Image.fromarray(np.full((64, 64, 3), 20 * i, np.uint8)).save(root / "images" / name)
            records.append(ImageRecord(str(i + 1), name, 64, 64, BoxLabels(BOXES, [0, 1, 0, 1])))
        write_coco(DetectionDataset(["a", "b"], records, root / "images"), root / "annotations" / f"{split}.json")
    return root


def no_augment() -> DetectionAugment:
    return DetectionAugment(hflip=0.0, scale=(1.0, 1.0), translate=0.0)


def test_drop_boxes_keeps_the_drawn_boxes_and_marks_images_incomplete(tiny_coco):
    dm = DetectionDataModule(str(tiny_coco), weak_labels=DropBoxes(0.5), augment=no_augment(), batch_size=6)
    dm.setup("fit")
    kept = {image_id: len(labels) for image_id, labels in dm.weak.items()}
    budget = dm.label_budget()
    assert budget["full_boxes"] == 24 and budget["boxes"] == sum(kept.values()) and budget["points"] == 0
    assert 0 < budget["boxes"] < 24  # about half of the 24 boxes survive
    batch = next(iter(dm.train_dataloader()))
    by_id = dict(zip(batch["image_id"], zip(batch["boxes"], batch["complete"])))
    for image_id, count in kept.items():
        boxes, complete = by_id[image_id]
        assert len(boxes) == count
        assert complete is (count == 4)
    # validation always carries the full boxes
    val = next(iter(dm.val_dataloader()))
    assert [len(b) for b in val["boxes"]] == [4, 4] and val["complete"] == [True, True]
    assert "image_strong" not in val


def test_same_seed_same_boxes_other_seed_other_boxes(tiny_coco):
    def kept(seed):
        dm = DetectionDataModule(str(tiny_coco), weak_labels=DropBoxes(0.5), weak_label_seed=seed)
        dm.setup("fit")
        return {k: v.boxes.tolist() for k, v in dm.weak.items()}

    assert kept(0) == kept(0)
    assert kept(0) != kept(1)


def test_box_to_point_gives_box_centres_and_no_boxes(tiny_coco):
    dm = DetectionDataModule(str(tiny_coco), weak_labels=BoxToPoint("center"), augment=no_augment())
    dm.setup("fit")
    item = dm.images("train", training=True)[0]
    assert item["boxes"].shape == (0, 4) and item["complete"] is False
    assert item["points"].tolist() == [[12, 12], [40, 19], [19, 48], [50, 51]]
    assert item["point_labels"].tolist() == [0, 1, 0, 1]
    assert dm.label_budget()["points"] == 24


def test_flip_moves_boxes_and_points_together():
    views = DetectionViews(DetectionAugment(hflip=1.0, scale=(1.0, 1.0), translate=0.0))
    image = np.zeros((32, 40, 3), np.uint8)
    image[:, :10] = 255  # a bright band on the left ends up on the right
    out = views(image, np.array([[2.0, 4.0, 10.0, 12.0]]), np.array([1]), np.array([[6.0, 8.0], [39.0, 1.0]]),
                np.array([1, 0]), seed=3)
    assert out["boxes"].tolist() == [[30.0, 4.0, 38.0, 12.0]]  # x -> 40 - x
    assert out["points"].tolist() == [[34.0, 8.0], [1.0, 1.0]]
    assert out["labels"].tolist() == [1] and out["point_labels"].tolist() == [1, 0]
    assert out["image"][:, 30:].min() == 255 and out["image"][:, :30].max() == 0
    assert out["image_strong"].shape == out["image"].shape


def test_scale_jitter_keeps_each_point_at_its_box_centre_and_is_seeded():
    views = DetectionViews(DetectionAugment(hflip=0.5, scale=(0.7, 1.3), translate=0.1, geometric_p=1.0))
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    boxes = np.array([[20.0, 20.0, 40.0, 36.0], [44.0, 10.0, 60.0, 50.0]])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for seed in range(6):
        out = views(image, boxes, np.array([0, 1]), centres, np.array([0, 1]), seed=seed)
        assert out["labels"].tolist() == out["point_labels"].tolist()
        inside = (out["boxes"][:, 0] > 0) & (out["boxes"][:, 2] < 80) & (out["boxes"][:, 1] > 0) & (out["boxes"][:, 3] < 64)
        moved = (out["boxes"][:, :2] + out["boxes"][:, 2:]) / 2
        np.testing.assert_allclose(moved[inside], out["points"][: len(moved)][inside], atol=1e-3)
        again = views(image, boxes, np.array([0, 1]), centres, np.array([0, 1]), seed=seed)
        assert np.array_equal(out["image_strong"], again["image_strong"]) and np.array_equal(out["boxes"], again["boxes"])


def test_training_views_depend_on_epoch_but_not_on_order(tiny_coco):
    dm = DetectionDataModule(str(tiny_coco), augment=DetectionAugment(hflip=0.5))
    images = dm.images("train", training=True)
    first = [images[i]["boxes"] for i in range(6)]
    assert all(torch.equal(images[i]["boxes"], first[i]) for i in reversed(range(6)))
    next_epoch = [images[6 + i]["boxes"] for i in range(6)]  # global index = epoch * N + i
    assert any(not torch.equal(a, b) for a, b in zip(first, next_epoch))


def test_load_image_resizes_the_shorter_side(tmp_path):
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "a.png")
    image, scale = load_image(tmp_path / "a.png", 20)
    assert image.shape == (20, 40, 3) and scale.tolist() == [0.5, 0.5]
    image, scale = load_image(tmp_path / "a.png", (10, 10))
    assert image.shape == (10, 10, 3) and scale.tolist() == [0.125, 0.25]


def test_bccd_loads_through_the_voc_reader(shared_data):
    dm = DetectionDataModule(str(shared_data / "bccd" / "BCCD"), format="voc", image_size=240, batch_size=2)
    assert dm.class_names == ["Platelets", "RBC", "WBC"]
    assert [len(dm.dataset(s).images) for s in ("train", "val", "test")] == [205, 87, 72]
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"][0].shape == (3, 240, 320) and batch["scale"][0].tolist() == [0.5, 0.5]
    assert all(len(b) > 0 for b in batch["boxes"])
