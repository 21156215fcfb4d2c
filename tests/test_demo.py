"""`sparsevision demo --quick` on tiny settings: a report for every task, finite numbers, pictures."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from vision.commands import demo

TINY = {
    "pointcloud": ["--data.init_args.synthetic={num_train: 2, num_val: 1, num_test: 1, points_per_room: [5000, 6000]}",
                   "--data.init_args.crops_per_epoch=4", "--data.init_args.crop_points=1024",
                   "--data.init_args.splits={train: ['train/*'], val: ['val/*'], test: ['test/*']}",
                   "--data.init_args.num_workers=0"],
    "events": ["--data.init_args.synthetic={num_train: 1, num_val: 1, num_test: 1, height: 32, width: 40, "
               "duration_s: 1.0, label_interval_ms: 200}", "--trainer.limit_test_batches=1",
               "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
               "--model.init_args.model.init_args.base_channels=4", "--model.init_args.model.init_args.depth=2"],
    "detection": ["--data.init_args.synthetic={num_train: 4, num_val: 2, num_test: 2, height: 96, width: 128}",
                  "--trainer.limit_test_batches=1", "--data.init_args.num_workers=0",
                  "--model.init_args.model.init_args.min_size=96", "--model.init_args.model.init_args.max_size=128"],
}


@pytest.mark.slow
def test_quick_demo_writes_a_finite_report_with_pictures_for_every_task(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    tasks = {name: dataclasses.replace(task, quick_overrides=task.quick_overrides + TINY[name])
             for name, task in demo.TASKS.items()}
    monkeypatch.setattr(demo, "TASKS", tasks)
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--steps", "2", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"\| (pointcloud|events|detection) \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["pointcloud", "events", "detection"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "2"  # steps
        sparse, full = float(cells[4]), float(cells[5])
        assert math.isfinite(sparse) and math.isfinite(full) and 0 <= sparse <= 1 and 0 <= full <= 1
        assert re.match(r"[\d,]+ of [\d,]+ \(", cells[6])  # label counts, not only a percentage
    assert len(re.findall(r"- (sparse|full) run: `sparsevision fit --config", report)) == 6  # every run's command
    for name in ("pointcloud", "events", "detection"):
        pictures = sorted(out.glob(f"{name}-*.png"))
        assert pictures and all(p.stat().st_size > 10_000 for p in pictures)
        assert f"![{pictures[0].stem}]({pictures[0].name})" in report
    page = (out / "report.html").read_text()
    plots = list(Path("docs", "benchmarks").glob("*.png"))  # the label-efficiency plots are embedded too
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png"))) + len(plots)
    assert "<table" in page and "no sparse/full ratio" in page
