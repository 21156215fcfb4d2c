"""Weak-label protocols: seeded rules that turn full labels into the sparse labels a model trains on.

Point protocols take :class:`DenseLabels` (``(N,)`` per point or ``(H, W)`` per pixel) and return
:class:`PointLabels` (``index`` for ``(N,)``, ``xy`` for ``(H, W)``). Box protocols take
:class:`BoxLabels`. Entries equal to :data:`IGNORE_INDEX` are never chosen; every returned label is
human (``source = HUMAN``, ``confidence = 1``) and point labels are sorted by position.

CLI name and class, then the labels kept per sample (``M`` = labelled entries):

- ``ratio``, ``Ratio(ratio)``: ``round(ratio * M)`` random entries (halves up), at least 1.
- ``count``, ``Count(n)``: ``min(n, M)`` random entries.
- ``per_class``, ``PerClass(k)``: ``min(k, count_c)`` random entries of every class present.
- ``per_instance``, ``PerInstance(k, where)``: ``min(k, size_i)`` entries of every instance id >= 0,
  at random or nearest the instance centroid.
- ``drop_boxes``, ``DropBoxes(rate, keep_at_least_one)``: each box dropped with probability ``rate``.
- ``keep_boxes``, ``KeepBoxes(k)``: ``min(k, boxes)`` random boxes.
- ``box_to_point``, ``BoxToPoint(where, size)``: one point per box, at its centre or uniform inside the
  ellipse centred on it with axis lengths ``size * w`` and ``size * h``.
- ``full``, ``Full()``: everything (the full-label baseline through the same code path).

Protocols are configured from YAML for LightningCLI::

    weak_labels:
      class_path: vision.labels.protocols.Ratio
      init_args: {ratio: 0.001}

>>> import numpy as np
>>> from vision.labels.types import DenseLabels
>>> full = DenseLabels(np.array([0, 0, 1, -100, 1, 2]))
>>> PerClass(k=1).draw(full, seed=0, sample_id="scene_0").class_id.tolist()
[0, 1, 2]
>>> protocol_from_name("ratio", ratio=0.5).params()
{'ratio': 0.5}
"""

from __future__ import annotations

import inspect
import numbers
from typing import ClassVar, Literal, Optional, Union

import numpy as np

from vision.errors import DataError
from vision.labels.conversions import (
    boxes_to_points,
    group_positions,
    labelled_positions,
    mask_to_points,
    pixel_xy,
    positions_to_points,
)
from vision.labels.seeding import sample_rng
from vision.labels.types import BoxLabels, DenseLabels, PointLabels


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value, low_open: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _random_subset(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct positions out of ``range(count)``, uniformly at random."""
    return rng.choice(count, size=min(size, count), replace=False)


class WeakLabelProtocol:
    """Base class: ``apply(full, rng)`` draws the weak labels of one sample.

    Subclasses set :attr:`name` (the CLI name), :attr:`input_kind` (``"dense"`` or ``"boxes"``) and
    :attr:`usage` (one line for ``sparsevision sparsify --help``).
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[str] = "dense"
    usage: ClassVar[str] = ""

    def params(self) -> dict:
        """The constructor arguments, JSON-able (what the weak-label file records)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def apply(self, full: Union[DenseLabels, BoxLabels], rng: np.random.Generator,
              coords: Optional[np.ndarray] = None) -> Union[PointLabels, BoxLabels]:
        """Weak labels of one sample.

        Args:
            full: the sample's full labels (:class:`DenseLabels` or :class:`BoxLabels`).
            rng: its generator; use :meth:`draw` to get the project's seeding.
            coords: ``(N, D)`` point coordinates for ``(N,)`` labels, only needed by
                ``PerInstance(where="centroid")`` (pixel coordinates of images are implicit).

        Raises:
            ValueError: labels this protocol cannot use (wrong kind, missing instances).
        """
        expected = DenseLabels if self.input_kind == "dense" else BoxLabels
        if not isinstance(full, expected):
            raise ValueError(f"protocol {self.name!r} needs {expected.__name__}, got {type(full).__name__}")
        return self._apply(full, rng, coords)

    def _apply(self, full, rng: np.random.Generator, coords: Optional[np.ndarray]):
        raise NotImplementedError

    def draw(self, full: Union[DenseLabels, BoxLabels], seed: int, sample_id: str,
             coords: Optional[np.ndarray] = None) -> Union[PointLabels, BoxLabels]:
        """:meth:`apply` with ``sample_rng(seed, sample_id)``; unusable labels raise DataError(sample_id)."""
        try:
            return self.apply(full, sample_rng(seed, sample_id), coords)
        except ValueError as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(str(sample_id), str(exc)) from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))


class Ratio(WeakLabelProtocol):
    """Keep a fraction of the labelled entries: ``max(1, round(ratio * M))`` random ones (halves up).

    The "0.1% labels" setting of SQN (Hu et al., ECCV 2022) and most weakly supervised 3D papers.
    """

    name = "ratio"
    usage = "--ratio R            round(R x labelled) random entries, at least 1; 0 < R <= 1"

    def __init__(self, ratio: float) -> None:
        self.ratio = _check_fraction("ratio", ratio, low_open=True)

    def budget(self, labelled: int) -> int:
        """Labels kept out of ``labelled`` entries."""
        return 0 if labelled == 0 else max(1, min(labelled, int(np.floor(self.ratio * labelled + 0.5))))

    def _apply(self, full: DenseLabels, rng, coords) -> PointLabels:
        positions = labelled_positions(full.semantic)
        return positions_to_points(full.semantic, positions[_random_subset(positions.size,
                                                                           self.budget(positions.size), rng)])


class Count(WeakLabelProtocol):
    """Keep exactly ``min(n, M)`` random labelled entries (e.g. ScanNet data-efficient "20 points")."""

    name = "count"
    usage = "--n N                min(N, labelled) random entries per sample; N >= 1"

    def __init__(self, n: int) -> None:
        self.n = _check_int("n", n, 1)

    def _apply(self, full: DenseLabels, rng, coords) -> PointLabels:
        positions = labelled_positions(full.semantic)
        return positions_to_points(full.semantic, positions[_random_subset(positions.size, self.n, rng)])


class PerClass(WeakLabelProtocol):
    """Keep ``min(k, count_c)`` random entries of every class ``c`` present ("1pt" per class)."""

    name = "per_class"
    usage = "--k K                min(K, count) random entries of every class present (K = 1)"

    def __init__(self, k: int = 1) -> None:
        self.k = _check_int("k", k, 1)

    def _apply(self, full: DenseLabels, rng, coords) -> PointLabels:
        return mask_to_points(full.semantic, self.k, rng)


class PerInstance(WeakLabelProtocol):
    """Keep ``min(k, size_i)`` labelled entries of every instance id ``i >= 0``.

    ``where="random"`` picks them at random; ``where="centroid"`` picks the ``k`` entries nearest the
    centroid of the instance's labelled entries (ties broken by position), the "click the middle of
    each object" annotation. Centroids use ``coords`` for ``(N,)`` labels and pixel ``(x, y)`` for
    images. Class ids are the semantic labels at the chosen entries. (``sparsevision sparsify`` passes no
    coordinates, so there ``centroid`` works on images only; call :func:`vision.labels.sparsify` with
    ``coords`` for point clouds.)
    """

    name = "per_instance"
    usage = "--k K --where W      K entries per instance id >= 0; W = random (default) | centroid"

    def __init__(self, k: int = 1, where: Literal["random", "centroid"] = "random") -> None:
        self.k = _check_int("k", k, 1)
        self.where = _check_choice("where", where, ("random", "centroid"))

    def _apply(self, full: DenseLabels, rng, coords) -> PointLabels:
        if full.instance is None:
            raise ValueError("per_instance needs instance ids, but these labels have none")
        positions = labelled_positions(full.semantic)
        positions = positions[full.instance.reshape(-1)[positions] >= 0]
        if self.where == "centroid":
            coords = self._coordinates(full, coords)
        chosen = []
        for _, group in group_positions(full.instance.reshape(-1)[positions], positions):
            if self.where == "random":
                chosen.append(group[_random_subset(group.size, self.k, rng)])
            else:
                points = coords[group]
                distance = np.linalg.norm(points - points.mean(axis=0), axis=1)
                chosen.append(group[np.argsort(distance, kind="stable")[:self.k]])
        picked = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        return positions_to_points(full.semantic, picked)

    @staticmethod
    def _coordinates(full: DenseLabels, coords: Optional[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float64 coordinates of every entry, indexed by flat position."""
        if full.is_image:
            return pixel_xy(np.arange(full.semantic.size), full.semantic.shape).astype(np.float64)
        if coords is None:
            raise ValueError("per_instance with where='centroid' on (N,) labels needs coords (N, D)")
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[0] != full.semantic.shape[0]:
            raise ValueError(f"coords must have shape ({full.semantic.shape[0]}, D), got {coords.shape}")
        return coords


class DropBoxes(WeakLabelProtocol):
    """Drop each box independently with probability ``rate`` (SparseDet, Suri et al., ICCV 2023).

    With ``keep_at_least_one``, an image whose boxes were all dropped keeps one random box. The result
    is marked ``complete=False`` when anything was dropped.
    """

    name = "drop_boxes"
    input_kind = "boxes"
    usage = "--rate P             drop each box with probability P; --no-keep-at-least-one allows 0"

    def __init__(self, rate: float, keep_at_least_one: bool = True) -> None:
        self.rate = _check_fraction("rate", rate, low_open=False)
        if not isinstance(keep_at_least_one, bool):
            raise ValueError(f"keep_at_least_one must be a bool, got {keep_at_least_one!r}")
        self.keep_at_least_one = keep_at_least_one

    def _apply(self, full: BoxLabels, rng, coords) -> BoxLabels:
        keep = rng.random(len(full)) >= self.rate
        if self.keep_at_least_one and len(full) and not keep.any():
            keep[rng.integers(len(full))] = True
        return _human_boxes(full, np.flatnonzero(keep))


class KeepBoxes(WeakLabelProtocol):
    """Keep ``min(k, n)`` random boxes per image; ``complete=False`` when any box was dropped."""

    name = "keep_boxes"
    input_kind = "boxes"
    usage = "--k K                min(K, boxes) random boxes per image (K = 1)"

    def __init__(self, k: int = 1) -> None:
        self.k = _check_int("k", k, 1)

    def _apply(self, full: BoxLabels, rng, coords) -> BoxLabels:
        return _human_boxes(full, np.sort(_random_subset(len(full), self.k, rng)))


class BoxToPoint(WeakLabelProtocol):
    """One point label per box, in box order (point-supervised detection, e.g. Point DETR / P2BNet).

    ``where="center"`` gives the box centre. ``where="ellipse"`` draws uniformly inside the ellipse
    centred on the box whose full axis lengths are ``size * w`` and ``size * h`` (semi-axes
    ``size * w / 2``, ``size * h / 2``), so with ``size <= 1`` the point always lies inside the box.
    """

    name = "box_to_point"
    input_kind = "boxes"
    usage = "--where W --size S   one point per box: W = center (default) | ellipse of axes S*w, S*h"

    def __init__(self, where: Literal["center", "ellipse"] = "center", size: float = 0.1) -> None:
        self.where = _check_choice("where", where, ("center", "ellipse"))
        self.size = _check_fraction("size", size, low_open=True)

    def _apply(self, full: BoxLabels, rng, coords) -> PointLabels:
        centres = boxes_to_points(full).xy.astype(np.float64)
        if self.where == "ellipse":
            # sqrt of a uniform radius makes the density uniform over the ellipse's area
            radius = np.sqrt(rng.random(len(full)))
            angle = rng.uniform(0.0, 2.0 * np.pi, len(full))
            semi_axes = self.size * (full.boxes[:, 2:] - full.boxes[:, :2]).astype(np.float64) / 2.0
            centres = centres + semi_axes * radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return PointLabels(class_id=full.class_id, xy=centres)


class Full(WeakLabelProtocol):
    """Every label: all labelled entries of dense labels, all boxes (``complete`` as given)."""

    name = "full"
    input_kind = "any"
    usage = "(no options)         every label: the full-label baseline"

    def __init__(self) -> None:
        pass

    def apply(self, full, rng: np.random.Generator, coords: Optional[np.ndarray] = None):
        if isinstance(full, BoxLabels):
            return _human_boxes(full, np.arange(len(full)), complete=full.complete)
        if isinstance(full, DenseLabels):
            return positions_to_points(full.semantic, labelled_positions(full.semantic))
        raise ValueError(f"protocol 'full' needs DenseLabels or BoxLabels, got {type(full).__name__}")


def _human_boxes(full: BoxLabels, keep: np.ndarray, complete: Optional[bool] = None) -> BoxLabels:
    """The boxes at ``keep`` as fresh human labels; incomplete when anything was dropped."""
    if complete is None:
        complete = bool(full.complete and keep.size == len(full))
    return BoxLabels(boxes=full.boxes[keep], class_id=full.class_id[keep], complete=complete)


#: CLI name -> protocol class.
PROTOCOLS: dict[str, type[WeakLabelProtocol]] = {
    cls.name: cls for cls in (Ratio, Count, PerClass, PerInstance, DropBoxes, KeepBoxes, BoxToPoint, Full)
}


def protocol_from_name(name: str, **params) -> WeakLabelProtocol:
    """A protocol from its CLI name and constructor arguments.

    >>> protocol_from_name("drop_boxes", rate=0.5)
    DropBoxes(rate=0.5, keep_at_least_one=True)
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown weak-label protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    cls = PROTOCOLS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"protocol {name!r} takes {accepted or 'no parameters'}, not {unknown}")
    return cls(**params)
