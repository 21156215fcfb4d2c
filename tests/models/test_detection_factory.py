"""build_detector / Detector: 0-based class ids for every arch, candidates for mining, local weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from vision.errors import DataError
from vision.models.detection.factory import build_detector


def tiny(arch: str = "fcos", **kwargs):
    torch.manual_seed(0)
    return build_detector(arch, num_classes=3, min_size=64, max_size=64, fpn_channels=64, **kwargs)


IMAGES = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)) for _ in range(2)]
TARGETS = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0]]), "labels": torch.tensor([2])},
           {"boxes": torch.tensor([[10.0, 40.0, 26.0, 60.0]]), "labels": torch.tensor([0])}]


@pytest.mark.parametrize("arch, offset", [("fcos", 0), ("retinanet", 0), ("fasterrcnn", 1)])
def test_our_class_ids_are_zero_based_for_every_arch(arch, offset):
    detector = tiny(arch, score_thresh=0.0) if arch != "fasterrcnn" else tiny(arch, box_score_thresh=0.0)
    converted = detector._model_targets(TARGETS, 2)
    assert [t["labels"].tolist() for t in converted] == [[2 + offset], [0 + offset]]
    losses = detector.train()(IMAGES, TARGETS)
    assert all(torch.isfinite(v) for v in losses.values())
    detections = detector.eval()(IMAGES)
    labels = torch.cat([d["labels"] for d in detections])
    assert labels.numel() > 0 and int(labels.min()) >= 0 and int(labels.max()) <= 2


def test_objectness_candidates_do_not_touch_the_training_state():
    detector = tiny("retinanet", norm="batch").train()
    bn = detector.model.backbone.body.bn1
    before = bn.running_mean.clone()
    candidates = detector.objectness_candidates([IMAGES[0], torch.rand(3, 64, 96)], max_candidates=20)
    assert detector.training and bn.training and torch.equal(bn.running_mean, before)
    (boxes, scores), (wide_boxes, _) = candidates
    assert boxes.shape == (20, 4) and scores.shape == (20,)
    assert bool((scores[:-1] >= scores[1:]).all()) and 0 <= float(scores.min()) <= float(scores.max()) <= 1
    # The 64x96 image is resized to 43x64 inside the model; its boxes come back in its own pixels.
    assert float(wide_boxes[:, 2].max()) <= 96 and float(wide_boxes[:, 3].max()) <= 64


@pytest.mark.parametrize("arch", ["fcos", "fasterrcnn"])
def test_candidates_for_every_arch_are_scored_boxes(arch):
    (boxes, scores), _ = tiny(arch).objectness_candidates(IMAGES, max_candidates=5, nms_iou=None)
    assert boxes.shape == (5, 4) and bool((boxes[:, 2:] >= boxes[:, :2]).all())
    assert bool((scores > 0).all()) and bool((scores < 1).all())


@pytest.mark.parametrize("arch", ["fcos", "retinanet", "fasterrcnn"])
def test_detections_and_candidates_from_one_pass_equal_the_two_calls(arch):
    detector = tiny(arch, score_thresh=0.0) if arch != "fasterrcnn" else tiny(arch, box_score_thresh=0.0)
    images = [IMAGES[0], torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(3))]
    passes = []
    detector.model.backbone.register_forward_hook(lambda *args: passes.append(1))
    detections, candidates = detector.train().detect_with_candidates(images, max_candidates=30)
    assert detector.training  # modes restored
    assert len(passes) == (2 if arch == "fasterrcnn" else 1)  # Faster R-CNN has no one-pass path
    expected_detections = detector.eval()(images)
    expected_candidates = detector.objectness_candidates(images, max_candidates=30)
    assert sum(len(d["boxes"]) for d in detections) > 0
    for got, expected in zip(detections, expected_detections):
        assert set(got) == {"boxes", "scores", "labels"}
        for key in got:
            assert torch.equal(got[key], expected[key])
    for (boxes, scores), (expected_boxes, expected_scores) in zip(candidates, expected_candidates):
        assert torch.equal(boxes, expected_boxes) and torch.equal(scores, expected_scores)


def test_weights_file_round_trip(tmp_path):
    detector = tiny("fcos").eval()
    path = tmp_path / "fcos.pt"
    torch.save(detector.state_dict(), path)
    torch.manual_seed(123)  # a different random init that the file must overwrite
    loaded = build_detector("fcos", 3, min_size=64, max_size=64, fpn_channels=64, weights_path=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(loaded.model.head.classification_head.cls_logits.weight,
                           detector.model.head.classification_head.cls_logits.weight)
    inner = tmp_path / "inner.pt"
    torch.save(detector.model.state_dict(), inner)  # the torchvision model's own state dict works too
    build_detector("fcos", 3, fpn_channels=64, weights_path=str(inner))
    with pytest.raises(DataError, match=r"^.*fcos\.pt: does not fit fcos-resnet18 with 5 classes"):
        build_detector("fcos", 5, fpn_channels=64, weights_path=str(path))
    with pytest.raises(DataError, match="not found"):
        build_detector("fcos", 3, weights_path=str(tmp_path / "missing.pt"))


def test_pretrained_backbone_file_is_loaded_into_the_body(tmp_path):
    torch.manual_seed(7)
    classifier = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(classifier.state_dict(), path)
    detector = tiny("fcos", norm="frozen_batch", pretrained_backbone_path=str(path))
    body = detector.model.backbone.body
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.layer4[1].bn2.running_var, classifier.layer4[1].bn2.running_var)


@pytest.mark.parametrize("target, reason", [
    ({"boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0]]), "labels": torch.tensor([3])}, "class ids must be in"),
    ({"boxes": torch.tensor([[4.0, 4.0, 4.0, 18.0]]), "labels": torch.tensor([0])}, "x2 > x1"),
    ({"boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0]]), "labels": torch.tensor([0]),
      "ignore_boxes": torch.zeros(2)}, r"\(K, 4\)"),
])
def test_bad_targets_raise_data_error_naming_the_field(target, reason):
    detector = tiny("fcos").train()
    with pytest.raises(DataError, match=r"^Detector\.targets\[1\]\.\w+: .*" + reason):
        detector(IMAGES, [TARGETS[0], target])


def test_unknown_choices_raise_data_error():
    with pytest.raises(DataError, match="unknown arch"):
        build_detector("yolo", 3)
    with pytest.raises(DataError, match="unknown backbone"):
        build_detector("fcos", 3, backbone="vgg16")


def test_mobilenet_backbone_gives_three_fpn_levels_plus_p6_p7():
    detector = tiny("fcos", backbone="mobilenet_v3")
    features = detector.model.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in features.values()] == [8, 4, 2, 1, 1]  # strides 8, 16, 32, 64, 128


def test_fcos_box_regression_keeps_a_gradient_where_relu_distances_would_be_dead():
    from vision.models.detection.fcos_head import ExpFCOSRegressionHead

    detector = tiny("fcos").train()
    head = detector.model.head.regression_head
    assert isinstance(head, ExpFCOSRegressionHead)
    with torch.no_grad():  # every pre-activation negative: relu would give zero-size boxes, GIoU loss 1, no gradient
        head.bbox_reg.bias.fill_(-3.0)
    losses = detector(IMAGES, TARGETS)
    assert 0.0 < float(losses["bbox_regression"]) < 1.0 + 1e-6
    losses["bbox_regression"].backward()
    assert head.bbox_reg.weight.grad.abs().sum() > 0
    # boxes start at exp(-3) anchor sizes and the gradient points towards larger boxes (lower loss)
    assert head.bbox_reg.bias.grad.sum() < 0
