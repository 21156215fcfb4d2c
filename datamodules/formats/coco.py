"""COCO detection JSON: reader, writer and results writer.

Format (https://cocodataset.org/#format-data): one JSON object with ``images``
(``id, file_name, width, height``), ``annotations`` (``id, image_id, category_id, bbox = [x, y, w, h]``
in 0-based pixels from the top-left image corner) and ``categories`` (``id, name``).

What the reader does with it:

* ``bbox [x, y, w, h]`` becomes ``xyxy = [x, y, x + w, y + h]``; boxes partly outside the image are
  clipped with a warning, empty ones (``w <= 0`` or ``h <= 0``) or ones entirely outside raise.
* Category ids become contiguous class ids ``0..C-1`` in the order of the COCO ids; the COCO ids
  are kept in :attr:`DetectionDataset.category_ids` so that :func:`write_coco` writes them back.
* ``iscrowd: 1`` annotations (a box around a crowd, not one object) are skipped, as torchvision's
  detection references do for training.
* **Point labels (this project's convention for point supervision):** an annotation with a
  ``point: [x, y]`` field (0-based pixels) and no ``bbox`` (or an empty ``bbox: []``) is one click
  on an object of ``category_id``; it lands in :attr:`ImageRecord.points`. COCOeval cannot score
  such annotations, so keep them out of evaluation files.
* **Missing boxes:** an image with ``"boxes_complete": false`` may hold objects without a box
  (unlabelled regions are unknown, not background). Images with point labels are incomplete too.
  Without the field an image is complete. :func:`write_coco` writes the field only when false.

Bad input (malformed JSON, missing fields, duplicate image or annotation ids, unknown category or
image ids, empty boxes, missing image files) raises :class:`~vision.errors.DataError`.
Hand-written rather than ``pycocotools.coco.COCO`` because that one asserts on bad input and
checks none of the above.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from datamodules.formats.detection_common import (
    BadImageHandler,
    DetectionDataset,
    ImageRecord,
    check_box,
    check_image_file,
    check_point,
    per_image,
    refuse_any_existing,
    stack_boxes,
    stack_points,
)
from vision.atomic import atomic_write_text
from vision.errors import DataError, PathLike
from vision.labels.types import BoxLabels


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "COCO annotation file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(path, f"malformed or truncated JSON: {err.msg} at line {err.lineno} "
                              f"column {err.colno}") from err
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason})") from err


def _get(entry: Any, key: str, kinds: tuple, path: Path, where: str):
    """``entry[key]`` checked to be one of ``kinds`` (bool never counts as a number)."""
    if not isinstance(entry, dict):
        raise DataError(path, f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(path, f"{where}: missing field {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DataError(path, f"{where}: field {key!r} has the wrong type ({value!r})")
    return value


def _parse_categories(raw: list, path: Path) -> tuple[list[str], list[int]]:
    by_id: dict[int, str] = {}
    for i, entry in enumerate(raw):
        cat_id = _get(entry, "id", (int,), path, f"categories[{i}]")
        name = _get(entry, "name", (str,), path, f"category id {cat_id}")
        if cat_id in by_id:
            raise DataError(path, f"duplicate category id {cat_id}")
        by_id[cat_id] = name
    ids = sorted(by_id)
    names = [by_id[i] for i in ids]
    if len(set(names)) != len(names):
        raise DataError(path, f"duplicate category names in {names}")
    return names, ids


def _parse_images(raw: list, path: Path) -> dict[str, dict]:
    images: dict[str, dict] = {}
    for i, entry in enumerate(raw):
        image_id = str(_get(entry, "id", (int, str), path, f"images[{i}]"))
        where = f"image id {image_id}"
        if image_id in images:
            raise DataError(path, f"duplicate image id {image_id}")
        width = _get(entry, "width", (int,), path, where)
        height = _get(entry, "height", (int,), path, where)
        if width <= 0 or height <= 0:
            raise DataError(path, f"{where}: image size {width}x{height} is not positive")
        complete = entry.get("boxes_complete", True)
        if not isinstance(complete, bool):
            raise DataError(path, f"{where}: field 'boxes_complete' must be true or false")
        images[image_id] = {"file_name": _get(entry, "file_name", (str,), path, where),
                            "width": width, "height": height, "complete": complete,
                            "boxes": [], "box_classes": [], "points": [], "point_classes": []}
    return images


def _is_point_annotation(entry: dict) -> bool:
    return "point" in entry and not entry.get("bbox")


def _add_annotation(entry: dict, where: str, images: dict, class_of: dict, path: Path) -> None:
    image_id = str(_get(entry, "image_id", (int, str), path, where))
    if image_id not in images:
        raise DataError(path, f"{where}: unknown image id {image_id}")
    category_id = _get(entry, "category_id", (int,), path, where)
    if category_id not in class_of:
        raise DataError(path, f"{where}: unknown category id {category_id}")
    image = images[image_id]
    if _is_point_annotation(entry):
        xy = _get(entry, "point", (list,), path, where)
        image["points"].append(check_point(xy, image["width"], image["height"], path, where))
        image["point_classes"].append(class_of[category_id])
        return
    bbox = _get(entry, "bbox", (list,), path, where)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise DataError(path, f"{where}: bbox {bbox!r} is not [x, y, w, h]")
    x, y, w, h = bbox
    image["boxes"].append(check_box([x, y, x + w, y + h], image["width"], image["height"], path, where))
    image["box_classes"].append(class_of[category_id])


def _parse_annotations(raw: list, images: dict, class_of: dict, path: Path) -> None:
    seen: set = set()
    for i, entry in enumerate(raw):
        where = f"annotations[{i}]"
        if isinstance(entry, dict) and "id" in entry:
            ann_id = _get(entry, "id", (int, str), path, where)
            if ann_id in seen:
                raise DataError(path, f"duplicate annotation id {ann_id}")
            seen.add(ann_id)
            where = f"annotation id {ann_id}"
        if isinstance(entry, dict) and entry.get("iscrowd", 0):
            continue  # crowd regions are not single objects (module docstring)
        _add_annotation(entry, where, images, class_of, path)


def read_coco(json_path: PathLike, images_root: Optional[PathLike] = None,
              verify_images: bool = False, on_bad_image: Optional[BadImageHandler] = None) -> DetectionDataset:
    """Read a COCO detection JSON (boxes and this project's point labels) into a :class:`DetectionDataset`.

    Args:
        json_path: the annotation file.
        images_root: folder the ``file_name`` values are relative to; default: the JSON's folder.
        verify_images: decode every image and compare its size with the JSON (slow); otherwise
            only check that each image file exists.
        on_bad_image: receives the DataError of a missing (or, verified, corrupt) image file, which is
            then left out; None raises it. Errors in the JSON itself always raise.

    Images keep the JSON's order; boxes are ``(K, 4)`` xyxy float32, points ``(P, 2)`` xy float32.
    """
    path = Path(json_path)
    root = Path(images_root) if images_root is not None else path.parent
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(path, f"missing or malformed {key!r} list")
    if not isinstance(data.get("annotations", []), list):
        raise DataError(path, "malformed 'annotations' list")
    names, coco_ids = _parse_categories(data["categories"], path)
    images = _parse_images(data["images"], path)
    _parse_annotations(data.get("annotations", []), images, {c: i for i, c in enumerate(coco_ids)}, path)
    records = []
    for image_id, image in images.items():
        if per_image(on_bad_image, partial(check_image_file, root / image["file_name"], image["width"],
                                           image["height"], verify_images, path)) is None:
            continue
        points = stack_points(image["points"], image["point_classes"])
        complete = image["complete"] and points is None
        records.append(ImageRecord(image_id, image["file_name"], image["width"], image["height"],
                                   stack_boxes(image["boxes"], image["box_classes"], complete), points))
    return DetectionDataset(names, records, root, category_ids=coco_ids)


def coco_id_maps(dataset: DetectionDataset) -> tuple[dict[str, int], list[int]]:
    """The COCO ids :func:`write_coco` gives ``dataset``: ``({image_id: coco image id}, [coco category id])``.

    Image ids stay when they are all integers (a COCO round trip keeps them); otherwise they are
    numbered 1..N in order. Category ids are :attr:`DetectionDataset.category_ids` or 1..C.
    """
    ids = [record.image_id for record in dataset.images]
    if all(i.isdecimal() for i in ids) and len({int(i) for i in ids}) == len(ids):
        image_ids = {i: int(i) for i in ids}
    else:
        image_ids = {i: n + 1 for n, i in enumerate(ids)}
    category_ids = list(dataset.category_ids or range(1, len(dataset.categories) + 1))
    return image_ids, category_ids


def _number(value: float) -> float:
    return round(float(value), 4)  # float32 noise (3.2999999) would make the JSON hard to read


def _annotations(record: ImageRecord, image_id: int, category_ids: list[int], next_id: int) -> list[dict]:
    out = []
    for box, class_id in zip(record.boxes.boxes.astype(np.float64), record.boxes.class_id):
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        out.append({"id": next_id + len(out), "image_id": image_id, "category_id": category_ids[class_id],
                    "bbox": [_number(x1), _number(y1), _number(w), _number(h)],
                    "area": _number(w * h), "iscrowd": 0})
    if record.points is not None:
        for xy, class_id in zip(record.points.xy, record.points.class_id):
            out.append({"id": next_id + len(out), "image_id": image_id,
                        "category_id": category_ids[class_id],
                        "point": [_number(xy[0]), _number(xy[1])], "iscrowd": 0})
    return out


def write_coco(dataset: DetectionDataset, json_path: PathLike, overwrite: bool = False) -> None:
    """Write ``dataset`` as COCO JSON (atomically: temporary file, then :func:`os.replace`).

    ``file_name`` values are written relative to the JSON's folder, so :func:`read_coco` finds the
    images without an ``images_root``. Images are not copied. Raises DataError when ``json_path``
    exists and ``overwrite`` is False.
    """
    path = Path(json_path)
    refuse_any_existing([path], overwrite)
    image_ids, category_ids = coco_id_maps(dataset)
    images, annotations = [], []
    for record in dataset.images:
        file_name = Path(os.path.relpath(dataset.image_path(record), path.parent)).as_posix()
        entry = {"id": image_ids[record.image_id], "file_name": file_name,
                 "width": int(record.width), "height": int(record.height)}
        if not record.boxes.complete and record.points is None:
            entry["boxes_complete"] = False
        images.append(entry)
        annotations += _annotations(record, entry["id"], category_ids, len(annotations) + 1)
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, dataset.categories)]
    text = json.dumps({"images": images, "annotations": annotations, "categories": categories})
    atomic_write_text(path, text)


PredictionSet = Union[BoxLabels, Mapping[str, Any]]


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors, possibly on a GPU
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _prediction_arrays(prediction: PredictionSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(prediction, BoxLabels):
        return prediction.boxes, prediction.class_id, prediction.confidence.astype(np.float32)
    return (_as_numpy(prediction["boxes"]).reshape(-1, 4), _as_numpy(prediction["labels"]).reshape(-1),
            _as_numpy(prediction["scores"]).reshape(-1))


def write_coco_results(predictions: Mapping[str, PredictionSet], json_path: PathLike,
                       image_id_map: Mapping[str, int], category_id_map: Sequence[int],
                       overwrite: bool = False) -> None:
    """Write detections as a COCO results file: a JSON list of ``{image_id, category_id, bbox, score}``.

    Args:
        predictions: per image id, a :class:`BoxLabels` (score = ``confidence``) or a torchvision-style
            dict with ``boxes: (K, 4)`` xyxy pixels, ``labels: (K,)`` 0-based class ids, ``scores: (K,)``.
        json_path: output file, written atomically.
        image_id_map: image id -> COCO image id (see :func:`coco_id_maps`).
        category_id_map: 0-based class id -> COCO category id.
    """
    path = Path(json_path)
    refuse_any_existing([path], overwrite)
    results = []
    for image_id, prediction in predictions.items():
        if image_id not in image_id_map:
            raise DataError(path, f"prediction for image {image_id!r} has no COCO image id in image_id_map")
        boxes, labels, scores = _prediction_arrays(prediction)
        for box, label, score in zip(boxes.astype(np.float64), labels, scores):
            if not 0 <= int(label) < len(category_id_map):
                raise DataError(path, f"image {image_id!r}: class id {int(label)} has no COCO category id")
            if not (math.isfinite(float(score)) and np.all(np.isfinite(box))):
                raise DataError(path, f"image {image_id!r}: non-finite box or score")
            x1, y1, x2, y2 = box
            results.append({"image_id": int(image_id_map[image_id]),
                            "category_id": int(category_id_map[int(label)]),
                            "bbox": [_number(x1), _number(y1), _number(x2 - x1), _number(y2 - y1)],
                            "score": round(float(score), 6)})
    atomic_write_text(path, json.dumps(results))
