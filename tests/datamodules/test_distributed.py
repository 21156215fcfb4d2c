"""The non-padding evaluation sampler and the weak-label check across ranks (single process, fast).

The end-to-end DDP runs of every task are in ``tests/reliability/test_ddp.py`` (slow).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from datamodules.distributed import WeakLabelRankCheck, _FakeTrainer, evaluation_sampler, weak_label_digest
from datamodules.toy import ToyPointDataModule
from vision.labels.protocols import Ratio


def test_each_rank_gets_a_disjoint_share_and_together_every_sample_once():
    shares = [list(evaluation_sampler(list(range(7)), _FakeTrainer(num_replicas=3, rank=r))) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]  # no padding: ranks may differ by one sample
    assert sorted(i for share in shares for i in share) == list(range(7))


def test_a_single_process_keeps_the_plain_sequential_loader():
    assert evaluation_sampler(list(range(4))) is None
    assert evaluation_sampler(list(range(4)), _FakeTrainer(num_replicas=1, rank=0)) is None
    assert evaluation_sampler(list(range(4)), SimpleNamespace(distributed_sampler_kwargs=None)) is None


def test_a_split_smaller_than_the_number_of_ranks_is_refused_instead_of_hanging():
    with pytest.raises(ValueError, match="3 samples cannot be shared by 4 processes"):
        evaluation_sampler(list(range(3)), _FakeTrainer(num_replicas=4, rank=3))


def test_toy_test_loader_under_two_ranks_scores_each_sample_once():
    datamodule = ToyPointDataModule(num_test=5, batch_size=2)
    datamodule.setup("test")
    ids = []
    for rank in (0, 1):
        datamodule.trainer = _FakeTrainer(num_replicas=2, rank=rank)
        ids.append([sample_id for batch in datamodule.test_dataloader() for sample_id in batch["sample_id"]])
    assert ids == [["test_0000", "test_0002", "test_0004"], ["test_0001", "test_0003"]]


def weak_set(ratio: float = 0.05, seed: int = 0):
    return ToyPointDataModule(weak_labels=Ratio(ratio), weak_label_seed=seed).weak_label_set()


def test_weak_label_digest_follows_the_labels_not_the_creation_time(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path))
    weak = weak_set()
    assert weak_label_digest(weak) == weak_label_digest(replace(weak, created="2001-01-01T00:00:00Z"))
    assert weak_label_digest(weak) != weak_label_digest(weak_set(seed=1))
    first = sorted(weak.labels)[0]
    moved = replace(weak.labels[first], class_id=(weak.labels[first].class_id + 1) % 3)
    assert weak_label_digest(weak) != weak_label_digest(replace(weak, labels={**weak.labels, first: moved}))
    assert weak_label_digest(None) != weak_label_digest(weak)


class FakeStrategy:
    """Rank 0's digest comes from ``rank0_digest``; the decision is this rank's own (one other rank)."""

    def __init__(self, rank0_digest: str) -> None:
        self.rank0_digest = rank0_digest

    def broadcast(self, obj, src=0):
        return self.rank0_digest

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


def test_rank_check_stops_a_rank_whose_weak_labels_differ_from_rank_0(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path))
    datamodule = ToyPointDataModule(weak_labels=Ratio(0.05))
    datamodule.setup("fit")
    same = SimpleNamespace(datamodule=datamodule, global_rank=1, world_size=2,
                           strategy=FakeStrategy(weak_label_digest(datamodule.weak)))
    check = WeakLabelRankCheck()
    check.on_fit_start(same, None)
    assert check.digest == weak_label_digest(datamodule.weak)
    other = SimpleNamespace(**{**vars(same), "strategy": FakeStrategy(weak_label_digest(weak_set(seed=1)))})
    with pytest.raises(RuntimeError, match="weak labels differ between ranks"):
        WeakLabelRankCheck().on_fit_start(other, None)
