"""`sparsevision visualize` renders a trained point-cloud model's predictions next to the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.cli import main
from vision.commands import visualize

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pointcloud" / "sqn-synthetic-0.1pct.yaml"
TINY = ["--data.init_args.synthetic={num_train: 2, num_val: 1, num_test: 1, points_per_room: [5000, 6000]}",
        "--data.init_args.crop_points=1024", "--data.init_args.crops_per_epoch=4", "--data.init_args.num_workers=0",
        "--data.init_args.weak_labels.init_args.ratio=0.01"]


def test_visualize_without_a_checkpoint_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert visualize.main(["--config", str(CONFIG)]) == 2
    assert "no checkpoint; train first" in capsys.readouterr().err


@pytest.mark.slow
def test_visualize_renders_train_and_test_rooms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    assert main(["fit", "--config", str(CONFIG), *TINY, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                 "--trainer.enable_progress_bar=false"]) == 0
    assert visualize.main(["--config", str(CONFIG), *TINY]) == 0
    pictures = sorted((tmp_path / "outputs" / "runs" / "sqn-synthetic-0.1pct" / "pictures").glob("*.png"))
    assert [p.name for p in pictures] == ["pointcloud-test-room.png", "pointcloud-train-room.png"]
    train = np.asarray(Image.open(pictures[1]).convert("RGB"))
    assert train.shape[1] == 3 * 500  # full labels | sparse labels given | prediction
    assert len(np.unique(train.reshape(-1, 3), axis=0)) > 10  # class colours, not a blank canvas
