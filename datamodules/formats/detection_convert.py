"""Convert detection datasets between COCO JSON, Pascal VOC XML and YOLO txt (``sparsevision convert``).

A conversion reads the source into a :class:`DetectionDataset` and writes it with the target's
writer; the readers validate everything on the way in, so a conversion never copies bad labels.

Where things go:

* ``coco``: ``src`` is the JSON file, or a folder holding ``annotations.json``; ``dst`` is a folder
  that receives ``annotations.json`` and ``images/``.
* ``voc``: ``src``/``dst`` is the VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``).
* ``yolo``: ``src``/``dst`` is the YOLO root (``images/``, ``labels/``, ``classes.txt``, ``data.yaml``).

**Images are hard-linked** into the destination (no disk space used, and unlike symlinks the
links survive moving or deleting the source), **and copied** when a hard link is impossible
(another file system). They are never re-encoded. Destination image names are the source base
names, so their stems must be unique.

What does not survive every format: point labels exist only in COCO (writing them as VOC/YOLO
raises DataError); "boxes may be missing" flags exist only in COCO; VOC sorts class names
alphabetically when read back; YOLO keeps coordinates to 8 decimals of the image size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from datamodules.formats.coco import read_coco, write_coco
from datamodules.formats.detection_common import (
    DetectionDataset,
    flat_file_names,
    place_image,
    refuse_any_existing,
)
from datamodules.formats.voc import read_voc, write_voc
from datamodules.formats.yolo import read_yolo, write_yolo
from vision.errors import DataError, PathLike

DETECTION_FORMATS = ("coco", "voc", "yolo")
#: Name of the COCO JSON inside a COCO folder written (or read) by the converter.
COCO_JSON_NAME = "annotations.json"


def _check_format(name: str, path: PathLike) -> str:
    if name not in DETECTION_FORMATS:
        raise DataError(path, f"unknown detection format {name!r}; choose one of {', '.join(DETECTION_FORMATS)}")
    return name


def read_detection(src: PathLike, src_format: str, split: Optional[str] = None,
                   verify_images: bool = False) -> DetectionDataset:
    """Read ``src`` in ``src_format`` (``coco | voc | yolo``).

    ``split`` picks the VOC ``ImageSets/Main/<split>.txt`` list (None: every annotation file) or the
    YOLO ``images/<split>`` subfolder; COCO ignores it.
    """
    src = Path(src)
    fmt = _check_format(src_format, src)
    if fmt == "coco":
        json_path = src / COCO_JSON_NAME if src.is_dir() else src
        return read_coco(json_path, verify_images=verify_images)
    if fmt == "voc":
        return read_voc(src, split=split, verify_images=verify_images)
    return read_yolo(src, split=split, verify_images=verify_images)


def _write_coco_folder(dataset: DetectionDataset, dst: Path, overwrite: bool) -> None:
    names = flat_file_names(dataset, dst)
    refuse_any_existing([dst / COCO_JSON_NAME] + [dst / "images" / n for n in names], overwrite)
    for record, name in zip(dataset.images, names):
        place_image(dataset.image_path(record), dst / "images" / name, overwrite)
    records = [dataclasses.replace(record, file_name=name) for record, name in zip(dataset.images, names)]
    placed = dataclasses.replace(dataset, images=records, images_root=dst / "images")
    write_coco(placed, dst / COCO_JSON_NAME, overwrite=overwrite)


def write_detection(dataset: DetectionDataset, dst: PathLike, dst_format: str, split: Optional[str] = None,
                    overwrite: bool = False) -> None:
    """Write ``dataset`` with its images as a ``dst_format`` folder at ``dst`` (see the module docstring).

    ``split`` names the VOC split file (default ``trainval``) or the YOLO subfolder (default none).
    """
    dst = Path(dst)
    fmt = _check_format(dst_format, dst)
    if dst.exists() and not dst.is_dir():
        raise DataError(dst, "destination exists and is not a folder")
    if fmt == "coco":
        _write_coco_folder(dataset, dst, overwrite)
    elif fmt == "voc":
        write_voc(dataset, dst, split=split or "trainval", overwrite=overwrite)
    else:
        write_yolo(dataset, dst, split=split, overwrite=overwrite)


def convert_detection(src: PathLike, src_format: str, dst: PathLike, dst_format: str,
                      overwrite: bool = False, split: Optional[str] = None) -> DetectionDataset:
    """Convert a detection dataset between ``coco``, ``voc`` and ``yolo``; returns what was read.

    Example: ``convert_detection("BCCD", "voc", "bccd_yolo", "yolo")`` writes every VOC image and
    its boxes as a YOLO folder.

    ``split`` selects the source split (VOC split list, YOLO subfolder) and names it in the
    destination. Existing destination files raise DataError unless ``overwrite``.
    """
    if Path(src).resolve() == Path(dst).resolve():
        raise DataError(dst, "destination is the source folder")
    dataset = read_detection(src, src_format, split=split)
    write_detection(dataset, dst, dst_format, split=split, overwrite=overwrite)
    return dataset
