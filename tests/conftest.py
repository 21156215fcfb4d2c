"""Shared test fixtures: real sample data (skipped when absent) and a summary of real-data tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$SPARSEVISION_SHARED_DATA`` or ``<repo>/../shared/data`` (CONVENTIONS.md)."""
    return Path(os.environ.get("SPARSEVISION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real sample-data folder; the test is skipped when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real sample data not found at {root} (set SPARSEVISION_SHARED_DATA)")
    return root


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = skipped = 0
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if "realdata" not in getattr(report, "keywords", {}):
                continue
            if outcome == "skipped":
                skipped += 1
            elif report.when == "call":
                ran += 1
    terminalreporter.write_line(f"real-data tests: {ran} ran, {skipped} skipped "
                                f"(data root: {shared_data_root()})")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use one torch thread: on a shared 2-core machine, more threads mostly spin-wait."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
