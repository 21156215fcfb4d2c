"""Label propagation by a distance-weighted k-NN vote: the floor a trained network has to beat.

For a scene with a few labelled points, every point takes the inverse-distance-weighted vote of its
``k`` nearest labelled points in a feature space of standardised xyz (+ rgb). It uses the labels of
the scene it predicts (transductive), which makes it a strong baseline at small budgets; if a network
trained on *other* scenes cannot beat it, the data is too easy or the network too weak.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.spatial import cKDTree


def standardised_features(coords: np.ndarray, colors: Optional[np.ndarray] = None) -> np.ndarray:
    """``(N, 3 or 6)`` float32: each column of xyz (and rgb) scaled to zero mean and unit variance."""
    columns = [coords.astype(np.float64)] + ([] if colors is None else [colors.astype(np.float64)])
    features = np.concatenate(columns, axis=1)
    return ((features - features.mean(0)) / (features.std(0) + 1e-9)).astype(np.float32)


def knn_vote(features: np.ndarray, labelled_index: np.ndarray, labelled_class: np.ndarray, k: int,
             num_classes: int) -> np.ndarray:
    """``(N,)`` predicted class of every point from the labelled points' inverse-distance-weighted vote."""
    k = int(min(k, len(labelled_index)))
    tree = cKDTree(features[labelled_index])
    distance, neighbour = tree.query(features, k=k, workers=-1)
    distance, neighbour = distance.reshape(len(features), k), neighbour.reshape(len(features), k)
    weight = 1.0 / (distance + 1e-6)
    votes = np.zeros((len(features), num_classes))
    np.add.at(votes, (np.repeat(np.arange(len(features)), k), labelled_class[neighbour].reshape(-1)),
              weight.reshape(-1))
    return votes.argmax(1)


def confusion(predicted: np.ndarray, labels: np.ndarray, num_classes: int,
              mask: Optional[np.ndarray] = None) -> np.ndarray:
    """``(C, C)`` counts (rows labels, columns predictions) over labelled entries (and ``mask``)."""
    keep = (labels >= 0) & (labels < num_classes)
    if mask is not None:
        keep &= mask
    return np.bincount(labels[keep] * num_classes + predicted[keep], minlength=num_classes ** 2).reshape(
        num_classes, num_classes)
