"""EventSegmentation (EV-WSSS): learning from one point per class, switches, checkpoints, PNG predictions."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from datamodules.events import EventSegmentationDataModule
from datamodules.formats.dsec import read_label_png, write_dsec_events, write_label_png
from datamodules.formats.events_common import EventArray
from vision.engine.dual_student import DualStudent
from vision.errors import DataError
from vision.labels.protocols import PerClass
from vision.labels.types import IGNORE_INDEX
from vision.losses.partial_cross_entropy import PartialCrossEntropy
from vision.tasks.events import EventPredictionWriter, EventSegmentation, rampup, restricted_prediction

T0 = 1_600_000_000_000_000
HEIGHT, WIDTH, NUM_CLASSES = 32, 40, 3


class TinyEventNet(nn.Module):
    """Two 3x3 convolutions and a 1x1 classifier, with the event-model contract
    ``voxel (B, 5, H, W) -> {"logits": (B, C, H, W), "features": (B, D, H, W)}`` and ``feature_dim``."""

    def __init__(self, in_channels: int = 5, num_classes: int = NUM_CLASSES, width: int = 8) -> None:
        super().__init__()
        self.feature_dim = width
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.classifier = nn.Sequential(nn.ReLU(), nn.Conv2d(width, num_classes, 1))

    def forward(self, voxel: torch.Tensor) -> dict:
        features = self.body(voxel)
        return {"logits": self.classifier(features), "features": features}


def write_blocks_recording(folder: Path, rng: np.random.Generator, num_labels: int = 3) -> None:
    """Per label k (at T0 + (k+1) * 100 ms): class 1 = a block of ON events, class 2 = a block of OFF
    events, class 0 = no events, two per pixel in [t - 10 ms, t) and two in [t, t + 50 ms); the blocks move between labels."""
    xs, ys, ts, ps = [], [], [], []
    (folder / "labels").mkdir(parents=True)
    for k in range(num_labels):
        t = T0 + (k + 1) * 100_000
        labels = np.zeros((HEIGHT, WIDTH), np.int64)
        top, left = rng.integers(2, 12), rng.integers(2, 14)
        labels[top:top + 10, left:left + 10] = 1
        labels[top + 12:top + 20, left + 14:left + 24] = 2
        write_label_png(folder / "labels" / f"{k:06d}.png", labels)
        rows, cols = np.nonzero(labels > 0)
        for start, span in ((t - 10_000, 10_000), (t, 50_000)):  # two events per block pixel in each window
            for _ in range(2):
                ys.append(rows), xs.append(cols), ps.append((labels[rows, cols] == 1).astype(np.int64))
                ts.append(start + rng.integers(0, span, rows.size))
    t_all = np.concatenate(ts)
    order = np.argsort(t_all, kind="stable")
    events = EventArray.from_arrays(*(np.concatenate(a)[order] for a in (xs, ys, ts, ps)), WIDTH, HEIGHT)
    write_dsec_events(folder / "events.h5", events, t_offset=T0)
    (folder / "timestamps.txt").write_text("".join(f"{T0 + (k + 1) * 100_000}\n" for k in range(num_labels)))



@pytest.fixture
def datamodule(tmp_path, monkeypatch) -> EventSegmentationDataModule:
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for name in ("seq_a", "seq_b"):
            write_blocks_recording(tmp_path / "data" / split / name, rng)
    dm = EventSegmentationDataModule(data_root=str(tmp_path / "data"), num_classes=NUM_CLASSES,
                                     class_names=["background", "on", "off"], window_us=10_000,
                                     weak_labels=PerClass(k=1), batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def trainer(**options) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **options})


def task(**options) -> EventSegmentation:
    torch.manual_seed(0)
    return EventSegmentation(TinyEventNet(), NUM_CLASSES, ["background", "on", "off"],
                             **{"rampup_steps": 0, "lr": 1e-2, **options})


def best_constant_miou(dm: EventSegmentationDataModule, split: str) -> float:
    """mIoU of predicting one class everywhere: IoU n_c / N for that class, 0 for the others present."""
    labels = np.concatenate([dm.dataset(split)[i]["labels"].numpy().ravel() for i in range(6)])
    counts = np.bincount(labels[labels != IGNORE_INDEX], minlength=NUM_CLASSES)
    return float(counts.max() / counts.sum() / np.count_nonzero(counts))


def test_one_point_per_class_training_beats_twice_the_best_constant_prediction(datamodule):
    L.seed_everything(0)
    model = task(rampup_steps=50, lr=2e-2)  # every EV-WSSS loss on, unsupervised ones ramped up
    trainer(max_epochs=25, check_val_every_n_epoch=1000).fit(model, datamodule=datamodule)  # 75 steps
    scores = trainer().test(model, datamodule=datamodule, verbose=False)[0]

    baseline = best_constant_miou(datamodule, "test")
    assert 0.2 < baseline < 0.3  # background covers ~70% of the pixels
    assert scores["test/miou"] >= 2 * baseline
    assert {"test/acc", "test/iou/background", "test/iou/on", "test/iou/off"} <= set(scores)


def one_step(model: EventSegmentation, dm: EventSegmentationDataModule) -> tuple[torch.Tensor, dict]:
    """One training step outside a Trainer; returns the loss and what was logged."""
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value.detach()))
    batch = next(iter(dm.train_dataloader()))
    loss = model.training_step(batch, 0)
    loss.backward()
    return loss, logged


@pytest.mark.parametrize("switches, terms", [
    ({}, {"ce", "cross_pseudo", "distillation", "contrastive", "exchange"}),
    ({"dual_student": False}, {"ce", "contrastive"}),
    ({"contrastive_weight": 0.0}, {"ce", "cross_pseudo", "distillation"}),
    ({"prototype_exchange": False}, {"ce", "cross_pseudo", "distillation", "contrastive"}),
    ({"distillation_weight": 0.0}, {"ce", "cross_pseudo", "contrastive", "exchange"}),
    ({"cross_pseudo_weight": 0.0, "distillation_weight": 0.0, "contrastive_weight": 0.0}, {"ce"}),
])
def test_each_switch_runs_a_step_with_exactly_its_loss_terms(datamodule, switches, terms):
    model = task(**switches)
    loss, logged = one_step(model, datamodule)
    assert {k.removeprefix("train/loss_") for k in logged if k.startswith("train/loss_")} == terms
    assert logged["train/loss"] == pytest.approx(sum(logged[f"train/loss_{t}"] for t in terms), rel=1e-5)
    assert torch.isfinite(loss)
    assert (model.student_b is None) == (switches.get("dual_student") is False)
    assert model.model.classifier[1].weight.grad.abs().sum() > 0


def test_point_ce_only_is_the_partial_cross_entropy_of_both_students(datamodule):
    model = task(cross_pseudo_weight=0.0, distillation_weight=0.0, contrastive_weight=0.0)
    batch = next(iter(datamodule.train_dataloader()))
    loss, _ = one_step(model, datamodule)
    with torch.no_grad():
        ce = PartialCrossEntropy()
        expected = (ce(model.model(batch["voxel"])["logits"], batch["target"])
                    + ce(model.student_b(batch["voxel_reversed"])["logits"], batch["target"]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the two students start from different weights
    assert not torch.equal(model.model.body[0].weight, model.student_b.body[0].weight)


def test_class_counts_are_the_weak_points_or_every_stored_label_pixel(datamodule, tmp_path):
    # PerClass(k=1): one point per present class per frame; 2 sequences x 3 frames, all 3 classes present
    assert datamodule.class_counts().tolist() == [6.0, 6.0, 6.0]
    dense = EventSegmentationDataModule(data_root=str(tmp_path / "data"), num_classes=NUM_CLASSES, window_us=10_000)
    stored = np.stack([read_label_png(p) for p in sorted((tmp_path / "data" / "train").glob("seq_*/labels/*.png"))])
    assert dense.class_counts().tolist() == np.bincount(stored.ravel(), minlength=NUM_CLASSES).tolist()


def test_class_weighting_weights_the_point_ce_by_inverse_frequency(datamodule, tmp_path):
    dense = EventSegmentationDataModule(data_root=str(tmp_path / "data"), num_classes=NUM_CLASSES, window_us=10_000,
                                        batch_size=2)
    dense.setup("fit")
    model = task(class_weighting="inverse_sqrt", cross_pseudo_weight=0.0, distillation_weight=0.0,
                 contrastive_weight=0.0)
    trainer(max_steps=1).fit(model, datamodule=dense)
    counts = dense.class_counts()
    expected = counts.rsqrt() / counts.rsqrt().mean()
    assert torch.allclose(model.point_ce.class_weights, expected)
    assert model.point_ce.class_weights[0] < model.point_ce.class_weights[1]  # background is the most frequent
    # balanced point labels: equal weights
    model = task(class_weighting="inverse")
    trainer(max_steps=1).fit(model, datamodule=datamodule)
    assert model.point_ce.class_weights.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="class_weighting must be one of"):
        task(class_weighting="balanced")


def test_contrastive_pixels_are_the_human_points_plus_a_capped_sample_of_confident_predictions():
    model = task(contrastive_pixels=2)
    features = torch.arange(12.0).view(1, 2, 2, 3)  # pixel (r, c) has feature (3r + c, 6 + 3r + c)
    labels = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    confidence = torch.tensor([[[1.0, 0.9, 0.8], [0.75, 0.6, 0.95]]])
    human = torch.tensor([[[False, False, False], [False, True, False]]])  # the point at (1, 1)
    rows, kept_labels, kept_confidence = model._sample_pixels(features, labels, confidence, human)
    assert rows.shape == (3, 2) and [4.0, 10.0] in rows.tolist()  # the human point is always kept
    assert torch.isclose(kept_confidence, torch.tensor(0.6)).any()  # even below the 0.7 of predictions
    assert set(rows[:, 0].tolist()) - {4.0} <= {0.0, 1.0, 2.0, 3.0, 5.0}  # 2 of the 5 confident others


def pixel_features(labels: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` features whose rows say which pixel they are: ``(label, flat pixel index)``."""
    index = torch.arange(labels.numel(), dtype=torch.float32).view(labels.shape)
    return torch.stack([labels.float(), index], dim=1)


def test_dense_labels_enter_the_contrastive_loss_as_a_capped_class_balanced_sample():
    labels = torch.zeros(2, 16, 20, dtype=torch.long)  # 640 human-labelled pixels: 554 x 0, 80 x 1, 6 x 2
    labels[0, :4] = 1
    labels[1, 5, 3:9] = 2
    human = torch.ones_like(labels, dtype=torch.bool)
    model = task(contrastive_pixels=60)

    torch.manual_seed(3)
    rows, kept_labels, kept_confidence = model._sample_pixels(pixel_features(labels), labels,
                                                              torch.ones(labels.shape), human)
    # the rare class keeps its 6 pixels, the other two share the remaining 54 of the budget
    assert torch.bincount(kept_labels).tolist() == [27, 27, 6]
    assert torch.equal(rows[:, 0].long(), kept_labels) and rows[:, 1].unique().numel() == 60
    assert torch.equal(labels.reshape(-1)[rows[:, 1].long()], kept_labels)  # each row is its own pixel
    assert (kept_confidence == 1).all()

    torch.manual_seed(3)  # drawn from torch's global generator: the same seed, the same pixels
    assert torch.equal(model._sample_pixels(pixel_features(labels), labels, torch.ones(labels.shape), human)[0], rows)
    # a budget below the number of classes still keeps one pixel of each
    model.hparams.contrastive_pixels = 2
    assert torch.bincount(model._sample_pixels(pixel_features(labels), labels, torch.ones(labels.shape),
                                               human)[1]).tolist() == [1, 1, 1]


def test_point_labels_all_enter_the_contrastive_loss_with_a_capped_sample_of_confident_others():
    labels = torch.zeros(2, 16, 20, dtype=torch.long)
    labels[:, 8:] = 1
    confidence = torch.full(labels.shape, 0.5)
    confidence[0, 10, :] = 0.9  # 20 confident predictions (class 1)
    human = torch.zeros_like(labels, dtype=torch.bool)
    points = [(0, 2, 3), (0, 12, 5), (1, 0, 0), (1, 15, 19), (1, 9, 9), (0, 10, 7)]  # the last is also confident
    for b, r, c in points:
        human[b, r, c] = True
        confidence[b, r, c] = 1.0
    model = task(contrastive_pixels=8)

    rows, kept_labels, _ = model._sample_pixels(pixel_features(labels), labels, confidence, human)
    point_pixels = {b * 320 + r * 20 + c for b, r, c in points}
    assert rows.shape[0] == 6 + 8  # every point, plus 8 of the 19 other confident pixels
    assert point_pixels <= set(rows[:, 1].long().tolist())
    others = set(rows[:, 1].long().tolist()) - point_pixels
    assert others <= set(range(200, 220)) - {207}  # row 10 of frame 0
    assert torch.bincount(kept_labels).tolist() == [2, 4 + 8]

    model.hparams.contrastive_pixels = 4096  # the default: nothing to cap
    assert model._sample_pixels(pixel_features(labels), labels, confidence, human)[0].shape[0] == 6 + 19


def step_at(model: EventSegmentation, batch: dict, global_step: int, monkeypatch) -> tuple[float, dict]:
    """One training step as if the trainer were at ``global_step``; returns the loss and what was logged."""
    monkeypatch.setattr(EventSegmentation, "global_step", property(lambda self: global_step))
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value.detach()))
    torch.manual_seed(1)  # the contrastive pixel sample
    return float(model.training_step(batch, 0).detach()), logged


def loss_terms(logged: dict) -> set:
    return {k.removeprefix("train/loss_") for k in logged if k.startswith("train/loss_")}


def test_burn_in_trains_the_point_ce_only_and_delays_the_rampup(datamodule, monkeypatch):
    batch = next(iter(datamodule.train_dataloader()))
    burnt_in = task(burn_in_steps=5, rampup_steps=10)

    loss, logged = step_at(burnt_in, batch, 2, monkeypatch)
    assert loss_terms(logged) == {"ce"} and "train/pseudo_ratio" not in logged
    assert int(burnt_in.contrastive[0].queue_count.sum()) == 0  # the queues are not filled either
    with torch.no_grad():
        ce = PartialCrossEntropy()
        expected = (ce(burnt_in.model(batch["voxel"])["logits"], batch["target"])
                    + ce(burnt_in.student_b(batch["voxel_reversed"])["logits"], batch["target"]))
    assert loss == pytest.approx(expected.item(), rel=1e-5)  # student B still learns from its own stream

    loss, logged = step_at(burnt_in, batch, 6, monkeypatch)
    assert loss_terms(logged) == {"ce", "cross_pseudo", "distillation", "contrastive", "exchange"}
    # step 6 after a 5-step burn-in weighs the unsupervised terms as step 1 without one
    no_burn_in = task(rampup_steps=10)
    reference, reference_logged = step_at(no_burn_in, batch, 1, monkeypatch)
    assert loss == pytest.approx(reference, rel=1e-6)
    assert logged == pytest.approx(reference_logged, rel=1e-6)
    assert logged["train/loss_distillation"] == pytest.approx(0.1 * rampup(1, 10) * DualStudent.feature_distillation(
        no_burn_in.model(batch["voxel"])["features"], no_burn_in.student_b(batch["voxel_reversed"])["features"]).item(),
        rel=1e-5)
    with pytest.raises(ValueError, match="burn_in_steps"):
        task(burn_in_steps=-1)


def test_restricted_prediction_renormalises_over_the_present_classes():
    logits = torch.tensor([0.4, 0.5, 0.1]).log().view(1, 3, 1, 1)
    confidence, predicted = restricted_prediction(logits, torch.tensor([[True, False, True]]))
    assert predicted.item() == 0 and confidence.item() == pytest.approx(0.8)  # 0.4 / (0.4 + 0.1)


def test_checkpoint_restores_both_students_and_the_prototype_queues(datamodule, tmp_path):
    model = task()
    run = trainer(max_steps=2, limit_val_batches=0)
    run.fit(model, datamodule=datamodule)
    assert int(model.contrastive[0].queue_count.sum()) > 0  # the queues hold features now
    run.save_checkpoint(tmp_path / "last.ckpt")

    restored = EventSegmentation.load_from_checkpoint(tmp_path / "last.ckpt", model=TinyEventNet())
    saved, loaded = model.state_dict(), restored.state_dict()
    for key in ("model.body.0.weight", "student_b.body.0.weight", "contrastive.0.queue", "contrastive.1.queue",
                "contrastive.1.queue_count", "contrastive.0.queue_ptr", "projection.0.mlp.0.weight"):
        assert key in loaded and torch.equal(saved[key], loaded[key]), key
    assert saved.keys() == loaded.keys()
    assert restored.hparams.queue_size == 200 and restored.hparams.temperature == 0.1


def test_predictions_are_written_as_label_pngs_and_never_overwritten(datamodule):
    model = task()
    model.hparams.prediction_folder = "pred"  # the task adds its EventPredictionWriter itself
    outputs = trainer().predict(model, datamodule=datamodule)
    first = outputs[0]
    assert first["sample_id"] == ["test/seq_a/000000", "test/seq_a/000001"]
    assert first["label"].shape == first["confidence"].shape == (2, HEIGHT, WIDTH)
    assert (first["confidence"] >= 1 / NUM_CLASSES - 1e-6).all() and (first["confidence"] <= 1).all()
    png = datamodule.sequence_folder("test/seq_a/000001") / "pred" / "000001.png"
    assert np.array_equal(read_label_png(png), first["label"][1].numpy())
    assert len(list(png.parent.glob("*.png"))) == 3

    with pytest.raises(DataError, match="pred: prediction folder exists"):
        trainer().predict(model, datamodule=datamodule)
    model.hparams.overwrite_predictions = True
    trainer().predict(model, datamodule=datamodule)
    assert isinstance(model.configure_callbacks()[0], EventPredictionWriter)


REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "events").glob("evwsss-*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_configs_load_with_print_config(config, capsys):
    from vision.cli import main

    with pytest.raises(SystemExit) as exit_info:  # jsonargparse exits after printing
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: vision.tasks.events.EventSegmentation" in printed
    assert ("PerClass" in printed) == ("1pt" in config.stem)


@pytest.mark.slow
def test_synthetic_config_fits_tests_and_predicts_through_the_cli(tmp_path, monkeypatch):
    from vision.cli import main

    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    tiny = ["--config", str(REPO / "configs/events/evwsss-synthetic-1pt.yaml"), "--run_dir", str(tmp_path / "run"),
            "--data.init_args.synthetic", "{num_train: 1, num_val: 1, num_test: 1, height: 32, width: 40, "
            "duration_s: 0.8}", "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false",
            "--model.init_args.model.init_args.base_channels", "4", "--model.init_args.model.init_args.depth", "2"]
    assert main(["fit", *tiny, "--trainer.max_epochs", "1"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert main(["test", *tiny]) == 0
    assert main(["predict", *tiny, "--model.init_args.prediction_folder=run1"]) == 0
    written = list((tmp_path / "cache").glob("synthetic/events/*/test/*/run1/*.png"))
    assert len(written) == 3 and read_label_png(written[0]).shape == (32, 40)  # labels at 300, 400, 500 ms
