"""bev_pool: compiled kernels against the index_add reference, edge cases and bad input."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.ops import BEVPool, bev_pool, bev_pool_reference
from bev_ddp.ops._library import bev_pool_backward_op, bev_pool_op

from ops_helpers import make_generator, run_with_1_and_2_threads


def random_points(n, channels, batch_size, grid, *, outside=0.0, dtype=torch.float32, index_dtype=torch.int64, seed=0):
    """n points with features [n, C] and coords [n, 4]; a fraction `outside` lies off the grid."""
    g = make_generator(seed)
    nz, nx, ny = grid
    feats = torch.randn(n, channels, generator=g, dtype=torch.float64).to(dtype)
    coords = torch.stack(
        [
            torch.randint(0, nx, (n,), generator=g),
            torch.randint(0, ny, (n,), generator=g),
            torch.randint(0, nz, (n,), generator=g),
            torch.randint(0, batch_size, (n,), generator=g),
        ],
        dim=1,
    )
    if outside > 0:
        off = torch.rand(n, generator=g) < outside
        axis = torch.randint(0, 3, (n,), generator=g)
        shift = torch.where(torch.rand(n, generator=g) < 0.5, -1 - coords[torch.arange(n), axis], torch.tensor(nx + ny + nz))
        coords[off, axis[off]] += shift[off]
    return feats, coords.to(index_dtype)


def kernel_pool(module, feats, coords, batch_size, grid):
    """Call the compiled path explicitly (bev_pool would fall back silently when not built): the
    custom op torch.ops.bev_ddp.bev_pool, which dispatches to ``module`` by the tensors' device."""
    assert module is not None
    return bev_pool_op(feats.contiguous(), coords.contiguous(), batch_size, *grid)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
# (3, 11, 13): 429 cells per sample, so the kernel's blocks of output cells end mid-sample and its
# output rows start unaligned
@pytest.mark.parametrize("batch_size, grid", [(1, (1, 16, 16)), (3, (2, 7, 5)), (2, (3, 11, 13))])
def test_forward_and_grad_match_reference(cpu_kernel, index_dtype, batch_size, grid):
    feats, coords = random_points(3000, 12, batch_size, grid, outside=0.2, index_dtype=index_dtype)
    feats.requires_grad_(True)
    coords_before = coords.clone()
    out = kernel_pool(cpu_kernel, feats, coords, batch_size, grid)
    ref = bev_pool_reference(feats, coords, batch_size, grid)
    assert torch.equal(coords, coords_before)  # neither path writes into the caller's coords
    assert out.shape == (batch_size, 12, *grid) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(out.shape, generator=make_generator(1))
    (g_kernel,) = torch.autograd.grad(out, feats, grad)
    (g_ref,) = torch.autograd.grad(ref, feats, grad)
    torch.testing.assert_close(g_kernel, g_ref, rtol=0, atol=0)  # a pure copy: exact


def test_gradcheck_float64(cpu_kernel):
    feats, coords = random_points(40, 3, 2, (2, 3, 4), outside=0.2, dtype=torch.float64)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: kernel_pool(cpu_kernel, f, coords, 2, (2, 3, 4)), (feats,))


def test_sum_is_exact_float64(cpu_kernel):
    feats, coords = random_points(500, 4, 2, (1, 3, 3), dtype=torch.float64)
    out = kernel_pool(cpu_kernel, feats, coords, 2, (1, 3, 3))
    # independent check of one cell: b=1, z=0, x=2, y=1
    mask = (coords[:, 0] == 2) & (coords[:, 1] == 1) & (coords[:, 2] == 0) & (coords[:, 3] == 1)
    torch.testing.assert_close(out[1, :, 0, 2, 1], feats[mask].sum(0))


def test_empty_input(cpu_kernel):
    feats = torch.zeros(0, 5, requires_grad=True)
    coords = torch.zeros(0, 4, dtype=torch.int64)
    out = kernel_pool(cpu_kernel, feats, coords, 2, (1, 4, 3))
    assert out.shape == (2, 5, 1, 4, 3) and not out.any()
    out.sum().backward()
    assert feats.grad.shape == (0, 5)


def test_one_point(cpu_kernel):
    feats = torch.tensor([[1.5, -2.0]], requires_grad=True)
    coords = torch.tensor([[3, 1, 0, 1]])  # x=3, y=1, z=0, b=1
    out = kernel_pool(cpu_kernel, feats, coords, 2, (1, 4, 2))
    expected = torch.zeros(2, 2, 1, 4, 2)
    expected[1, :, 0, 3, 1] = torch.tensor([1.5, -2.0])
    assert torch.equal(out, expected)
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    idx = torch.arange(out.numel()).view_as(out)
    assert torch.equal(feats.grad[0], idx[1, :, 0, 3, 1].float())


@pytest.mark.parametrize("grid, cell", [((2, 3, 1), (1, 2, 0)), ((1, 1, 1), (0, 0, 0))])
def test_all_points_in_one_cell(cpu_kernel, grid, cell):
    """A one-cell grid also exercises the kernel's split of the channels across threads."""
    feats = torch.randn(1000, 70, generator=make_generator(2), dtype=torch.float64)
    z, x, y = cell
    coords = torch.tensor([[x, y, z, 0]]).repeat(1000, 1)
    out = kernel_pool(cpu_kernel, feats, coords, 1, grid)
    torch.testing.assert_close(out[0, :, z, x, y], feats.sum(0))
    out[0, :, z, x, y] = 0
    assert not out.any()


def test_points_outside_grid_are_dropped(cpu_kernel):
    feats = torch.ones(6, 2, requires_grad=True)
    coords = torch.tensor([[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 0], [4, 0, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0]])
    out = kernel_pool(cpu_kernel, feats, coords, 1, (1, 4, 3))
    assert not out.any()
    out.sum().backward()
    assert not feats.grad.any()


def test_non_contiguous_inputs(cpu_kernel):
    base_feats, base_coords = random_points(800, 16, 2, (1, 6, 6), outside=0.1)
    feats = base_feats.t().contiguous().t()[:, ::2]  # strided view [800, 8]
    coords = torch.cat([base_coords, base_coords], dim=1)[:, :4]  # row stride 8
    assert not feats.is_contiguous() and not coords.is_contiguous()
    out = bev_pool(feats, coords, 2, (1, 6, 6))
    torch.testing.assert_close(out, bev_pool_reference(feats.contiguous(), coords.contiguous(), 2, (1, 6, 6)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(cpu_kernel, dtype):
    feats, coords = random_points(4000, 8, 1, (1, 4, 4), dtype=dtype)  # ~250 points per cell
    out = kernel_pool(cpu_kernel, feats, coords, 1, (1, 4, 4))
    assert out.dtype == dtype
    ref = bev_pool_reference(feats.double(), coords, 1, (1, 4, 4))
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


def test_bit_identical_for_any_thread_count(cpu_kernel):
    feats, coords = random_points(20000, 9, 2, (1, 8, 8), outside=0.1)
    one, two = run_with_1_and_2_threads(lambda: kernel_pool(cpu_kernel, feats, coords, 2, (1, 8, 8)))
    assert torch.equal(one, two)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_many_points_are_merged_across_chunks(cpu_kernel, dtype, rtol):
    """Enough points for several accumulation chunks: matches the reference, same for any thread count."""
    feats, coords = random_points(2_300_000, 3, 2, (1, 4, 5), outside=0.1, dtype=dtype, index_dtype=torch.int32)
    one, two = run_with_1_and_2_threads(lambda: kernel_pool(cpu_kernel, feats, coords, 2, (1, 4, 5)))
    assert torch.equal(one, two)
    ref = bev_pool_reference(feats.double(), coords, 2, (1, 4, 5))
    torch.testing.assert_close(one.double(), ref, rtol=rtol, atol=1e-2)  # ~20k-point sums per cell


def test_module_wraps_function():
    feats, coords = random_points(100, 3, 1, (1, 5, 5))
    pool = BEVPool(grid=(1, 5, 5))
    assert torch.equal(pool(feats, coords, 1), bev_pool(feats, coords, 1, (1, 5, 5)))


@pytest.mark.parametrize(
    "feats, coords, batch_size, grid, match",
    [
        (torch.zeros(4, 2), torch.zeros(5, 4, dtype=torch.long), 1, (1, 2, 2), "same number of points"),
        (torch.zeros(4, 2), torch.zeros(4, 4), 1, (1, 2, 2), "coords must have dtype"),
        (torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.long), 1, (1, 2, 2), r"\[N, 4\]"),
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), 1, (1, 2, 2), "feats must have dtype"),
        (torch.zeros(4), torch.zeros(4, 4, dtype=torch.long), 1, (1, 2, 2), "feats must have 2 dimensions"),
        (torch.zeros(1, 2), torch.tensor([[0, 0, 0, -1]]), 1, (1, 2, 2), "batch index"),
        (torch.zeros(1, 2), torch.tensor([[0, 0, 0, 2]]), 2, (1, 2, 2), "batch index"),
        (torch.zeros(1, 2), torch.tensor([[0, 0, 0, 0]]), 0, (1, 2, 2), "batch_size"),
        (torch.zeros(1, 2), torch.tensor([[0, 0, 0, 0]]), 1, (1, 0, 2), "positive"),
        (torch.zeros(1, 2), torch.tensor([[0, 0, 0, 0]]), 1, (1, 2), "triple"),
        ("feats", torch.tensor([[0, 0, 0, 0]]), 1, (1, 2, 2), "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("op", [bev_pool, bev_pool_reference])
def test_bad_input_raises_named_error(op, feats, coords, batch_size, grid, match):
    with pytest.raises(InputError, match=match):
        op(feats, coords, batch_size, grid)


@pytest.mark.parametrize("bad_b", [-1, 3, 2**40])
def test_kernel_itself_refuses_out_of_range_batch(cpu_kernel, bad_b):
    """The compiled entry point checks too, so no caller can make it write out of bounds."""
    coords = torch.tensor([[0, 0, 0, 0], [1, 1, 0, bad_b]])
    with pytest.raises(ValueError, match="batch index"):
        cpu_kernel.bev_pool_forward(torch.ones(2, 3), coords, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="int32 or int64"):
        cpu_kernel.bev_pool_forward(torch.ones(2, 3), coords.float(), 2, 1, 2, 2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_cuda_matches_cpu_reference(cuda_kernel, dtype, tol):
    feats, coords = random_points(20000, 24, 2, (2, 16, 16), outside=0.2)
    ref = bev_pool_reference(feats.double(), coords, 2, (2, 16, 16))
    feats_cuda = feats.to("cuda", dtype).requires_grad_(True)
    out = bev_pool(feats_cuda, coords.cuda(), 2, (2, 16, 16))
    assert out.dtype == dtype and out.device.type == "cuda"
    torch.testing.assert_close(out.double().cpu(), ref, rtol=tol, atol=tol * 30)
    grad = torch.randn(out.shape, generator=make_generator(3))
    (g,) = torch.autograd.grad(out, feats_cuda, grad.to("cuda", dtype))
    # backward is a copy of each cell's gradient: compare exactly with the reference's
    feats_ref = feats.to(dtype).requires_grad_(True)
    (g_ref,) = torch.autograd.grad(bev_pool_reference(feats_ref, coords, 2, (2, 16, 16)), feats_ref, grad.to(dtype))
    assert torch.equal(g.cpu(), g_ref)


@pytest.mark.cuda
def test_cuda_edge_cases(cuda_kernel):
    empty = bev_pool(torch.zeros(0, 3, device="cuda"), torch.zeros(0, 4, dtype=torch.long, device="cuda"), 1, (1, 2, 2))
    assert empty.shape == (1, 3, 1, 2, 2) and not empty.any()
    one_cell = bev_pool(torch.ones(500, 3, device="cuda"), torch.zeros(500, 4, dtype=torch.int32, device="cuda"), 1, (1, 2, 2))
    assert one_cell[0, :, 0, 0, 0].tolist() == [500.0] * 3 and one_cell.sum().item() == 1500.0
    feats = torch.randn(64, 3, 2, device="cuda")[:, :, 0]
    coords = torch.randint(0, 2, (64, 8), device="cuda")[:, :4]
    assert not feats.is_contiguous() and not coords.is_contiguous()
    torch.testing.assert_close(bev_pool(feats, coords, 2, (2, 2, 2)), bev_pool_reference(feats, coords, 2, (2, 2, 2)))


# -- GPU path readiness (checked on the CPU where possible) ----------------------------------------
def test_double_backward_raises_instead_of_a_silent_zero(cpu_kernel):
    feats, coords = random_points(40, 3, 1, (1, 4, 4), dtype=torch.float64)
    feats.requires_grad_(True)
    out = kernel_pool(cpu_kernel, feats, coords, 1, (1, 4, 4))
    (grad,) = torch.autograd.grad((out**2).sum(), feats, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.pow(2).sum().backward()


def test_backward_skipped_without_feature_grad(cpu_kernel):
    feats, coords = random_points(10, 2, 1, (1, 2, 2))
    scale = torch.ones((), requires_grad=True)
    out = kernel_pool(cpu_kernel, feats, coords, 1, (1, 2, 2)) * scale  # feats need no gradient
    out.sum().backward()
    assert scale.grad is not None


def _batch_error(fn):
    try:
        fn()
    except (ValueError, InputError) as exc:
        return type(exc), str(exc).split("\n")[0]
    return None, None


BATCH_MESSAGE = "bev_pool coords batch index (column 3) must lie in [0, 2)"


def _bad_batch_points(device):
    feats, coords = random_points(30, 2, 2, (1, 3, 3))
    coords[7, 3] = 2
    return feats.to(device), coords.to(device)


def assert_same_batch_errors(kernel, device):
    """The compiled entry point raises ValueError, the wrapper InputError, with one message."""
    feats, coords = _bad_batch_points(device)
    assert _batch_error(lambda: kernel.bev_pool_forward(feats, coords, 2, 1, 3, 3)) == (ValueError, BATCH_MESSAGE)
    assert _batch_error(lambda: bev_pool(feats, coords, 2, (1, 3, 3))) == (InputError, BATCH_MESSAGE)
    return feats, coords


def test_bad_batch_index_same_error_from_wrapper_and_kernel(cpu_kernel):
    feats, coords = assert_same_batch_errors(cpu_kernel, "cpu")
    kind, message = _batch_error(lambda: bev_pool_reference(feats, coords, 2, (1, 3, 3)))
    assert kind is InputError and message.startswith(BATCH_MESSAGE)


@pytest.mark.cuda
def test_cuda_bad_batch_index_raises_like_the_cpu(cuda_kernel):
    feats, coords = assert_same_batch_errors(cuda_kernel, "cuda")
    torch.cuda.synchronize()  # the context is still usable: a value error, not a device assert
    assert bev_pool(feats, coords.clamp(max=1), 2, (1, 3, 3)).is_cuda


def test_backward_never_hands_out_a_buffer_that_is_still_held(cpu_kernel):
    """The CPU backward keeps its last gradient buffer for the next call, but never hands it out while
    a previous gradient is alive: held gradients keep their values and every call's values are right.

    Whether a freed buffer is handed out again cannot be seen from here (the allocator may return
    the same address for a fresh buffer, or not); that is a speed effect, shown by ``bench ops``."""
    feats, coords = random_points(300, 8, 2, (1, 6, 5), outside=0.1)
    grid_out = (2, 8, 1, 6, 5)
    first_grad, second_grad = torch.randn(grid_out, generator=make_generator(1)), torch.randn(grid_out, generator=make_generator(2))
    leaf = feats.clone().requires_grad_(True)
    (want_first,) = torch.autograd.grad(bev_pool_reference(leaf, coords, 2, (1, 6, 5)), leaf, first_grad)
    (want_second,) = torch.autograd.grad(bev_pool_reference(leaf, coords, 2, (1, 6, 5)), leaf, second_grad)
    first = bev_pool_backward_op(first_grad, coords)
    second = bev_pool_backward_op(second_grad, coords)  # first is alive: a new buffer
    assert first.data_ptr() != second.data_ptr()
    assert torch.equal(first, want_first) and torch.equal(second, want_second)
    del second  # the cache's buffer may be handed out again
    third = bev_pool_backward_op(first_grad, coords)
    assert third.data_ptr() != first.data_ptr()  # first is still held
    assert torch.equal(third, want_first) and torch.equal(first, want_first)
