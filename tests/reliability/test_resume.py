"""Interrupted training: kill ``sparsevision fit`` after a checkpoint, resume with ``--ckpt_path last``,
and end with the same weights as a run that was never interrupted.

The killed run is a real ``python -m vision.cli fit`` subprocess, parked by
:class:`resume_pause.PauseAtStep` just after the checkpoint of step ``k`` and killed with SIGKILL
(no handler runs, as after an OOM kill or a power loss). The resumed and the uninterrupted runs go
through the same entry point in this process (``vision.cli.main``), which saves two interpreter
start-ups per case. Every run uses one torch thread, so the three agree to the last bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.sampling import EpochSampler, ResumableDataLoader
from vision.engine.exact_resume import ExactResume

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- helpers
class KillableFit:
    """``sparsevision fit ARGS`` in a subprocess, parked at step ``step`` by :class:`PauseAtStep`."""

    def __init__(self, args: list[str], run_dir: Path, step: int, env: dict[str, str]) -> None:
        self.run_dir, self.step = run_dir, step
        self.flag, self.log = run_dir.with_name(f"{run_dir.name}.paused"), run_dir.with_name(f"{run_dir.name}.log")
        pause = run_dir.with_name(f"{run_dir.name}.pause.yaml")
        pause.write_text("trainer:\n  callbacks:\n    - class_path: resume_pause.PauseAtStep\n"
                         f"      init_args: {{step: {step}, flag_file: '{self.flag}'}}\n")
        env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), "OMP_NUM_THREADS": "1"}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "vision.cli", "fit", *args, "--config", str(pause),
                                             "--run_dir", str(run_dir)], cwd=REPO, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def kill_when_paused(self, timeout_s: float = 300) -> str:
        """SIGKILL once paused; returns ``"<epoch> <batch index>"`` of the batch it was killed in."""
        deadline = time.monotonic() + timeout_s
        try:
            while not self.flag.exists():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"fit never reached step {self.step} (exit code {self.process.returncode})"
                                         f":\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)
            self.process.send_signal(signal.SIGKILL)
        finally:
            self.process.kill()
            self.process.wait()
        assert self.process.returncode == -signal.SIGKILL
        return self.flag.read_text().strip()


def fit_here(args: list[str], monkeypatch) -> None:
    """``sparsevision fit ARGS`` in this process, leaving the global RNGs and seed variables as they were."""
    from vision.cli import main

    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them; restored after the test
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    with torch.random.fork_rng(devices=[]):
        assert main(["fit", *args]) == 0


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list (optimizer states), keyed by its path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def assert_same_training_state(resumed: dict, reference: dict, atol: float = 1e-6) -> None:
    """Same step, same weights and buffers, same optimizer moments (max abs diff <= atol)."""
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for name in ("state_dict", "optimizer_states"):
        ours, theirs = tensors(resumed[name]), tensors(reference[name])
        assert ours.keys() == theirs.keys(), name
        for key, value in theirs.items():
            difference = (ours[key].double() - value.double()).abs().max().item() if value.numel() else 0.0
            assert difference <= atol, f"{name}{key}: max abs diff {difference}"


# ---------------------------------------------------------------------------------------------- loader
def test_a_resumed_loader_hands_out_exactly_the_rest_of_the_interrupted_epoch():
    data = torch.arange(50)  # item g is the global index g (epoch 3 of 5 samples: 15..19)

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(data, batch_size=2, sampler=EpochSampler(5, seed=7))

    uninterrupted = loader()
    uninterrupted.sampler.set_epoch(3)
    expected = [batch.tolist() for batch in uninterrupted]
    interrupted = loader()
    interrupted.sampler.set_epoch(3)
    batches = iter(interrupted)
    seen = [next(batches).tolist()]
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "batches": 1}

    resumed = loader()  # a new process: a fresh loader, then the state from the checkpoint
    resumed.load_state_dict(state)
    assert seen + [batch.tolist() for batch in resumed] == expected
    assert resumed.state_dict() == {"epoch": 3, "batches": 3}
    resumed.sampler.set_epoch(4)  # the next epoch is whole again
    assert len([batch for batch in resumed]) == 3 and len(resumed) == 3


def test_a_loader_with_another_sampler_resumes_by_dropping_the_batches_it_already_gave():
    data = torch.arange(10)
    loader = ResumableDataLoader(data, batch_size=3, sampler=torch.utils.data.SequentialSampler(data))
    loader.load_state_dict({"epoch": 0, "batches": 2})
    assert [batch.tolist() for batch in loader] == [[6, 7, 8], [9]]
    assert loader.state_dict() == {"epoch": 0, "batches": 4}


def test_training_step_randomness_depends_only_on_seed_epoch_and_batch():
    class Trainer:
        current_epoch = 2

    callback = ExactResume(seed=5)
    callback.on_train_batch_start(Trainer(), None, None, batch_idx=3)
    first = torch.nn.functional.dropout(torch.ones(20), 0.5), random.random()
    torch.rand(100)  # whatever ran before the batch...
    callback.on_train_batch_start(Trainer(), None, None, batch_idx=3)
    again = torch.nn.functional.dropout(torch.ones(20), 0.5), random.random()
    assert torch.equal(first[0], again[0]) and first[1] == again[1]  # ...does not change the batch's draws
    callback.on_train_batch_start(Trainer(), None, None, batch_idx=4)
    assert not torch.equal(first[0], torch.nn.functional.dropout(torch.ones(20), 0.5))


def test_fit_writes_every_checkpoint_into_the_run_folder_and_adds_exact_resume(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vision.cli import build_cli

    cli = build_cli(["--config", str(REPO / "tests/configs/tiny.yaml"), "--run_dir", str(tmp_path / "run"),
                     "--checkpoint_every_n_steps", "3", "--trainer.callbacks+=ModelCheckpoint",
                     "--trainer.callbacks.monitor=val/miou", "--trainer.callbacks.mode=max"])
    checkpoints = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    # the user's best-val/miou checkpoint and the every-3-steps last.ckpt, both in <run>/checkpoints
    assert [(c.monitor, c._every_n_train_steps) for c in checkpoints] == [("val/miou", 0), (None, 3)]
    assert {Path(c.dirpath) for c in checkpoints} == {tmp_path / "run" / "checkpoints"}
    assert sum(isinstance(c, ExactResume) for c in cli.trainer.callbacks) == 1


# ---------------------------------------------------------------------------------------------- engine state
def write_rooms(root: Path) -> Path:
    """One small synthetic room (about 6500 points) as PLY, the same file in train, val and test."""
    from datamodules.synthetic.rooms import generate_room, write_room_ply

    room = generate_room(7, "fixed", points_per_room=(6000, 7000))
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        write_room_ply(root / split / "room.ply", room)
    return root


@pytest.fixture
def room_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    return write_rooms(tmp_path / "rooms")


def test_checkpoint_restores_the_ema_teacher_prototype_queue_and_freematch_thresholds(room_root, tmp_path):
    from datamodules.pointcloud import PointCloudDataModule
    from datamodules.synthetic.rooms import ROOM_CLASSES
    from vision.labels.protocols import Count
    from vision.models.pointcloud import SQN
    from vision.tasks.pointcloud import PointCloudSegmentation

    def small_task() -> PointCloudSegmentation:
        model = SQN(6, 12, encoder_kwargs={"dims": (8, 16, 32), "k": 8}, head_kwargs={"hidden": (32,)})
        return PointCloudSegmentation(model, 12, ROOM_CLASSES, adaptive_threshold=True, rampup_steps=0,
                                      ema_decay=0.5)

    datamodule = PointCloudDataModule(data_root=str(room_root), class_names=ROOM_CLASSES, voxel_size=0.05,
                                      crop_points=512, crops_per_epoch=4, batch_size=2, num_layers=3, k=8,
                                      sub_ratios=(4, 4, 4), weak_labels=Count(30))
    torch.manual_seed(0)
    task = small_task()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(task, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    # the engine's state moved away from its initial values during those two steps
    assert int(task.contrastive.queue_count.sum()) > 0
    assert not torch.equal(task.pseudo_label.class_probability, torch.full((12,), 1 / 12))
    student = task.model.state_dict()
    teacher = task.teacher.model.state_dict()
    assert any(not torch.equal(student[k], teacher[k]) for k in student if student[k].is_floating_point())

    restored = PointCloudSegmentation.load_from_checkpoint(tmp_path / "step2.ckpt", model=small_task().model)
    saved, loaded = task.state_dict(), restored.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
    for key in ("teacher.model.encoder.stem.linear.weight", "contrastive.queue", "contrastive.queue_ptr",
                "contrastive.queue_count", "pseudo_label.global_threshold", "pseudo_label.class_probability"):
        assert key in loaded, key


# ---------------------------------------------------------------------------------------------- kill and resume
def toy_args() -> list[str]:
    """The toy task (tests/configs/tiny-weak.yaml) in batches of 2: 4 steps per epoch, 40 in all."""
    return ["--config", str(REPO / "tests/configs/tiny-weak.yaml"), "--data.init_args.batch_size", "2",
            "--checkpoint_every_n_steps", "5"]


def pointcloud_args(rooms: Path) -> list[str]:
    """SQN with dropout, an EMA teacher, FreeMatch thresholds, a prototype queue, two views and a worker,
    at tiny sizes: 4 steps per epoch, 12 in all."""
    classes = "[floor, ceiling, wall, door, window, table, chair, sofa, cabinet, bookshelf, lamp, clutter]"
    model = "--model.init_args.model.init_args."
    return ["--config", str(REPO / "configs/pointcloud/sqn-synthetic-0.1pct.yaml"),
            "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--checkpoint_every_n_steps", "3",
            "--model.init_args.burn_in_steps", "0", "--model.init_args.rampup_steps", "2",
            "--model.init_args.adaptive_threshold", "true",
            "--model.init_args.ema_decay", "0.5",
            f"{model}encoder_kwargs", "{dims: [8, 16, 32], k: 8}", f"{model}head_kwargs", "{hidden: [32]}",
            "--data.init_args.data_root", str(rooms), "--data.init_args.class_names", classes,
            "--data.init_args.crop_points", "512", "--data.init_args.crops_per_epoch", "8",
            "--data.init_args.batch_size", "2", "--data.init_args.num_layers", "3", "--data.init_args.k", "8",
            "--data.init_args.sub_ratios", "[4, 4, 4]", "--data.init_args.num_workers", "1",
            "--data.init_args.weak_labels", "{class_path: vision.labels.protocols.Count, init_args: {n: 30}}"]


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> dict[str, tuple[Path, list[str], str]]:
    """Both killed fits, started together: each spends most of its time importing torch and Lightning.

    Per case: ``(folder, fit arguments, "<epoch> <batch index>" it was killed in)``; the run folder is
    ``folder / "killed"`` and ``folder / "cache"`` the case's ``SPARSEVISION_CACHE``.
    """
    root = tmp_path_factory.mktemp("resume")
    cases = {"toy": (toy_args(), 10), "pointcloud": (pointcloud_args(write_rooms(root / "rooms")), 6)}
    runs = {}
    for name, (args, step) in cases.items():
        (root / name).mkdir()
        fit = KillableFit(args, root / name / "killed", step, {"SPARSEVISION_CACHE": str(root / name / "cache")})
        runs[name] = (root / name, args, fit)
    return {name: (folder, args, fit.kill_when_paused()) for name, (folder, args, fit) in runs.items()}


def resume_and_compare(folder: Path, args: list[str], monkeypatch) -> dict:
    """``fit --ckpt_path last`` on the killed run, an uninterrupted ``fit``, and their final states compared."""
    monkeypatch.setenv("SPARSEVISION_CACHE", str(folder / "cache"))
    fit_here([*args, "--run_dir", str(folder / "killed"), "--ckpt_path", "last"], monkeypatch)
    fit_here([*args, "--run_dir", str(folder / "reference")], monkeypatch)
    resumed = load(folder / "killed" / "checkpoints" / "last.ckpt")
    assert_same_training_state(resumed, load(folder / "reference" / "checkpoints" / "last.ckpt"))
    return resumed


@pytest.mark.slow
def test_killed_toy_fit_resumed_from_last_matches_an_uninterrupted_run(killed_runs, monkeypatch):
    folder, args, where = killed_runs["toy"]
    assert where == "2 2"  # killed in epoch 2 before its third batch: the checkpoint of step 10 is mid-epoch
    interrupted = load(folder / "killed" / "checkpoints" / "last.ckpt")
    assert interrupted["global_step"] == 10
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 2, "batches": 2}]

    assert resume_and_compare(folder, args, monkeypatch)["global_step"] == 40


@pytest.mark.slow
def test_killed_pointcloud_fit_with_the_engine_on_resumes_exactly(killed_runs, monkeypatch):
    folder, args, where = killed_runs["pointcloud"]
    assert where == "1 2"  # killed before step 7, after the checkpoint of step 6 (epoch 1, batch 2 of 4)
    interrupted = load(folder / "killed" / "checkpoints" / "last.ckpt")
    assert interrupted["global_step"] == 6 and int(interrupted["state_dict"]["contrastive.queue_count"].sum()) > 0

    assert resume_and_compare(folder, args, monkeypatch)["global_step"] == 12
