"""The `sparsevision` entry point: subcommand list, LightningCLI runs, config checking."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vision.cli import LIGHTNING_SUBCOMMANDS, TOOL_SUBCOMMANDS, main, run_dir_for, run_tool

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SPARSEVISION = [str(Path(sys.executable).with_name("sparsevision"))]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*SPARSEVISION, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    for name in [*LIGHTNING_SUBCOMMANDS, *TOOL_SUBCOMMANDS]:
        assert f"  {name} " in printed


def test_unknown_subcommand_is_rejected(capsys):
    assert main(["trian"]) == 2
    assert "unknown subcommand 'trian'" in capsys.readouterr().err


def test_missing_tool_module_says_not_available(capsys):
    assert run_tool("no_such_tool", []) == 2
    assert "not available yet" in capsys.readouterr().err


def test_run_dir_follows_config_stem():
    assert run_dir_for([Path("configs/pointcloud/sqn-synthetic-0.1pct.yaml")]) == Path(
        "outputs/runs/sqn-synthetic-0.1pct")
    assert run_dir_for([], "elsewhere") == Path("elsewhere")
    assert run_dir_for(None) == Path("outputs/runs/default")


def test_fit_help_and_print_config():
    result = run("fit", "--help")
    assert result.returncode == 0, result.stderr
    assert "--trainer.max_epochs" in result.stdout and "--run_dir" in result.stdout
    result = run("fit", "--config", str(TINY), "--print_config")
    assert result.returncode == 0, result.stderr
    assert "class_path: vision.tasks.toy.ToyPointSegmenter" in result.stdout
    assert "seed_everything: 0" in result.stdout


@pytest.mark.slow
def test_fit_writes_last_checkpoint_and_metrics_then_test_uses_it(tmp_path):
    run_dir = tmp_path / "run"
    result = run("fit", "--config", str(TINY), "--trainer.max_epochs", "1", "--run_dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics_csv = run_dir / "csv" / "version_0" / "metrics.csv"
    rows = list(csv.DictReader(metrics_csv.open()))
    values = [float(r["val/miou"]) for r in rows if r.get("val/miou")]
    assert values and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    assert any(r.get("train/loss") for r in rows)

    result = run("test", "--config", str(TINY), "--run_dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"using checkpoint {run_dir / 'checkpoints' / 'last.ckpt'}" in result.stderr
    assert "test/miou" in result.stdout


def test_config_with_misspelled_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("hidden: 32", "hiden: 32"))
    result = run("fit", "--config", str(bad), "--print_config")
    assert result.returncode != 0
    assert "hiden" in result.stderr


def test_config_with_wrong_type_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("lr: 0.01", "lr: fast"))
    result = run("fit", "--config", str(bad), "--print_config")
    assert result.returncode != 0
    assert "lr" in result.stderr and "fast" in result.stderr


def test_tool_wrappers_are_thin():
    for path in sorted((REPO / "tools").glob("*.py")):
        text = path.read_text()
        assert "from vision.cli import main" in text, path
        assert len(text.splitlines()) < 15, f"{path} should only forward to vision.cli.main"


def test_a_run_without_checkpointing_gets_no_checkpoint_callback(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vision.cli import build_cli

    cli = build_cli(["--config", "tests/configs/tiny.yaml", "--trainer.enable_checkpointing=false",
                     "--checkpoint_every_n_steps=2", "--run_dir", str(tmp_path)])
    assert not any(isinstance(c, ModelCheckpoint) for c in cli.trainer.callbacks)


def test_console_script_prints_bad_input_as_one_line_and_exits_1(monkeypatch, capsys):
    import vision.cli as cli
    from vision.errors import DataError

    def broken_input():
        raise DataError("scans/a.ply", "vertex count 10 but the file holds 3 points")

    monkeypatch.setattr(cli, "main", broken_input)
    monkeypatch.delenv("SPARSEVISION_TRACEBACK", raising=False)
    assert cli.console_main() == 1
    assert capsys.readouterr().err == "sparsevision: error: scans/a.ply: vertex count 10 but the file holds 3 points\n"
    monkeypatch.setenv("SPARSEVISION_TRACEBACK", "1")
    with pytest.raises(DataError):
        cli.console_main()
