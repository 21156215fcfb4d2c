"""``sparsevision demo``: the README's first command.

PLACEHOLDER until the point-cloud, event and detection tasks land: it trains the tiny toy task
(``tests/configs/tiny.yaml``: a per-point MLP on 2D rings) and prints its test mIoU, so that the
install, the trainer, the loggers and the checkpoints are exercised end to end. It says so loudly.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the toy task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import lightning as L

    from datamodules.toy import ToyPointDataModule
    from vision.tasks.toy import ToyPointSegmenter

    print("sparsevision demo: PLACEHOLDER - the sparse-label tasks are not built yet; "
          "training the toy point task to check the installation.")
    L.seed_everything(args.seed)
    out = Path(args.out) / "toy"
    trainer = L.Trainer(max_epochs=args.epochs, default_root_dir=str(out), accelerator="auto", devices=1,
                        logger=L.pytorch.loggers.CSVLogger(str(out), name="csv"),
                        enable_model_summary=False, log_every_n_steps=1)
    datamodule = ToyPointDataModule(num_train=32, num_points=512)
    model = ToyPointSegmenter(num_classes=datamodule.num_classes)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    miou = float(metrics["test/miou"])
    print(f"toy task (full labels, {args.epochs} epochs, seed {args.seed}): test/miou = {miou:.3f}")
    print(f"logs and checkpoints: {out}")
    return 0 if math.isfinite(miou) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
