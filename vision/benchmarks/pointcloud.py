"""Point-cloud label-efficiency benchmark on the synthetic rooms (and the real IGN LiDAR tile).

Rows (CONVENTIONS.md): the same model and schedule at full, 1%, 0.1% (3 label seeds), 0.01% labels;
the 0.1% row after ``selftrain`` rounds; and the k-NN label-propagation floor at each budget.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vision.benchmarks.common import Row, converged, validation_curve
from vision.benchmarks.knn_baseline import confusion, knn_vote, standardised_features

CONFIGS = Path("configs") / "pointcloud"
BUDGETS = {"1pct": 0.01, "0.1pct": 0.001, "0.01pct": 0.0001}

#: ``--quick``: a CI-sized version of every row (small rooms, short schedule).
QUICK_OVERRIDES = ["--data.init_args.synthetic={num_train: 4, num_val: 2, num_test: 2, points_per_room: [15000, 20000]}",
                   "--trainer.max_epochs=2", "--data.init_args.crops_per_epoch=16",
                   "--trainer.check_val_every_n_epoch=1", "--data.init_args.crop_points=2048"]


def rows(quick: bool = False) -> list[Row]:
    extra = QUICK_OVERRIDES if quick else []
    table = [Row("pointcloud", "full", str(CONFIGS / "sqn-synthetic-full.yaml"), extra, (0,), "sqn", "full")]
    for labels in BUDGETS:
        seeds = (0, 1, 2) if labels == "0.1pct" and not quick else (0,)
        table.append(Row("pointcloud", f"{labels}", str(CONFIGS / f"sqn-synthetic-{labels}.yaml"), extra, seeds,
                         "sqn+engine", labels))
    for labels in BUDGETS:
        table.append(Row("pointcloud", f"knn-{labels}", str(CONFIGS / f"sqn-synthetic-{labels}.yaml"), extra,
                         (0,), "knn", labels))
    return table


def run_training_row(row: Row, seed: int, run_root: Path) -> dict:
    """Fit, then test the last checkpoint on the full labels of the test rooms."""
    from vision.cli import build_cli

    run_dir = run_root / f"{row.task}-{row.name}-seed{seed}"
    cli = build_cli(["--config", row.config, *row.overrides, f"--data.init_args.weak_label_seed={seed}",
                     "--run_dir", str(run_dir), "--trainer.enable_progress_bar=false"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)[0]
    curve = validation_curve(run_dir, "val/miou")
    return {"metric": {k.removeprefix("test/"): float(v) for k, v in metrics.items()},
            "label_budget": cli.datamodule.label_budget(), "val_curve": curve,
            "converged": converged(curve), "steps": int(cli.trainer.global_step), "run_dir": str(run_dir)}


def run_knn_row(row: Row, seed: int, ks: tuple[int, ...] = (1, 3, 5, 10, 20)) -> dict:
    """k-NN vote within each room from ``ratio`` of its labels; k tuned on the validation rooms."""
    from vision.cli import build_cli
    from vision.labels.protocols import Ratio

    datamodule = build_cli(["--config", row.config, *row.overrides]).datamodule
    datamodule.prepare_data()
    num_classes, ratio = datamodule.num_classes, BUDGETS[row.labels]

    def score(split: str, k: int) -> tuple[np.ndarray, int]:
        total, labelled = np.zeros((num_classes, num_classes), np.int64), 0
        for path in datamodule.scene_files(split):
            scene = datamodule.read_scene(path)
            weak = Ratio(ratio).draw(_dense(scene.semantic), seed, datamodule.scene_id(path))
            predicted = knn_vote(standardised_features(scene.coords, scene.colors), weak.index, weak.class_id,
                                 k, num_classes)
            total += confusion(predicted, scene.semantic, num_classes)
            labelled += len(weak)
        return total, labelled

    tuning = {k: _miou(score("val", k)[0]) for k in ks}
    best_k = max(tuning, key=tuning.get)
    matrix, labelled = score("test", best_k)
    return {"metric": {"miou": _miou(matrix), "acc": float(np.trace(matrix) / max(matrix.sum(), 1))},
            "k": best_k, "val_miou_by_k": tuning, "label_budget": {"labelled_test_points": labelled}}


def _dense(semantic: np.ndarray):
    from vision.labels.types import DenseLabels

    return DenseLabels(semantic)


def _miou(matrix: np.ndarray) -> float:
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1)
    union = support + matrix.sum(0) - tp
    iou = tp[support > 0] / np.maximum(union[support > 0], 1)
    return float(iou.mean()) if len(iou) else math.nan


def run_one(row: Row, seed: int, run_root: Path) -> dict:
    if row.method == "knn":
        return run_knn_row(row, seed)
    return run_training_row(row, seed, run_root)
