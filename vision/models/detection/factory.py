"""Small torchvision detectors trained from scratch, behind one wrapper with 0-based class ids.

``build_detector("fcos" | "retinanet" | "fasterrcnn", num_classes, backbone=...)`` builds an
ignore-aware torchvision detector (:mod:`vision.models.detection.ignore_losses`) on a small backbone
with an FPN, never downloading anything (``weights=None``); optional local weights files are read with
``torch.load(weights_only=True)``. :class:`Detector` hides torchvision's label conventions: our class ids
are ``0..C-1`` for every arch (Faster R-CNN's background 0 is added and removed inside).

Defaults are sized for objects of 8-100 px in ~192x256 images: strides 8-128 (P3-P7) for FCOS and
RetinaNet, 4-64 for Faster R-CNN; GroupNorm everywhere (BatchNorm from scratch with batches of 2-4
images is unstable: its statistics come from a handful of images).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Optional

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import misc as misc_ops
from torchvision.ops import nms
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from vision.errors import DataError
from vision.losses.pseudo_positive import PseudoPositiveMining
from vision.models.detection.fcos_head import use_exp_regression
from vision.models.detection.ignore_losses import (
    IGNORE_KEY,
    IgnoreAwareFasterRCNN,
    IgnoreAwareFCOS,
    IgnoreAwareRetinaNet,
)

ARCHS = ("fcos", "retinanet", "fasterrcnn")
RESNETS = ("resnet18", "resnet34", "resnet50")
MOBILENETS = {"mobilenet_v3": "mobilenet_v3_large", "mobilenet_v3_large": "mobilenet_v3_large",
              "mobilenet_v3_small": "mobilenet_v3_small"}
NORMS = ("group", "batch", "frozen_batch")


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide ``num_channels`` (MobileNet has 24, 40, 72... channels)."""
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "group":
        return group_norm
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen_batch":
        return misc_ops.FrozenBatchNorm2d
    raise DataError("build_detector.norm", f"unknown norm {norm!r}; expected one of {NORMS}")


def _resnet_body(name: str, norm: Callable, trainable_layers: Optional[int], levels: list[int]):
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
    trainable = 5 if trainable_layers is None else trainable_layers
    if not 0 <= trainable <= 5:
        raise DataError("build_detector.trainable_layers", f"must be in [0, 5] for {name}, got {trainable}")
    train_prefixes = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
    for param_name, param in net.named_parameters():
        param.requires_grad_(any(param_name.startswith(p) for p in train_prefixes))
    channels = {1: 64, 2: 128, 3: 256, 4: 512} if name in ("resnet18", "resnet34") else \
        {1: 256, 2: 512, 3: 1024, 4: 2048}
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(levels)}
    return net, return_layers, [channels[k] for k in levels]


def _mobilenet_body(name: str, norm: Callable, trainable_layers: Optional[int], levels: list[int]):
    features = getattr(torchvision.models, name)(weights=None, norm_layer=norm).features
    # Stage k (stride 2^(k+1)) ends just before the (k+1)-th strided block; levels 1..4 = strides 4..32.
    starts = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    ends = [s - 1 for s in starts] + [len(features) - 1]
    if trainable_layers is not None:
        if not 0 <= trainable_layers <= len(ends) + 1:
            raise DataError("build_detector.trainable_layers", f"must be in [0, {len(ends) + 1}] for {name}")
        first_trained = ([0] + starts)[len(ends) + 1 - trainable_layers] if trainable_layers else len(features)
        for block in list(features)[:first_trained]:
            block.requires_grad_(False)
    return_layers = {str(ends[k]): str(i) for i, k in enumerate(levels)}
    return features, return_layers, [features[ends[k]].out_channels for k in levels]


def build_backbone(backbone: str = "resnet18", norm: str = "group", fpn_channels: int = 128,
                   levels: tuple[int, ...] = (2, 3, 4), extra_blocks: Optional[nn.Module] = None,
                   trainable_layers: Optional[int] = None) -> BackboneWithFPN:
    """A randomly initialised backbone + FPN (``out_channels = fpn_channels``).

    ``levels`` are backbone stages 1..4 (strides 4, 8, 16, 32); ``extra_blocks`` adds coarser levels.
    ``trainable_layers=None`` trains every stage (from scratch nothing should stay frozen).
    """
    make_norm = norm_layer(norm)
    if backbone in RESNETS:
        body, return_layers, in_channels = _resnet_body(backbone, make_norm, trainable_layers, list(levels))
    elif backbone in MOBILENETS:
        body, return_layers, in_channels = _mobilenet_body(MOBILENETS[backbone], make_norm, trainable_layers,
                                                           list(levels))
    else:
        raise DataError("build_detector.backbone", f"unknown backbone {backbone!r}; expected one of "
                                                   f"{RESNETS + tuple(MOBILENETS)}")
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels,
                           extra_blocks=extra_blocks or LastLevelMaxPool(),
                           norm_layer=group_norm if norm == "group" else None)


def _build_model(arch: str, num_classes: int, backbone: str, norm: str, fpn_channels: int,
                 trainable_layers: Optional[int], **kwargs) -> nn.Module:
    if arch == "fcos":
        body = build_backbone(backbone, norm, fpn_channels, (2, 3, 4), LastLevelP6P7(fpn_channels, fpn_channels),
                              trainable_layers)
        model = IgnoreAwareFCOS(body, num_classes, **kwargs)  # default anchors = strides 8..128
        use_exp_regression(model.head)  # relu distances die when training from scratch (see fcos_head)
        return model
    if arch == "retinanet":
        body = build_backbone(backbone, norm, fpn_channels, (2, 3, 4), LastLevelP6P7(fpn_channels, fpn_channels),
                              trainable_layers)
        # Anchors 8-203 px at strides 8-128: torchvision's 32-812 px suit COCO at 800 px, not 8-100 px objects.
        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (8, 16, 32, 64, 128))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        # RetinaNet v2 recipe (GroupNorm head, GIoU box loss): the better choice when training from scratch.
        head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
                             norm_layer=partial(nn.GroupNorm, 32))
        head.regression_head._loss_type = "giou"
        return IgnoreAwareRetinaNet(body, num_classes, anchor_generator=anchors, head=head, **kwargs)
    if arch == "fasterrcnn":
        body = build_backbone(backbone, norm, fpn_channels, (1, 2, 3, 4), LastLevelMaxPool(), trainable_layers)
        sizes = ((8,), (16,), (32,), (64,), (128,))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        # Smaller RoI head and proposal counts than torchvision's COCO defaults: tiny images, CPU training.
        defaults = dict(rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500, rpn_pre_nms_top_n_test=500,
                        rpn_post_nms_top_n_test=300, box_batch_size_per_image=256,
                        box_head=TwoMLPHead(fpn_channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes + 1))
        return IgnoreAwareFasterRCNN(body, num_classes=None, rpn_anchor_generator=anchors, **{**defaults, **kwargs})
    raise DataError("build_detector.arch", f"unknown arch {arch!r}; expected one of {ARCHS}")


def _load_state_dict(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(path, f"{what} file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors differ by torch version; report them all the same way
        raise DataError(path, f"cannot read {what}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(path, f"{what} is not a state dict of tensors")
    return state


def _check_boxes(boxes, where: str, image_count: int = 0) -> Tensor:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise DataError(where, f"expected (K, 4) xyxy boxes, got {shape}")
    boxes = boxes.float()
    if boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise DataError(where, "boxes must be finite")
    if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
        raise DataError(where, "boxes must be xyxy with x2 > x1 and y2 > y1")
    return boxes


class Detector(nn.Module):
    """One interface for the torchvision detectors, with our 0-based class ids.

    ``forward(images, targets=None)``: ``images`` a list of ``(3, H, W)`` float tensors in [0, 1];
    ``targets`` a list of ``dict(boxes (K, 4) xyxy px, labels (K,) in 0..C-1, ignore_boxes (J, 4) optional)``.
    Train mode returns torchvision's loss dict; eval mode a list of ``dict(boxes (D, 4), scores (D,),
    labels (D,) in 0..C-1)``.
    """

    def __init__(self, model: nn.Module, num_classes: int, arch: str) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(num_classes)
        self.arch = arch
        # Faster R-CNN's class 0 is background; FCOS/RetinaNet have no background class.
        self.label_offset = 1 if arch == "fasterrcnn" else 0

    @property
    def last_ignored_negatives(self) -> int:
        """Background anchors/locations/proposals turned to ignore by ``ignore_boxes`` in the last loss."""
        return int(self.model.last_ignored_negatives)

    def _check_images(self, images) -> None:
        if not isinstance(images, (list, tuple)) or not images:
            raise DataError("Detector.images", "expected a non-empty list of (3, H, W) tensors")
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 \
                    or not image.is_floating_point():
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise DataError(f"Detector.images[{i}]", f"expected a float (3, H, W) tensor, got {shape}")

    def _model_targets(self, targets, count: int) -> list[dict[str, Tensor]]:
        if not isinstance(targets, (list, tuple)) or len(targets) != count:
            raise DataError("Detector.targets", f"expected a list of {count} target dicts in train mode")
        out = []
        for i, target in enumerate(targets):
            if "boxes" not in target or "labels" not in target:
                raise DataError(f"Detector.targets[{i}]", "needs 'boxes' and 'labels'")
            boxes = _check_boxes(target["boxes"], f"Detector.targets[{i}].boxes")
            labels = torch.as_tensor(target["labels"]).reshape(-1)
            if labels.shape[0] != boxes.shape[0] or labels.is_floating_point():
                raise DataError(f"Detector.targets[{i}].labels", f"expected ({boxes.shape[0]},) integer labels")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(f"Detector.targets[{i}].labels", f"class ids must be in [0, {self.num_classes})")
            converted = {"boxes": boxes, "labels": labels.long().to(boxes.device) + self.label_offset}
            if target.get(IGNORE_KEY) is not None:
                converted[IGNORE_KEY] = _check_boxes(target[IGNORE_KEY], f"Detector.targets[{i}].{IGNORE_KEY}")
            out.append(converted)
        return out

    def forward(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        self._check_images(images)
        if self.training:
            return self.model(list(images), self._model_targets(targets, len(images)))
        return self._zero_based(self.model(list(images)))

    def _zero_based(self, detections: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The inner model's eval-mode detections with our 0-based class ids."""
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.label_offset}
                for d in detections]

    def objectness_candidates(self, images: list[Tensor], max_candidates: int = 100, pre_nms_topk: int = 1000,
                              nms_iou: Optional[float] = 0.5) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(boxes (M, 4), scores (M,))`` with class-agnostic objectness, for mining.

        FCOS: ``max_c sqrt(cls_c * centerness)``; RetinaNet: max class probability; Faster R-CNN: RPN
        objectness. The ``pre_nms_topk`` best, then class-agnostic NMS at ``nms_iou`` (None: none), then at
        most ``max_candidates``. Runs in eval mode without gradients and restores every module's mode.
        """
        self._check_images(images)
        with self._evaluating():
            candidates = self.model.objectness_candidates(list(images), topk=pre_nms_topk)
        return _select_candidates(candidates, max_candidates, nms_iou)

    def detect_with_candidates(self, images: list[Tensor], max_candidates: int = 100, pre_nms_topk: int = 1000,
                               nms_iou: Optional[float] = 0.5) -> tuple[list[dict[str, Tensor]], list[tuple[Tensor, Tensor]]]:
        """``(detections, candidates)``: what eval-mode :meth:`forward` and :meth:`objectness_candidates` return,
        from one backbone + head pass where the model allows it (FCOS, RetinaNet; Faster R-CNN runs twice).

        The engine's teacher needs both on the same images every step; one pass saves a third of its
        forward cost. Runs in eval mode without gradients and restores every module's mode.
        """
        self._check_images(images)
        one_pass = getattr(self.model, "detect_with_candidates", None)
        if one_pass is None:  # the two public calls, which a backend (e.g. MMDetDetector) may override
            with self._evaluating():
                detections = self(images)
            return detections, self.objectness_candidates(images, max_candidates, pre_nms_topk, nms_iou)
        with self._evaluating():
            detections, candidates = one_pass(list(images), topk=pre_nms_topk)
        return self._zero_based(detections), _select_candidates(candidates, max_candidates, nms_iou)

    @contextlib.contextmanager
    def _evaluating(self):
        """Eval mode and no gradients inside; every module's own mode restored after."""
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, mode in modes:
                module.training = mode

    def add_pseudo_positive_ignores(self, images: list[Tensor], targets: list[dict[str, Tensor]],
                                    mining: Optional[PseudoPositiveMining] = None) -> list[dict[str, Tensor]]:
        """SparseDet step: targets with the mined pseudo-positives appended to ``ignore_boxes``.

        A candidate with objectness > 0.8 and IoU <= 0.2 to every labelled box (the defaults of
        :class:`PseudoPositiveMining`) is never trained as background in the next loss call.
        """
        mining = mining or PseudoPositiveMining()
        out = []
        for i, ((boxes, scores), target) in enumerate(zip(self.objectness_candidates(images), targets)):
            labelled = _check_boxes(target["boxes"], f"Detector.targets[{i}].boxes").to(boxes)
            mined = boxes[mining(boxes, scores, labelled)]
            previous = target.get(IGNORE_KEY)
            ignore = mined if previous is None else torch.cat([previous.to(mined), mined])
            out.append({**target, IGNORE_KEY: ignore})
        return out


def _select_candidates(candidates: list[tuple[Tensor, Tensor]], max_candidates: int,
                       nms_iou: Optional[float]) -> list[tuple[Tensor, Tensor]]:
    """Class-agnostic NMS at ``nms_iou`` (None: none), then at most ``max_candidates`` per image."""
    if nms_iou is not None:
        candidates = [(b[keep], s[keep]) for b, s in candidates for keep in [nms(b, s, nms_iou)]]
    return [(b[:max_candidates], s[:max_candidates]) for b, s in candidates]


def build_detector(arch: str, num_classes: int, backbone: str = "resnet18", min_size: int = 192,
                   max_size: int = 320, trainable_layers: Optional[int] = None, weights_path: Optional[str] = None,
                   pretrained_backbone_path: Optional[str] = None, norm: str = "group", fpn_channels: int = 128,
                   **kwargs) -> Detector:
    """A :class:`Detector` (``arch`` in ``fcos | retinanet | fasterrcnn``) trained from scratch by default.

    Args:
        num_classes: C; class ids are 0..C-1 for every arch.
        backbone: ``resnet18 | resnet34 | resnet50 | mobilenet_v3 | mobilenet_v3_small``.
        min_size, max_size: torchvision's resize (shorter side to ``min_size``, longer <= ``max_size``).
        trainable_layers: backbone stages left trainable; None = all (from scratch).
        weights_path: local state dict of a :class:`Detector` or of its torchvision model.
        pretrained_backbone_path: local state dict of the classification network (e.g. a saved
            ``torchvision.models.resnet18``); its unused keys (``fc``) are skipped.
        norm: ``group`` (default), ``batch`` or ``frozen_batch`` (with a pretrained BatchNorm backbone).
        fpn_channels: FPN width (128: a quarter of torchvision's 256 in compute, for CPU training).
        **kwargs: passed to the torchvision model (``score_thresh``, ``detections_per_img``, ...).
    """
    if int(num_classes) < 1:
        raise DataError("build_detector.num_classes", f"must be >= 1, got {num_classes}")
    model = _build_model(arch, int(num_classes), backbone, norm, fpn_channels, trainable_layers,
                         min_size=min_size, max_size=max_size, **kwargs)
    if pretrained_backbone_path is not None:
        _load_backbone(model.backbone.body, pretrained_backbone_path)
    detector = Detector(model, num_classes, arch)
    if weights_path is not None:
        state = _load_state_dict(weights_path, "detector weights")
        if not any(key.startswith("model.") for key in state):
            state = OrderedDict((f"model.{k}", v) for k, v in state.items())
        try:
            detector.load_state_dict(state)
        except RuntimeError as error:
            raise DataError(weights_path, f"does not fit {arch}-{backbone} with {num_classes} classes: {error}") \
                from error
    return detector


def _load_backbone(body: nn.Module, path: str) -> None:
    state = _load_state_dict(path, "backbone weights")
    own = body.state_dict()
    # torchvision MobileNets keep the layers under "features."; the detector body is that Sequential.
    state = {k.removeprefix("features."): v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in own}
    wrong = [k for k, v in usable.items() if v.shape != own[k].shape]
    if not usable or wrong:
        raise DataError(path, f"does not fit the backbone: {len(usable)} matching keys, wrong shapes {wrong[:3]}")
    body.load_state_dict(usable, strict=False)
