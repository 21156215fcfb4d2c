"""``sparsevision visualize``: pictures of what a trained model does, as PNG.

    sparsevision visualize --config configs/pointcloud/sqn-synthetic-0.1pct.yaml [--ckpt_path PATH] [--out DIR]

Loads the run's checkpoint (default ``outputs/runs/<config-stem>/checkpoints/last.ckpt``) and renders,
for the task of the config: a training sample with its full labels, the sparse labels given and the
prediction, and a test sample with its full labels and the prediction — point clouds as a top and an
oblique view, event frames and detection images side by side, one colour per class with a legend.
Extra arguments are LightningCLI overrides (``--data.init_args.batch_size=2``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vision.cli import run_dir_for


def _renderer(model):
    from vision.demo import pictures

    name = type(model).__module__
    for task in ("pointcloud", "events", "detection"):
        if name.endswith(f"tasks.{task}"):
            return getattr(pictures, f"{task}_pictures")
    raise SystemExit(f"sparsevision visualize: no pictures for {type(model).__name__}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision visualize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt_path", default=None, help="checkpoint (default: the run's last.ckpt)")
    parser.add_argument("--out", default=None, help="folder of the PNGs (default: <run dir>/pictures)")
    args, overrides = parser.parse_known_args(argv)
    run_dir = run_dir_for([args.config])
    checkpoint = Path(args.ckpt_path or run_dir / "checkpoints" / "last.ckpt")
    if not checkpoint.is_file():
        print(f"sparsevision visualize: {checkpoint}: no checkpoint; train first (sparsevision fit --config "
              f"{args.config}) or pass --ckpt_path", file=sys.stderr)
        return 2
    from vision.cli import build_cli

    cli = build_cli(["--config", args.config, *overrides, "--run_dir", str(run_dir / "visualize"),
                     "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"])
    # one validation batch loads the weights and attaches trainer and datamodule to the model
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint), verbose=False)
    cli.datamodule.setup("fit")  # the weak labels, for the "sparse labels given" panel
    out = Path(args.out or run_dir / "pictures")
    out.mkdir(parents=True, exist_ok=True)
    for path in _renderer(cli.model)({checkpoint.parent.parent.name: cli}, out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
