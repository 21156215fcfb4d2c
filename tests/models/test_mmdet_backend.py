"""MMDetDetector: mmdet 3.3 detectors trained by DetectionTask, mined pseudo-positives ignored, not negative.

Needs the optional backend (`make mmdet`: mmcv 2.1.0 built with its ops + sparsevision[mmdet]); the whole
module is skipped with the reason when mmcv's ops or mmdet do not import. `make test-mmdet` runs it.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vision.models.detection.mmdet_backend import mmdet_unavailable_reason

_UNAVAILABLE = mmdet_unavailable_reason()
if _UNAVAILABLE is not None:
    pytest.skip(_UNAVAILABLE, allow_module_level=True)

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from mmdet.models.task_modules.assigners import MaxIoUAssigner  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from datamodules.detection import DetectionDataModule  # noqa: E402
from datamodules.formats.coco import write_coco  # noqa: E402
from datamodules.formats.detection_common import DetectionDataset, ImageRecord  # noqa: E402
from datamodules.transforms.detection_augment import DetectionAugment  # noqa: E402
from vision.errors import DataError  # noqa: E402
from vision.labels.types import BoxLabels  # noqa: E402
from vision.models.detection.mmdet_backend import (  # noqa: E402
    MMDetDetector,
    convert_mmdet_checkpoint,
    mmdet_model_config,
)
from vision.models.detection.mmdet_ignore import IgnoreAwareMaxIoUAssigner  # noqa: E402
from vision.tasks.detection import DetectionTask  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {arch: REPO / "configs" / "detection" / f"mmdet_{arch}-synthetic-drop50.yaml"
           for arch in ("retinanet", "fcos", "faster_rcnn")}
SPARSEVISION = str(Path(sys.executable).with_name("sparsevision"))


def shipped_model_dict(arch: str) -> dict:
    """The mmdet model dict written in the shipped YAML config."""
    config = yaml.safe_load(CONFIGS[arch].read_text())
    return config["model"]["init_args"]["model"]["init_args"]["config"]


def detector(arch: str, num_classes: int = 2, **kwargs) -> MMDetDetector:
    torch.manual_seed(0)
    return MMDetDetector(shipped_model_dict(arch), num_classes=num_classes, **kwargs)


def image(height: int = 64, width: int = 96) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))


LABELLED = {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([0])}
UNLABELLED_OBJECT = torch.tensor([[56.0, 16.0, 88.0, 48.0]])  # IoU 0 with the labelled box


# ---------------------------------------------------------------------------------------------- assigner
def test_assigner_turns_only_negatives_near_ignore_boxes_into_ignore():
    priors = torch.tensor([[0.0, 0, 10, 10],      # the labelled box itself: positive
                           [40, 40, 50, 50],      # on the ignore box: negative -> ignore
                           [41, 41, 51, 51],      # IoU 0.68 with the ignore box -> ignore
                           [80, 80, 90, 90],      # far from everything: stays negative
                           [100, 0, 110, 10]])    # labelled (IoU 1) and 70% inside an ignore box
    gt = InstanceData(bboxes=torch.tensor([[0.0, 0, 10, 10], [100, 0, 110, 10]]), labels=torch.tensor([0, 1]))
    ignore = InstanceData(bboxes=torch.tensor([[40.0, 40, 50, 50], [103, 0, 113, 10]]))
    assigner = IgnoreAwareMaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)

    result = assigner.assign(InstanceData(priors=priors), gt, ignore)

    assert result.gt_inds.tolist() == [1, -1, -1, 0, 2]
    assert assigner.ignored_negatives == 2
    # mmdet's own ignore (ignore_iof_thr) would also drop the labelled object's anchor: why the subclass exists.
    stock = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, ignore_iof_thr=0.5)
    assert stock.assign(InstanceData(priors=priors), gt, ignore).gt_inds.tolist()[4] == -1


def test_assigner_without_ignore_boxes_is_the_stock_assigner():
    priors = torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50]])
    gt = InstanceData(bboxes=torch.tensor([[0.0, 0, 10, 10]]), labels=torch.tensor([0]))
    ours = IgnoreAwareMaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4).assign(
        InstanceData(priors=priors), gt, InstanceData(bboxes=torch.zeros(0, 4)))
    stock = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4).assign(InstanceData(priors=priors), gt)
    assert ours.gt_inds.tolist() == stock.gt_inds.tolist() == [1, 0]


# ---------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_ignore_box_on_an_unlabelled_object_removes_its_background_loss_only(arch):
    model = detector(arch).train()
    plain = model([image()], [LABELLED])
    assert model.last_ignored_negatives == 0

    ignored = model([image()], [{**LABELLED, "ignore_boxes": UNLABELLED_OBJECT}])

    assert model.last_ignored_negatives > 0
    assert ignored["loss_cls"] < plain["loss_cls"]  # fewer background terms, same normaliser
    assert torch.allclose(ignored["loss_bbox"], plain["loss_bbox"])  # positives untouched
    assert all(torch.isfinite(v) for v in ignored.values())


def test_faster_rcnn_rpn_and_roi_sampling_skip_ignored_negatives():
    model = detector("faster_rcnn").train()
    torch.manual_seed(0)
    losses = model([image()], [{**LABELLED, "ignore_boxes": UNLABELLED_OBJECT}])
    assert model.last_ignored_negatives > 0
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses) and "acc" not in losses
    assert all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------------------------------------- inference
def test_detections_and_candidates_are_in_input_pixels_with_zero_based_labels():
    model = detector("retinanet", num_classes=3, min_size=120, max_size=200).train()  # resized x2 inside
    model.eval()
    (found,) = model([image(60, 90)])
    assert found["labels"].dtype == torch.int64 and set(found["labels"].tolist()) <= {0, 1, 2}
    model.train()

    (boxes, scores), = model.objectness_candidates([image(60, 90)], max_candidates=7)

    assert model.training and model.model.training  # modes restored
    assert boxes.shape == (7, 4) and scores.shape == (7,)
    assert float(boxes[:, 0::2].max()) <= 90 and float(boxes[:, 1::2].max()) <= 60
    assert bool((scores[:-1] >= scores[1:]).all()) and 0 < float(scores.min()) <= float(scores.max()) < 1

    # the engine's teacher asks for both at once: for mmdet that is the same two calls
    (both_found,), ((both_boxes, both_scores),) = model.detect_with_candidates([image(60, 90)], max_candidates=7)
    assert model.training
    assert torch.equal(both_found["boxes"], found["boxes"]) and torch.equal(both_found["labels"], found["labels"])
    assert torch.equal(both_boxes, boxes) and torch.equal(both_scores, scores)


def test_detection_task_mines_with_the_mmdet_teacher_and_the_loss_ignores_what_it_mined():
    task = DetectionTask(detector("retinanet"), num_classes=2, mining_score=0.0, burn_in_steps=0,
                         consistency_weight=0.0, merge_score=1.0)
    losses = task._detector_losses([image()], None, [LABELLED["boxes"]], [LABELLED["labels"]], [False])
    assert task.last_mined > 0  # score > 0 and IoU <= 0.2 with the labelled box: every far candidate
    assert task.last_ignored_negatives > 0
    assert set(losses) == {"det_loss_cls", "det_loss_bbox"}
    # A complete image mines nothing: its unlabelled regions are background.
    task._detector_losses([image()], None, [LABELLED["boxes"]], [LABELLED["labels"]], [True])
    assert task.last_mined == 0 and task.last_ignored_negatives == 0


def two_shapes_coco(root: Path, count: int) -> Path:
    """64 x 64 COCO images, each with a red square (class 0) on the left and a blue disc (class 1) on the right."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        records = []
        for i in range(count if split == "train" else count // 2):
            picture = Image.new("RGB", (64, 64), (40, 40, 40))
            draw = ImageDraw.Draw(picture)
            boxes = []
            for left, shape, colour in ((0, draw.rectangle, (230, 60, 60)), (32, draw.ellipse, (60, 200, 230))):
                side = int(rng.integers(16, 31))
                x, y = left + int(rng.integers(0, 32 - side + 1)), int(rng.integers(0, 64 - side + 1))
                shape([x, y, x + side - 1, y + side - 1], fill=colour)
                boxes.append([x, y, x + side, y + side])
            name = f"{split}/{i:03d}.png"
            picture.save(root / "images" / name)
            records.append(ImageRecord(str(i + 1), name, 64, 64, BoxLabels(boxes, [0, 1])))
        write_coco(DetectionDataset(["square", "disc"], records, root / "images"), root / "annotations" / f"{split}.json")
    return root


@pytest.mark.slow
def test_short_training_run_finds_the_shapes_so_boxes_labels_and_channels_line_up(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    datamodule = DetectionDataModule(str(two_shapes_coco(tmp_path / "data", 16)), strong_view=False, batch_size=4,
                                     augment=DetectionAugment(scale=(1.0, 1.0), translate=0.0))
    L.seed_everything(0)
    task = DetectionTask(detector("fcos"), 2, ["square", "disc"], teacher=False, mining=False, warmup_steps=10,
                         write_predictions=False)
    trainer = L.Trainer(max_steps=48, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        check_val_every_n_epoch=10_000, gradient_clip_val=10.0)
    trainer.fit(task, datamodule)
    scores = trainer.test(task, datamodule, verbose=False)[0]
    assert scores["test/map_50"] >= 0.5 and scores["test/ap/square"] > 0 and scores["test/ap/disc"] > 0


# ---------------------------------------------------------------------------------------------- configs, weights
def test_config_file_sets_the_class_count_and_bad_configs_name_the_problem(tmp_path):
    path = tmp_path / "retina.py"
    path.write_text(f"model = {shipped_model_dict('retinanet')!r}\n")
    model = MMDetDetector(str(path), num_classes=3)
    assert model.model.bbox_head.num_classes == 3 and model.model.bbox_head.cls_out_channels == 3

    with pytest.raises(DataError, match="not found"):
        MMDetDetector(str(tmp_path / "missing.py"), num_classes=3)
    with pytest.raises(DataError, match="'type'"):
        MMDetDetector({"backbone": {"type": "ResNet"}}, num_classes=3)
    with pytest.raises(DataError, match="cannot build"):
        MMDetDetector({**shipped_model_dict("retinanet"), "type": "NoSuchDetector"}, num_classes=3)


def test_mmdet_package_config_builds_without_downloading():
    model = MMDetDetector("mmdet::retinanet/retinanet_r18_fpn_1x_coco.py", num_classes=4, init_weights=False)
    assert model.model.bbox_head.num_classes == 4 and model.arch == "RetinaNet"


def test_rgb_input_swaps_channels_only_for_bgr_configs():
    def swaps(**flags) -> bool:
        with pytest.warns(UserWarning, match="may still train as background"):  # no assigner in this stub
            config = mmdet_model_config({"type": "RetinaNet", "data_preprocessor": {"type": "DetDataPreprocessor",
                                                                                    **flags}}, 3)
        return config["data_preprocessor"]["bgr_to_rgb"] or config["data_preprocessor"]["rgb_to_bgr"]

    assert not swaps(bgr_to_rgb=True)  # pytorch-style config: BGR file -> RGB network; ours is RGB already
    assert swaps(bgr_to_rgb=False)  # caffe-style config: the network wants BGR


def test_mmengine_checkpoint_needs_converting_then_loads(tmp_path):
    source = detector("retinanet")
    trusted = tmp_path / "epoch_3.pth"
    torch.save({"meta": {"epoch": np.int64(3)}, "state_dict": source.model.state_dict()}, trusted)
    with pytest.raises(DataError, match="convert it once"):
        detector("retinanet", checkpoint=str(trusted))

    converted = tmp_path / "plain.pth"
    assert convert_mmdet_checkpoint(str(trusted), str(converted)) == len(source.model.state_dict())
    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    loaded = MMDetDetector(shipped_model_dict("retinanet"), num_classes=2, checkpoint=str(converted))
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key

    with pytest.warns(UserWarning, match="do not fit"):  # another class count: the classifier is skipped
        MMDetDetector(shipped_model_dict("retinanet"), num_classes=5, checkpoint=str(converted))


# ---------------------------------------------------------------------------------------------- CLI
def _tiny_config(tmp_path: Path, arch: str) -> Path:
    """The shipped config on a few small scenes, a short schedule and mining from the first step."""
    config = yaml.safe_load(CONFIGS[arch].read_text())
    config["trainer"].update(max_steps=4, max_epochs=None, log_every_n_steps=1, check_val_every_n_epoch=100,
                             enable_progress_bar=False, enable_model_summary=False)
    task = config["model"]["init_args"]
    # mining_score 0: from scratch nothing is confident yet; every far candidate counts as a pseudo-positive.
    task.update(burn_in_steps=0, warmup_steps=1, mining_score=0.0)
    config["data"]["init_args"].update(synthetic={"num_train": 8, "num_val": 2, "num_test": 2, "height": 96,
                                                  "width": 128}, batch_size=2, num_workers=0)
    path = tmp_path / f"{arch}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([SPARSEVISION, *args], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def drop50_labels(tmp_path_factory) -> tuple[Path, dict]:
    """``sparsevision sparsify``: half the boxes of the tiny synthetic scenes, as a weak-label file."""
    folder = tmp_path_factory.mktemp("mmdet-cli")
    env = {**os.environ, "SPARSEVISION_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    labels = folder / "drop50"
    made = _run("sparsify", "--config", str(_tiny_config(folder, "retinanet")), "--protocol", "drop_boxes",
                "--rate", "0.5", "--seed", "0", "--out", str(labels), env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    assert Path(f"{labels}.weak.json").is_file()
    return labels, env


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_fit_through_the_cli_with_a_weak_label_file_excludes_mined_boxes_from_the_negatives(tmp_path, arch,
                                                                                          drop50_labels):
    labels, env = drop50_labels
    run_dir = tmp_path / "run"
    fitted = _run("fit", "--config", str(_tiny_config(tmp_path, arch)), "--data.init_args.weak_labels=null",
                  f"--data.init_args.weak_label_file={labels}", "--run_dir", str(run_dir), env=env)
    assert fitted.returncode == 0, fitted.stderr[-3000:]

    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    steps = [r for r in rows if r.get("train/loss")]
    assert len(steps) == 4 and all(math.isfinite(float(r["train/loss"])) for r in steps)
    mined = [float(r["train/mined"]) for r in steps]
    ignored = [float(r["train/ignored_negatives"]) for r in steps]
    assert sum(mined) > 0 and sum(ignored) > 0
    assert all(i > 0 for m, i in zip(mined, ignored) if m > 0)  # whatever was mined left the negatives
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
