"""The trainer's batch sampler: ranks partition the single-process batch, resume skips exactly."""

from __future__ import annotations

from audiocl.train.data import GlobalBatchSampler


def _batches(sampler):
    return [[i for i, _ in b] for b in sampler]


def test_ranks_concatenate_to_single_process_batches():
    single = _batches(GlobalBatchSampler(50, 12, seed=5))
    parts = [_batches(GlobalBatchSampler(50, 12, rank=r, world_size=3, seed=5)) for r in range(3)]
    assert len(single) == 4
    for b, batch in enumerate(single):
        assert sum((p[b] for p in parts), []) == batch


def test_epochs_differ_and_repeat():
    s = GlobalBatchSampler(40, 8, seed=1)
    s.set_epoch(0)
    e0 = _batches(s)
    s.set_epoch(1)
    e1 = _batches(s)
    s.set_epoch(0)
    assert _batches(s) == e0 != e1
    assert sorted(sum(e0, [])) == list(range(40))


def test_set_start_resumes_mid_epoch_with_same_seeds():
    s = GlobalBatchSampler(40, 8, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_start(3)
    assert list(s) == full[3:]


def test_short_last_batch_gives_every_rank_items():
    parts = [_batches(GlobalBatchSampler(21, 8, rank=r, world_size=4, shuffle=False, drop_last=False)) for r in range(4)]
    assert [p[-1] for p in parts] == [[16, 17], [18], [19], [20]]
