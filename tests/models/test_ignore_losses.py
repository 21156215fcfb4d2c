"""Ignore-aware torchvision detectors: stock losses without ignore boxes, fewer negatives with them."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou

from vision.models.detection.factory import build_detector

STOCK = {"transform": GeneralizedRCNNTransform, "rpn": RegionProposalNetwork, "roi_heads": RoIHeads}



def tiny(arch: str):
    torch.manual_seed(0)
    detector = build_detector(arch, num_classes=3, min_size=64, max_size=64, fpn_channels=64)  # 2 channels per GroupNorm group: P7 is 1x1
    return detector.train()


def stock_copy(model):
    """The same weights in torchvision's own classes (undo the ignore-aware re-typing)."""
    stock = copy.deepcopy(model)
    stock.__class__ = {"IgnoreAwareFCOS": FCOS, "IgnoreAwareRetinaNet": RetinaNet,
                       "IgnoreAwareFasterRCNN": FasterRCNN}[type(model).__name__]
    for name, cls in STOCK.items():
        if hasattr(stock, name):
            getattr(stock, name).__class__ = cls
    if isinstance(stock, FCOS):
        stock.head.__class__ = FCOSHead
    return stock


def images_and_targets(offset: int = 0):
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 64, generator=generator) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0], [30.0, 34.0, 60.0, 62.0]]),
                "labels": torch.tensor([0, 2]) + offset},
               {"boxes": torch.tensor([[10.0, 40.0, 26.0, 60.0]]), "labels": torch.tensor([1]) + offset}]
    return images, targets


@pytest.mark.parametrize("arch", ["fcos", "retinanet", "fasterrcnn"])
def test_without_ignore_boxes_losses_equal_torchvision_exactly(arch):
    detector = tiny(arch)
    stock = stock_copy(detector.model)
    images, targets = images_and_targets(offset=1 if arch == "fasterrcnn" else 0)
    torch.manual_seed(5)  # Faster R-CNN's fg/bg sampler draws random proposals
    expected = stock(images, targets)
    for ignore in (None, torch.zeros((0, 4))):
        torch.manual_seed(5)
        given = [dict(t, ignore_boxes=ignore) if ignore is not None else t for t in targets]
        losses = detector.model(images, given)
        assert losses.keys() == expected.keys()
        for key in expected:
            assert torch.equal(losses[key], expected[key]), key
        assert detector.last_ignored_negatives == 0


def test_fcos_ignores_background_locations_whose_centre_is_inside_the_ignore_box():
    detector = tiny("fcos")
    images, targets = images_and_targets()
    plain = detector(images, targets)
    # Location centres sit at multiples of the stride (8, 16, 32, 64, 128) of the 64x64 image: strictly
    # inside (20, 44) are 24/32/40 at stride 8 (3x3), 32 at stride 16 (1) and 32 at stride 32 (1) = 11.
    # Image 1's labelled boxes match none of them, image 2 has no ignore box.
    ignored = [dict(targets[0], ignore_boxes=torch.tensor([[20.0, 20.0, 44.0, 44.0]])), targets[1]]
    losses = detector(images, ignored)
    # The second labelled box (30..60) owns the stride-8 location (40, 40): 11 - 1 = 10.
    assert detector.last_ignored_negatives == 10
    assert losses["classification"] < plain["classification"]  # fewer non-negative focal terms, same normaliser
    assert torch.equal(losses["bbox_regression"], plain["bbox_regression"])
    assert torch.equal(losses["bbox_ctrness"], plain["bbox_ctrness"])


def _anchors(model, images):
    image_list, _ = model.transform(images)
    features = list(model.backbone(image_list.tensors).values())
    generator = model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator
    return generator(image_list, features)


@pytest.mark.parametrize("arch", ["retinanet", "fasterrcnn"])
def test_anchors_ignored_are_those_that_would_not_be_background_if_the_box_were_labelled(arch):
    detector = tiny(arch)
    model = detector.model
    images, _ = images_and_targets()
    box = torch.tensor([[30.0, 34.0, 60.0, 62.0]])
    anchors = _anchors(model, images[:1])[0]
    matcher = model.rpn.proposal_matcher if arch == "fasterrcnn" else model.proposal_matcher
    not_background = int((matcher(box_iou(box, anchors)) != matcher.BELOW_LOW_THRESHOLD).sum())
    assert not_background > 0
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long), "ignore_boxes": box}
    torch.manual_seed(0)
    detector([images[0]], [empty])
    ignored_anchors = model.rpn.last_ignored_negatives if arch == "fasterrcnn" else detector.last_ignored_negatives
    assert ignored_anchors == not_background


def test_fasterrcnn_roi_sampler_skips_proposals_on_an_ignore_box():
    detector = tiny("fasterrcnn")
    images, targets = images_and_targets()
    torch.manual_seed(0)
    detector(images, [dict(targets[0], ignore_boxes=torch.tensor([[0.0, 0.0, 64.0, 64.0]])), targets[1]])
    # The whole-image ignore box has IoU >= 0.5 with every proposal covering half the image or more;
    # the untrained RPN proposes its 64 px and 128 px anchors (clipped), which do.
    assert detector.model.roi_heads.last_ignored_negatives > 0
    assert detector.last_ignored_negatives == (detector.model.rpn.last_ignored_negatives
                                               + detector.model.roi_heads.last_ignored_negatives)


def test_mined_pseudo_positives_leave_the_negatives():
    detector = tiny("fcos")
    images, targets = images_and_targets()
    candidates = [(torch.tensor([[20.0, 20.0, 44.0, 44.0],    # confident, no labelled box near: mined
                                 [4.0, 4.0, 20.0, 18.0],      # confident but IS a labelled box
                                 [40.0, 0.0, 60.0, 16.0]]),   # far away but not confident
                   torch.tensor([0.95, 0.95, 0.5]))] * 2
    detector.model.objectness_candidates = lambda images, topk: candidates
    mined = detector.add_pseudo_positive_ignores(images, targets)
    assert mined[0]["ignore_boxes"].tolist() == [[20.0, 20.0, 44.0, 44.0]]
    # Image 2 has no box at (4..20, 4..18): the second candidate is a pseudo-positive there.
    assert mined[1]["ignore_boxes"].tolist() == [[20.0, 20.0, 44.0, 44.0], [4.0, 4.0, 20.0, 18.0]]
    detector(images, mined)
    # Image 1: 10 locations (see the FCOS test). Image 2: 11 inside (20, 44), none owned by its box
    # (10..26, 40..60), plus 8/16 at stride 8 (2x2) and 16 at stride 16 (1) inside (4..20, 4..18) = 16.
    assert detector.last_ignored_negatives == 10 + 16
