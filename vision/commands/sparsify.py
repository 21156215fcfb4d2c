"""``sparsevision sparsify``: make a seeded weak-label file from a dataset's full labels.

The dataset comes from the ``data:`` section of a LightningCLI config; its DataModule provides
``full_labels(split="train") -> Iterator[(sample_id, DenseLabels | BoxLabels)]`` (the contract every
DataModule of the project implements; it may rely on ``prepare_data()``, which is called first).
The protocol comes from ``--protocol`` and its parameters, or else from the config's
``data.init_args.weak_labels`` and ``weak_label_seed``. Example::

    sparsevision sparsify --config configs/pointcloud/sqn-synthetic-0.1pct.yaml \\
        --protocol ratio --ratio 0.001 --seed 0 --out outputs/weak/synthetic-0.1pct-seed0
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path
from typing import Optional

import yaml

from vision.errors import DataError
from vision.labels.protocols import PROTOCOLS, WeakLabelProtocol, protocol_from_name
from vision.labels.weakfile import WeakLabelSet, import_scannet_indices, sparsify

#: Options that are protocol constructor arguments of the same name.
PARAM_OPTIONS = ("ratio", "n", "k", "rate", "where", "size", "keep_at_least_one")


def _protocol_help() -> str:
    lines = ["protocols (--protocol NAME, then its options):"]
    lines += [f"  {name:<13} {cls.usage}" for name, cls in PROTOCOLS.items()]
    lines += ["", "without --protocol, the config's data.init_args.weak_labels and weak_label_seed are used."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsevision sparsify",
        description="Make a seeded weak-label file (PREFIX.weak.json + PREFIX.weak.npz) from the full labels "
                    "of a config's DataModule (its full_labels(split) method).",
        epilog=_protocol_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="LightningCLI YAML whose data: section names the dataset")
    parser.add_argument("--out", required=True, help="output prefix: writes PREFIX.weak.json and PREFIX.weak.npz")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="weak-label protocol (see below)")
    parser.add_argument("--seed", type=int, default=None,
                        help="label seed (default: the config's weak_label_seed, else 0)")
    parser.add_argument("--split", default="train", help="split whose full labels are sparsified (default train)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing weak-label file")
    parser.add_argument("--import-scannet", metavar="FILE", dest="import_scannet",
                        help="import a ScanNet data-efficient point list (.pth/.json/.npz) instead of drawing")
    group = parser.add_argument_group("protocol parameters")
    group.add_argument("--ratio", type=float, help="ratio: fraction of labelled entries kept")
    group.add_argument("--n", type=int, help="count: labelled entries kept per sample")
    group.add_argument("--k", type=int, help="per_class / per_instance / keep_boxes: labels kept per group")
    group.add_argument("--rate", type=float, help="drop_boxes: probability of dropping each box")
    group.add_argument("--where", help="per_instance: random|centroid; box_to_point: center|ellipse")
    group.add_argument("--size", type=float, help="box_to_point: ellipse axes as a fraction of the box")
    group.add_argument("--keep-at-least-one", dest="keep_at_least_one", action=argparse.BooleanOptionalAction,
                       default=None, help="drop_boxes: keep one box in an image whose boxes were all dropped")
    return parser


def read_data_section(config_path: str) -> dict:
    """The ``data:`` section (``class_path`` + ``init_args``) of a LightningCLI config."""
    try:
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(config_path, f"cannot read config ({exc})") from None
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        raise DataError(config_path, "config has no data: section with a class_path")
    return data


def instantiate_datamodule(data: dict, config_path: str = "<config>"):
    """The DataModule of a ``data:`` section, built by jsonargparse so nested class_paths work too."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    try:
        config = parser.parse_object({"data": data})
    except Exception as exc:  # jsonargparse reports a bad class_path or init_args in several types
        raise DataError(config_path, f"data: section is not a usable DataModule ({exc})") from None
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    datamodule = instantiate(config).data
    if not callable(getattr(datamodule, "full_labels", None)):
        raise DataError(config_path, f"{type(datamodule).__name__} has no full_labels(split) method, "
                                     "so its full labels cannot be sparsified")
    return datamodule


def protocol_from_config(data: dict, config_path: str) -> tuple[WeakLabelProtocol, Optional[int]]:
    """``data.init_args.weak_labels`` (class_path + init_args) and ``weak_label_seed``."""
    init_args = data.get("init_args") or {}
    spec = init_args.get("weak_labels")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise DataError(config_path, "no --protocol given and the config has no data.init_args.weak_labels")
    class_path = spec["class_path"]
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "vision.labels.protocols"), class_name)
    except (ImportError, AttributeError):
        raise DataError(config_path, f"weak_labels class_path {class_path!r} not found") from None
    if not (inspect.isclass(cls) and issubclass(cls, WeakLabelProtocol)):
        raise DataError(config_path, f"{class_path} is not a weak-label protocol")
    try:
        protocol = cls(**(spec.get("init_args") or {}))
    except (TypeError, ValueError) as exc:
        raise DataError(config_path, f"weak_labels: {exc}") from None
    return protocol, init_args.get("weak_label_seed")


def run(datamodule, protocol: Optional[WeakLabelProtocol], seed: int, out: str, overwrite: bool = False,
        split: str = "train", scannet_file: Optional[str] = None) -> WeakLabelSet:
    """Sparsify (or import) ``datamodule.full_labels(split)``, write ``out``, print a summary."""
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    items = datamodule.full_labels(split)
    if scannet_file is not None:
        weak = import_scannet_indices(scannet_file, items)
    else:
        weak = sparsify(items, protocol, seed)
    json_path, _ = weak.save(out, overwrite=overwrite)
    print(summary(weak))
    print(f"wrote {json_path} and its .weak.npz")
    return weak


def summary(weak: WeakLabelSet) -> str:
    """A few lines: protocol, samples, labels per class, total and share of the labelled entries."""
    counts = weak.counts()
    params = ", ".join(f"{k}={v}" for k, v in weak.protocol["params"].items())
    lines = [f"protocol {weak.protocol['name']}({params}), seed {weak.seed}, task {weak.task}",
             f"samples: {len(weak)}",
             "labels per class: " + (", ".join(f"{c}: {n}" for c, n in counts["per_class"].items()) or "none")]
    total, source = counts["total"], counts.get("source_labelled")
    share = f" of {source} labelled ({100.0 * total / source:.4g}%)" if source else ""
    lines.append(f"total: {total}{share}")
    return "\n".join(lines)


def _protocol_from_args(parser: argparse.ArgumentParser, args) -> WeakLabelProtocol:
    given = {name: getattr(args, name) for name in PARAM_OPTIONS if getattr(args, name) is not None}
    try:
        return protocol_from_name(args.protocol, **given)
    except (TypeError, ValueError) as exc:
        parser.error(f"--protocol {args.protocol}: {exc}")


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.protocol and args.import_scannet:
        parser.error("--protocol and --import-scannet exclude each other")
    protocol = _protocol_from_args(parser, args) if args.protocol else None
    try:
        data = read_data_section(args.config)
        seed = args.seed
        if protocol is None and args.import_scannet is None:
            protocol, config_seed = protocol_from_config(data, args.config)
            seed = config_seed if seed is None else seed
        run(instantiate_datamodule(data, args.config), protocol, 0 if seed is None else seed, args.out,
            overwrite=args.overwrite, split=args.split, scannet_file=args.import_scannet)
    except (DataError, FileExistsError) as exc:
        print(f"sparsevision sparsify: {exc}", file=sys.stderr)
        return 1
    return 0
