"""Evaluation sharding: ranks take whole batches of the one-process batching."""
from __future__ import annotations

import pytest

from bev_ddp.engine.data import ShardBatchSampler, build_eval_loader
from bev_ddp.errors import ConfigError


@pytest.mark.parametrize("length,batch_size,world", [(7, 2, 2), (8, 3, 2), (5, 2, 3), (1, 4, 2), (0, 2, 2), (9, 1, 4)])
def test_ranks_share_out_the_single_process_batches_unchanged(length, batch_size, world):
    alone = list(ShardBatchSampler(length, batch_size=batch_size))
    assert [i for b in alone for i in b] == list(range(length))  # every item once, in order
    shards = [list(ShardBatchSampler(length, batch_size=batch_size, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted((b for shard in shards for b in shard), key=lambda b: b[0]) == alone  # same batches, none changed
    for r, shard in enumerate(shards):
        assert shard == alone[r::world]
        assert len(ShardBatchSampler(length, batch_size=batch_size, num_replicas=world, rank=r)) == len(shard)


def test_eval_loader_batches_do_not_depend_on_the_rank_count():
    data = list(range(10))

    def batches(world: int) -> list[list[int]]:
        loaders = [build_eval_loader(data, collate=list, batch_size=3, max_samples=7, num_replicas=world, rank=r)
                   for r in range(world)]
        return sorted((b for loader in loaders for b in loader), key=lambda b: b[0])

    assert batches(1) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches(2) == batches(3) == batches(1)


def test_batch_size_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.batch_size"):
        ShardBatchSampler(4, batch_size=0)
