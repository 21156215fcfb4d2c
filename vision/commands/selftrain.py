"""``sparsevision selftrain``: offline self-training rounds on confident pseudo-labels (SQN, Sec. 3.4).

Each round: (1) ``fit`` the config on the current weak labels; (2) ``predict`` the training split with
Lightning's predict loop and a :class:`~vision.engine.PseudoLabelWriter` (so it runs distributed like
training); (3) keep, per class, the ``--top-fraction`` most confident predictions outside the human
labels; (4) write ``<out>/round<R>.weak.{json,npz}``: the human labels plus those pseudo-labels
(``source = pseudo``); the next round trains on that file. When the datamodule has full labels, each
round logs the pseudo-labels' precision against them (never used for training).

Nothing is lost: every file is written to a temporary name and renamed when complete, and a folder
that holds an earlier run's outputs (``round*``, ``summary.json``; also what a killed run left) is
refused unless ``--overwrite``.

The datamodule must offer ``full_labels(split)``, ``weak_label_file`` / ``predict_split`` init
arguments, and a ``predict_step`` returning ``{"sample_id", "label", "confidence"}`` per original point
(``(N,)``) or pixel (``(H, W)``).

From Python (what the command does, one step at a time; ``vision.benchmarks.pointcloud`` uses it)::

    cli = fit_round(configs, overrides, out / "round0")                     # (1)
    stats = pseudo_label_round(configs, overrides, cli.trainer.checkpoint_callback.last_model_path,
                               weak_file=None, run_dir=out / "round0", out=out / "round1",
                               top_fraction=0.01)                           # (2)-(4)
    fit_round(configs, overrides, out / "round1", weak_file=out / "round1")  # the next round's (1)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vision.atomic import atomic_write_text
from vision.errors import DataError
from vision.labels.conversions import pixel_of


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsevision selftrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, action="append", help="LightningCLI config (repeatable)")
    parser.add_argument("--rounds", type=int, default=2, help="self-training rounds after the first fit")
    parser.add_argument("--top-fraction", type=float, default=0.01,
                        help="per class, keep this fraction of the predictions as pseudo-labels in round 1 "
                             "(SQN: ~1%%); round r keeps r times as many, as the model improves")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="never keep predictions below this")
    parser.add_argument("--out", default=None, help="output folder (default outputs/selftrain/<config-stem>)")
    parser.add_argument("--overwrite", action="store_true", help="replace weak-label files of an earlier run")
    parser.epilog = ("Any other options are LightningCLI options of every fit, passed on in order "
                     "(e.g. --trainer.max_epochs 5 or --trainer.max_epochs=5).")
    return parser


def round_cli(configs: list[str], overrides: list[str], run_dir: Path, weak_file: Path | None = None,
              predict: bool = False):
    """The LightningCLI (``.model``, ``.datamodule``, ``.trainer``) of one round, built but not run.

    ``configs`` and ``overrides`` are the user's ``--config`` files and LightningCLI options; the run
    writes into ``run_dir``; ``weak_file`` (a weak-label file stem) replaces the config's weak labels;
    ``predict`` makes the datamodule predict its training split.
    """
    from vision.cli import build_cli

    args = [item for config in configs for item in ("--config", config)] + list(overrides)
    args += ["--run_dir", str(run_dir)]
    if weak_file is not None:
        args += ["--data.init_args.weak_labels", "null", "--data.init_args.weak_label_file", str(weak_file)]
    if predict:
        args += ["--data.init_args.predict_split", "train"]
    return build_cli(args)


def flat_positions(labels, shape: tuple[int, ...]) -> np.ndarray:
    """Positions of point labels in a flattened ``(N,)`` cloud or ``(H, W)`` frame.

    Pixels use :func:`vision.labels.conversions.pixel_of`, the rounding that built the training targets.
    """
    if labels.is_3d:
        return labels.index
    cols, rows = pixel_of(labels.xy).T
    return rows * shape[1] + cols


def pseudo_labels_from_predictions(predictions: dict, weak, num_classes: int, top_fraction: float,
                                   min_confidence: float) -> dict:
    """Per sample, the confident predictions outside the human labels as ``PointLabels(source=PSEUDO)``."""
    from vision.engine.pseudo_selection import select_confident_per_class
    from vision.labels.types import HUMAN, PSEUDO, PointLabels

    pseudo = {}
    for sample_id, (label, confidence) in predictions.items():
        flat_label, flat_conf = label.reshape(-1).astype(np.int64), confidence.reshape(-1).astype(np.float32)
        human = np.zeros(flat_label.shape[0], bool)
        labels = weak.labels.get(sample_id) if weak is not None else None
        if labels is not None:
            human[flat_positions(labels.select(labels.source == HUMAN), label.shape)] = True
        keep = select_confident_per_class(flat_label, flat_conf, num_classes, top_fraction, min_confidence,
                                          exclude=human)
        position = np.flatnonzero(keep)
        kwargs = {"index": position} if label.ndim == 1 else {
            "xy": np.stack([position % label.shape[1], position // label.shape[1]], 1).astype(np.float32)}
        pseudo[sample_id] = PointLabels(class_id=flat_label[position], source=np.full(len(position), PSEUDO),
                                        confidence=flat_conf[position], **kwargs)
    return pseudo


def pseudo_precision(pseudo: dict, datamodule) -> float | None:
    """Fraction of pseudo-labels equal to the full labels (None without full labels)."""
    correct = total = 0
    try:
        full = dict(datamodule.full_labels("train"))
    except (DataError, AttributeError, NotImplementedError):
        return None
    for sample_id, labels in pseudo.items():
        truth = full[sample_id].semantic
        position = flat_positions(labels, truth.shape)
        correct += int((truth.reshape(-1)[position] == labels.class_id).sum())
        total += len(labels)
    return correct / total if total else None


def earlier_outputs(out: Path) -> list[Path]:
    """What an earlier run left in ``out``: round folders, weak-label files, the summary (sorted)."""
    names = ("round*", "summary.json")
    return sorted({path for pattern in names for path in out.glob(pattern)})


def fit_round(configs: list[str], overrides: list[str], run_dir: Path, weak_file: Path | None = None):
    """Step (1): ``fit`` into ``run_dir`` on ``weak_file`` (the config's own weak labels when None).

    Returns the fitted LightningCLI; its ``last.ckpt`` is in ``run_dir/checkpoints/``.
    """
    cli = round_cli(configs, overrides, run_dir, weak_file)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def pseudo_label_round(configs: list[str], overrides: list[str], checkpoint: str | Path,
                       weak_file: Path | None, run_dir: Path, out: Path, top_fraction: float,
                       min_confidence: float = 0.0, overwrite: bool = False) -> dict:
    """Steps (2)-(4): predict the training split with ``checkpoint``, write human + pseudo-labels to ``out``.

    The predict run goes into ``run_dir / "predict"`` and its per-rank predictions into
    ``run_dir / "predictions"``; per class, the ``top_fraction`` most
    confident predictions (at least ``min_confidence``) outside the human labels of ``weak_file`` (the
    config's weak labels when None) become pseudo-labels. ``out`` is a weak-label file stem
    (``out.weak.{json,npz}``), refused when it exists unless ``overwrite``.

    Returns ``{"human", "pseudo", "precision", "weak_label_file"}``: label counts of the new file, the
    pseudo-labels' precision against the full labels (None without them) and ``out``.
    """
    from vision.engine.prediction_writer import PseudoLabelWriter, load_predictions

    predictions_dir = Path(run_dir) / "predictions"
    predictor = round_cli(configs, overrides, Path(run_dir) / "predict", weak_file, predict=True)
    if "write_predictions" in predictor.model.hparams:  # pseudo-labels only, no files in the user's format
        predictor.model.hparams.write_predictions = False
    predictor.trainer.callbacks.append(PseudoLabelWriter(predictions_dir))
    predictor.trainer.predict(predictor.model, datamodule=predictor.datamodule, ckpt_path=str(checkpoint),
                              return_predictions=False)
    datamodule = predictor.datamodule
    weak = datamodule.weak_label_set()
    if weak is None:
        raise DataError(configs[-1], "selftrain needs weak labels (weak_labels or weak_label_file)")
    pseudo = pseudo_labels_from_predictions(load_predictions(predictions_dir), weak,
                                            predictor.model.hparams.num_classes, top_fraction, min_confidence)
    merged = weak.merge_pseudo(pseudo)
    merged.save(out, overwrite=overwrite)
    counts = merged.counts()
    return {"human": counts["human"], "pseudo": counts["pseudo"],
            "precision": pseudo_precision(pseudo, datamodule), "weak_label_file": str(out)}


def main(argv: list[str]) -> int:
    # no positional arguments: the LightningCLI options and their values stay in the user's order
    args, overrides = _parser().parse_known_args(argv)
    out = Path(args.out or Path("outputs") / "selftrain" / Path(args.config[-1]).stem)
    existing = earlier_outputs(out)
    if existing and not args.overwrite:
        print(f"sparsevision selftrain: {out} already holds {existing[0].name}; pass --overwrite to replace "
              "an earlier run's outputs, or choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    weak_file, summary = None, []
    for round_index in range(args.rounds + 1):
        run_dir = out / f"round{round_index}"
        cli = fit_round(args.config, overrides, run_dir, weak_file)
        row = {"round": round_index, "weak_label_file": None if weak_file is None else str(weak_file),
               **{k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}}
        if round_index == args.rounds:
            summary.append(row)
            break
        stats = pseudo_label_round(args.config, overrides, cli.trainer.checkpoint_callback.last_model_path,
                                   weak_file, run_dir, out / f"round{round_index + 1}",
                                   min(1.0, args.top_fraction * (round_index + 1)), args.min_confidence,
                                   overwrite=args.overwrite)
        weak_file = out / f"round{round_index + 1}"
        row.update(pseudo=stats["pseudo"], human=stats["human"], pseudo_precision=stats["precision"])
        summary.append(row)
        print(f"selftrain round {round_index}: {row}")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
