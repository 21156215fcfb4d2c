"""In-memory detection dataset shared by the COCO, Pascal VOC and YOLO readers and writers.

Every reader returns a :class:`DetectionDataset` and every writer takes one, so a conversion is a
read followed by a write. Coordinates follow :mod:`vision.labels.types`: boxes are ``xyxy`` float32 in
0-based pixels (the top-left corner of the image is ``(0, 0)``, the bottom-right ``(W, H)``), points
are ``xy`` float32 pixels, class ids are 0-based and index :attr:`DetectionDataset.categories`.

Validation shared by the formats lives here too: :func:`check_box` clips boxes that stick out of
the image (with a :class:`BoxClippedWarning`) and rejects empty ones, :func:`check_image_file`
rejects missing or (with ``verify=True``) undecodable images.

>>> import numpy as np
>>> check_box(np.array([-2.0, 1.0, 5.0, 3.0]), 4, 4, "a.json", "annotation 7").tolist()
[0.0, 1.0, 4.0, 3.0]
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from vision.atomic import refuse_existing
from vision.errors import DataError, PathLike
from vision.labels.types import BoxLabels, PointLabels

T = TypeVar("T")
#: What PIL raises for a corrupt image (its plugins also raise SyntaxError/ValueError on bad headers,
#: and DecompressionBombError when a corrupt header claims a gigantic size).
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

#: Image file extensions the flat image folders (VOC ``JPEGImages/``, YOLO ``images/``) hold.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Boxes may overshoot the image by this much (float round-off of normalised YOLO numbers) before
#: clipping them earns a warning.
CLIP_TOLERANCE_PX = 0.01


class BoxClippedWarning(UserWarning):
    """A box reached outside its image and was clipped to it."""


class SuspiciousBoxWarning(UserWarning):
    """A box that is valid but very likely an annotation mistake (e.g. a zero-size box in the file)."""


@dataclass
class ImageRecord:
    """One image and its labels.

    Args:
        image_id: unique id within the dataset (COCO: the numeric id as text; VOC: the file stem;
            YOLO: the image path relative to ``images/`` without extension).
        file_name: image path relative to :attr:`DetectionDataset.images_root`.
        width, height: image size in pixels.
        boxes: ``(K, 4)`` xyxy boxes with class ids; ``complete=False`` when the image holds objects
            without a box (points only, dropped VOC ``difficult`` objects).
        points: ``(P, 2)`` xy point labels (one click per object, no box), or None.
    """

    image_id: str
    file_name: str
    width: int
    height: int
    boxes: BoxLabels
    points: Optional[PointLabels] = None


@dataclass
class DetectionDataset:
    """A detection dataset in memory: class names, images with boxes/points, and the images folder.

    Args:
        categories: class names; class id ``i`` is ``categories[i]``.
        images: one :class:`ImageRecord` per image (images without labels included).
        images_root: folder that the records' ``file_name`` values are relative to.
        category_ids: the source's own category ids (COCO ``categories[].id``) in the order of
            ``categories``, so that a COCO round trip keeps them; None for formats without them.
    """

    categories: list[str]
    images: list[ImageRecord]
    images_root: Path
    category_ids: Optional[list[int]] = field(default=None)

    def __post_init__(self) -> None:
        self.images_root = Path(self.images_root)
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"duplicate category names in {self.categories}")
        if self.category_ids is not None and len(self.category_ids) != len(self.categories):
            raise ValueError("category_ids must give one id per category")

    def image_path(self, record: ImageRecord) -> Path:
        """Absolute location of ``record``'s image file."""
        return self.images_root / record.file_name

    def class_counts(self) -> dict[str, int]:
        """Number of boxes per class name (all classes listed, zeros included)."""
        counts = Counter()
        for record in self.images:
            counts.update(record.boxes.class_id.tolist())
        return {name: counts[i] for i, name in enumerate(self.categories)}

    @property
    def num_boxes(self) -> int:
        return sum(len(record.boxes) for record in self.images)

    @property
    def num_points(self) -> int:
        return sum(len(record.points) for record in self.images if record.points is not None)


def _fmt_box(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def check_box(box, width: float, height: float, path: PathLike, where: str) -> np.ndarray:
    """Validate one xyxy ``box`` against a ``width x height`` image; returns it clipped, ``(4,)`` float32.

    A box partly outside the image is clipped and a :class:`BoxClippedWarning` names ``path``,
    ``where`` (e.g. ``"annotation id 7"``) and the box. A box with ``x2 <= x1`` or ``y2 <= y1``,
    non-finite numbers, or nothing left inside the image raises :class:`DataError`.
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape[0] != 4 or not np.all(np.isfinite(box)):
        raise DataError(path, f"{where}: box {box.tolist()} is not 4 finite numbers")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise DataError(path, f"{where}: empty box {_fmt_box(box)} (x2 <= x1 or y2 <= y1)")
    clipped = np.clip(box, 0.0, [width, height, width, height])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise DataError(path, f"{where}: box {_fmt_box(box)} lies entirely outside the "
                              f"{width:g}x{height:g} image")
    if np.abs(clipped - box).max() > CLIP_TOLERANCE_PX:
        warnings.warn(f"{os.fspath(path)}: {where}: box {_fmt_box(box)} reaches outside the "
                      f"{width:g}x{height:g} image; clipped to {_fmt_box(clipped)}",
                      BoxClippedWarning, stacklevel=2)
    return clipped.astype(np.float32)


def check_point(xy, width: float, height: float, path: PathLike, where: str) -> np.ndarray:
    """Validate one ``(x, y)`` point label; it must lie in ``[0, W] x [0, H]``. Returns ``(2,)`` float32."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1)
    if xy.shape[0] != 2 or not np.all(np.isfinite(xy)):
        raise DataError(path, f"{where}: point {xy.tolist()} is not 2 finite numbers")
    if not (0 <= xy[0] <= width and 0 <= xy[1] <= height):
        raise DataError(path, f"{where}: point [{xy[0]:g}, {xy[1]:g}] lies outside the "
                              f"{width:g}x{height:g} image")
    return xy.astype(np.float32)


def read_text(path: PathLike, what: str) -> str:
    """The UTF-8 text of ``path`` (``what`` names it in errors: "split file", "label file"...).

    Raises DataError for a missing or unreadable file and for bytes that are not UTF-8.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"{what} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(path, f"cannot read the {what} ({err.strerror or err})") from None


def read_image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image from its header (PIL reads no pixels); DataError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except IMAGE_ERRORS as err:
        raise DataError(path, f"cannot read the image header ({err})") from err


#: Receives a per-image DataError instead of raising it (``on_bad_sample: skip``; see the readers).
BadImageHandler = Callable[[DataError], None]


def per_image(on_bad_image: Optional[BadImageHandler], read: Callable[[], T]) -> Optional[T]:
    """``read()`` for one image; with ``on_bad_image`` its DataError is handed over and None returned."""
    if on_bad_image is None:
        return read()
    try:
        return read()
    except DataError as err:
        on_bad_image(err)
        return None


def check_image_file(path: PathLike, width: Optional[int] = None, height: Optional[int] = None,
                     verify: bool = False, referenced_by: Optional[PathLike] = None) -> Path:
    """``path``, checked: :class:`DataError` when the image is missing.

    With ``verify=True`` the image is also fully decoded (a truncated or corrupt JPEG/PNG fails)
    and its size compared with ``width x height`` from the annotation.
    """
    path = Path(path)
    source = f" (referenced by {os.fspath(referenced_by)})" if referenced_by is not None else ""
    if not path.is_file():
        raise DataError(path, f"image file not found{source}")
    if not verify:
        return path
    try:
        with Image.open(path) as image:
            image.load()  # decode every pixel: Image.open alone reads only the header
            size = image.size
    except IMAGE_ERRORS as err:
        raise DataError(path, f"corrupt or truncated image ({err}){source}") from err
    if width is not None and height is not None and size != (width, height):
        raise DataError(path, f"image is {size[0]}x{size[1]} but the annotation says "
                              f"{width}x{height}{source}")
    return path


def stack_boxes(boxes: list[np.ndarray], class_ids: list[int], complete: bool = True) -> BoxLabels:
    """:class:`BoxLabels` from per-box ``(4,)`` arrays (an empty list gives ``(0, 4)``)."""
    array = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    return BoxLabels(boxes=array, class_id=np.asarray(class_ids, np.int32), complete=complete)


def stack_points(points: list[np.ndarray], class_ids: list[int]) -> Optional[PointLabels]:
    """:class:`PointLabels` (xy) from per-point ``(2,)`` arrays, or None when there are none."""
    if not points:
        return None
    return PointLabels(class_id=np.asarray(class_ids, np.int32), xy=np.stack(points).astype(np.float32))


def refuse_any_existing(paths: list[Path], overwrite: bool) -> None:
    """:class:`~vision.atomic.OutputExistsError` (a DataError and a FileExistsError) naming the first
    of ``paths`` that exists, unless ``overwrite``; checked before anything is written."""
    for path in paths:
        refuse_existing(path, overwrite)


def flat_file_names(dataset: DetectionDataset, dst: PathLike) -> list[str]:
    """Base names of the images for a flat image folder (VOC, YOLO); DataError if two share a stem.

    VOC and YOLO match labels to images by file stem, so stems must be unique.
    """
    names = [Path(record.file_name).name for record in dataset.images]
    seen: dict[str, str] = {}
    for record, name in zip(dataset.images, names):
        stem = Path(name).stem
        if stem in seen:
            raise DataError(dst, f"images {seen[stem]!r} and {record.file_name!r} share the stem "
                                 f"{stem!r}; VOC/YOLO folders need unique image names")
        seen[stem] = record.file_name
    return names


def place_image(src: Path, dst: Path, overwrite: bool) -> None:
    """Put the image ``src`` at ``dst``: a hard link when possible, otherwise a copy.

    A hard link costs no disk space and, unlike a symlink, keeps working when the source
    folder is moved or deleted; copying is the fallback across file systems.
    """
    if not src.is_file():
        raise DataError(src, "image file not found")
    if dst.exists() or dst.is_symlink():
        refuse_existing(dst, overwrite)
        if dst.resolve() == src.resolve():
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    # link or copy under a temporary name, then rename: an interrupted copy never sits at ``dst``
    temp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        try:
            os.link(src, temp)
        except OSError:
            shutil.copy2(src, temp)
        os.replace(temp, dst)
    finally:
        temp.unlink(missing_ok=True)


def reject_points(dataset: DetectionDataset, dst: PathLike, format_name: str) -> None:
    """DataError when ``dataset`` has point labels that ``format_name`` cannot store (VOC, YOLO)."""
    if dataset.num_points:
        raise DataError(dst, f"{dataset.num_points} point labels cannot be written as {format_name}; "
                             "write COCO (it keeps points) or drop them first")


def check_class_ids(class_ids: np.ndarray, num_classes: int, path: PathLike, where: str) -> None:
    """DataError when a class id is outside ``0..num_classes-1``."""
    bad = class_ids[(class_ids < 0) | (class_ids >= num_classes)]
    if bad.size:
        raise DataError(path, f"{where}: class id {int(bad[0])} out of range 0..{num_classes - 1}")
