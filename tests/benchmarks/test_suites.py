"""Every benchmark suite lists well-formed rows; the report turns hand-made rows into tables, ratios and plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vision.benchmarks import detection, events, pointcloud
from vision.benchmarks.common import run_rows
from vision.benchmarks.report import efficiency_figure, plot_rows, summarise, task_table, write_report
from vision.commands import benchmark

REPO = Path(__file__).resolve().parents[2]
LABELS = {"full", "1pct", "0.1pct", "0.01pct", "1pt", "drop50", "keep1", "points"}  # CONVENTIONS.md
#: suite -> the headline rows that need label seeds 0, 1, 2 (CONVENTIONS.md)
HEADLINE = {"pointcloud": {"0.1pct"}, "pointcloud-ign": {"0.1pct", "knn-0.1pct", "knn-1pct"}, "events": {"1pt"},
            "detection": {"drop50", "points", "mmdet_retinanet-drop50"}, "detection-bccd": {"drop50", "points"}}


def suite_rows(name: str, quick: bool = False):
    module, options = benchmark.SUITES[name]
    return {"pointcloud": pointcloud, "events": events, "detection": detection}[module].rows(quick=quick, **options)


@pytest.mark.parametrize("quick", [False, True], ids=["full-size", "quick"])
@pytest.mark.parametrize("suite", sorted(benchmark.SUITES))
def test_suite_rows_are_well_formed(suite, quick):
    rows = suite_rows(suite, quick)
    names = [row.name for row in rows]
    assert len(names) == len(set(names)), f"{suite}: duplicate row names"
    assert {row.task for row in rows} == {suite}
    for row in rows:
        assert (REPO / row.config).is_file(), row.config
        assert row.labels in LABELS and row.method
        assert row.path(Path("d"), 0) == Path("d") / f"{suite}-{row.name}-seed0.json"
        expected = (0, 1, 2) if row.name in HEADLINE[suite] else (0,)
        if quick:  # CI-sized: training rows keep one label seed
            expected = expected if row.method == "knn" else (0,)
        assert row.seeds == expected, f"{suite}/{row.name}: seeds {row.seeds}"
        assert all(o.startswith("--") and "=" in o for o in row.overrides), row.overrides
    if quick:  # the same rows as the full-size suite, on smaller data or schedules
        full_size = suite_rows(suite)
        assert [r.name for r in full_size] == names
        assert all(len(q.overrides) > len(r.overrides) for q, r in zip(rows, full_size) if r.method != "knn")


def test_each_issue_row_is_there_with_its_switches():
    by_name = {row.name: row for row in events.rows()}
    assert by_name["1pt-point-ce"].overrides == ["--model.init_args.dual_student=false",
                                                 "--model.init_args.contrastive_weight=0"]
    assert "--model.init_args.prototype_exchange=false" in by_name["1pt-contrastive"].overrides
    assert by_name["full"].config.endswith("evwsss-synthetic-full.yaml") and by_name["1pt"].overrides == []
    synthetic = {row.name: row for row in detection.rows()}
    assert {"full", "drop50", "drop50-baseline", "keep1", "keep1-baseline", "points", "points-baseline"} <= set(synthetic)
    assert detection.BASELINE in synthetic["keep1-baseline"].overrides
    assert detection.MEAN_SIZE in synthetic["points-baseline"].overrides
    assert all(r.config.startswith("configs/detection/fcos-bccd-") for r in detection.rows(dataset="bccd"))
    cloud = {row.name: row for row in pointcloud.rows()}
    assert cloud["0.1pct-selftrain-r2"].command(0).startswith(
        "sparsevision selftrain --config configs/pointcloud/sqn-synthetic-0.1pct.yaml --rounds 2")
    ign = {row.name: row for row in pointcloud.rows(dataset="ign")}
    assert ign["knn-1pct"].command(2) == "sparsevision benchmark pointcloud-ign --rows knn-1pct --seeds 2"
    assert ign["0.1pct"].command(1).endswith("sqn-ign-0.1pct.yaml --data.init_args.weak_label_seed=1")


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(benchmark.SUITES))
def test_every_row_parses_with_lightning_cli(suite):
    """Each row's config + overrides (+ label seed) pass LightningCLI's type checks, nothing instantiated."""
    from vision.cli import _lightning_cli_class

    class ParseOnly(_lightning_cli_class()):
        def instantiate_classes(self) -> None:
            pass

    rows = suite_rows(suite) + suite_rows(suite, quick=True)
    parser = ParseOnly(model_class=None, datamodule_class=None, subclass_mode_model=True, subclass_mode_data=True,
                       args=["--config", rows[0].config], run=False).parser
    for row in rows:
        extra = [f"{detection.PRIOR_OPTION}=[[10.0, 12.0]]"] if detection.MEAN_SIZE in row.overrides else []
        config = parser.parse_args(["--config", row.config, *row.overrides, *extra, f"{row.seed_option}=1"])
        assert config.data.init_args.weak_label_seed == 1
        if detection.BASELINE in row.overrides:
            assert config.model.init_args.baseline is True


def test_bccd_rows_are_skipped_with_a_message_when_the_data_is_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEVISION_SHARED_DATA", str(tmp_path / "nowhere"))
    assert benchmark.main(["detection-bccd", "--folder", str(tmp_path / "rows"), "--runs", str(tmp_path)]) == 0
    message = capsys.readouterr().err
    assert "[skip] detection-bccd/full: real data not found at" in message and "nowhere" in message
    assert not list(tmp_path.glob("rows/*.json"))
    rows = detection.rows(dataset="bccd")  # and with the variable set, the rows read the data from there
    assert f"--data.init_args.data_root={tmp_path / 'nowhere' / 'bccd' / 'BCCD'}" in rows[0].overrides


def test_mmdet_rows_skip_when_mmdet_does_not_import(tmp_path, capsys):
    from vision.models.detection.mmdet_backend import mmdet_unavailable_reason

    if mmdet_unavailable_reason() is None:
        pytest.skip("mmdet is installed: its rows run")
    assert benchmark.main(["detection", "--rows", "mmdet_retinanet-full", "--folder", str(tmp_path)]) == 0
    assert "[skip] detection/mmdet_retinanet-full: mmdet backend unavailable" in capsys.readouterr().err


class _Boxes:
    """A stand-in for DetectionDataModule: ``images(split)[i]`` items with boxes and labels."""

    num_classes = 3

    def images(self, split):
        assert split == "val"
        return [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 35.0, 25.0]]), "labels": torch.tensor([0, 0])},
                {"boxes": torch.tensor([[0.0, 0.0, 4.0, 6.0]]), "labels": torch.tensor([1])}]


def test_mean_size_prior_is_measured_on_validation_boxes_and_recorded_in_the_command(tmp_path, monkeypatch):
    assert detection.class_mean_wh(_Boxes()) == [[20.0, 20.0], [4.0, 6.0], [14.7, 15.3]]  # class 2: all boxes
    monkeypatch.setattr("vision.cli.build_cli", lambda argv: type("CLI", (), {"datamodule": _DataModule()}))
    monkeypatch.setattr(detection, "fit_and_test", lambda row, seed, root, key, extra=None: {"metric": {"map_50": 0.5}})
    row = next(r for r in detection.rows() if r.name == "points-baseline")
    result = run_rows([row], lambda r, s: detection.run_one(r, s, tmp_path), tmp_path, log=lambda _: None)[0]
    assert result["command"].endswith("'--model.init_args.class_mean_wh=[[20.0, 20.0], [4.0, 6.0], [14.7, 15.3]]'")


class _DataModule(_Boxes):
    def prepare_data(self):
        pass


def test_leave_one_out_chooses_k_from_the_labelled_points_only():
    x = np.array([0, 1, 2, 3, 3.5, 4, 5, 6, 7, 8, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109.0])
    features, index, class_id = np.repeat(x[:, None], 3, axis=1), np.arange(20), np.repeat([0, 1], 10)
    assert pointcloud.leave_one_out_k(features, index, class_id, 2) == 1  # every k is right: the smallest
    # the point at 3.5 labelled 1 among class 0: k = 1 copies it onto 3 and 4, larger k outvote it
    noisy = class_id.copy()
    noisy[4] = 1
    assert pointcloud.leave_one_out_k(features, index, noisy, 2) > 1
    assert pointcloud.leave_one_out_k(features, index[:2], class_id[:2], 2) == 1  # too few points for k >= 1


def write_tile(path: Path, n: int = 3000) -> Path:
    """A LAS tile with ASPRS ground (2) on a plane, a building (6) block and other (1) points above it."""
    from datamodules.formats.las import write_las
    from datamodules.formats.pointcloud_scene import PointCloudScene

    rng = np.random.default_rng(0)
    third = n // 3
    ground = np.c_[rng.uniform(0, 60, (third, 2)), rng.normal(0, 0.05, third)]
    building = np.c_[rng.uniform(0, 15, (third, 2)), rng.uniform(8, 10, third)]
    other = np.c_[rng.uniform(40, 60, (third, 2)), rng.uniform(2, 6, third)]
    coords = np.concatenate([ground, building, other])
    semantic = np.repeat([1, 2, 0], third)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_las(path, PointCloudScene(coords, semantic=semantic), class_map={1: 0, 2: 1, 6: 2})
    return path


def test_ign_knn_row_scores_the_unlabelled_points_of_a_tile(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_SHARED_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    write_tile(tmp_path / "shared" / "ign_lidarhd" / "tile.las")
    row = next(r for r in pointcloud.rows(dataset="ign") if r.name == "knn-1pct")
    result = pointcloud.run_one(row, 1, tmp_path)
    assert result["label_budget"] == {"labelled": 30, "total": 3000, "fraction": 0.01}
    assert result["scored_points"] == 2970  # the 30 labelled points are not scored
    assert result["metric"]["miou"] > 0.9 and set(result["metric"]) >= {"iou/ground", "iou/building", "iou/other"}
    assert result["k"]["tile"] in pointcloud.KNN_KS


def test_knn_floor_on_the_real_ign_tile(shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSEVISION_SHARED_DATA", str(shared_data))
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    row = next(r for r in pointcloud.rows(dataset="ign") if r.name == "knn-1pct")
    result = pointcloud.run_one(row, 0, tmp_path)
    assert result["label_budget"]["labelled"] == 708 and result["scored_points"] == 70840 - 708
    # standardised xyz, k by leave-one-out: above the issue's 0.635 (raw xyz) at 1% of the labels
    assert result["metric"]["miou"] == pytest.approx(0.6595, abs=0.002)


def _made(task, name, value, seed=0, method="m", labels="1pt", fraction=0.01, converged=True, **extra):
    return {"task": task, "row": name, "seed": seed, "method": method, "labels": labels, "converged": converged,
            "metric": value, "command": f"cmd {name} {seed}", "wall_s": 600.0,
            "label_budget": {"labelled": int(fraction * 1000), "total": 1000, "fraction": fraction}, **extra}


def hand_made_rows() -> list[dict]:
    events_rows = [_made("events", "full", {"miou": 0.70}, method="evwsss", labels="full", fraction=1.0),
                   *[_made("events", "1pt", {"miou": v}, s, method="evwsss") for s, v in enumerate([0.64, 0.66, 0.65])],
                   _made("events", "1pt-point-ce", {"miou": 0.50}, method="evwsss: point CE only")]
    detection_rows = [_made("detection", "full", {"map_50": 0.80, "map": 0.50}, method="fcos", labels="full", fraction=1.0),
                      *[_made("detection", "drop50", {"map_50": v, "map": 0.4}, s, method="fcos+engine", labels="drop50",
                              fraction=f) for s, (v, f) in enumerate([(0.78, 0.49), (0.79, 0.51), (0.77, 0.50)])],
                      _made("detection", "drop50-baseline", {"map_50": 0.60}, method="fcos", labels="drop50", fraction=0.5),
                      _made("detection", "points", {"map_50": 0.50}, method="fcos+engine", labels="points", fraction=1.0)]
    bccd = [_made("detection-bccd", "full", {"map_50": 0.40}, method="fcos", labels="full", fraction=1.0, converged=False),
            _made("detection-bccd", "drop50", {"map_50": 0.39}, method="fcos+engine", labels="drop50", fraction=0.5,
                  pseudo_boxes={"images": 100, "pseudo": 50, "precision": 0.8, "recall": 0.1, "mined": 900,
                                "mined_precision": 0.13})]
    ign = [*[_made("pointcloud-ign", "0.1pct", {"miou": v}, s, method="sqn+engine", labels="0.1pct", fraction=0.001)
             for s, v in enumerate([0.66, 0.64, 0.65])],
           _made("pointcloud-ign", "knn-1pct", {"miou": 0.63}, method="knn", labels="1pct", k={"tile": 5})]
    selftrain = [_made("pointcloud", "0.1pct-selftrain-r1", {"miou": 0.5}, method="sqn+engine+selftrain",
                       labels="0.1pct", fraction=0.001, pseudo_labels={"pseudo": 1234, "precision": 0.912})]
    return events_rows + detection_rows + bccd + ign + selftrain


def test_tables_put_ratios_and_targets_beside_absolute_values():
    summary = summarise(hand_made_rows())
    events_table = "\n".join(task_table(summary, "events"))
    assert "| 1pt | evwsss | 1pt | 0.650 ± 0.010 | 10 / 1,000 | 0,1,2 | 0.929 (target ≥ 0.90: met) |" in events_table
    assert "0.714 (target" not in events_table and "| 0.714 |" in events_table  # ablations: plain ratio
    assert "Floor (issue #5)" in events_table
    det = "\n".join(task_table(summary, "detection"))
    assert "| 0.780 ± 0.010 |" in det and "0.975 (target ≥ 0.95: met)" in det and "mAP 0.400" in det
    assert "0.625 (target ≥ 0.70: not met)" in det  # points: 0.50 / 0.80
    assert "COCO RetinaNet 36.8" in det
    bccd = "\n".join(task_table(summary, "detection-bccd"))
    assert "0.975 (target ≥ 0.95: met)" in bccd and "has NOT converged" in bccd
    assert "the AP50 >= 0.60 floor applies to the synthetic set" in bccd
    assert ("pseudo-boxes 0.5/image (precision 0.80, recall of missing 0.10), mined 9.0/image (precision 0.13)"
            in bccd)
    ign = "\n".join(task_table(summary, "pointcloud-ign"))
    assert "| 0.650 ± 0.010 |" in ign and "target ≥ 0.635: met" in ign and "k = 5" in ign
    assert "no full-label row" in ign and "k-NN vote on xyz 0.378 at 0.1%" in ign
    cloud = "\n".join(task_table(summary, "pointcloud"))
    assert "1,234 pseudo-labels, precision 0.912" in cloud and "61.4 mIoU" in cloud


def test_backend_rows_are_compared_with_their_own_full_row():
    """mmdet RetinaNet rows divide by mmdet_retinanet-full, torchvision RetinaNet ones by retinanet-full."""
    rows = [*hand_made_rows(),
            _made("detection", "mmdet_retinanet-full", {"map_50": 0.70}, method="mmdet_retinanet", labels="full",
                  fraction=1.0),
            _made("detection", "mmdet_retinanet-drop50", {"map_50": 0.63}, method="mmdet_retinanet+engine",
                  labels="drop50", fraction=0.5),
            _made("detection", "retinanet-full", {"map_50": 0.65}, method="retinanet", labels="full", fraction=1.0,
                  converged=False),
            _made("detection", "retinanet-drop50", {"map_50": 0.60}, method="retinanet+engine", labels="drop50",
                  fraction=0.5)]
    det = "\n".join(task_table(summarise(rows), "detection"))
    assert "| mmdet_retinanet-drop50 | mmdet_retinanet+engine | drop50 | 0.630 |" in det
    assert "| 0.900 (target ≥ 0.95: not met) |" in det  # 0.63 / 0.70, not 0.63 / 0.80 (the FCOS full row)
    assert "| 0.975 (target ≥ 0.95: met) |" in det  # FCOS drop50 still against FCOS full
    retina = next(line for line in det.splitlines() if line.startswith("| retinanet-drop50 |"))
    assert "| n/a |" in retina
    assert "`retinanet-*` ratios are not shown: the `retinanet-full` run has not converged" in det
    assert {r.name for r in detection.rows()} >= {"retinanet-full", "retinanet-drop50", "retinanet-drop50-baseline"}


def test_plot_rows_share_one_x_per_row_and_keep_points_apart_from_full_labels():
    points = plot_rows(hand_made_rows(), "detection")
    drop50 = [p for p in points if p["method"] == "fcos+engine" and p["labels"] == "drop50"]
    assert [p["labelled_fraction"] for p in drop50] == pytest.approx([0.5, 0.5, 0.5])
    assert {p["method"] for p in points} == {"fcos", "fcos+engine", "fcos+engine (points)"}
    assert [p["baseline"] for p in points if p["labels"] == "drop50" and p["method"] == "fcos"] == [True]
    assert plot_rows(hand_made_rows(), "pointcloud")[0]["method"] == "sqn+engine+selftrain r1"


def test_report_writes_sections_and_a_plot_per_task(tmp_path):
    from PIL import Image

    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for i, row in enumerate(hand_made_rows()):
        (folder / f"{row['task']}-{row['row']}-seed{row['seed']}-{i}.json").write_text(json.dumps(row))
    text = write_report(folder, tmp_path / "BENCHMARKS.md").read_text()
    for task in ("pointcloud", "pointcloud-ign", "events", "detection", "detection-bccd"):
        assert f"## {task}\n" in text
        assert f"![{task} label efficiency](benchmarks/{task}-label-efficiency.png)" in text
        with Image.open(folder / f"{task}-label-efficiency.png") as image:
            assert image.size == (700, 450)
    assert text.index("## pointcloud-ign") < text.index("## events") < text.index("## detection-bccd")


def test_plot_draws_baselines_dotted_and_multi_seed_rows_with_error_bars():
    axes = efficiency_figure(hand_made_rows(), "detection").axes[0]
    bars = {c.get_label(): c for c in axes.containers}
    assert bars["fcos+engine"].has_yerr  # drop50 over 3 seeds
    assert bars["fcos"].lines[0].get_linestyle() == ":" and bars["fcos"].lines[0].get_marker() == "s"
    assert bars["fcos+engine"].lines[0].get_linestyle() == "-"
    assert axes.get_xscale() == "log" and axes.get_ylabel() == "AP50 (test)"
    full_lines = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in full_lines] == [0.80]  # the full-box row, horizontal
    assert efficiency_figure(hand_made_rows(), "no-such-task") is None


# ---------------------------------------------------------------------------- end to end, tiny
TINY_EVENTS = ["--data.init_args.synthetic={num_train: 1, num_val: 1, num_test: 1, height: 32, width: 40, duration_s: 0.8}",
               "--data.init_args.num_workers=0", "--model.init_args.model.init_args.base_channels=4",
               "--model.init_args.model.init_args.depth=2", "--trainer.max_epochs=1"]
TINY_DETECTION = ["--data.init_args.synthetic={num_train: 4, num_val: 2, num_test: 2, height: 64, width: 64}",
                  "--data.init_args.num_workers=0", "--model.init_args.model.init_args.min_size=64",
                  "--model.init_args.model.init_args.max_size=64", "--trainer.max_epochs=1"]
TINY_ROOMS = ["--data.init_args.synthetic={num_train: 2, num_val: 1, num_test: 1, points_per_room: [5000, 6000]}",
              "--data.init_args.crop_points=1024", "--data.init_args.crops_per_epoch=4", "--data.init_args.num_workers=0",
              "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"]


@pytest.mark.slow
@pytest.mark.parametrize(("suite", "name", "tiny"), [("events", "1pt-exchange", TINY_EVENTS),
                                                     ("detection", "points-baseline", TINY_DETECTION)])
def test_one_quick_row_runs_end_to_end(suite, name, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    module = {"events": events, "detection": detection}[suite]
    row = next(r for r in suite_rows(suite, quick=True) if r.name == name)
    row = dataclasses.replace(row, overrides=[*row.overrides, *tiny])
    result = run_rows([row], lambda r, s: module.run_one(r, s, tmp_path / "runs"), tmp_path, log=lambda _: None)[0]
    key = "miou" if suite == "events" else "map_50"
    assert 0.0 <= result["metric"][key] <= 1.0 and result["label_budget"]["labelled"] > 0
    assert json.loads((tmp_path / f"{suite}-{name}-seed0.json").read_text())["command"] == result["command"]


@pytest.mark.slow
def test_ign_engine_row_on_a_tiny_tile(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_SHARED_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    write_tile(tmp_path / "shared" / "ign_lidarhd" / "tile.las", 6000)
    row = pointcloud.rows(quick=True, dataset="ign")[0]
    row = dataclasses.replace(row, overrides=[*row.overrides, "--data.init_args.crop_points=1024",
                                              "--data.init_args.crops_per_epoch=4", "--data.init_args.num_workers=0",
                                              "--data.init_args.voxel_size=0.5", "--trainer.max_epochs=1"])
    result = pointcloud.run_one(row, 0, tmp_path / "runs")
    assert result["label_budget"]["labelled"] == 6 and 0.0 <= result["metric"]["miou"] <= 1.0


@pytest.mark.slow
def test_second_selftrain_round_trains_the_rounds_before_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    row = next(r for r in pointcloud.rows(quick=True) if r.name == "0.1pct-selftrain-r2")
    row = dataclasses.replace(row, overrides=[*row.overrides, *TINY_ROOMS])
    result = pointcloud.run_one(row, 0, tmp_path)
    for round_dir in ("pointcloud-0.1pct-seed0", "pointcloud-0.1pct-selftrain-r1-seed0",
                      "pointcloud-0.1pct-selftrain-r2-seed0"):
        assert (tmp_path / round_dir / "checkpoints" / "last.ckpt").is_file()
    stats = result["pseudo_labels"]
    assert stats["pseudo"] > 0 and 0.0 <= stats["precision"] <= 1.0
    assert result["label_budget"]["labelled"] == stats["human"] < stats["pseudo"]
    assert 0.0 <= result["metric"]["miou"] <= 1.0


def test_only_engine_rows_on_incomplete_boxes_score_their_pseudo_boxes():
    scored = {row.name for row in detection.rows() if detection.scores_pseudo_boxes(row)}
    assert {"drop50", "keep1", "mmdet_retinanet-drop50"} <= scored
    assert not scored & {"full", "drop50-baseline", "keep1-baseline", "points", "points-baseline",
                         "mmdet_retinanet-drop50-baseline", "mmdet_retinanet-full"}
