"""``sparsevision convert``: convert datasets between on-disk formats.

Subcommands::

    sparsevision convert pointcloud SRC DST [--format auto|ply|las|laz|npy|npz|kitti|s3dis|scannet|pointcept]
    sparsevision convert detection SRC DST --from coco|voc|yolo --to coco|voc|yolo [--split NAME]
    sparsevision convert images-to-events IMAGES MASKS DST [--seed S] [--duration-ms MS]

``pointcloud`` writes every scene found under SRC as a canonical scene folder
(:func:`datamodules.formats.pointcloud_scene.write_canonical`) under DST, keeping SRC's sub-folders
(an S3DIS ``Area_N`` folder gives one scene per room). ``detection`` calls
:func:`datamodules.formats.detection_convert.convert_detection`. ``images-to-events`` turns labelled
images into event recordings by simulated saccades
(:func:`datamodules.synthetic.saccades.images_to_event_recordings`).

Bad input prints ``sparsevision convert: <path>: <reason>`` and returns 2; existing outputs are never
replaced without ``--overwrite`` (checked before anything is written). Every file is written under a
hidden temporary name and renamed when complete (:mod:`vision.atomic`; a scene folder as a whole), so
an interrupted conversion leaves no half-written output under a name a later run would read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.formats import las, npy_cloud, ply, s3dis, scannet, semantickitti
from datamodules.formats.detection_common import IMAGE_EXTENSIONS
from datamodules.formats.detection_convert import DETECTION_FORMATS, convert_detection
from datamodules.formats.pointcloud_io import SUFFIXES, read_point_cloud
from datamodules.formats.pointcloud_scene import PointCloudScene, write_canonical
from vision.atomic import refuse_existing
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

PROG = "sparsevision convert"

#: ``--format`` of file formats -> the file name endings that hold one scene.
FILE_FORMATS = {"ply": (".ply",), "las": (".las", ".laz"), "laz": (".laz",), "npy": (".npy",), "npz": (".npz",),
                "kitti": (".bin",), "scannet": ("_vert.npy",)}
#: ``--format`` of folder formats -> the test that a folder is one scene.
FOLDER_FORMATS: dict[str, Callable[[Path], bool]] = {
    "s3dis": s3dis.is_s3dis_room,
    "pointcept": lambda folder: (folder / "coord.npy").is_file(),
}
POINTCLOUD_FORMATS = ("auto",) + tuple(FILE_FORMATS) + tuple(FOLDER_FORMATS)
#: Files beside a scene that are not scenes themselves (labels of ScanNet files, written predictions).
SIBLING_ENDINGS = ("_sem_label.npy", "_ins_label.npy", ".conf.npy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Convert datasets between on-disk formats.",
                                     epilog="Run `sparsevision convert <subcommand> --help` for the options.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{pointcloud,detection,images-to-events}")
    _add_pointcloud_parser(commands)
    _add_detection_parser(commands)
    _add_events_parser(commands)
    return parser


def _add_pointcloud_parser(commands) -> None:
    cloud = commands.add_parser(
        "pointcloud", help="point clouds -> canonical scene folders",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write every point-cloud scene under SRC as a canonical scene folder under DST "
                    "(coord.npy, color.npy, intensity.npy, segment.npy, instance.npy, meta.json).",
        epilog="SRC is a file or a folder searched recursively; DST/<path of the scene under SRC without its "
               "suffix>/ is written.\nauto recognises .ply .npy .npz .las .laz .bin (SemanticKITTI) files, "
               "<scene>_vert.npy (ScanNet),\nand folders with meta.json (canonical), coord.npy (Pointcept) or "
               "Annotations/ (an S3DIS room;\nan Area_N folder gives one scene per room).\n"
               "Example: sparsevision convert pointcloud Stanford3dDataset/Area_5 data/s3dis/Area_5")
    cloud.add_argument("src", metavar="SRC", help="a point-cloud file, a scene folder, or a folder of scenes")
    cloud.add_argument("dst", metavar="DST", help="output folder (one sub-folder per scene)")
    cloud.add_argument("--format", default="auto", choices=POINTCLOUD_FORMATS,
                       help="input format (default auto: by file extension / folder layout)")
    cloud.add_argument("--class-map", metavar="JSON", dest="class_map",
                       help='LAS/LAZ: raw classification code -> training id, a JSON file or text such as '
                            '\'{"2": 0, "6": 1}\' (unmapped codes become unlabelled)')
    cloud.add_argument("--learning-map", metavar="YAML", dest="learning_map",
                       help="SemanticKITTI: semantic-kitti.yaml whose learning_map gives the training ids")
    cloud.add_argument("--overwrite", action="store_true", help="replace existing scene folders in DST")


def _add_detection_parser(commands) -> None:
    det = commands.add_parser(
        "detection", help="detection datasets between COCO, Pascal VOC and YOLO",
        description="Convert a detection dataset; images are hard-linked (copied across file systems).",
        epilog="coco: SRC is the JSON file or a folder holding annotations.json; DST gets annotations.json and "
               "images/. voc: the VOC root (Annotations/, JPEGImages/, ImageSets/Main/). yolo: the YOLO root "
               "(images/, labels/, classes.txt). Example: sparsevision convert detection BCCD bccd_coco "
               "--from voc --to coco")
    det.add_argument("src", metavar="SRC", help="source dataset (file or folder, see below)")
    det.add_argument("dst", metavar="DST", help="destination folder")
    det.add_argument("--from", dest="src_format", required=True, choices=DETECTION_FORMATS, help="source format")
    det.add_argument("--to", dest="dst_format", required=True, choices=DETECTION_FORMATS, help="destination format")
    det.add_argument("--split", help="VOC ImageSets/Main/<split>.txt or YOLO images/<split>/ (default: all images)")
    det.add_argument("--overwrite", action="store_true", help="replace existing files in DST")


def _add_events_parser(commands) -> None:
    events = commands.add_parser(
        "images-to-events", help="labelled images -> event recordings by simulated saccades (N-MNIST style)",
        description="Move each image along three saccades (Orchard et al. 2015) and simulate an event camera; "
                    "each image and its mask become DST/<stem>/ (events.h5, labels/*.png, timestamps.txt).",
        epilog="Images (.png .jpg ...) and masks (8-bit class-id PNGs, 255 = ignore) are paired by file stem.")
    events.add_argument("images", metavar="IMAGES", help="folder of images")
    events.add_argument("masks", metavar="MASKS", help="folder of label masks <stem>.png, same sizes as the images")
    events.add_argument("dst", metavar="DST", help="output folder (one recording per image)")
    events.add_argument("--seed", type=int, default=0, help="event noise seed (default 0)")
    events.add_argument("--duration-ms", dest="duration_ms", type=float, default=300.0,
                        help="length of the whole saccade path in ms (default 300)")
    events.add_argument("--pattern", default="triangle", choices=("triangle", "line"), help="saccade path")
    events.add_argument("--contrast", type=float, default=0.2, help="ON/OFF log-intensity threshold (default 0.2)")
    events.add_argument("--overwrite", action="store_true", help="replace existing recordings in DST")


def load_class_map(text: str) -> dict[int, int]:
    """``--class-map``: a JSON file or JSON text mapping raw codes to training ids."""
    where = text if not text.lstrip().startswith("{") else "--class-map"
    try:
        raw = json.loads(Path(text).read_text(encoding="utf-8") if where != "--class-map" else text)
        mapping = {int(code): int(train_id) for code, train_id in raw.items()}
    except FileNotFoundError:
        raise DataError(where, "class map file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as err:
        raise DataError(where, f"not a JSON object of raw code -> training id ({err})") from None
    return mapping


def _is_scene_file(path: Path, fmt: str) -> bool:
    name = path.name.lower()
    if name.startswith("."):  # hidden: e.g. the temporary file of a write that was interrupted
        return False
    if fmt == "auto":
        return (path.suffix.lower() in SUFFIXES and ".pred." not in name
                and not name.endswith(SIBLING_ENDINGS))
    endings = FILE_FORMATS.get(fmt, ())
    if fmt == "npy" and name.endswith(SIBLING_ENDINGS + ("_vert.npy",)):
        return False
    return name.endswith(endings) and ".pred." not in name


def _is_scene_folder(path: Path, fmt: str) -> bool:
    if fmt == "auto":
        return ((path / "meta.json").is_file() or (path / "coord.npy").is_file() or s3dis.is_s3dis_room(path))
    return fmt in FOLDER_FORMATS and FOLDER_FORMATS[fmt](path)


def _scene_name(relative: Path, is_file: bool) -> str:
    """``Area_1/office_1`` for folders; files lose their suffix, ScanNet's ``_vert`` and KITTI's ``velodyne/``."""
    if not is_file:
        return relative.as_posix()
    stem = relative.name[:-len("_vert.npy")] if relative.name.endswith("_vert.npy") else Path(relative.name).stem
    parent = relative.parent
    if parent.name == "velodyne" and relative.suffix == ".bin":
        parent = parent.parent
    return (parent / stem).as_posix()


def discover_scenes(src: Path, fmt: str) -> list[tuple[str, Path]]:
    """``(scene name, path)`` of every scene under ``src`` in name order; DataError when there is none."""
    if not src.exists():
        raise DataError(src, "does not exist")
    if src.is_file():
        return [(_scene_name(Path(src.name), True), src)]
    if _is_scene_folder(src, fmt):
        return [(src.name, src)]
    scenes = []
    for folder, subfolders, files in os.walk(src):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))  # skip temporary folders
        for name in list(subfolders):
            if _is_scene_folder(here / name, fmt):
                scenes.append((_scene_name((here / name).relative_to(src), False), here / name))
                subfolders.remove(name)  # a scene folder's files are not scenes of their own
        scenes += [(_scene_name((here / f).relative_to(src), True), here / f) for f in sorted(files)
                   if _is_scene_file(here / f, fmt)]
    if not scenes:
        raise DataError(src, f"no point-cloud scenes found (format {fmt})")
    names = Counter(name for name, _ in scenes)
    clash = [name for name, count in names.items() if count > 1]
    if clash:
        paths = [str(path) for name, path in scenes if name == clash[0]]
        raise DataError(src, f"several inputs would become the scene {clash[0]!r}: {', '.join(paths)}")
    return sorted(scenes)


def read_scene(path: Path, fmt: str, class_map: Optional[dict], learning_map) -> PointCloudScene:
    """Read one scene with the reader of ``fmt`` (``auto``: by extension or folder layout)."""
    suffix = "" if path.is_dir() else path.suffix.lower()
    if fmt == "auto":
        opts = {}
        if suffix in (".las", ".laz") and class_map is not None:
            opts["class_map"] = class_map
        if suffix == ".bin" and learning_map is not None:
            opts["learning_map"] = learning_map
        return read_point_cloud(path, **opts)
    readers = {
        "ply": ply.read_ply, "npy": npy_cloud.read_npy_cloud, "npz": npy_cloud.read_npz_cloud,
        "s3dis": s3dis.read_s3dis_room, "scannet": scannet.read_scannet_vert,
        "pointcept": scannet.read_pointcept_scene,
        "las": lambda p: las.read_las(p, class_map=class_map), "laz": lambda p: las.read_las(p, class_map=class_map),
        "kitti": lambda p: semantickitti.read_semantickitti_scan(p, learning_map=learning_map),
    }
    return readers[fmt](path)


def _check_destination(src: Path, dst: Path) -> None:
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise DataError(dst, "destination lies inside the source; choose a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise DataError(dst, "destination exists and is not a folder")


def _check_label_maps(scenes: list[tuple[str, Path]], fmt: str, src: Path, class_map, learning_map) -> None:
    """A label map that no scene uses would silently leave raw labels: refuse it."""
    suffixes = {path.suffix.lower() for _, path in scenes if path.is_file()}
    if class_map is not None and fmt not in ("las", "laz") and not suffixes & {".las", ".laz"}:
        raise DataError(src, "--class-map applies to LAS/LAZ files, and there are none here")
    if learning_map is not None and fmt != "kitti" and ".bin" not in suffixes:
        raise DataError(src, "--learning-map applies to SemanticKITTI .bin scans, and there are none here")


def convert_pointclouds(src: Path, dst: Path, fmt: str = "auto", class_map: Optional[dict] = None,
                        learning_map: Optional[str] = None, overwrite: bool = False) -> list[dict]:
    """Write every scene under ``src`` as ``dst/<name>/``; returns one stats dict per scene."""
    _check_destination(src, dst)
    scenes = discover_scenes(src, fmt)
    for name, _ in scenes:  # all checked before the first write: a refused run changes nothing
        refuse_existing(dst / name, overwrite)
    _check_label_maps(scenes, fmt, src, class_map, learning_map)
    label_map = semantickitti.load_learning_map(learning_map) if learning_map else None
    stats = []
    for name, path in scenes:
        scene = read_scene(path, fmt, class_map, label_map)
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        write_canonical(scene, dst / name, overwrite=overwrite)
        stats.append(scene_stats(name, scene))
    return stats


def scene_stats(name: str, scene: PointCloudScene) -> dict:
    """Points, labelled points and labelled points per class name of one scene."""
    labels = scene.semantic if scene.semantic is not None else np.zeros(0, np.int64)
    labelled = labels[labels != IGNORE_INDEX]
    ids, counts = np.unique(labelled, return_counts=True)
    names = scene.class_names or []
    per_class = {(names[i] if i < len(names) else f"class {i}"): int(c) for i, c in zip(ids.tolist(), counts)}
    return {"name": name, "points": scene.num_points, "labelled": int(labelled.size), "per_class": per_class}


def pointcloud_summary(stats: list[dict], dst: Path) -> str:
    points, labelled = sum(s["points"] for s in stats), sum(s["labelled"] for s in stats)
    per_class: Counter = Counter()
    for s in stats:
        per_class.update(s["per_class"])
    lines = [f"wrote {len(stats)} scene{'s' if len(stats) != 1 else ''} to {dst}"]
    lines += [f"  {s['name']}: {s['points']} points, {s['labelled']} labelled" for s in stats]
    share = f" ({100.0 * labelled / points:.4g}%)" if points else ""
    lines.append(f"total: {points} points, {labelled} labelled{share}")
    lines.append("labelled points per class: " + (", ".join(f"{k}: {v}" for k, v in per_class.items()) or "none"))
    return "\n".join(lines)


def _run_pointcloud(args) -> None:
    class_map = load_class_map(args.class_map) if args.class_map else None
    stats = convert_pointclouds(Path(args.src), Path(args.dst), args.format, class_map, args.learning_map,
                                args.overwrite)
    print(pointcloud_summary(stats, Path(args.dst)))


def _run_detection(args) -> None:
    dataset = convert_detection(args.src, args.src_format, args.dst, args.dst_format, overwrite=args.overwrite,
                                split=args.split)
    counts = ", ".join(f"{name}: {n}" for name, n in dataset.class_counts().items()) or "none"
    print(f"wrote {len(dataset.images)} images, {dataset.num_boxes} boxes and {dataset.num_points} points "
          f"as {args.dst_format} to {args.dst}\nboxes per class: {counts}")


def pair_by_stem(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs: every image in ``images`` with ``masks/<stem>.png``."""
    for folder in (images, masks):
        if not folder.is_dir():
            raise DataError(folder, "folder does not exist")
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not found:
        raise DataError(images, f"no images ({', '.join(IMAGE_EXTENSIONS)})")
    pairs = []
    for image in found:
        mask = masks / f"{image.stem}.png"
        if not mask.is_file():
            raise DataError(image, f"no mask {mask.name} in {masks}")
        pairs.append((image, mask))
    return pairs


def _run_images_to_events(args) -> None:
    try:
        from datamodules.synthetic.saccades import images_to_event_recordings
    except ImportError as err:
        raise DataError(args.images, f"images-to-events is not available in this version ({err})") from None
    pairs = pair_by_stem(Path(args.images), Path(args.masks))
    folders = images_to_event_recordings(pairs, args.dst, seed=args.seed, saccade_pattern=args.pattern,
                                         duration_ms=args.duration_ms, contrast=args.contrast,
                                         overwrite=args.overwrite)
    print(f"wrote {len(folders)} event recording{'s' if len(folders) != 1 else ''} to {args.dst} (seed {args.seed})")


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    run = {"pointcloud": _run_pointcloud, "detection": _run_detection,
           "images-to-events": _run_images_to_events}[args.command]
    try:
        run(args)
    except (DataError, FileExistsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        if "overwrite=True" in str(exc) and "--overwrite" not in str(exc):
            print(f"{PROG}: pass --overwrite to replace existing outputs", file=sys.stderr)
        return 2
    return 0
