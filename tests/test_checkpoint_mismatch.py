"""A checkpoint trained with other model options is refused with a DataError that says what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from vision.cli import checkpoint_mismatch_error, main, saved_fit_config
from vision.errors import DataError
from vision.tasks.toy import ToyPointSegmenter

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def write_run(run: Path, model: ToyPointSegmenter) -> Path:
    """A run folder as ``fit`` leaves it: ``checkpoints/last.ckpt`` and the saved ``config.yaml``."""
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(),
                "hyper_parameters": {**model.hparams, "_class_path": "vision.tasks.toy.ToyPointSegmenter"}},
               checkpoint)
    config = {"model": {"class_path": "vision.tasks.toy.ToyPointSegmenter", "init_args": dict(model.hparams)}}
    for version, hidden in ((0, model.hparams.hidden), (1, 16)):  # version_1: a later test call with hidden 16
        saved = run / "tensorboard" / f"version_{version}" / "config.yaml"
        saved.parent.mkdir(parents=True)
        config["model"]["init_args"]["hidden"] = hidden
        saved.write_text(yaml.safe_dump(config))
    return checkpoint


def test_mismatch_names_the_shapes_the_option_and_the_fits_saved_config(tmp_path):
    checkpoint = write_run(tmp_path / "run", ToyPointSegmenter(num_classes=3, hidden=32))
    error = checkpoint_mismatch_error(checkpoint, ToyPointSegmenter(num_classes=4, hidden=16))
    assert isinstance(error, DataError) and error.path == str(checkpoint)
    assert "trained with different model options" in error.reason
    assert "net.0.weight (checkpoint [32, 2], model [16, 2])" in error.reason
    assert "net.4.weight" in error.reason and "net.4.bias" not in error.reason  # 6 mis-shaped, 5 listed
    assert "(and 1 more)" in error.reason
    assert ("--model.init_args.num_classes=3 (this command: 4), --model.init_args.hidden=32 (this command: 16)"
            in error.reason)
    # version_1 holds hidden 16 (a test call's config): the fit's is version_0
    assert f"--config {tmp_path / 'run' / 'tensorboard' / 'version_0' / 'config.yaml'}" in error.reason


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    model = ToyPointSegmenter(num_classes=3)
    extra = ToyPointSegmenter(num_classes=3)
    extra.teacher = torch.nn.Linear(2, 2)  # as a task built with an EMA teacher
    checkpoint = write_run(tmp_path / "run", extra)
    reason = checkpoint_mismatch_error(checkpoint, model).reason
    assert "keys this model does not have: teacher.weight, teacher.bias" in reason
    assert "keys missing from" not in reason
    model.teacher = torch.nn.Linear(2, 2)
    del extra.teacher
    checkpoint = write_run(tmp_path / "other", extra)
    assert "keys missing from the checkpoint: teacher.weight, teacher.bias" in checkpoint_mismatch_error(
        checkpoint, model).reason


def test_saved_config_is_none_without_a_run_folder(tmp_path):
    assert saved_fit_config(tmp_path / "loose.ckpt", {"hidden": 32}) is None


def test_test_with_another_hidden_size_raises_data_error(tmp_path):
    run = tmp_path / "run"
    common = ["--config", str(TINY), "--run_dir", str(run), "--trainer.enable_progress_bar=false"]
    assert main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=0"]) == 0
    with pytest.raises(DataError) as caught:
        main(["test", *common, "--model.init_args.hidden=16"])
    assert caught.value.path == str(run / "checkpoints" / "last.ckpt")
    assert "different model options" in caught.value.reason
    assert "--model.init_args.hidden=32 (this command: 16)" in caught.value.reason
    assert "tensorboard/version_0/config.yaml" in caught.value.reason
