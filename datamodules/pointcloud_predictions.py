"""Write point-cloud predictions back in the user's own format during ``sparsevision predict``.

LAS/LAZ get the labels in ``classification`` (mapped back through the reader's ``class_map``) and an
extra-bytes ``confidence``; PLY gets ``pred_label`` / ``pred_confidence`` properties beside all
original ones; SemanticKITTI ``.bin`` a ``.label`` file; NPY/NPZ and folders ``.pred.npy`` +
``.conf.npy`` (see :func:`datamodules.formats.pointcloud_io.write_predictions`). Files go to
``output_dir/<scene id>.pred.<ext>`` (default ``outputs/predictions``), never over an existing file
unless ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.callbacks import BasePredictionWriter

from datamodules.formats.pointcloud_io import write_predictions
from vision.atomic import OutputExistsError

OVERWRITE_HINT = "already exists; pass --model.init_args.overwrite_predictions true (or another prediction_dir)"


class PointCloudPredictionWriter(BasePredictionWriter):
    """Writes each predicted scene (``predict_step`` output with ``source_path``) beside its scene id.

    Args:
        output_dir: folder of the written files.
        reader_options: the options the scenes were read with (``class_map`` maps labels back).
        overwrite: replace existing prediction files.

    Every file is written atomically by the format's writer (a temporary file renamed when
    complete), and before the first scene is predicted every output path of the predicted split is
    checked, so a second run stops at once instead of after half the scenes.
    """

    def __init__(self, output_dir: str = "outputs/predictions", reader_options: Optional[dict] = None,
                 overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.reader_options, self.overwrite = Path(output_dir), reader_options or {}, overwrite
        self.written: list[Path] = []

    def target(self, sample_id: str, source: Path) -> Path:
        """Where the labels of scene ``sample_id`` read from ``source`` are written."""
        if source.suffix.lower() == ".bin":
            return self.output_dir / f"{sample_id}.pred.label"
        suffix = ".npy" if source.is_dir() or source.suffix.lower() in (".npy", ".npz") else source.suffix
        return self.output_dir / f"{sample_id}.pred{suffix}"

    def on_predict_start(self, trainer, pl_module) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if self.overwrite or not hasattr(datamodule, "scene_files"):
            return
        for path in datamodule.scene_files(datamodule.hparams.predict_split):
            target = self.target(datamodule.scene_id(path), path)
            if target.exists():
                raise OutputExistsError(target, OVERWRITE_HINT)

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for sample_id, source, label, confidence in zip(prediction["sample_id"], prediction["source_path"],
                                                        prediction["label"], prediction["confidence"]):
            if source is None:
                continue
            source = Path(source)
            target = self.target(sample_id, source)
            target.parent.mkdir(parents=True, exist_ok=True)
            options = {k: v for k, v in self.reader_options.items() if k in ("class_map", "learning_map")}
            self.written.append(write_predictions(source, label.cpu().numpy(), confidence.cpu().numpy(),
                                                  out_path=target, overwrite=self.overwrite, **options))
