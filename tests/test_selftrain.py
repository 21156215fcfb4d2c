"""`sparsevision selftrain` on the toy task: rounds write weak-label files with growing pseudo-labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vision.commands import selftrain
from vision.labels.types import HUMAN, PSEUDO, PointLabels
from vision.labels.weakfile import WeakLabelSet

CONFIG = Path(__file__).resolve().parent / "configs" / "tiny-weak.yaml"


@pytest.mark.slow
def test_two_rounds_write_weak_files_with_growing_pseudo_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "st"
    assert selftrain.main(["--config", str(CONFIG), "--rounds", "2", "--top-fraction", "0.1", "--out", str(out),
                           "--trainer.max_epochs=3"]) == 0
    first, second = WeakLabelSet.load(out / "round1"), WeakLabelSet.load(out / "round2")
    assert 0 < first.counts()["pseudo"] < second.counts()["pseudo"]
    assert first.counts()["human"] == second.counts()["human"] > 0
    for sample_id in first:  # pseudo-labels never sit on human-labelled points
        labels = second[sample_id]
        human = set(labels.index[labels.source == HUMAN].tolist())
        assert human.isdisjoint(labels.index[labels.source == PSEUDO].tolist())
    summary = json.loads((out / "summary.json").read_text())
    assert [row["round"] for row in summary] == [0, 1, 2]
    assert 0.0 <= summary[0]["pseudo_precision"] <= 1.0
    assert (out / "round0" / "checkpoints" / "last.ckpt").is_file()
    before = (out / "round1.weak.npz").read_bytes()
    # a second run into the same folder refuses before training, and leaves the files alone
    assert selftrain.main(["--config", str(CONFIG), "--rounds", "1", "--out", str(out)]) == 2
    assert (out / "round1.weak.npz").read_bytes() == before


def test_pseudo_labels_skip_human_points_and_keep_top_fraction_per_class():
    weak = WeakLabelSet({"a": PointLabels(class_id=[0], index=[3])}, "pointcloud", {"name": "count"}, 0, "0" * 64)
    label = np.array([0, 0, 0, 0, 1, 1], np.int64)
    confidence = np.array([0.5, 0.9, 0.7, 0.99, 0.6, 0.8], np.float32)
    pseudo = selftrain.pseudo_labels_from_predictions({"a": (label, confidence)}, weak, num_classes=2,
                                                      top_fraction=0.5, min_confidence=0.0)["a"]
    # class 0: 3 candidates outside the human point 3 -> ceil(1.5) = 2 most confident (1, 2); class 1: 1 (5)
    assert pseudo.index.tolist() == [1, 2, 5]
    assert pseudo.class_id.tolist() == [0, 0, 1]
    assert pseudo.source.tolist() == [PSEUDO] * 3


def test_pseudo_labels_on_images_use_pixel_coordinates():
    weak = WeakLabelSet({"f": PointLabels(class_id=[1], xy=[[1.0, 0.0]])}, "events", {"name": "per_class"}, 0,
                        "0" * 64)
    label = np.array([[1, 1], [0, 1]], np.int64)
    confidence = np.array([[0.9, 0.99], [0.8, 0.7]], np.float32)
    pseudo = selftrain.pseudo_labels_from_predictions({"f": (label, confidence)}, weak, 2, 1.0, 0.75)["f"]
    # pixel (x=1, y=0) is human-labelled; (x=1, y=1) is below min_confidence
    assert pseudo.xy.tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert pseudo.class_id.tolist() == [1, 0]


@pytest.mark.slow
def test_one_round_on_the_point_cloud_task(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    config = Path(__file__).resolve().parents[1] / "configs" / "pointcloud" / "sqn-synthetic-0.1pct.yaml"
    out = tmp_path / "st"
    assert selftrain.main([
        "--config", str(config), "--rounds", "1", "--top-fraction", "0.001", "--out", str(out),
        "--data.init_args.synthetic={num_train: 2, num_val: 1, num_test: 1, points_per_room: [5000, 6000]}",
        "--data.init_args.crop_points=1024", "--data.init_args.crops_per_epoch=4", "--data.init_args.num_workers=0",
        "--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]) == 0
    weak = WeakLabelSet.load(out / "round1")
    assert weak.counts()["pseudo"] > 0 and weak.counts()["human"] > 0
    for sample_id in weak:
        labels = weak[sample_id]
        human = set(labels.index[labels.source == HUMAN].tolist())
        assert human.isdisjoint(labels.index[labels.source == PSEUDO].tolist())
    assert sorted(weak) == ["train/train_000", "train/train_001"]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary[0]["pseudo_precision"] <= 1.0
    assert not list((out / "round0").glob("**/*.pred.ply"))  # selftrain writes no prediction files


def test_human_pixels_are_found_with_the_same_rounding_as_the_training_targets():
    from vision.labels.conversions import points_to_mask

    human = PointLabels(class_id=[1], xy=[[0.5, 0.0]])  # a half-pixel click: rounds up to x = 1
    weak = WeakLabelSet({"f": human}, "events", {"name": "per_class"}, 0, "0" * 64)
    label = np.array([[1, 1]], np.int64)
    confidence = np.array([[0.9, 0.99]], np.float32)
    pseudo = selftrain.pseudo_labels_from_predictions({"f": (label, confidence)}, weak, 2, 1.0, 0.0)["f"]
    target_pixel = np.argwhere(points_to_mask(human, (1, 2)) == 1).tolist()
    assert target_pixel == [[0, 1]] and pseudo.xy.tolist() == [[0.0, 0.0]]


def test_lightning_options_with_a_space_before_the_value_stay_in_order():
    from vision.commands.selftrain import _parser

    args, overrides = _parser().parse_known_args(
        ["--config", "x.yaml", "--data.init_args.weak_label_file", "my-0.1pct", "--rounds", "1",
         "--trainer.max_epochs=2"])
    assert args.rounds == 1 and args.config == ["x.yaml"]
    assert overrides == ["--data.init_args.weak_label_file", "my-0.1pct", "--trainer.max_epochs=2"]
