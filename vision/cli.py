"""The ``sparsevision`` command: LightningCLI for training plus the sparse-label tools.

``fit | validate | test | predict`` are LightningCLI subcommands (models and datamodules chosen by
``class_path`` in YAML). ``sparsify | convert | selftrain | demo | benchmark | visualize`` are
dispatched to ``vision.commands.<name>.main(argv)``; each module owns its own argument parser.

Run layout (CONVENTIONS.md): ``outputs/runs/<config-stem>/`` holds ``checkpoints/`` (with
``last.ckpt``), ``tensorboard/version_N/`` (with the ``config.yaml`` LightningCLI saves for each call) and
``csv/version_N/metrics.csv``. ``validate``, ``test`` and ``predict`` default to that run's ``last.ckpt``
when no ``--ckpt_path`` is given. A checkpoint trained with other model options (another
``num_classes``, a teacher the command's model does not have) raises a :class:`~vision.errors.DataError`
naming the checkpoint, the keys and options that differ, and the fit's saved ``config.yaml``.

Interrupted training: ``fit`` writes ``checkpoints/last.ckpt`` at the end of each epoch (with the
epoch's ``epoch=E-step=S.ckpt``) and, with ``--checkpoint_every_n_steps N``, also every ``N`` training
steps; ``last.ckpt`` is always the newest state (written over, never ``last-v1.ckpt``, and once more
when training ends). A killed run continues with the same command plus ``--ckpt_path last``, and
ends with the same weights as an uninterrupted run: the training loader resumes mid-epoch
(:class:`datamodules.sampling.ResumableDataLoader`), training steps draw their randomness from
``(seed, epoch, batch)`` (:class:`vision.engine.exact_resume.ExactResume`, added by default), and the
engine's state (EMA teacher, second student, prototype queues, FreeMatch thresholds) is saved in
the checkpoint as module buffers::

    sparsevision fit --config configs/pointcloud/sqn-synthetic-0.1pct.yaml --checkpoint_every_n_steps 200
    # ... killed ...
    sparsevision fit --config configs/pointcloud/sqn-synthetic-0.1pct.yaml --checkpoint_every_n_steps 200 \
        --ckpt_path last
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from vision.errors import DataError

LIGHTNING_SUBCOMMANDS = {
    "fit": "train a model (LightningCLI)",
    "validate": "score a checkpoint on the validation split (LightningCLI)",
    "test": "score a checkpoint on the test split against full labels (LightningCLI)",
    "predict": "predict and write results back in the input's format (LightningCLI)",
}

#: Tool subcommands and the module implementing each (``main(argv) -> int``).
TOOL_SUBCOMMANDS = {
    "sparsify": "make a seeded weak-label file from a dataset's full labels",
    "convert": "convert datasets between on-disk formats",
    "selftrain": "self-training rounds: predict, keep confident labels, retrain",
    "demo": "train sparse vs full labels on built-in synthetic data and write a report",
    "benchmark": "run the label-efficiency and throughput benchmarks",
    "visualize": "render labels and predictions as PNG pictures",
}

DEFAULT_RUNS_ROOT = Path("outputs") / "runs"


def _usage() -> str:
    lines = ["usage: sparsevision <subcommand> [options]", "",
             "Train vision models from sparse labels.", "", "training (LightningCLI; see `sparsevision fit --help`):"]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_SUBCOMMANDS.items()]
    lines += ["", "tools (see `sparsevision <tool> --help`):"]
    lines += [f"  {name:<10} {text}" for name, text in TOOL_SUBCOMMANDS.items()]
    return "\n".join(lines)


def run_dir_for(config_paths: Sequence[os.PathLike] | None, run_dir: Optional[str] = None) -> Path:
    """Where a run writes: ``run_dir`` if given, else ``outputs/runs/<stem of the last --config>``."""
    if run_dir:
        return Path(run_dir)
    stems = [Path(os.fspath(getattr(p, "relative", p))).stem for p in (config_paths or [])]
    return DEFAULT_RUNS_ROOT / (stems[-1] if stems else "default")


def newest_last_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """The most recently written ``last*.ckpt`` in ``checkpoint_dir`` (None when there is none)."""
    candidates = [p for p in Path(checkpoint_dir).glob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


#: How :meth:`torch.nn.Module.load_state_dict` starts its message for missing, unexpected or mis-shaped keys.
STATE_DICT_ERROR = "Error(s) in loading state_dict"
#: How many missing / unexpected / mis-shaped keys and differing options a mismatch error lists.
SHOWN_DIFFERENCES = 5


def _first(items: list[str]) -> str:
    more = len(items) - SHOWN_DIFFERENCES
    return ", ".join(items[:SHOWN_DIFFERENCES]) + (f" (and {more} more)" if more > 0 else "")


def _comparable(value):
    """``value`` as plain JSON types, so tuples from a model's hparams equal lists read back from YAML."""
    return json.loads(json.dumps(value, default=str))


def _option_text(value) -> str:
    """``value`` as a command-line value jsonargparse reads back (``32``, ``true``, ``null``, ``[1, 2]``)."""
    value = _comparable(value)
    return value if isinstance(value, str) else json.dumps(value)


def saved_fit_config(checkpoint: os.PathLike, hyper_parameters: dict) -> Optional[Path]:
    """The ``config.yaml`` LightningCLI saved for the run that wrote ``checkpoint`` (None if none is found).

    LightningCLI saves one per call in ``<run>/tensorboard/version_N/`` (``<run>`` is the parent of the
    checkpoint's ``checkpoints/`` folder), for ``test`` calls too: the newest one whose model options agree
    with the checkpoint's ``hyper_parameters`` is the fit's.
    """
    import yaml

    run = Path(checkpoint).resolve().parent.parent
    saved = {key: _comparable(value) for key, value in hyper_parameters.items() if not key.startswith("_")}
    configs = sorted(run.glob("*/version_*/config.yaml"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in configs:
        try:
            model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        options = (model.get("init_args") or {}) if isinstance(model, dict) else {}
        shared = [key for key in options if key in saved]
        if shared and all(_comparable(options[key]) == saved[key] for key in shared):
            return path
    return None


def checkpoint_mismatch_error(checkpoint: os.PathLike, model) -> DataError:
    """The :class:`~vision.errors.DataError` for a checkpoint whose weights do not fit ``model``.

    Lists up to :data:`SHOWN_DIFFERENCES` keys missing from the checkpoint, keys the model does not have
    and shape mismatches (the checkpoint's ``state_dict`` against ``model.state_dict()``, taken after the
    failed load, so modules the model builds in ``on_load_checkpoint`` count as its own), the model
    options that differ from the checkpoint's ``hyper_parameters``, and the fit's saved ``config.yaml``.
    """
    import torch

    try:  # weights only: the tensors and plain hyper-parameters are all this needs
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # an unreadable checkpoint says so, not a second traceback
        return DataError(checkpoint, f"cannot be read to compare with the model ({error})")
    weights = {key: tuple(value.shape) for key, value in (saved.get("state_dict") or {}).items()
               if hasattr(value, "shape")}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    differences = {
        "keys missing from the checkpoint": [key for key in expected if key not in weights],
        "keys this model does not have": [key for key in weights if key not in expected],
        "shapes that differ": [f"{key} (checkpoint {list(weights[key])}, model {list(shape)})"
                               for key, shape in expected.items() if key in weights and weights[key] != shape]}
    found = "; ".join(f"{name}: {_first(keys)}" for name, keys in differences.items() if keys)
    hyper_parameters = dict(saved.get("hyper_parameters") or {})
    current = dict(getattr(model, "hparams", None) or {})
    options = [f"--model.init_args.{key}={_option_text(value)} (this command: {_option_text(current[key])})"
               for key, value in hyper_parameters.items()
               if not key.startswith("_") and key in current and _comparable(value) != _comparable(current[key])]
    advice = "pass the same --model options as the fit that wrote it"
    if options:
        advice += f"; the checkpoint has {_first(options)}"
    config = saved_fit_config(checkpoint, hyper_parameters)
    if config is not None:
        advice += f"; or pass that fit's saved config: --config {config}"
    return DataError(checkpoint, "the checkpoint was trained with different model options than this "
                                 f"command's model ({found or 'its weights do not load'}); {advice}")


def _lightning_cli_class():
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from vision.engine.exact_resume import ExactResume

    class RunCheckpoint(ModelCheckpoint):
        """ModelCheckpoint that also writes ``last.ckpt`` when training ends, whatever its schedule.

        Epoch checkpoints follow validation (``check_val_every_n_epoch``) and a ``max_steps`` run can stop
        mid-epoch, so without this the final weights could be missing from ``last.ckpt``.
        """

        def on_train_end(self, trainer, pl_module) -> None:
            super().on_train_end(trainer, pl_module)
            if self.save_last and self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    class SparseVisionCLI(LightningCLI):
        """LightningCLI with the project's run folder, loggers, checkpoints and progress bar."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--run_dir", type=Optional[str], default=None,
                                help="Run folder (default: outputs/runs/<config-stem>/).")
            parser.add_argument("--checkpoint_every_n_steps", type=Optional[int], default=None,
                                help="fit: also write checkpoints/last.ckpt every N training steps, so an "
                                     "interrupted run resumes (--ckpt_path last) close to where it stopped.")

        def _run_dir(self) -> Path:
            config = self.config[self.subcommand] if self.subcommand else self.config
            return run_dir_for(config.get("config"), config.get("run_dir"))

        def before_instantiate_classes(self) -> None:
            if self.subcommand in ("validate", "test", "predict"):
                config = self.config[self.subcommand]
                last = self._run_dir() / "checkpoints" / "last.ckpt"
                if config.get("ckpt_path") is None and last.is_file():
                    print(f"sparsevision: using checkpoint {last}", file=sys.stderr)
                    config["ckpt_path"] = str(last)
            if self.subcommand == "fit" and self.config["fit"].get("ckpt_path") == "last":
                # our own lookup: Lightning's looks in each ModelCheckpoint's folder, which for a callback
                # without dirpath is the logger's new version_N folder, never the interrupted run's
                last = newest_last_checkpoint(self._run_dir() / "checkpoints")
                if last is not None:
                    print(f"sparsevision: resuming from {last}", file=sys.stderr)
                    self.config["fit"]["ckpt_path"] = str(last)

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except RuntimeError as error:
                checkpoint = self.config[subcommand].get("ckpt_path")
                if not checkpoint or not str(error).startswith(STATE_DICT_ERROR) or not Path(checkpoint).is_file():
                    raise
                raise checkpoint_mismatch_error(checkpoint, self.model) from error

        def instantiate_trainer(self, **kwargs):
            run_dir = self._run_dir()
            trainer_config = self._get(self.config_init, "trainer", default={})
            if trainer_config.get("default_root_dir") is None:
                kwargs["default_root_dir"] = str(run_dir)
            if trainer_config.get("logger") in (None, True):
                kwargs["logger"] = [TensorBoardLogger(str(run_dir), name="tensorboard"),
                                    CSVLogger(str(run_dir), name="csv")]
            callbacks = list(trainer_config.get("callbacks") or [])
            checkpoints = str(run_dir / "checkpoints")
            for callback in callbacks:  # every checkpoint of a run goes to its checkpoints/ folder
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = checkpoints
            checkpointing = trainer_config.get("enable_checkpointing") in (None, True)
            if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                # written over in place: a stale last.ckpt must never hide a newer last-v1.ckpt
                callbacks.append(RunCheckpoint(dirpath=checkpoints, save_last=True, enable_version_counter=False))
            every = self._get(self.config, "checkpoint_every_n_steps")
            if every and checkpointing:  # last.ckpt only: the epoch checkpoints above stay the run's milestones
                callbacks.append(RunCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0,
                                               every_n_train_steps=int(every), enable_version_counter=False))
            if not any(isinstance(c, ExactResume) for c in callbacks):
                callbacks.append(ExactResume())
            wants_bar = trainer_config.get("enable_progress_bar") in (None, True)
            if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
                callbacks.append(RichProgressBar(leave=True))
            kwargs["callbacks"] = callbacks
            return super().instantiate_trainer(**kwargs)

    return SparseVisionCLI


def _make_cli(argv: Sequence[str], run: bool):
    """The project's LightningCLI on ``argv`` (models and datamodules by ``class_path``, seed 0 by default)."""
    import warnings

    # args are always given explicitly (tools/*.py prepend the subcommand); the warning is noise
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    return _lightning_cli_class()(model_class=None, datamodule_class=None, subclass_mode_model=True,
                                  subclass_mode_data=True, seed_everything_default=0, args=list(argv), run=run)


def run_lightning(argv: Sequence[str]) -> int:
    """Run a LightningCLI subcommand (``fit``, ``validate``, ``test``, ``predict``)."""
    _make_cli(argv, run=True)
    return 0


def build_cli(argv: Sequence[str]):
    """Instantiate model, datamodule and trainer from config arguments without running anything.

    ``argv`` are the options of a ``fit`` call (``--config X.yaml --data.init_args.batch_size 2``); the
    returned LightningCLI has ``.model``, ``.datamodule`` and ``.trainer``, for tools such as
    ``selftrain`` that chain several Lightning calls.
    """
    return _make_cli(argv, run=False)


def run_tool(name: str, argv: Sequence[str]) -> int:
    """Dispatch a tool subcommand to ``vision.commands.<name>.main``."""
    module_name = f"vision.commands.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"sparsevision {name}: not available yet (no {module_name} module in this version)", file=sys.stderr)
        return 2
    return int(module.main(list(argv)) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in TOOL_SUBCOMMANDS:
        return run_tool(name, rest)
    if name in LIGHTNING_SUBCOMMANDS:
        return run_lightning(argv)
    print(f"sparsevision: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
    return 2


def console_main() -> int:
    """The ``sparsevision`` console script: :func:`main`, but bad input (:class:`DataError`) is printed as
    one ``sparsevision: error: <file>: <reason>`` line with exit status 1 instead of a traceback.
    ``SPARSEVISION_TRACEBACK=1`` shows the traceback (for bug reports)."""
    try:
        return main()
    except DataError as error:
        if os.environ.get("SPARSEVISION_TRACEBACK"):
            raise
        print(f"sparsevision: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console_main())
