"""Point-cloud label-efficiency benchmark on the synthetic rooms and on the real IGN LiDAR tile (issue #4).

Suite ``pointcloud`` (synthetic rooms): the same model and schedule at full, 1%, 0.1% (3 label seeds),
0.01% labels; the 0.1% row after each offline self-training round (``0.1pct-selftrain-r1``, ``-r2``,
:mod:`vision.commands.selftrain`, with the pseudo-labels' precision); and the k-NN label-propagation
floor at each budget.

Suite ``pointcloud-ign`` (the real IGN Lidar HD tile, ``configs/pointcloud/sqn-ign-0.1pct.yaml``): trained
and scored on the same tile from 0.1% of its labels, scored only on its unlabelled points, 3 label seeds;
beside it the k-NN vote on xyz at 0.1% and 1% (3 seeds, unlabelled points only), which re-measures the
issue's floors (37.8 and 63.5 mIoU) on the same points.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from vision.benchmarks.common import Row, converged, validation_curve
from vision.benchmarks.knn_baseline import confusion, knn_vote, standardised_features
from vision.benchmarks.training import (
    SuiteRow,
    data_root_overrides,
    fit_and_test,
    missing_data_reason,
)

CONFIGS = Path("configs") / "pointcloud"
BUDGETS = {"1pct": 0.01, "0.1pct": 0.001, "0.01pct": 0.0001}
KNN_KS = (1, 3, 5, 10, 20)
#: ``selftrain --top-fraction`` (its default, SQN's ~1% per class; round r keeps r times as many)
SELFTRAIN_TOP_FRACTION = 0.01
IGN_DATA = "ign_lidarhd"
IGN_CONFIG = str(CONFIGS / "sqn-ign-0.1pct.yaml")

#: ``--quick``: a CI-sized version of every row (small rooms, short schedule).
QUICK_OVERRIDES = ["--data.init_args.synthetic={num_train: 4, num_val: 2, num_test: 2, points_per_room: [15000, 20000]}",
                   "--trainer.max_epochs=2", "--data.init_args.crops_per_epoch=16",
                   "--trainer.check_val_every_n_epoch=1", "--data.init_args.crop_points=2048"]
#: ``--quick`` on the IGN tile: the real tile, a few steps.
IGN_QUICK_OVERRIDES = ["--trainer.max_epochs=2", "--data.init_args.crops_per_epoch=8",
                       "--trainer.check_val_every_n_epoch=1"]


@dataclass
class SelftrainRow(Row):
    """The 0.1% row after ``rounds`` offline self-training rounds (``sparsevision selftrain``)."""

    rounds: int = 1

    def command(self, seed: int) -> str:
        args = ["sparsevision", "selftrain", "--config", self.config, "--rounds", str(self.rounds),
                "--top-fraction", str(SELFTRAIN_TOP_FRACTION), *self.overrides]
        if len(self.seeds) > 1 or seed != 0:
            args += [f"{self.seed_option}={seed}"]
        run_dir = Path("outputs") / "selftrain" / Path(self.config).stem / f"round{self.rounds}"  # selftrain's --out
        return (" ".join(shlex.quote(a) for a in args) +
                f"  (then: sparsevision test --config {shlex.quote(self.config)} --run_dir {run_dir})")


def rows(quick: bool = False, dataset: str = "synthetic") -> list[Row]:
    """The rows of suite ``pointcloud`` (``dataset="synthetic"``) or ``pointcloud-ign`` (``"ign"``)."""
    if dataset == "ign":
        return ign_rows(quick)
    extra = QUICK_OVERRIDES if quick else []
    table = [Row("pointcloud", "full", str(CONFIGS / "sqn-synthetic-full.yaml"), extra, (0,), "sqn", "full")]
    for labels in BUDGETS:
        seeds = (0, 1, 2) if labels == "0.1pct" and not quick else (0,)
        table.append(Row("pointcloud", f"{labels}", str(CONFIGS / f"sqn-synthetic-{labels}.yaml"), extra, seeds,
                         "sqn+engine", labels))
    for rounds in (1, 2):
        table.append(SelftrainRow("pointcloud", f"0.1pct-selftrain-r{rounds}", str(CONFIGS / "sqn-synthetic-0.1pct.yaml"),
                                  extra, (0,), "sqn+engine+selftrain", "0.1pct", rounds=rounds))
    for labels in BUDGETS:
        table.append(SuiteRow("pointcloud", f"knn-{labels}", str(CONFIGS / f"sqn-synthetic-{labels}.yaml"), extra,
                              (0,), "knn", labels, suite="pointcloud"))
    return table


def ign_rows(quick: bool = False) -> list[Row]:
    """Suite ``pointcloud-ign``: SQN + engine at 0.1%, k-NN on xyz at 0.1% and 1%, 3 label seeds each."""
    data = data_root_overrides(IGN_DATA)
    seeds = (0,) if quick else (0, 1, 2)
    table = [Row("pointcloud-ign", "0.1pct", IGN_CONFIG, [*data, *(IGN_QUICK_OVERRIDES if quick else [])], seeds,
                 "sqn+engine", "0.1pct")]
    for labels in ("0.1pct", "1pct"):  # cheap: 3 seeds even with --quick
        table.append(SuiteRow("pointcloud-ign", f"knn-{labels}", IGN_CONFIG, list(data), (0, 1, 2), "knn", labels,
                              suite="pointcloud-ign"))
    return table


def skip_reason(row: Row) -> Optional[str]:
    """Why ``row`` cannot run here (None when it can): IGN rows need the shared tile."""
    return missing_data_reason(IGN_DATA) if row.task == "pointcloud-ign" else None


def run_training_row(row: Row, seed: int, run_root: Path) -> dict:
    """Fit, then test the last checkpoint on the full labels of the test rooms."""
    return fit_and_test(row, seed, run_root, "val/miou")


# ---------------------------------------------------------------------------- k-NN floors
def run_knn_row(row: Row, seed: int, ks: tuple[int, ...] = KNN_KS) -> dict:
    """k-NN vote within each room from ``ratio`` of its labels; k tuned on the validation rooms.

    Transductive: the labels are drawn in the TEST rooms (same protocol, seed and room ids), so the
    budget counts test points.
    """
    from vision.cli import build_cli
    from vision.labels.protocols import Ratio

    datamodule = build_cli(["--config", row.config, *row.overrides]).datamodule
    datamodule.prepare_data()
    num_classes, ratio = datamodule.num_classes, BUDGETS[row.labels]

    def score(split: str, k: int) -> tuple[np.ndarray, int, int]:
        matrix, labelled, total = np.zeros((num_classes, num_classes), np.int64), 0, 0
        for path in datamodule.scene_files(split):
            scene = datamodule.read_scene(path)
            weak = Ratio(ratio).draw(_dense(scene.semantic), seed, datamodule.scene_id(path))
            predicted = knn_vote(standardised_features(scene.coords, scene.colors), weak.index, weak.class_id,
                                 k, num_classes)
            matrix += confusion(predicted, scene.semantic, num_classes)
            labelled, total = labelled + len(weak), total + int((scene.semantic >= 0).sum())
        return matrix, labelled, total

    tuning = {k: _miou(score("val", k)[0]) for k in ks}
    best_k = max(tuning, key=tuning.get)
    matrix, labelled, total = score("test", best_k)
    return {"metric": {"miou": _miou(matrix), "acc": float(np.trace(matrix) / max(matrix.sum(), 1))},
            "k": best_k, "val_miou_by_k": tuning,
            "label_budget": {"labelled": labelled, "total": total, "fraction": labelled / max(total, 1),
                             "split": "test"}}


def leave_one_out_k(features: np.ndarray, index: np.ndarray, class_id: np.ndarray, num_classes: int,
                    ks: tuple[int, ...] = KNN_KS) -> int:
    """The ``k`` whose inverse-distance vote best predicts each labelled point from the OTHER labelled points.

    Uses only the labelled points (``features (N, F)``, ``index (L,)``, ``class_id (L,)``), so the
    unlabelled points that are scored never choose ``k``; ties go to the smaller ``k``.
    """
    usable = [k for k in ks if k < len(index)]
    if not usable:
        return 1
    tree = cKDTree(features[index])
    distance, neighbour = tree.query(features[index], k=max(usable) + 1)
    distance, neighbour = distance[:, 1:], neighbour[:, 1:]  # column 0 is the point itself
    weight, votes_of = 1.0 / (distance + 1e-6), class_id[neighbour]
    scores = {}
    for k in usable:
        votes = np.zeros((len(index), num_classes))
        np.add.at(votes, (np.repeat(np.arange(len(index)), k), votes_of[:, :k].reshape(-1)), weight[:, :k].reshape(-1))
        scores[k] = _miou(confusion(votes.argmax(1), class_id.astype(np.int64), num_classes))
    return max(usable, key=lambda k: (scores[k], -k))


def run_ign_knn_row(row: Row, seed: int) -> dict:
    """k-NN vote on standardised xyz from ``ratio`` of the tile's labels, scored on its unlabelled points.

    The labelled points are the ones the engine row of the same seed trains on (same protocol, seed and
    scene id); ``k`` comes from leave-one-out on the labelled points only.
    """
    from vision.cli import build_cli
    from vision.labels.protocols import Ratio

    datamodule = build_cli(["--config", row.config, *row.overrides]).datamodule
    num_classes, ratio = datamodule.num_classes, BUDGETS[row.labels]
    matrix, labelled, total, chosen = np.zeros((num_classes, num_classes), np.int64), 0, 0, {}
    for path in datamodule.scene_files("test"):
        scene = datamodule.read_scene(path)
        scene_id = datamodule.scene_id(path)
        weak = Ratio(ratio).draw(_dense(scene.semantic), seed, scene_id)
        features = standardised_features(scene.coords)  # xyz only, as the floor
        chosen[scene_id] = k = leave_one_out_k(features, weak.index, weak.class_id, num_classes)
        predicted = knn_vote(features, weak.index, weak.class_id, k, num_classes)
        unlabelled = np.ones(len(predicted), bool)
        unlabelled[weak.index] = False
        matrix += confusion(predicted, scene.semantic, num_classes, mask=unlabelled)
        labelled, total = labelled + len(weak), total + int((scene.semantic >= 0).sum())
    per_class = _ious(matrix)
    names = datamodule.class_names or [str(c) for c in range(num_classes)]
    return {"metric": {"miou": _miou(matrix), "acc": float(np.trace(matrix) / max(matrix.sum(), 1)),
                       **{f"iou/{n}": float(v) for n, v in zip(names, per_class)}},
            "k": chosen, "label_budget": {"labelled": labelled, "total": total, "fraction": labelled / max(total, 1)},
            "scored_points": int(matrix.sum())}


def _dense(semantic: np.ndarray):
    from vision.labels.types import DenseLabels

    return DenseLabels(semantic)


def _ious(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(1) + matrix.sum(0) - tp
    return np.where(matrix.sum(1) > 0, tp / np.maximum(union, 1), np.nan)


def _miou(matrix: np.ndarray) -> float:
    iou = _ious(matrix)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


# ---------------------------------------------------------------------------- self-training rounds
def _round_run_dir(row: Row, seed: int, run_root: Path, round_index: int) -> Path:
    """Round 0 is the ``0.1pct`` row's own run; round r >= 1 is the ``0.1pct-selftrain-r<r>`` row's."""
    name = "0.1pct" if round_index == 0 else f"0.1pct-selftrain-r{round_index}"
    return Path(run_root) / f"{row.task}-{name}-seed{seed}"


def _round_weak_file(row: Row, seed: int, run_root: Path, round_index: int) -> Optional[Path]:
    if round_index == 0:
        return None  # the config's own protocol and label seed
    return Path(run_root) / f"{row.task}-0.1pct-selftrain-seed{seed}" / f"round{round_index}"


def _overrides(row: Row, seed: int) -> list[str]:
    return [*row.overrides, f"{row.seed_option}={seed}", "--trainer.enable_progress_bar=false"]


def _trained_round(row: SelftrainRow, seed: int, run_root: Path, round_index: int) -> Path:
    """``last.ckpt`` of round ``round_index``, training it (and the rounds before it) when missing."""
    from vision.commands.selftrain import fit_round

    run_dir = _round_run_dir(row, seed, run_root, round_index)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        return checkpoint
    if round_index == 0:
        fit_round([row.config], _overrides(row, seed), run_dir)
    else:
        _fit_round(row, seed, run_root, round_index)
    return checkpoint


def _pseudo_label_file(row: SelftrainRow, seed: int, run_root: Path, round_index: int) -> tuple[Path, dict]:
    """Predict the training rooms with round ``r - 1`` and write round ``r``'s weak-label file (selftrain's steps)."""
    from vision.commands.selftrain import pseudo_label_round

    previous = round_index - 1
    checkpoint = _trained_round(row, seed, run_root, previous)
    out = _round_weak_file(row, seed, run_root, round_index)
    stats = pseudo_label_round([row.config], _overrides(row, seed), checkpoint,
                               _round_weak_file(row, seed, run_root, previous), out.parent / f"round{previous}", out,
                               min(1.0, SELFTRAIN_TOP_FRACTION * round_index), overwrite=True)
    return out, stats


def _fit_round(row: SelftrainRow, seed: int, run_root: Path, round_index: int):
    """Train round ``round_index`` on the pseudo-labels of the round before; returns the CLI and their stats."""
    from vision.commands.selftrain import fit_round

    weak_file, stats = _pseudo_label_file(row, seed, run_root, round_index)
    return fit_round([row.config], _overrides(row, seed), _round_run_dir(row, seed, run_root, round_index),
                     weak_file), stats


def run_selftrain_row(row: SelftrainRow, seed: int, run_root: Path) -> dict:
    """Round ``row.rounds`` of ``sparsevision selftrain`` from the 0.1% row, tested on the full test labels.

    Round 0 is the ``0.1pct`` row's run (trained here if its checkpoint is missing); each later round
    predicts the training rooms with the round before, keeps the top ``1% x r`` per class outside the
    human labels, and retrains from scratch on human + pseudo-labels. The row records the pseudo-labels'
    precision against the (never trained on) full labels.
    """
    cli, stats = _fit_round(row, seed, run_root, row.rounds)
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)[0]
    run_dir = _round_run_dir(row, seed, run_root, row.rounds)
    curve = validation_curve(run_dir, "val/miou")
    budget = cli.datamodule.label_budget()  # its "labelled" counts pseudo-labels too: keep human ones only
    budget.update(labelled=stats["human"], pseudo=stats["pseudo"], fraction=stats["human"] / max(budget["total"], 1))
    return {"metric": {k.removeprefix("test/"): float(v) for k, v in metrics.items()},
            "label_budget": budget, "pseudo_labels": stats, "val_curve": curve,
            "converged": converged(curve), "steps": int(cli.trainer.global_step), "run_dir": str(run_dir)}


def run_one(row: Row, seed: int, run_root: Path) -> dict:
    if row.method == "knn":
        return run_ign_knn_row(row, seed) if row.task == "pointcloud-ign" else run_knn_row(row, seed)
    if isinstance(row, SelftrainRow):
        return run_selftrain_row(row, seed, run_root)
    return run_training_row(row, seed, run_root)
