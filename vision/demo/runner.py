"""Run one task of the demo: data, the sparse and the full run on one schedule, test, pictures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vision.demo.report import TaskResult


@dataclass
class TaskDemo:
    """One task of the demo: the sparse and full configs and the overrides that make them demo-sized.

    ``steps`` / ``quick_steps``: optimizer steps of each run (``--steps`` overrides both). ``overrides``
    apply to both runs; ``full_overrides`` only to the full-label run (e.g. switch off what only sparse
    labels need, so the upper bound trains plain supervised); ``schedule``: overrides that depend on the
    number of steps (a format string with ``{steps}``, ``{half}``, ``{quarter}``, ``{fifth}``).
    """

    task: str
    description: str
    metric_key: str
    metric_name: str
    sparse_config: str
    full_config: str
    overrides: list[str]
    quick_overrides: list[str]
    render: Callable
    steps: int
    quick_steps: int
    full_overrides: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    seed: int = 0


def schedule_overrides(demo: TaskDemo, steps: int) -> list[str]:
    """``--trainer.max_steps`` plus the task's step-dependent overrides (warm-up, burn-in, ramp-up)."""
    values = {"steps": steps, "half": max(1, steps // 2), "quarter": max(1, steps // 4), "fifth": max(1, steps // 5)}
    return ["--trainer.max_epochs=-1", f"--trainer.max_steps={steps}",
            *[item.format(**values) for item in demo.schedule]]


def _step_callback(advance: Callable[[int], None]):
    import lightning as L

    class StepProgress(L.Callback):
        """Reports the global step to the demo's progress display after every training batch."""

        def on_train_batch_end(self, trainer, *args) -> None:
            advance(trainer.global_step)

    return StepProgress()


def _fit_and_test(config: str, overrides: list[str], run_dir: Path, advance: Optional[Callable[[int], None]]):
    from vision.cli import build_cli

    cli = build_cli(["--config", config, *overrides, "--run_dir", str(run_dir),
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    if advance is not None:
        cli.trainer.callbacks.append(_step_callback(advance))
    start = time.time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.time() - start
    start = time.time()
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return cli, metrics, seconds, time.time() - start


def run_task(demo: TaskDemo, out: Path, quick: bool, steps: Optional[int], display) -> tuple[TaskResult, dict]:
    """Prepare data (timed), train + test sparse and full on the same schedule, render pictures.

    ``display``: the demo's progress display, with ``stage(name, total) -> advance(done)`` and ``done()``.
    """
    from vision.cli import build_cli

    steps = steps or (demo.quick_steps if quick else demo.steps)
    overrides = demo.overrides + (demo.quick_overrides if quick else []) + schedule_overrides(demo, steps)
    timings = {}
    display.stage(f"{demo.task}: data", None)
    start = time.time()
    build_cli(["--config", demo.sparse_config, *overrides]).datamodule.prepare_data()
    timings[f"{demo.task}: data (generated on the first run, then read from the cache)"] = time.time() - start
    runs, commands, seconds = {}, {}, {}
    for kind, config in (("sparse", demo.sparse_config), ("full", demo.full_config)):
        run_overrides = overrides + (demo.full_overrides if kind == "full" else [])
        advance = display.stage(f"{demo.task}: train ({kind} labels, {steps} steps)", steps)
        run_dir = out / "runs" / f"{demo.task}-{kind}"
        runs[kind] = _fit_and_test(config, run_overrides, run_dir, advance)
        seconds[kind] = runs[kind][2]
        timings[f"{demo.task}: train {kind}"] = runs[kind][2]
        timings[f"{demo.task}: evaluate {kind} (test split)"] = runs[kind][3]
        commands[kind] = " ".join(["sparsevision fit --config", config, *map(_quote, run_overrides),
                                   "--run_dir", str(run_dir)])
    display.stage(f"{demo.task}: pictures", None)
    start = time.time()
    pictures = demo.render({"sparse labels": runs["sparse"][0], "full labels": runs["full"][0]}, out)
    timings[f"{demo.task}: pictures"] = time.time() - start
    display.done()
    result = TaskResult(
        task=demo.task, description=demo.description, metric_name=demo.metric_name,
        sparse=float(runs["sparse"][1][demo.metric_key]), full=float(runs["full"][1][demo.metric_key]),
        sparse_budget=runs["sparse"][0].datamodule.label_budget(),
        full_budget=runs["full"][0].datamodule.label_budget(), seed=demo.seed, commands=commands,
        train_seconds=seconds, pictures=pictures, full_converged=False, steps=steps)
    return result, timings


def _quote(argument: str) -> str:
    """Shell-quote an override whose value has spaces or brackets (e.g. YAML flow mappings)."""
    import shlex

    return shlex.quote(argument)
