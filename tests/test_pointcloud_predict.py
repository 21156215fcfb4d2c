"""`predict` puts point-cloud labels back into the user's own files (PLY property, LAS classification)."""

from __future__ import annotations

import laspy
import lightning as L
import numpy as np
import pytest
from plyfile import PlyData

from datamodules.formats.las import write_las
from datamodules.formats.pointcloud_scene import PointCloudScene
from datamodules.pointcloud import PointCloudDataModule
from datamodules.synthetic.rooms import generate_room, write_room_ply
from vision.models.pointcloud import SQN
from vision.tasks.pointcloud import PointCloudSegmentation

SMALL = {"num_layers": 3, "k": 8, "sub_ratios": (4, 4, 4)}
#: three ASPRS-like raw codes for three training classes
CLASS_MAP = {2: 0, 6: 1, 1: 2}


def predict(root, tmp_path, num_classes, reader_options=None):
    datamodule = PointCloudDataModule(data_root=str(root), class_names=[str(i) for i in range(num_classes)],
                                      reader_options=reader_options, voxel_size=0.05, crop_points=512,
                                      splits={"test": ["*"]}, **SMALL)
    sqn = SQN(6, num_classes, encoder_kwargs={"dims": (8, 16, 32), "k": 8}, head_kwargs={"hidden": (32,)})
    model = PointCloudSegmentation(sqn, num_classes=num_classes, prediction_dir=str(tmp_path / "pred"))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.predict(model, datamodule=datamodule)


def test_predict_writes_a_label_property_into_a_copy_of_the_ply(tmp_path):
    room = generate_room(1, "p", points_per_room=(3000, 3500))
    (tmp_path / "data").mkdir()
    write_room_ply(tmp_path / "data" / "room.ply", room)
    original = (tmp_path / "data" / "room.ply").read_bytes()
    outputs = predict(tmp_path / "data", tmp_path, 12)
    written = PlyData.read(str(tmp_path / "pred" / "room.pred.ply"))["vertex"]
    assert len(written["pred_label"]) == len(room["semantic"])  # every original point
    assert np.array_equal(written["pred_label"], outputs[0]["label"][0].numpy())
    assert np.array_equal(written["label"], room["semantic"])  # original properties kept
    assert ((0 <= written["pred_confidence"]) & (written["pred_confidence"] <= 1)).all()
    assert (tmp_path / "data" / "room.ply").read_bytes() == original  # the input is untouched
    with pytest.raises(FileExistsError):  # a second predict never overwrites the first one's file
        predict(tmp_path / "data", tmp_path, 12)


def test_predict_writes_las_classification_through_the_class_map(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 20, (3000, 3)) + [650000.0, 6860000.0, 100.0]  # georeferenced, large values
    semantic = rng.integers(0, 3, 3000)
    (tmp_path / "tile").mkdir()
    write_las(tmp_path / "tile" / "tile.las", PointCloudScene(coords, semantic=semantic),
              class_map=CLASS_MAP)
    outputs = predict(tmp_path / "tile", tmp_path, 3, reader_options={"class_map": CLASS_MAP})
    written = laspy.read(tmp_path / "pred" / "tile.pred.las")
    inverse = {v: k for k, v in CLASS_MAP.items()}
    expected = np.vectorize(inverse.get)(outputs[0]["label"][0].numpy())
    assert np.array_equal(np.asarray(written.classification), expected)
    assert np.allclose(written.x, coords[:, 0], atol=1e-3)  # coordinates copied, not re-quantised wrongly
    assert written["confidence"].shape == (3000,)
