"""What every label-efficiency suite shares: fit + test one row, rows the suite computes itself, real data.

:func:`fit_and_test` is the whole of a training row: ``sparsevision fit`` on the row's config and
overrides (label seed as given), then ``sparsevision test`` on the last checkpoint against the FULL labels
of the test split. It returns the JSON fields :func:`vision.benchmarks.common.run_rows` keeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vision.benchmarks.common import Row, converged, validation_curve

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """``$SPARSEVISION_SHARED_DATA`` or ``<repo>/../shared/data`` (CONVENTIONS.md, as tests/conftest.py)."""
    return Path(os.environ.get("SPARSEVISION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_root_overrides(relative: str) -> list[str]:
    """``--data.init_args.data_root`` for ``$SPARSEVISION_SHARED_DATA/<relative>`` when that variable is set.

    Without it the configs' own ``../shared/data/<relative>`` applies (run from the repository root), and
    the recorded command stays the short one.
    """
    if "SPARSEVISION_SHARED_DATA" not in os.environ:
        return []
    return [f"--data.init_args.data_root={shared_data_root() / relative}"]


def missing_data_reason(relative: str) -> Optional[str]:
    """Why rows on ``<shared data>/<relative>`` cannot run (None when the data is there)."""
    path = shared_data_root() / relative
    if path.exists():
        return None
    return f"real data not found at {path} (set SPARSEVISION_SHARED_DATA to the shared data folder)"


@dataclass
class SuiteRow(Row):
    """A row the benchmark computes itself (a k-NN vote, no training): its command reruns that row."""

    suite: str = ""

    def command(self, seed: int) -> str:
        return f"sparsevision benchmark {self.suite or self.task} --rows {self.name} --seeds {seed}"


def fit_and_test(row: Row, seed: int, run_root: Path, curve_key: str = "val/miou",
                 extra: Optional[Callable[[Any, Any], dict]] = None) -> dict:
    """Fit ``row`` with label seed ``seed`` into ``<run_root>/<task>-<row>-seed<S>``, test its last checkpoint.

    Returns ``metric`` (the ``test/*`` keys without the prefix), ``label_budget``, the validation curve of
    ``curve_key`` with ``converged`` (CONVENTIONS.md), the number of optimizer steps and the run folder,
    plus what ``extra(model, datamodule)`` returns (called after the test, e.g. pseudo-label quality).
    """
    from vision.cli import build_cli

    run_dir = Path(run_root) / f"{row.task}-{row.name}-seed{seed}"
    cli = build_cli(["--config", row.config, *row.overrides, f"{row.seed_option}={seed}",
                     "--run_dir", str(run_dir), "--trainer.enable_progress_bar=false"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)[0]
    curve = validation_curve(run_dir, curve_key)
    return {"metric": {k.removeprefix("test/"): float(v) for k, v in metrics.items()},
            "label_budget": cli.datamodule.label_budget(), "val_curve": curve,
            "converged": converged(curve), "steps": int(cli.trainer.global_step), "run_dir": str(run_dir),
            **(extra(cli.model, cli.datamodule) if extra is not None else {})}
