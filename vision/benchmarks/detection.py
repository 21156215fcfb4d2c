"""Detection label-efficiency benchmark: missing boxes and point labels, on the synthetic scenes and on BCCD (issue #6).

Suites ``detection`` (synthetic scenes, ``configs/detection/fcos-synthetic-*.yaml``) and ``detection-bccd``
(BCCD blood smears, VOC, ``configs/detection/fcos-bccd-*.yaml``; skipped with a message when
``$SPARSEVISION_SHARED_DATA/bccd`` is absent). FCOS (ResNet-18 FPN from scratch), one schedule for all rows:

* ``full``: every box, plain training (the engine has nothing to do when no box is missing: mining
  and the teacher act only on incomplete images);
* ``drop50`` (each box dropped with p = 0.5, label seeds 0, 1, 2), ``keep1`` (one box per image): the
  SparseDet engine (mining + EMA teacher + consistency), and ``-baseline`` rows trained plainly on the
  same labels (``--model.init_args.baseline=true``: missing boxes are background);
* ``points`` (one centre point per object, label seeds 0, 1, 2): MIL point-to-box then the detector with
  the engine; ``points-baseline``: a box of the class's mean size at each point, trained plainly. The
  mean sizes are a given prior (:mod:`vision.tasks.detection_points`): measured here on the VALIDATION
  split's boxes, never on the training split's hidden ones, and written into the row's command.

Engine rows on incomplete boxes also score the run's final pseudo-boxes and mined regions against the
hidden boxes of 100 training images (:mod:`vision.benchmarks.pseudo_boxes`), in the row's JSON under
``pseudo_boxes``. The synthetic suite also lists torchvision RetinaNet rows (``retinanet-full``, ``retinanet-drop50``,
``retinanet-drop50-baseline``) and their mmdet RetinaNet counterparts (:mod:`vision.benchmarks.mmdet_rows`),
skipped with the reason when mmdet / mmcv's ops do not import; the report compares each ``<family>-*`` row
with its own ``<family>-full``. Every row is tested against the FULL boxes of
the test split (COCO mAP and AP50, torchmetrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from vision.benchmarks import mmdet_rows
from vision.benchmarks.common import Row
from vision.benchmarks.training import data_root_overrides, fit_and_test, missing_data_reason

CONFIGS = Path("configs") / "detection"
BCCD_DATA = "bccd/BCCD"
BASELINE = "--model.init_args.baseline=true"
MEAN_SIZE = "--model.init_args.point_boxes=mean_size"
PRIOR_OPTION = "--model.init_args.class_mean_wh"

#: ``--quick`` on the synthetic scenes: few small scenes, a detector sized for them, two short epochs.
QUICK_OVERRIDES = ["--data.init_args.synthetic={num_train: 16, num_val: 8, num_test: 8, height: 96, width: 128}",
                   "--model.init_args.model.init_args.min_size=96", "--model.init_args.model.init_args.max_size=128",
                   "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1",
                   "--model.init_args.burn_in_steps=4", "--model.init_args.warmup_steps=2",
                   "--model.init_args.point_burn_in_steps=4"]
#: ``--quick`` on BCCD: the real images, a few batches of one epoch.
BCCD_QUICK_OVERRIDES = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=3",
                        "--trainer.limit_test_batches=3", "--model.init_args.burn_in_steps=2",
                        "--model.init_args.warmup_steps=2", "--model.init_args.point_burn_in_steps=2"]


def rows(quick: bool = False, dataset: str = "synthetic") -> list[Row]:
    """The rows of suite ``detection`` (``dataset="synthetic"``) or ``detection-bccd`` (``"bccd"``)."""
    if dataset not in ("synthetic", "bccd"):
        raise ValueError(f"dataset must be 'synthetic' or 'bccd', got {dataset!r}")
    task = "detection" if dataset == "synthetic" else "detection-bccd"
    extra = (QUICK_OVERRIDES if dataset == "synthetic" else BCCD_QUICK_OVERRIDES) if quick else []
    extra = [*(data_root_overrides(BCCD_DATA) if dataset == "bccd" else []), *extra]
    headline = (0,) if quick else (0, 1, 2)

    def config(labels: str) -> str:
        return config_path("fcos", dataset, labels)

    table = [Row(task, "full", config("full"), list(extra), (0,), "fcos", "full")]
    for labels in ("drop50", "keep1"):
        table += [Row(task, labels, config(labels), list(extra), headline if labels == "drop50" else (0,),
                      "fcos+engine", labels),
                  Row(task, f"{labels}-baseline", config(labels), [BASELINE, *extra], (0,), "fcos", labels)]
    table += [Row(task, "points", config("points"), list(extra), headline, "fcos+engine", "points"),
              Row(task, "points-baseline", config("points"), [BASELINE, MEAN_SIZE, *extra], (0,),
                  "fcos (mean-size boxes)", "points")]
    if dataset == "synthetic":
        table += retinanet_rows(extra) + mmdet_rows.rows(quick)
    return table


def config_path(detector: str, dataset: str, labels: str) -> str:
    """``configs/detection/<detector>-<dataset>-<labels>.yaml``."""
    return str(CONFIGS / f"{detector}-{dataset}-{labels}.yaml")


def retinanet_rows(extra: list[str]) -> list[Row]:
    """torchvision RetinaNet on the synthetic scenes, the counterpart of each mmdet RetinaNet row.

    ``retinanet-full``, ``retinanet-drop50`` (the engine) and ``retinanet-drop50-baseline``, label seed 0,
    from ``configs/detection/retinanet-synthetic-{full,drop50}.yaml``: the same detector, schedule and
    labels as :mod:`vision.benchmarks.mmdet_rows`, so the two backends are compared row by row.
    """
    def config(labels: str) -> str:
        return config_path("retinanet", "synthetic", labels)

    return [Row("detection", "retinanet-full", config("full"), list(extra), (0,), "retinanet", "full"),
            Row("detection", "retinanet-drop50", config("drop50"), list(extra), (0,), "retinanet+engine", "drop50"),
            Row("detection", "retinanet-drop50-baseline", config("drop50"), [BASELINE, *extra], (0,), "retinanet",
                "drop50")]


def skip_reason(row: Row) -> Optional[str]:
    """Why ``row`` cannot run here (None when it can): BCCD rows need the data, mmdet rows need mmdet."""
    if row.task == "detection-bccd":
        return missing_data_reason(BCCD_DATA)
    if row.name.startswith("mmdet_"):
        from vision.models.detection.mmdet_backend import mmdet_unavailable_reason

        return mmdet_unavailable_reason()
    return None


def class_mean_wh(datamodule, split: str = "val") -> list[list[float]]:
    """``(C, 2)`` mean box ``(w, h)`` per class over ``split``'s full boxes, in the pixels the model sees.

    A class without a box in ``split`` takes the mean over all classes.
    """
    images = datamodule.images(split)
    num_classes = datamodule.num_classes
    sums, counts = np.zeros((num_classes, 2)), np.zeros(num_classes)
    for i in range(len(images)):
        item = images[i]
        boxes, labels = item["boxes"].numpy(), item["labels"].numpy()
        np.add.at(sums, labels, boxes[:, 2:] - boxes[:, :2])
        np.add.at(counts, labels, 1)
    if counts.sum() == 0:
        from vision.errors import DataError

        raise DataError(split, "no boxes to measure the class mean sizes on")
    overall = sums.sum(0) / counts.sum()
    means = [sums[c] / counts[c] if counts[c] else overall for c in range(num_classes)]
    return [[round(float(w), 1), round(float(h), 1)] for w, h in means]


def _with_measured_prior(row: Row) -> None:
    """Add ``--model.init_args.class_mean_wh`` measured on the validation split to ``row.overrides``.

    In place, before the run, so the command recorded with the row's JSON holds the prior it used.
    """
    if any(o.startswith(PRIOR_OPTION) for o in row.overrides):
        return
    from vision.cli import build_cli

    datamodule = build_cli(["--config", row.config, *row.overrides]).datamodule
    datamodule.prepare_data()
    prior = class_mean_wh(datamodule, "val")
    row.overrides.append(f"{PRIOR_OPTION}={prior}")


def run_one(row: Row, seed: int, run_root: Path) -> dict:
    """Fit, then test the last checkpoint against the full boxes of the test split (mAP, AP50)."""
    if MEAN_SIZE in row.overrides:
        _with_measured_prior(row)
    return fit_and_test(row, seed, run_root, "val/map_50", _pseudo_box_scores if scores_pseudo_boxes(row) else None)


def scores_pseudo_boxes(row: Row) -> bool:
    """Rows whose pseudo-boxes and mined regions are scored: the engine on incomplete boxes."""
    return row.labels in ("drop50", "keep1") and row.method.endswith("+engine")


def _pseudo_box_scores(model, datamodule) -> dict:
    from vision.benchmarks.pseudo_boxes import pseudo_box_quality

    return {"pseudo_boxes": pseudo_box_quality(model, datamodule)}
