"""Run one task of the demo: data, the sparse and the full run on one schedule, test, pictures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vision.demo.report import TaskResult


@dataclass
class TaskDemo:
    """One task of the demo: the sparse and full configs and the overrides that shorten them."""

    task: str
    description: str
    metric_key: str
    metric_name: str
    sparse_config: str
    full_config: str
    overrides: list[str]
    quick_overrides: list[str]
    render: Callable
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _fit_and_test(config: str, overrides: list[str], run_dir: Path):
    from vision.cli import build_cli

    cli = build_cli(["--config", config, *overrides, "--run_dir", str(run_dir),
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    start = time.time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.time() - start
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return cli, metrics, seconds


def run_task(demo: TaskDemo, out: Path, quick: bool, stage: Callable[[str], None]) -> tuple[TaskResult, dict]:
    """Prepare data (timed), train + test sparse and full, render pictures."""
    from vision.cli import build_cli

    overrides = demo.overrides + (demo.quick_overrides if quick else [])
    timings = {}
    stage(f"{demo.task}: data")
    start = time.time()
    build_cli(["--config", demo.sparse_config, *overrides]).datamodule.prepare_data()
    timings[f"{demo.task} data (first run generates it)"] = time.time() - start
    runs, commands, seconds = {}, {}, {}
    for kind, config in (("sparse", demo.sparse_config), ("full", demo.full_config)):
        stage(f"{demo.task}: train + test ({kind} labels)")
        run_dir = out / "runs" / f"{demo.task}-{kind}"
        runs[kind] = _fit_and_test(config, overrides, run_dir)
        seconds[kind] = runs[kind][2]
        commands[kind] = " ".join(["sparsevision fit --config", config, *overrides, "--run_dir", str(run_dir)])
    timings[f"{demo.task} training + test"] = sum(seconds.values())
    stage(f"{demo.task}: pictures")
    pictures = demo.render({"sparse labels": runs["sparse"][0], "full labels": runs["full"][0]}, out)
    result = TaskResult(
        task=demo.task, description=demo.description, metric_name=demo.metric_name,
        sparse=float(runs["sparse"][1][demo.metric_key]), full=float(runs["full"][1][demo.metric_key]),
        sparse_budget=runs["sparse"][0].datamodule.label_budget(),
        full_budget=runs["full"][0].datamodule.label_budget(), seed=demo.seed, commands=commands,
        train_seconds=seconds, pictures=pictures, full_converged=False)
    return result, timings
