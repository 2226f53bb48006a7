"""Data loading for training and evaluation: resumable, rank-aware, reproducible sampling.

Training batches come from :class:`ResumableSampler`, a ``DistributedSampler`` (shuffled per
epoch from ``seed + epoch``) that can start in the middle of an epoch, so ``--resume`` sees the
same batches as an uninterrupted run.  It yields ``(index, sample_seed)`` keys and
:class:`SeededDataset` runs the wrapped dataset's ``__getitem__`` with every global random
generator (torch, numpy, python) seeded from ``sample_seed`` — a pure function of
``(seed, epoch, index)`` — and restored afterwards.  Random augmentation therefore does not
depend on the number of data workers, the number of ranks or on where a run was resumed, and
it never disturbs the training process's own random state.  Datasets with a ``set_epoch(epoch)``
method (their own per-epoch augmentation draw) get it called whenever an epoch starts.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from bev_ddp.errors import ConfigError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of dataset item ``index`` in ``epoch`` (a 63-bit integer)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededDataset(Dataset):
    """Wraps ``dataset`` so that item ``(index, seed)`` is produced under fixed global RNG seeds."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
            random.setstate(py_state)


class ResumableSampler(Sampler):
    """Per-rank shuffled sampler that can start at any position of an epoch.

    Args:
        dataset: the (unwrapped) dataset; only its length is used.
        num_replicas / rank: the distributed world (1 / 0 in one process).
        seed: shuffling and augmentation seed.
        shuffle: shuffle per epoch (training) or keep order.

    Call :meth:`set_epoch` and :meth:`set_start` before creating a ``DataLoader`` iterator;
    ``start`` counts *items* of this rank's share already consumed in the epoch.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self.inner = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def set_start(self, start: int) -> None:
        self.start = start

    def __len__(self) -> int:
        return max(len(self.inner) - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(iter(self.inner))[self.start :]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])


class ShardBatchSampler(Sampler):
    """Evaluation batches split over ranks: the items ``0 .. length-1`` are cut into the batches
    one process would make (``[0, b)``, ``[b, 2b)``, ...) and rank ``r`` of ``w`` takes batches
    ``r, r + w, ...`` — no padding, no repeats.

    Every batch holds the same samples in the same order whatever the number of ranks, so a
    sample's prediction (its batch's arithmetic included) does not depend on how the split was
    shared out; only the per-process thread count still changes floating-point reduction order.
    """

    def __init__(self, length: int, *, batch_size: int, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {batch_size}")
        starts = range(0, length, batch_size)
        self.batches = [list(range(s, min(s + batch_size, length))) for s in starts][rank::num_replicas]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def build_train_loader(
    dataset: Dataset,
    *,
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    num_workers: int,
    seed: int,
    num_replicas: int = 1,
    rank: int = 0,
) -> tuple[DataLoader, ResumableSampler]:
    """Training loader over ``dataset``; incomplete last batches are dropped."""
    size = len(dataset)  # type: ignore[arg-type]
    if batch_size < 1 or size // num_replicas < batch_size:
        raise ConfigError(
            f"the training set has {size} samples: too few for train.batch_size={batch_size} "
            f"on each of {num_replicas} process(es)"
        )
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed, shuffle=True)
    loader = DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        persistent_workers=False,
        # the loader draws its workers' base seed from this generator, not from the global RNG
        # (which a resumed run would otherwise advance at a different step)
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def build_eval_loader(
    dataset: Dataset,
    *,
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    num_workers: int = 0,
    max_samples: int | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """Evaluation loader: the first ``max_samples`` items (all when None), batched as one process
    would batch them and split over ranks by whole batches (:class:`ShardBatchSampler`)."""
    length = len(dataset)  # type: ignore[arg-type]
    if max_samples is not None:
        length = min(length, max_samples)
    batches = ShardBatchSampler(length, batch_size=batch_size, num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate)


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors (also inside lists, tuples, dicts and objects with ``.to``) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    if hasattr(obj, "to") and callable(obj.to):
        return obj.to(device)
    return obj


