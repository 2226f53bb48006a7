"""BEV pooling: sum frustum point features into the cells of a BEV voxel grid.

``bev_pool(feats, coords, batch_size, grid)`` is the lift-splat "splat" of BEVFusion: every
camera frustum point carries a feature vector and the integer voxel it falls into; the output is
the per-cell *sum*.  Points whose x, y or z fall outside the grid are dropped (they carry no
gradient).  The CUDA kernel sorts points by cell rank, finds the run starts and reduces each run;
the CPU kernel adds each chunk of points, in order, into per-chunk cell sums and merges the chunks
in a fixed order (bit-identical for any thread count).  The backward pass broadcasts each cell's
gradient back to its points.  The kernels are the custom op ``torch.ops.bev_ddp.bev_pool``
(:mod:`bev_ddp.ops._library`), which ``torch.compile`` and ``torch.export`` trace as one node;
inside :func:`bev_ddp.ops.reference_ops` (ONNX export) the reference runs instead.

Coordinates: ``coords[:, 0:3]`` are voxel indices (x, y, z) along the x, y and z axes of the
(augmented) lidar frame, ``coords[:, 3]`` is the sample index in the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.ops import _extension
from bev_ddp.ops._library import bev_pool_op
from bev_ddp.ops._checks import check_same_device, check_tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _check_grid(grid: object) -> tuple[int, int, int]:
    try:
        z, x, y = (int(v) for v in grid)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"grid must be a (Z, X, Y) triple of cell counts, got {grid!r}") from None
    if min(z, x, y) <= 0:
        raise InputError(f"grid cell counts must be positive, got (Z, X, Y) = {(z, x, y)}")
    return z, x, y


def check_bev_pool_inputs(
    feats: torch.Tensor, coords: torch.Tensor, batch_size: int, grid: tuple[int, int, int], *,
    check_batch_index: bool = True,
) -> tuple[int, int, int]:
    """Validate ``bev_pool`` inputs; returns ``grid`` as ints.

    Raises InputError for wrong types, shapes or dtypes, a non-positive batch size or grid, and
    (with ``check_batch_index``) batch indices outside ``[0, batch_size)``.  The compiled kernels
    (CPU and CUDA) check the batch indices themselves while computing the cell ranks, which saves a
    pass over ``coords`` (and, on a GPU, a second synchronisation).
    """
    check_tensor("bev_pool feats", feats, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("bev_pool coords", coords, ndim=2, dtypes=INDEX_DTYPES)
    check_same_device(feats=feats, coords=coords)
    if coords.shape[1] != 4:
        raise InputError(f"bev_pool coords must have shape [N, 4] (x, y, z, b), got {tuple(coords.shape)}")
    if coords.shape[0] != feats.shape[0]:
        raise InputError(
            f"bev_pool feats and coords must have the same number of points, got feats "
            f"{tuple(feats.shape)} and coords {tuple(coords.shape)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputError(f"bev_pool batch_size must be a positive int, got {batch_size!r}")
    z, x, y = _check_grid(grid)
    if batch_size * z * x * y >= 2**63 // max(feats.shape[1], 1):
        raise InputError(f"bev_pool output of {batch_size}x{feats.shape[1]}x{z}x{x}x{y} is too large")
    if check_batch_index:
        _check_batch_index(coords, batch_size)
    return z, x, y


def _check_batch_index(coords: torch.Tensor, batch_size: int) -> None:
    if coords.shape[0] > 0 and not _extension.tracing():  # a read-back: skipped while compiling/exporting
        lo, hi = torch.stack(torch.aminmax(coords[:, 3])).tolist()  # one read-back
        if lo < 0 or hi >= batch_size:
            raise InputError(
                f"bev_pool coords batch index (column 3) must lie in [0, {batch_size}), got range [{lo}, {hi}]"
            )


def bev_pool_reference(
    feats: torch.Tensor, coords: torch.Tensor, batch_size: int, grid: tuple[int, int, int]
) -> torch.Tensor:
    """Pure-PyTorch ``bev_pool`` with ``index_add_`` (differentiable through autograd).

    Args:
        feats: [N, C] point features (any float dtype; summed in that dtype).
        coords: [N, 4] int32/int64 voxel indices (x, y, z, b).
        batch_size: B, number of samples; every ``b`` must lie in [0, B).
        grid: (Z, X, Y) number of cells per axis; points with x, y or z outside are dropped.

    Returns:
        [B, C, Z, X, Y] per-cell sums, contiguous, dtype of ``feats``.
    """
    nz, nx, ny = check_bev_pool_inputs(feats, coords, batch_size, grid)
    c = feats.shape[1]
    cells = batch_size * nz * nx * ny
    x, y, z, b = coords.unbind(1)  # [N] strided views
    inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny) & (z >= 0) & (z < nz)
    # flat cell index in [B, Z, X, Y] order, int64 (index_add_ is much slower with int32); dropped
    # points go to one extra "dump" row, which is cheaper than gathering the kept feature rows first
    rank = b.to(torch.int64, copy=True).mul_(nz).add_(z).mul_(nx).add_(x).mul_(ny).add_(y)
    rank.masked_fill_(~inside, cells)  # [N]
    out = feats.new_zeros(cells + 1, c).index_add_(0, rank, feats)  # [B*Z*X*Y + 1, C]
    out = out[:cells].view(batch_size, nz, nx, ny, c)  # [B, Z, X, Y, C]
    return out.permute(0, 4, 1, 2, 3).contiguous()  # [B, C, Z, X, Y]


def bev_pool(feats: torch.Tensor, coords: torch.Tensor, batch_size: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Sum-pool point features into BEV cells; compiled kernel when built, reference otherwise.

    Args:
        feats: [N, C] float32/float64/float16/bfloat16 features (16-bit types summed in float32).
        coords: [N, 4] int32/int64 voxel indices (x, y, z, b).
        batch_size: B.
        grid: (Z, X, Y) cell counts; points outside are dropped.

    Returns:
        [B, C, Z, X, Y] per-cell sums in the dtype of ``feats``.
    """
    grid = check_bev_pool_inputs(feats, coords, batch_size, grid, check_batch_index=False)
    if not _extension.has_kernel(feats.device.type, "bev_pool_forward"):
        return bev_pool_reference(feats, coords, batch_size, grid)
    try:  # the kernels check the batch indices themselves (CPU: in the rank pass; CUDA: one flag read)
        return bev_pool_op(feats.contiguous(), coords.contiguous(), batch_size, *grid)  # torch.ops.bev_ddp.bev_pool
    except ValueError as exc:  # the kernel's own input checks (batch index out of range)
        raise InputError(str(exc).split("\n")[0]) from exc


class BEVPool(nn.Module):
    """``nn.Module`` form of :func:`bev_pool` for a fixed grid (Z, X, Y)."""

    def __init__(self, *, grid: tuple[int, int, int]):
        super().__init__()
        self.grid = _check_grid(grid)

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        """feats [N, C], coords [N, 4] (x, y, z, b) -> [B, C, Z, X, Y]."""
        return bev_pool(feats, coords, batch_size, self.grid)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"
