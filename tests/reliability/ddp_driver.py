"""Run ``fit`` then ``test`` of several configs under DDP in one pair of processes (used by test_ddp.py).

    python tests/reliability/ddp_driver.py JOBS.json

``JOBS.json`` is a list of ``{"name", "args", "run_dir"}``; ``args`` are ``sparsevision fit`` options.
Each job is built with the project's LightningCLI (:func:`vision.cli.build_cli`, what ``sparsevision
fit`` runs), with ``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`` and the
:class:`~datamodules.distributed.WeakLabelRankCheck` callback. Lightning's launcher starts rank 1 by
re-running this script, so both ranks walk the same job list. Every rank writes
``<run_dir>/rank<R>.json``: the weak-label digest it trained on and the test metrics it returned.
Running all jobs in one process pair pays the torch/lightning import once instead of per task.

A job ``{"name", "map_inputs", "run_dir"}`` instead scores images ``rank::2`` of a list of detection
predictions and targets with the project's mAP metric (rank 0 gets one image more than rank 1) and
writes the synced result to ``<run_dir>/rank<R>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
       "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def run_job(job: dict) -> None:
    from datamodules.distributed import WeakLabelRankCheck
    from vision.cli import build_cli

    cli = build_cli([*job["args"], "--run_dir", job["run_dir"], *DDP,
                     "--trainer.callbacks+=datamodules.distributed.WeakLabelRankCheck"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    check = next(c for c in cli.trainer.callbacks if isinstance(c, WeakLabelRankCheck))
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)[0]
    rank = cli.trainer.global_rank
    record = {"rank": rank, "world_size": cli.trainer.world_size, "weak_sha256": check.digest,
              "metrics": {key: float(value) for key, value in metrics.items()},
              "checkpoint": str(Path(job["run_dir"]) / "checkpoints" / "last.ckpt")}
    (Path(job["run_dir"]) / f"rank{rank}.json").write_text(json.dumps(record, indent=2))


def run_map_job(job: dict) -> None:
    import torch
    import torch.distributed as dist

    from vision.metrics.detection import MeanAveragePrecision

    rank, world = dist.get_rank(), dist.get_world_size()  # the process group of the fit jobs above
    images = json.loads(Path(job["map_inputs"]).read_text())[rank::world]
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    for image in images:
        metric.update([{k: torch.tensor(v) for k, v in image["pred"].items()}],
                      [{k: torch.tensor(v) for k, v in image["target"].items()}])
    result = {k: float(v) for k, v in metric.compute().items() if v.numel() == 1}
    Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(job["run_dir"]) / f"rank{rank}.json").write_text(json.dumps({"images": len(images), "map": result}))


def main(argv: list[str]) -> int:
    for job in json.loads(Path(argv[0]).read_text()):
        if "map_inputs" in job:
            run_map_job(job)
        else:
            run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
