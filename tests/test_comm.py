"""bev_ddp.comm: no-ops in one process, real sums and gathers over two gloo processes."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bev_ddp import comm


def test_single_process_collectives_return_their_input():
    t = torch.tensor([1.0, 2.0])
    assert comm.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert comm.gather({"a": 1}) == [{"a": 1}]
    assert comm.get_rank() == 0 and comm.get_world_size() == 1 and comm.is_main_process()
    comm.barrier()


def _worker(rank: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    finished = False
    try:
        summed = comm.all_reduce_sum(torch.tensor([rank + 1, 10 * (rank + 1)], dtype=torch.int64))
        gathered = comm.gather(f"rank{rank}")
        result = {"sum": summed.tolist(), "gather": gathered, "main": comm.is_main_process(),
                  "world": comm.get_world_size()}
        torch.save(result, f"{out}/{rank}.pt")
        finished = True
    finally:
        comm.shutdown(synchronize=finished)


def test_two_gloo_processes_sum_and_gather_in_rank_order(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    for rank, res in enumerate(results):
        assert res["sum"] == [3, 30]  # 1 + 2, 10 + 20 on both ranks
        assert res["gather"] == ["rank0", "rank1"]
        assert res["main"] == (rank == 0) and res["world"] == 2


def _shutdown_worker(rank: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    comm.shutdown()
    torch.save({"after": comm.is_initialized()}, f"{out}/{rank}.pt")


def test_shutdown_leaves_the_group_on_every_rank_and_is_a_no_op_without_one(tmp_path):
    comm.shutdown()  # no group in this process: nothing to leave, no error
    mp.spawn(_shutdown_worker, args=(str(tmp_path),), nprocs=2, join=True)
    assert [torch.load(tmp_path / f"{r}.pt")["after"] for r in range(2)] == [False, False]
