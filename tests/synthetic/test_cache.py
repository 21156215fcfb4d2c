"""The generated-data cache: folder naming, build once, interrupted and concurrent builds."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from datamodules.synthetic.cache import build_once, cache_root, dataset_dir, params_hash
from vision.errors import DataError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_root_defaults_to_home_cache(monkeypatch):
    monkeypatch.delenv("SPARSEVISION_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "sparsevision"


def test_dataset_dir_names_task_generator_version_seed_and_params_hash(cache):
    expected_hash = hashlib.sha256(b'{"num_rooms":3,"size":[1,2]}').hexdigest()[:8]
    folder = dataset_dir("pointcloud", "rooms", 1, 7, {"size": (1, 2), "num_rooms": 3})
    assert folder == cache / "synthetic" / "pointcloud" / f"rooms-v1-seed7-{expected_hash}"


def test_params_change_gives_another_folder_but_key_order_does_not(cache):
    base = dataset_dir("events", "shapes", 1, 0, {"a": 1, "b": 2})
    assert dataset_dir("events", "shapes", 1, 0, {"b": 2, "a": 1}) == base
    assert dataset_dir("events", "shapes", 1, 0, {"a": 1, "b": 3}) != base
    assert params_hash({"a": 1, "b": 2}) != params_hash({"a": 1, "b": 3})


def test_build_writes_done_json_with_params_and_second_call_does_not_rebuild(cache):
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "data.txt").write_text("rooms")

    target = dataset_dir("pointcloud", "rooms", 1, 0, {"n": 2})
    assert build_once(target, build, params={"n": 2}) == target
    assert build_once(target, build, params={"n": 2}) == target
    assert len(calls) == 1
    assert calls[0].parent == target.parent  # built beside the target, then renamed
    assert calls[0].name.startswith(f".tmp-{target.name}-{os.getpid()}-")
    assert (target / "data.txt").read_text() == "rooms"
    assert json.loads((target / "DONE.json").read_text())["params"] == {"n": 2}
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp folder left


def test_interrupted_build_leaves_no_target_and_no_temp_folder(cache):
    target = dataset_dir("pointcloud", "rooms", 1, 0, {"n": 1})

    def build_and_crash(folder: Path) -> None:
        (folder / "half.ply").write_text("partial")
        raise KeyboardInterrupt  # the user pressed Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        build_once(target, build_and_crash)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    # the next run builds from scratch
    build_once(target, lambda folder: (folder / "full.ply").write_text("complete"))
    assert sorted(p.name for p in target.iterdir()) == ["DONE.json", "full.ply"]


def test_build_that_loses_the_rename_race_keeps_the_winner(cache):
    target = dataset_dir("pointcloud", "rooms", 1, 0, {"n": 3})

    def slow_build(folder: Path) -> None:
        (folder / "who.txt").write_text("loser")
        # meanwhile another process finishes the same folder first
        build_once(target, lambda other: (other / "who.txt").write_text("winner"))

    assert build_once(target, slow_build) == target
    assert (target / "who.txt").read_text() == "winner"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_folder_without_done_json_is_reported_not_overwritten(cache):
    target = dataset_dir("pointcloud", "rooms", 1, 0, {})
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="no DONE.json") as error:
        build_once(target, lambda folder: None)
    assert str(error.value).startswith(str(target))
    assert (target / "mine.txt").read_text() == "keep"
