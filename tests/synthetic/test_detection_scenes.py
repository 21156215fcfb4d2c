"""The procedural detection scenes: reproducible, crowded, 1:10 scales, tight boxes, occlusion rule, COCO."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.coco import read_coco
from datamodules.synthetic.detection_scenes import (
    DETECTION_CLASSES,
    JPEG_QUALITY,
    SCENES_VERSION,
    VISIBLE_FRACTION_MIN,
    ensure_detection_dataset,
    generate_image,
    jpeg_quality,
    visible_boxes,
    write_detection_dataset,
)
from datamodules.synthetic.detection_shapes import COLOUR_FAMILIES
from vision.errors import DataError

NUM_SCENES = 20


@pytest.fixture(scope="module")
def scenes():
    return [generate_image(0, f"train_{i:05d}", return_masks=True) for i in range(NUM_SCENES)]


def test_same_seed_and_image_id_give_the_same_scene(scenes):
    image, boxes, class_ids = generate_image(0, "train_00003")
    np.testing.assert_array_equal(image, scenes[3][0])
    np.testing.assert_array_equal(boxes, scenes[3][1])
    np.testing.assert_array_equal(class_ids, scenes[3][2])


def test_another_seed_or_image_id_gives_another_scene(scenes):
    other_seed = generate_image(1, "train_00003")
    assert np.abs(other_seed[0].astype(int) - scenes[3][0]).mean() > 20
    assert other_seed[1].shape != scenes[3][1].shape or not np.array_equal(other_seed[1], scenes[3][1])
    assert not np.array_equal(scenes[2][0], scenes[3][0])


def test_images_are_crowded_with_every_class(scenes):
    image, boxes, class_ids, _ = scenes[0]
    assert image.shape == (192, 256, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and class_ids.dtype == np.int32
    per_image = [len(boxes) for _, boxes, _, _ in scenes]
    assert np.mean(per_image) >= 8 and min(per_image) >= 4
    counts = np.bincount(np.concatenate([ids for _, _, ids, _ in scenes]), minlength=len(DETECTION_CLASSES))
    assert len(DETECTION_CLASSES) >= 6 and len(counts) == len(DETECTION_CLASSES)
    assert counts.min() >= 0.08 * counts.sum()  # no class is rare


def test_box_sizes_span_one_to_ten_at_the_default_size(scenes):
    boxes = np.concatenate([boxes for _, boxes, _, _ in scenes])
    larger_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert larger_side.min() <= 12 and larger_side.max() >= 80
    assert larger_side.max() / larger_side.min() >= 8


def test_boxes_lie_inside_the_image_and_are_tight_around_the_visible_mask(scenes):
    for _, boxes, class_ids, drawn in scenes:
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 256) and np.all(boxes[:, 3] <= 192)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        assert np.array_equal(class_ids, drawn.object_class_ids[drawn.annotated])
        for box, mask, index in zip(boxes.astype(int), drawn.masks, np.flatnonzero(drawn.annotated)):
            x1, y1, x2, y2 = box
            np.testing.assert_array_equal(mask, drawn.owner == index)
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()  # touches the top and bottom edge
            assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()  # and the left and right edge
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # nothing visible outside the box


def test_objects_hidden_below_the_threshold_get_no_box(scenes):
    dropped_but_showing = 0
    for _, boxes, _, drawn in scenes:
        visible = np.array([(drawn.owner == i).sum() for i in range(len(drawn.drawn_pixels))])
        np.testing.assert_allclose(drawn.visible_fraction, visible / drawn.drawn_pixels, rtol=1e-6)
        np.testing.assert_array_equal(drawn.annotated, drawn.visible_fraction >= VISIBLE_FRACTION_MIN)
        assert len(boxes) == drawn.annotated.sum()
        dropped_but_showing += int(np.sum(~drawn.annotated & (visible > 0)))
    partly_hidden = np.concatenate([d.visible_fraction for *_, d in scenes])
    assert dropped_but_showing >= 1  # the rule is exercised: a sliver of an object shows, unlabelled
    assert np.mean(partly_hidden < 0.9) >= 0.15  # occlusion is common, not a corner case


def test_visible_boxes_on_a_hand_made_owner_map():
    owner = np.full((5, 6), -1, np.int16)
    owner[1:4, 1:3] = 0  # object 0: 6 of its 8 pixels visible -> box x 1..3, y 1..4
    owner[0, 4:6] = 1  # object 1: 2 of 10 visible (0.2 < 0.35) -> no box
    owner[4, 5] = 2  # object 2: 1 of 2 visible, cut by the image border -> a 1-pixel box
    owner[2, 4] = -2  # a distractor
    fraction, annotated, boxes, masks = visible_boxes(owner, np.array([8, 10, 2]))
    np.testing.assert_allclose(fraction, [0.75, 0.2, 0.5])
    assert annotated.tolist() == [True, False, True]
    assert boxes.tolist() == [[1, 1, 3, 4], [5, 4, 6, 5]]
    assert masks.shape == (2, 5, 6) and masks[0].sum() == 6 and masks[1].sum() == 1


def test_colour_does_not_give_the_class_away(scenes):
    families = np.array(list(COLOUR_FAMILIES.values()), np.float32)
    seen: dict[int, set] = {c: set() for c in range(len(DETECTION_CLASSES))}
    for image, _, class_ids, drawn in scenes:
        for mask, class_id in zip(drawn.masks, class_ids):
            mean = image[mask].mean(axis=0)
            seen[int(class_id)].add(int(np.argmin(np.linalg.norm(families - mean, axis=1))))
    assert all(len(family_ids) >= 6 for family_ids in seen.values()), seen


def test_written_dataset_reads_back_with_the_same_boxes(tmp_path):
    out = write_detection_dataset(tmp_path / "scenes", num_train=3, num_val=2, num_test=1, seed=5)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [
        "train_00000.jpg", "train_00001.jpg", "train_00002.jpg"]
    val = read_coco(out / "annotations" / "val.json", verify_images=True)
    assert val.categories == DETECTION_CLASSES and [r.image_id for r in val.images] == ["1", "2"]
    record = val.images[1]
    image, boxes, class_ids = generate_image(5, "val_00001")
    np.testing.assert_array_equal(record.boxes.boxes, boxes)  # integer pixel edges: exact in JSON
    np.testing.assert_array_equal(record.boxes.class_id, class_ids)
    assert record.boxes.complete and record.points is None
    jpeg = np.asarray(Image.open(val.image_path(record)), np.float32)
    assert jpeg.shape == (192, 256, 3) and np.abs(jpeg - image).mean() < 8  # the same picture, compressed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == DETECTION_CLASSES and meta["visible_fraction_min"] == VISIBLE_FRACTION_MIN
    assert meta["splits"]["val"]["boxes"] == val.num_boxes
    assert meta["splits"]["val"]["boxes_per_class"] == val.class_counts()
    assert meta["splits"]["test"]["images"] == 1


def test_jpeg_quality_is_seeded_per_image_and_in_range():
    qualities = [jpeg_quality(0, f"train_{i:05d}") for i in range(50)]
    assert qualities == [jpeg_quality(0, f"train_{i:05d}") for i in range(50)]
    assert JPEG_QUALITY[0] <= min(qualities) < max(qualities) <= JPEG_QUALITY[1]


def test_ensure_builds_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path))
    folder = ensure_detection_dataset(seed=3, num_train=1, num_val=1, num_test=0, height=64, width=96)
    assert folder.parent == tmp_path / "synthetic" / "detection"
    assert folder.name.startswith(f"scenes-v{SCENES_VERSION}-seed3-") and len(folder.name.split("-")[-1]) == 8
    first = (folder / "meta.json").stat().st_mtime_ns
    assert ensure_detection_dataset(seed=3, num_train=1, num_val=1, num_test=0, height=64, width=96) == folder
    assert (folder / "meta.json").stat().st_mtime_ns == first  # not rebuilt
    assert read_coco(folder / "annotations" / "train.json").images[0].width == 96


def test_bad_parameters_raise_data_error_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match="^" + re.escape(str(tmp_path / "a")) + ".*too small"):
        write_detection_dataset(tmp_path / "a", num_train=1, num_val=0, num_test=0, height=16)
    with pytest.raises(DataError, match="num_val must be >= 0"):
        write_detection_dataset(tmp_path / "b", num_train=1, num_val=-1, num_test=0)
    write_detection_dataset(tmp_path / "c", num_train=1, num_val=0, num_test=0, height=64, width=64)
    with pytest.raises(DataError, match="already exists"):
        write_detection_dataset(tmp_path / "c", num_train=1, num_val=0, num_test=0, height=64, width=64)


@pytest.mark.slow
def test_default_dataset_statistics(tmp_path):
    meta = json.loads((write_detection_dataset(tmp_path / "default") / "meta.json").read_text())
    train = meta["splits"]["train"]
    assert train["images"] == 400 and train["mean_objects_per_image"] >= 8
    assert min(train["boxes_per_class"].values()) >= 0.1 * train["boxes"]
    assert train["box_size_px"]["max"] / train["box_size_px"]["min"] >= 8
