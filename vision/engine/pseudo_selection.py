"""Choose which predictions become pseudo-labels in an offline self-training round.

SQN (Hu et al., "SQN: Weakly-Supervised Semantic Segmentation of Large-Scale 3D Point Clouds",
ECCV 2022, Sec. 4.4) retrains on the most confident ~1% of predicted points. Taking the top
fraction *per predicted class* instead of globally keeps rare classes in the pseudo-label set
(a global top-k is dominated by the easy, frequent classes). The precision helpers score a selection
against full labels, which only a benchmark may do: full labels never reach training.

Arrays are numpy (predictions come from :func:`vision.engine.prediction_writer.load_predictions`);
CPU torch tensors are accepted too.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from vision.labels.types import IGNORE_INDEX


def select_confident_per_class(
    predicted,
    confidence,
    num_classes: int,
    top_fraction: float = 0.01,
    min_confidence: float = 0.0,
    exclude=None,
) -> np.ndarray:
    """Mark, per predicted class, the most confident predictions.

    Args:
        predicted: ``(N,)`` int predicted class per point/pixel; negative values (e.g.
            :data:`IGNORE_INDEX`) are never selected.
        confidence: ``(N,)`` float confidence of each prediction.
        num_classes: number of classes ``C``; predictions must be ``< C``.
        top_fraction: for class ``c`` keep the ``ceil(top_fraction * n_c)`` most confident, where
            ``n_c`` counts the candidates predicted as ``c`` (positions not in ``exclude``).
        min_confidence: of those, keep only confidence ``>= min_confidence``.
        exclude: ``(N,)`` bool, positions never selected (already labelled by a person).

    Returns:
        ``(N,)`` bool mask of the selected positions. Ties in confidence go to the lower index, so
        the selection is deterministic.

    >>> select_confident_per_class([0, 0, 1, 1, 1], [0.9, 0.8, 0.5, 0.7, 0.6], 2, top_fraction=0.5).tolist()
    [True, False, False, True, True]
    """
    predicted = np.asarray(predicted).reshape(-1)
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    n = predicted.shape[0]
    _check_selection_inputs(predicted, confidence, num_classes, top_fraction)
    candidate = predicted >= 0
    if exclude is not None:
        exclude = np.asarray(exclude).reshape(-1)
        if exclude.shape[0] != n or exclude.dtype != np.bool_:
            raise ValueError(f"exclude must be a bool array of {n} entries, got {exclude.dtype} {exclude.shape}")
        candidate &= ~exclude
    positions = np.flatnonzero(candidate)
    classes = predicted[positions].astype(np.int64)
    # lexsort: last key is primary -> by class, then descending confidence, then ascending index
    order = np.lexsort((positions, -confidence[positions], classes))
    positions, classes = positions[order], classes[order]
    counts = np.bincount(classes, minlength=num_classes)
    # round before ceil so that float noise (0.07 * 100 = 7.000000000000001) does not add a point
    keep_per_class = np.ceil(np.round(top_fraction * counts, 9)).astype(np.int64)
    class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class = np.arange(positions.shape[0]) - class_start[classes]
    chosen = positions[(rank_in_class < keep_per_class[classes]) & (confidence[positions] >= min_confidence)]
    selected = np.zeros(n, dtype=bool)
    selected[chosen] = True
    return selected


def _check_selection_inputs(predicted, confidence, num_classes: int, top_fraction: float) -> None:
    if not np.issubdtype(predicted.dtype, np.integer):
        raise ValueError(f"predicted must be integer class ids, got {predicted.dtype}")
    if confidence.shape != predicted.shape:
        raise ValueError(f"confidence has {confidence.shape[0]} entries, predicted has {predicted.shape[0]}")
    if np.isnan(confidence).any():
        raise ValueError("confidence contains NaN")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if predicted.size and predicted.max() >= num_classes:
        raise ValueError(f"predicted class {int(predicted.max())} >= num_classes {num_classes}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")


def _scored_pairs(selected_index, selected_class, full_labels) -> tuple[np.ndarray, np.ndarray]:
    """(selected class, true class) of the selections whose full label is not IGNORE_INDEX."""
    index = np.asarray(selected_index).reshape(-1)
    chosen_class = np.asarray(selected_class).reshape(-1)
    full_labels = np.asarray(full_labels).reshape(-1)
    if index.shape != chosen_class.shape:
        raise ValueError(f"selected_index has {index.shape[0]} entries, selected_class {chosen_class.shape[0]}")
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"selected_index must be integer positions, got {index.dtype}")
    if index.size and (index.min() < 0 or index.max() >= full_labels.shape[0]):
        raise ValueError(f"selected_index out of range [0, {full_labels.shape[0]})")
    truth = full_labels[index.astype(np.int64)]
    scored = truth != IGNORE_INDEX
    return chosen_class[scored], truth[scored]


def pseudo_label_precision(selected_index, selected_class, full_labels) -> float:
    """Fraction of pseudo-labels whose class equals the full label.

    Args:
        selected_index: ``(K,)`` int positions of the pseudo-labels in the sample.
        selected_class: ``(K,)`` int pseudo-label class at each position.
        full_labels: ``(N,)`` int full labels; :data:`IGNORE_INDEX` entries are not scored.

    Returns:
        correct / scored, or NaN when nothing could be scored.

    >>> pseudo_label_precision([0, 1, 2], [1, 1, 0], [1, 0, -100])
    0.5
    """
    chosen, truth = _scored_pairs(selected_index, selected_class, full_labels)
    if chosen.size == 0:
        return float("nan")
    return float(np.mean(chosen == truth))


def pseudo_label_precision_per_class(
    selected_index, selected_class, full_labels, num_classes: Optional[int] = None
) -> dict[int, float]:
    """Precision of the pseudo-labels of each selected class: ``{class_id: correct / scored}``.

    Same arguments as :func:`pseudo_label_precision`. Classes with no scored pseudo-label are left
    out, unless ``num_classes`` is given: then every class ``0..C-1`` is a key, NaN when unscored.

    >>> pseudo_label_precision_per_class([0, 1, 2], [1, 1, 0], [1, 0, 0])
    {0: 1.0, 1: 0.5}
    """
    chosen, truth = _scored_pairs(selected_index, selected_class, full_labels)
    classes = range(num_classes) if num_classes is not None else sorted(set(chosen.tolist()))
    result: dict[int, float] = {}
    for class_id in classes:
        mine = chosen == class_id
        result[int(class_id)] = float(np.mean(truth[mine] == class_id)) if mine.any() else float("nan")
    return result
