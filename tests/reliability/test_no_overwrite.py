"""Nothing lost: ``selftrain`` and ``predict`` never replace an earlier run's outputs without being told to,
and they refuse before any work is done."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from datamodules.pointcloud_predictions import PointCloudPredictionWriter
from vision.atomic import OutputExistsError

REPO = Path(__file__).resolve().parents[2]


def test_selftrain_refuses_a_folder_holding_what_a_killed_run_left(tmp_path, capsys):
    from vision.commands import selftrain

    out = tmp_path / "selftrain"
    (out / "round0" / "checkpoints").mkdir(parents=True)  # killed during the first fit: no weak file yet
    assert selftrain.main(["--config", str(REPO / "tests/configs/tiny-weak.yaml"), "--out", str(out)]) == 2
    assert "round0; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["round0"]  # nothing written


class Scenes(SimpleNamespace):
    """The two methods of :class:`PointCloudDataModule` the writer asks for the output names."""

    def scene_files(self, split: str) -> list[Path]:
        return [self.root / split / "room_a.ply", self.root / split / "room_b.las"]

    def scene_id(self, path: Path) -> str:
        return f"{path.parent.name}/{path.stem}"


def test_point_cloud_predictions_are_checked_before_the_first_scene_is_predicted(tmp_path):
    datamodule = Scenes(root=tmp_path / "data", hparams=SimpleNamespace(predict_split="test"))
    trainer = SimpleNamespace(datamodule=datamodule)
    writer = PointCloudPredictionWriter(str(tmp_path / "pred"))
    writer.on_predict_start(trainer, None)  # nothing there yet

    earlier = tmp_path / "pred" / "test" / "room_b.pred.las"  # the second scene of an earlier run
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"earlier run")
    with pytest.raises(OutputExistsError, match="room_b.pred.las: already exists; pass "
                                                "--model.init_args.overwrite_predictions true"):
        writer.on_predict_start(trainer, None)
    PointCloudPredictionWriter(str(tmp_path / "pred"), overwrite=True).on_predict_start(trainer, None)
    assert earlier.read_bytes() == b"earlier run"  # checking writes nothing
