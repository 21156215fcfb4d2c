"""Every shipped config parses with LightningCLI (`--print_config`), so typos and wrong types fail here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vision.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))
NAME = re.compile(r"^[a-z0-9_]+-[a-z0-9]+-(full|1pct|0\.1pct|0\.01pct|1pt|drop50|keep1|points)$")


def test_every_task_has_configs_named_by_convention():
    assert {p.parent.name for p in CONFIGS} == {"pointcloud", "events", "detection"}
    for path in CONFIGS:
        assert NAME.match(path.stem), f"{path.name}: not <method>-<data>-<labels>.yaml (CONVENTIONS.md)"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:  # jsonargparse exits after printing
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path:" in printed and "seed_everything: 0" in printed
