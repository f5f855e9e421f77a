"""P x K samplers: batch composition, determinism, ids with < K images, DDP disjointness."""
from collections import Counter

import numpy as np
import pytest

from datasets.samplers import PKBatchSampler, RandomBatchSampler


def make_pids(seed=0, num_ids=20):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, size=num_ids)  # several ids with fewer than K images
    return [pid for pid, c in enumerate(counts) for _ in range(c)]


def test_every_batch_is_p_ids_times_k():
    pids = make_pids()
    sampler = PKBatchSampler(pids, batch_size=16, num_instances=4, seed=0)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(batch) == 16
        assert len(counts) == 4 and set(counts.values()) == {4}


def test_ids_with_fewer_than_k_images_are_sampled_with_replacement():
    pids = [0] * 2 + [1] * 4 + [2] * 4 + [3] * 1
    sampler = PKBatchSampler(pids, batch_size=8, num_instances=4, seed=3)
    seen = Counter()
    for epoch in range(1, 6):
        sampler.set_epoch(epoch)
        for batch in sampler:
            for i in batch:
                seen[pids[i]] += 1
    assert seen[0] > 0 and seen[3] > 0  # padded ids still appear, with repeats
    sampler.set_epoch(1)
    chunk_of_3 = [b for b in sampler if any(pids[i] == 3 for i in b)]
    for batch in chunk_of_3:
        assert [i for i in batch if pids[i] == 3] == [10, 10, 10, 10]


def test_deterministic_given_seed_and_epoch():
    pids = make_pids()
    a = PKBatchSampler(pids, 16, 4, seed=7)
    b = PKBatchSampler(pids, 16, 4, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    c = PKBatchSampler(pids, 16, 4, seed=8)
    c.set_epoch(3)
    assert list(a) != list(c)


def test_each_chunk_used_once_per_epoch():
    pids = [pid for pid in range(10) for _ in range(8)]
    sampler = PKBatchSampler(pids, 16, 4, seed=0)
    sampler.set_epoch(1)
    indices = [i for batch in sampler for i in batch]
    assert len(indices) == len(set(indices))  # no image twice when no padding is needed


def test_ddp_world_size_two_disjoint_ids_and_equal_lengths():
    pids = make_pids(seed=1, num_ids=30)
    ranks = [PKBatchSampler(pids, 8, 4, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    b0, b1 = list(ranks[0]), list(ranks[1])
    assert len(b0) == len(b1) == len(ranks[0]) == len(ranks[1]) > 0
    for x, y in zip(b0, b1):
        ids0 = {pids[i] for i in x}
        ids1 = {pids[i] for i in y}
        assert len(ids0) == 2 and len(ids1) == 2
        assert not ids0 & ids1
    # across the epoch the two ranks never use the same image except padded repeats
    unique_imgs = [pid for pid, c in Counter(pids).items() if c >= 4]
    used0 = {i for b in b0 for i in b if pids[i] in unique_imgs}
    used1 = {i for b in b1 for i in b if pids[i] in unique_imgs}
    assert not used0 & used1


def test_errors_name_the_keys():
    with pytest.raises(ValueError, match="NUM_INSTANCE"):
        PKBatchSampler([0, 1], batch_size=10, num_instances=4)
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler([0, 0, 1, 1], batch_size=16, num_instances=4)


def test_random_sampler_partitions_across_ranks():
    s0 = RandomBatchSampler(40, 5, seed=1, num_replicas=2, rank=0)
    s1 = RandomBatchSampler(40, 5, seed=1, num_replicas=2, rank=1)
    for s in (s0, s1):
        s.set_epoch(1)
    a = [i for b in s0 for i in b]
    b = [i for b in s1 for i in b]
    assert len(a) == len(b) == 20 and not set(a) & set(b)
