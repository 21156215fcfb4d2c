"""MMDetection detectors behind sparsevision's :class:`~vision.models.detection.factory.Detector` interface.

An mmdet 3.3 model config (a ``.py``/``.yaml`` config file, ``mmdet::retinanet/...py`` from the configs inside
the installed package, or the model dict written inline in our YAML) becomes an ``nn.Module`` that
:class:`vision.tasks.detection.DetectionTask` trains like a torchvision detector: the same datamodules,
weak-label files, EMA teacher, SparseDet pseudo-positive mining and mAP metrics, with no mmengine Runner
(mmdet's datasets, schedules and hooks in a full config file are not used; only its ``model``).

How the pieces meet:

* images ``(3, H, W)`` RGB in [0, 1] -> x255, optional resize (``min_size`` / ``max_size``), then the model's
  own ``DetDataPreprocessor`` (normalise, pad); the config's channel flag is re-read for RGB input: a
  config that converts BGR to RGB gets no swap, a BGR (caffe-style) config gets one;
* targets ``dict(boxes (K, 4), labels (K,) 0..C-1, ignore_boxes (J, 4))`` -> ``DetDataSample`` with
  ``gt_instances`` and ``ignored_instances``; mmdet's class ids are 0-based too;
* ignore is ignore, not negative: ``MaxIoUAssigner`` -> :class:`~vision.models.detection.mmdet_ignore.
  IgnoreAwareMaxIoUAssigner` (RetinaNet, Faster R-CNN's RPN and RoI head) and ``FCOSHead`` ->
  :class:`~vision.models.detection.mmdet_ignore.IgnoreAwareFCOSHead` are swapped into the config before it
  is built; other heads keep mmdet's behaviour (a warning says so when it may ignore nothing);
* ``objectness_candidates`` for mining: the head's own ``predict`` (RPN for two-stage detectors) with a
  class-agnostic test config; FCOS scores are ``sqrt(cls * centerness)`` as on the torchvision path.

mmdet is optional (``make mmdet``: mmcv 2.1.0 must be built with its ops); this module imports it only
when a model is built, so configs naming :class:`MMDetDetector` parse without it.

Checkpoints are read with ``torch.load(weights_only=True)``. mmengine checkpoints keep numpy scalars in
their ``meta`` and fail that check: convert a TRUSTED one once with
``python -m vision.models.detection.mmdet_backend SRC.pth DST.pth`` (:func:`convert_mmdet_checkpoint`).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.errors import DataError
from vision.models.detection.factory import Detector, _load_state_dict

# Types swapped for their ignore-aware subclasses (vision.models.detection.mmdet_ignore).
IGNORE_AWARE_TYPES = {"MaxIoUAssigner": "IgnoreAwareMaxIoUAssigner", "FCOSHead": "IgnoreAwareFCOSHead"}
IMAGENET_PREPROCESSOR = {"type": "DetDataPreprocessor", "mean": [123.675, 116.28, 103.53],
                         "std": [58.395, 57.12, 57.375], "bgr_to_rgb": True, "pad_size_divisor": 32}
INSTALL_HINT = "run `make mmdet` (builds mmcv 2.1.0 with its ops, then installs sparsevision[mmdet])"


def mmdet_unavailable_reason() -> Optional[str]:
    """None when mmdet and mmcv's compiled ops import, else why not (for skips and error messages)."""
    try:
        import mmcv.ops  # noqa: F401  (mmcv-lite and source-only installs lack the compiled ops)
        import mmdet  # noqa: F401
    except Exception as error:  # ImportError, or mmdet's assert on the mmcv version
        return f"mmdet backend unavailable ({type(error).__name__}: {error}); {INSTALL_HINT}"
    return None


def _require_mmdet() -> None:
    reason = mmdet_unavailable_reason()
    if reason is not None:
        raise ImportError(reason)
    from mmdet.utils import register_all_modules

    import vision.models.detection.mmdet_ignore  # noqa: F401  (registers the ignore-aware classes)

    register_all_modules(init_default_scope=False)


def _read_config(config: Union[str, dict]) -> dict:
    """The model dict of ``config`` (a file, ``mmdet::`` package path, a full config dict or a model dict)."""
    if isinstance(config, str):
        import mmdet
        from mmengine.config import Config

        path = config
        if config.startswith("mmdet::"):  # the configs shipped inside the mmdet package (never installs anything)
            path = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", config.removeprefix("mmdet::"))
        if not os.path.isfile(path):
            raise DataError(config, "mmdet config file not found")
        try:
            loaded = Config.fromfile(path)
        except Exception as error:  # syntax errors, missing _base_ files
            raise DataError(config, f"cannot read the mmdet config: {error}") from error
        where, model = config, loaded.get("model")
        model = model.to_dict() if hasattr(model, "to_dict") else model
    elif isinstance(config, dict):
        where, model = "MMDetDetector.config", config.get("model", config)
    else:
        raise DataError("MMDetDetector.config", f"expected a config path or dict, got {type(config).__name__}")
    if not isinstance(model, dict) or "type" not in model:
        raise DataError(where, "needs a model dict with a 'type' (e.g. RetinaNet, FCOS, FasterRCNN)")
    return copy.deepcopy(dict(model))


def _rewrite(node: Any, num_classes: int, seen: set[str]) -> Any:
    """Set every ``num_classes`` and swap in the ignore-aware types; ``seen`` collects the types met."""
    if isinstance(node, dict):
        out = {k: _rewrite(v, num_classes, seen) for k, v in node.items()}
        if "num_classes" in out:
            out["num_classes"] = num_classes
        if isinstance(out.get("type"), str):
            seen.add(out["type"])
            out["type"] = IGNORE_AWARE_TYPES.get(out["type"], out["type"])
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_rewrite(v, num_classes, seen) for v in node)
    return node


def mmdet_model_config(config: Union[str, dict], num_classes: int) -> dict:
    """The model dict to build: ``num_classes`` everywhere, ignore-aware assigners/heads, RGB input."""
    model = _read_config(config)
    seen: set[str] = set()
    model = _rewrite(model, int(num_classes), seen)
    preprocessor = dict(model.get("data_preprocessor") or IMAGENET_PREPROCESSOR)
    # mmdet configs expect BGR (cv2) images; ours are RGB: a config that swaps BGR->RGB needs no swap here,
    # a BGR (caffe-style) config needs one. Both flags only swap channels 0 and 2.
    swap = not (preprocessor.get("bgr_to_rgb") or preprocessor.get("rgb_to_bgr"))
    model["data_preprocessor"] = {**preprocessor, "bgr_to_rgb": swap, "rgb_to_bgr": False}
    if not seen & set(IGNORE_AWARE_TYPES):
        warnings.warn(f"{model['type']}: no MaxIoUAssigner or FCOSHead in the config, so ignore_boxes (mined "
                      "pseudo-positives) may still train as background; use mining: false or an "
                      "ignore-aware head", stacklevel=3)
    return model


def convert_mmdet_checkpoint(source: str, destination: str) -> int:
    """Write the tensors of a TRUSTED mmengine checkpoint as a plain state dict; returns how many.

    mmengine checkpoints pickle numpy scalars in ``meta``, which ``torch.load(weights_only=True)`` (torch's
    default) refuses. This unpickles ``source`` fully once, so run it only on files you trust; the result
    loads with the safe default (``MMDetDetector(checkpoint=destination)``).
    """
    if not os.path.isfile(source):
        raise DataError(source, "checkpoint file not found")
    try:
        state = torch.load(source, map_location="cpu", weights_only=False)  # trusted by the caller
    except Exception as error:
        raise DataError(source, f"cannot read checkpoint: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise DataError(source, "has no tensors to convert")
    torch.save(tensors, destination)
    return len(tensors)


class MMDetDetector(Detector):
    """An mmdet 3.3 detector with the :class:`Detector` interface (see the module docstring).

    Args:
        config: mmdet config file (``.py``, ``.yaml``), ``mmdet::<path>`` inside the installed mmdet, a full
            config dict with a ``model`` key, or the model dict itself (``type: RetinaNet, backbone: ...``).
        num_classes: C; overrides every ``num_classes`` in the config. Class ids are 0..C-1.
        min_size, max_size: resize the shorter side to ``min_size`` with the longer side at most
            ``max_size`` (torchvision's rule); None for both keeps the images' size.
        checkpoint: local state dict (of this wrapper or of the mmdet model, e.g. from
            :func:`convert_mmdet_checkpoint`); keys whose shapes do not fit (another class count) are skipped.
        init_weights: run the model's ``init_weights()`` (its ``init_cfg``: prior-probability biases of
            RetinaNet/FCOS heads; a ``Pretrained`` entry would need its file on disk).

    ``forward(images, targets)``: train mode -> ``{loss name: scalar}`` (mmdet's ``loss_*`` terms, per-level
    lists summed); eval mode -> per image ``dict(boxes (D, 4) in input pixels, scores (D,), labels (D,))``.
    """

    def __init__(self, config: Union[str, dict], num_classes: int, min_size: Optional[int] = None,
                 max_size: Optional[int] = None, checkpoint: Optional[str] = None, init_weights: bool = True) -> None:
        if int(num_classes) < 1:
            raise DataError("MMDetDetector.num_classes", f"must be >= 1, got {num_classes}")
        _require_mmdet()
        from mmdet.registry import MODELS
        from mmengine.config import ConfigDict
        from mmengine.registry import DefaultScope

        model_cfg = mmdet_model_config(config, num_classes)
        try:
            # mmengine's BaseModel builds the data preprocessor from its root registry: name mmdet's scope.
            with DefaultScope.overwrite_default_scope("mmdet"):
                detector = MODELS.build(ConfigDict(model_cfg))  # mmdet reads train_cfg.rpn etc. as attributes
        except Exception as error:  # unknown types, wrong arguments: name the config
            where = config if isinstance(config, str) else "MMDetDetector.config"
            raise DataError(where, f"cannot build {model_cfg['type']}: {error}") from error
        if init_weights:
            detector.init_weights()
        super().__init__(detector, num_classes, str(model_cfg["type"]))
        self.label_offset = 0  # mmdet's class ids are 0-based for every detector
        self.min_size, self.max_size = min_size, max_size
        neck = model_cfg.get("neck")
        self.fpn_channels = neck.get("out_channels") if isinstance(neck, dict) else None
        self._last_ignored = 0
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)

    # ------------------------------------------------------------------ inputs
    def _scale(self, height: int, width: int) -> float:
        if self.min_size is None and self.max_size is None:
            return 1.0
        scale = self.min_size / min(height, width) if self.min_size is not None else math.inf
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(height, width))
        return scale

    def _prepare(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        """Images and targets as mmdet's batch: ``(inputs (B, 3, H', W'), [DetDataSample])``."""
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        inputs, samples = [], []
        for i, image in enumerate(images):
            height, width = image.shape[-2:]
            scale = self._scale(height, width)
            if scale != 1.0:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            new_h, new_w = image.shape[-2:]
            factor = (new_w / width, new_h / height)
            sample = DetDataSample(metainfo={"img_shape": (new_h, new_w), "ori_shape": (height, width),
                                             "scale_factor": factor})
            if targets is not None:
                to_input = image.new_tensor(factor).repeat(2)
                target = targets[i]
                sample.gt_instances = InstanceData(bboxes=target["boxes"].to(image) * to_input,
                                                   labels=target["labels"].to(image.device))
                ignore = target.get("ignore_boxes")
                ignore = image.new_zeros((0, 4)) if ignore is None else ignore.to(image) * to_input
                sample.ignored_instances = InstanceData(
                    bboxes=ignore, labels=torch.zeros(len(ignore), dtype=torch.long, device=image.device))
            inputs.append(image * 255.0)  # mmdet's mean/std are in 0-255 units
            samples.append(sample)
        preprocessor = self.model.data_preprocessor
        # nn.Module.to() of a parent does not reach mmengine's override that records the device to cast to.
        preprocessor.to(images[0].device)
        data = preprocessor({"inputs": inputs, "data_samples": samples}, targets is not None)
        return data["inputs"], data["data_samples"]

    # ------------------------------------------------------------------ the Detector interface
    def _ignore_counters(self) -> list:
        from vision.models.detection.mmdet_ignore import IgnoreAwareFCOSHead, IgnoreAwareMaxIoUAssigner

        found = []
        for module in self.model.modules():
            if isinstance(module, IgnoreAwareFCOSHead):
                found.append(module)
            for name in ("assigner", "bbox_assigner"):
                if isinstance(getattr(module, name, None), IgnoreAwareMaxIoUAssigner):
                    found.append(getattr(module, name))
        return found

    @property
    def last_ignored_negatives(self) -> int:
        """Negative anchors/locations/proposals turned to ignore by ``ignore_boxes`` in the last loss."""
        return self._last_ignored

    def forward(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        self._check_images(images)
        if self.training:
            checked = self._model_targets(targets, len(images))
            inputs, samples = self._prepare(list(images), checked)
            counters = self._ignore_counters()
            for counter in counters:
                counter.ignored_negatives = 0
            raw = self.model.loss(inputs, samples)
            self._last_ignored = sum(int(counter.ignored_negatives) for counter in counters)
            # As mmengine's parse_losses: only "loss" terms count (two-stage models also report "acc").
            return {name: sum(value) if isinstance(value, (list, tuple)) else value
                    for name, value in raw.items() if "loss" in name}
        inputs, samples = self._prepare(list(images))
        results = self.model.predict(inputs, samples, rescale=True)
        return [{"boxes": r.pred_instances.bboxes, "scores": r.pred_instances.scores,
                 "labels": r.pred_instances.labels.long()} for r in results]

    def objectness_candidates(self, images: list[Tensor], max_candidates: int = 100, pre_nms_topk: int = 1000,
                              nms_iou: Optional[float] = 0.5) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(boxes (M, 4), scores (M,))``, class-agnostic, in input pixels, for mining.

        Dense heads: their own ``predict`` (score = best class probability; FCOS ``sqrt(cls * centerness)``);
        two-stage: RPN proposals with their objectness. The ``pre_nms_topk`` best, class-agnostic NMS at
        ``nms_iou`` (None: none), at most ``max_candidates``. Eval mode, no gradients, modes restored.
        """
        from mmdet.models.dense_heads import FCOSHead
        from mmengine.config import ConfigDict

        self._check_images(images)
        head = self.model.rpn_head if getattr(self.model, "with_rpn", False) else self.model.bbox_head
        candidate_cfg = ConfigDict(nms_pre=pre_nms_topk, min_bbox_size=0, score_thr=0.0, max_per_img=max_candidates,
                                   nms={"type": "nms", "iou_threshold": 1.0 if nms_iou is None else nms_iou,
                                        "class_agnostic": True})
        modes = [(module, module.training) for module in self.modules()]
        saved_cfg = head.test_cfg
        self.eval()
        head.test_cfg = candidate_cfg
        try:
            with torch.no_grad():
                inputs, samples = self._prepare(list(images))
                results = head.predict(self.model.extract_feat(inputs), samples, rescale=True)
        finally:
            head.test_cfg = saved_cfg
            for module, mode in modes:
                module.training = mode
        with_centerness = isinstance(head, FCOSHead)
        return [(r.bboxes, r.scores.sqrt() if with_centerness else r.scores) for r in results]

    # ------------------------------------------------------------------ weights
    def _load_checkpoint(self, path: str) -> None:
        try:
            state = _load_state_dict(path, "mmdet checkpoint")
        except DataError as error:
            raise DataError(path, f"{error.reason}. An mmengine checkpoint you trust: convert it once with "
                                  f"`python -m vision.models.detection.mmdet_backend {path} OUT.pth`") from error
        state = {k.removeprefix("model."): v for k, v in state.items()}
        own = self.model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        if not usable:
            raise DataError(path, f"no weights fit {self.arch} with {self.num_classes} classes")
        skipped = sorted(set(state) - set(usable))
        if skipped:
            warnings.warn(f"{path}: {len(skipped)} weights do not fit {self.arch} and were skipped "
                          f"(e.g. {skipped[:3]})", stacklevel=3)
        self.model.load_state_dict(usable, strict=False)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m vision.models.detection.mmdet_backend SRC DST``: :func:`convert_mmdet_checkpoint`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m vision.models.detection.mmdet_backend TRUSTED_SRC.pth DST.pth", file=sys.stderr)
        return 2
    count = convert_mmdet_checkpoint(args[0], args[1])
    print(f"wrote {count} tensors to {args[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
