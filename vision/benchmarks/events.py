"""Event-camera label-efficiency benchmark: dense labels vs one point per class per frame, with ablations (issue #5).

EV-WSSS (Cho et al., ECCV 2024) on the synthetic street recordings (``configs/events/evwsss-synthetic-
{full,1pt}.yaml``), one schedule for all rows, tested with student A against the full labels:

* ``full``: dense labels, the whole recipe (the reference of every ratio);
* ``1pt``: one point per class per frame (``PerClass(k=1)``), the whole recipe, label seeds 0, 1, 2;
* cumulative ablations at 1pt, label seed 0 (switches of :class:`vision.tasks.events.EventSegmentation`):
  ``1pt-point-ce`` (one student, point cross-entropy only), ``1pt-cross-pseudo`` (+ a second student
  and cross pseudo-labels), ``1pt-contrastive`` (+ prototype contrastive loss), ``1pt-exchange``
  (+ prototype exchange); adding feature distillation gives ``1pt`` itself;
* ``1pt-single-student``: one student with everything that applies to it (point CE + contrastive on its
  own predictions), against the dual-student ``1pt``.
"""

from __future__ import annotations

from pathlib import Path

from vision.benchmarks.common import Row
from vision.benchmarks.training import fit_and_test

CONFIGS = Path("configs") / "events"
FULL_CONFIG = str(CONFIGS / "evwsss-synthetic-full.yaml")
POINT_CONFIG = str(CONFIGS / "evwsss-synthetic-1pt.yaml")
OPTION = "--model.init_args."

#: row -> (method shown in the table, overrides of the 1pt config), in the order pieces are added
ABLATIONS = {
    "1pt-point-ce": ("point CE only", {"dual_student": "false", "contrastive_weight": "0"}),
    "1pt-cross-pseudo": ("+ cross pseudo-labels", {"contrastive_weight": "0", "distillation_weight": "0"}),
    "1pt-contrastive": ("+ prototype contrastive", {"prototype_exchange": "false", "distillation_weight": "0"}),
    "1pt-exchange": ("+ prototype exchange", {"distillation_weight": "0"}),
    "1pt-single-student": ("single student", {"dual_student": "false"}),
}

#: ``--quick``: a CI-sized version of every row (3 training recordings of ~20 labelled frames, 3 x 7 steps).
QUICK_OVERRIDES = ["--data.init_args.synthetic={num_train: 3, num_val: 1, num_test: 1}",
                   "--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=1",
                   "--model.init_args.rampup_steps=10"]


def rows(quick: bool = False) -> list[Row]:
    """The rows of suite ``events`` (see the module docstring)."""
    extra = QUICK_OVERRIDES if quick else []
    table = [Row("events", "full", FULL_CONFIG, list(extra), (0,), "evwsss", "full"),
             Row("events", "1pt", POINT_CONFIG, list(extra), (0,) if quick else (0, 1, 2), "evwsss", "1pt")]
    for name, (method, switches) in ABLATIONS.items():
        overrides = [f"{OPTION}{key}={value}" for key, value in switches.items()]
        table.append(Row("events", name, POINT_CONFIG, [*overrides, *extra], (0,), f"evwsss: {method}", "1pt"))
    return table


def run_one(row: Row, seed: int, run_root: Path) -> dict:
    """Fit, then test student A's last checkpoint against the full labels of the test recordings."""
    return fit_and_test(row, seed, run_root, "val/miou")
