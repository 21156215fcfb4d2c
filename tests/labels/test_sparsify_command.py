"""``sparsevision sparsify``, run in-process on a tiny DataModule defined here."""

from __future__ import annotations

import json
from typing import Optional

import lightning as L
import numpy as np
import pytest
import yaml

from vision.commands import sparsify as command
from vision.labels.protocols import PROTOCOLS, PerClass, Ratio, WeakLabelProtocol
from vision.labels.types import IGNORE_INDEX, DenseLabels
from vision.labels.weakfile import WeakLabelSet, source_sha256


class TinyDataModule(L.LightningDataModule):
    """Three clouds of 20 points: classes ``i % num_classes``, the first 4 points unlabelled."""

    def __init__(self, num_classes: int = 3, weak_labels: Optional[WeakLabelProtocol] = None,
                 weak_label_seed: int = 0) -> None:
        super().__init__()
        self.num_classes, self.weak_labels, self.weak_label_seed = num_classes, weak_labels, weak_label_seed
        self.prepared = False

    def prepare_data(self) -> None:
        self.prepared = True

    def full_labels(self, split: str = "train"):
        assert self.prepared and split == "train"
        for i in range(3):
            semantic = np.arange(20) % self.num_classes
            semantic[:4] = IGNORE_INDEX
            yield f"cloud_{i}", DenseLabels(semantic)


def write_config(tmp_path, **init_args) -> str:
    path = tmp_path / "tiny.yaml"
    data = {"class_path": f"{__name__}.TinyDataModule", "init_args": init_args}
    path.write_text(yaml.safe_dump({"seed_everything": 0, "data": data}))
    return str(path)


def _items():
    module = TinyDataModule()
    module.prepare_data()
    return module.full_labels()


def test_protocol_from_options(tmp_path, capsys):
    config = write_config(tmp_path)
    assert command.main(["--config", config, "--protocol", "per_class", "--k", "2", "--seed", "5",
                         "--out", str(tmp_path / "tiny-2pt")]) == 0
    weak = WeakLabelSet.load(tmp_path / "tiny-2pt", expected_sha256=source_sha256(_items()))
    assert weak.protocol == {"name": "per_class", "params": {"k": 2}} and weak.seed == 5
    assert weak.counts()["per_class"] == {"0": 6, "1": 6, "2": 6}
    out = capsys.readouterr().out
    # 3 clouds x 16 labelled points = 48; 18 kept = 37.5%
    assert "samples: 3" in out and "0: 6, 1: 6, 2: 6" in out and "total: 18 of 48 labelled (37.5%)" in out


def test_protocol_from_config_weak_labels_and_seed(tmp_path):
    config = write_config(tmp_path, weak_labels={"class_path": "vision.labels.protocols.Ratio",
                                                 "init_args": {"ratio": 0.25}}, weak_label_seed=7)
    assert command.main(["--config", config, "--out", str(tmp_path / "w")]) == 0
    header = json.loads((tmp_path / "w.weak.json").read_text())
    assert header["protocol"] == {"name": "ratio", "params": {"ratio": 0.25}} and header["seed"] == 7
    assert header["counts"]["total"] == 3 * 4  # round(0.25 * 16) per cloud
    weak = WeakLabelSet.load(tmp_path / "w")
    direct = Ratio(0.25).draw(next(iter(_items()))[1], 7, "cloud_0")
    assert np.array_equal(weak["cloud_0"].index, direct.index)


def test_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    config = write_config(tmp_path)
    args = ["--config", config, "--protocol", "count", "--n", "3", "--out", str(tmp_path / "w")]
    assert command.main(args) == 0
    assert command.main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert command.main(args + ["--overwrite"]) == 0


def test_bad_options_exit_with_usage(tmp_path, capsys):
    config = write_config(tmp_path)
    with pytest.raises(SystemExit) as info:
        command.main(["--config", config, "--protocol", "ratio", "--rate", "0.5", "--out", str(tmp_path / "w")])
    assert info.value.code == 2 and "rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["--config", config, "--protocol", "ratio", "--ratio", "3", "--out", str(tmp_path / "w")])
    # no --protocol and no weak_labels in the config
    assert command.main(["--config", config, "--out", str(tmp_path / "w")]) == 1
    assert "weak_labels" in capsys.readouterr().err


def test_help_documents_every_protocol(capsys):
    with pytest.raises(SystemExit):
        command.main(["--help"])
    text = capsys.readouterr().out
    for name, cls in PROTOCOLS.items():
        assert f"  {name:<13} {cls.usage}" in text


def test_import_scannet_list(tmp_path):
    config = write_config(tmp_path)
    points = tmp_path / "points2.json"
    points.write_text(json.dumps({"cloud_0": [4, 5], "cloud_1": [0, 19], "cloud_2": [10]}))
    assert command.main(["--config", config, "--import-scannet", str(points), "--out", str(tmp_path / "w")]) == 0
    weak = WeakLabelSet.load(tmp_path / "w")
    assert weak["cloud_0"].class_id.tolist() == [1, 2]  # points 4 and 5 are classes 4 % 3 and 5 % 3
    assert weak["cloud_1"].index.tolist() == [19]  # point 0 is unlabelled
    assert weak.protocol["name"] == "scannet_indices"


def test_run_takes_a_datamodule_object(tmp_path):
    weak = command.run(TinyDataModule(num_classes=2), PerClass(1), seed=0, out=str(tmp_path / "x"))
    assert [len(weak[s]) for s in weak] == [2, 2, 2]
