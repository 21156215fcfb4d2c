"""Detection benchmark rows for the optional mmdet backend: mmdet RetinaNet beside the torchvision rows.

The same synthetic scenes, schedule, weak labels and SparseDet engine as
``configs/detection/retinanet-synthetic-drop50.yaml``; only the detector comes from MMDetection 3.3
(``configs/detection/mmdet_retinanet-synthetic-drop50.yaml``, needs ``make mmdet``). Rows:

* ``mmdet_retinanet-full``: every box (the weak-label protocol switched off, so nothing is mined);
* ``mmdet_retinanet-drop50``: half the boxes dropped, mining + EMA teacher + consistency, label seeds 0, 1, 2
  (the headline weak row, CONVENTIONS.md);
* ``mmdet_retinanet-drop50-baseline``: the same labels trained plainly (missing boxes = background), seed 0.

The detection suite lists ``mmdet_rows.rows()`` after its own rows and runs them with its own
``run_one`` (fit, test, and for the engine row the pseudo-box scores), like every other detection row.
"""

from __future__ import annotations

from pathlib import Path

from vision.benchmarks.common import Row

CONFIG = str(Path("configs") / "detection" / "mmdet_retinanet-synthetic-drop50.yaml")

#: ``--quick``: a CI-sized version of every row (few small scenes, two short epochs).
QUICK_OVERRIDES = ["--data.init_args.synthetic={num_train: 16, num_val: 8, num_test: 8, height: 96, width: 128}",
                   "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1",
                   "--model.init_args.burn_in_steps=4", "--model.init_args.warmup_steps=2"]


def rows(quick: bool = False) -> list[Row]:
    """The mmdet RetinaNet rows (see the module docstring)."""
    extra = QUICK_OVERRIDES if quick else []
    seeds = (0,) if quick else (0, 1, 2)
    return [Row("detection", "mmdet_retinanet-full", CONFIG, ["--data.init_args.weak_labels=null", *extra], (0,),
                "mmdet_retinanet", "full"),
            Row("detection", "mmdet_retinanet-drop50", CONFIG, list(extra), seeds, "mmdet_retinanet+engine",
                "drop50"),
            Row("detection", "mmdet_retinanet-drop50-baseline", CONFIG, ["--model.init_args.baseline=true", *extra],
                (0,), "mmdet_retinanet", "drop50")]
