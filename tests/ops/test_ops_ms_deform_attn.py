"""ms_deform_attn: compiled kernels against the grid_sample reference, edge cases and bad input."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.ops import MSDeformAttnSampler, ms_deform_attn, ms_deform_attn_reference
from bev_ddp.ops import _extension
from bev_ddp.ops._library import flat_levels, ms_deform_attn_op

from ops_helpers import make_generator, run_with_1_and_2_threads


def make_inputs(batch=2, queries=9, heads=2, dims=4, levels=((5, 6), (3, 2)), points=3, *, dtype=torch.float32,
                margin=0.2, seed=0):
    """Random inputs; sampling locations cover [-margin, 1 + margin] so some taps fall off the map."""
    g = make_generator(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(batch, int(areas.sum()), heads, dims, generator=g, dtype=torch.float64)
    loc = torch.rand(batch, queries, heads, len(levels), points, 2, generator=g, dtype=torch.float64)
    loc = loc * (1 + 2 * margin) - margin
    attn = torch.rand(batch, queries, heads, len(levels), points, generator=g, dtype=torch.float64)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return value.to(dtype), shapes, starts, loc.to(dtype), attn.to(dtype)


def kernel_attn(module, value, shapes, starts, loc, attn):
    """Call the compiled path explicitly (ms_deform_attn would fall back silently when not built): the
    custom op torch.ops.bev_ddp.ms_deform_attn, which dispatches to ``module`` by the tensors' device."""
    assert module is not None
    return ms_deform_attn_op(value.contiguous(), flat_levels(shapes.tolist()), loc.contiguous(), attn.contiguous())


def grads(fn, inputs, grad_out):
    value, loc, attn = (inputs[i].detach().clone().requires_grad_(True) for i in (0, 3, 4))
    shapes, starts = inputs[1], inputs[2]
    out = fn(value, shapes, starts, loc, attn)
    return (out, *torch.autograd.grad(out, (value, loc, attn), grad_out))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("levels", [((6, 7),), ((5, 6), (3, 2), (1, 1))])
def test_forward_and_grads_match_reference(cpu_kernel, dtype, tol, levels):
    inputs = make_inputs(levels=levels, dtype=dtype)
    grad_out = torch.randn(2, 9, 8, generator=make_generator(1), dtype=dtype)
    got = grads(lambda *a: kernel_attn(cpu_kernel, *a), inputs, grad_out)
    want = grads(ms_deform_attn_reference, inputs, grad_out)
    for name, g, w in zip(("out", "grad_value", "grad_loc", "grad_attn"), got, want):
        # grad_loc carries the map size (up to 7) as a factor
        torch.testing.assert_close(g, w, rtol=tol * 10, atol=tol * 10, msg=lambda m, n=name: f"{n}: {m}")


def test_gradcheck_float64(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs(batch=1, queries=3, heads=2, dims=2, points=2, dtype=torch.float64)
    leaves = [value.requires_grad_(True), loc.requires_grad_(True), attn.requires_grad_(True)]
    assert torch.autograd.gradcheck(lambda v, l, a: kernel_attn(cpu_kernel, v, shapes, starts, l, a), leaves)


def test_locations_on_and_beyond_the_border(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs(batch=1, queries=1, heads=1, levels=((4, 4),), points=6)
    loc[0, 0, 0, 0] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-0.125, 0.5], [1.125, 0.5], [2.0, -3.0], [0.5, 1.1]])
    out = kernel_attn(cpu_kernel, value, shapes, starts, loc, attn)
    torch.testing.assert_close(out, ms_deform_attn_reference(value, shapes, starts, loc, attn))


def test_non_finite_location_contributes_nothing(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs(batch=1, queries=2, heads=1, levels=((4, 4),), points=2)
    loc[0, 0, 0, 0, 0] = torch.tensor([float("nan"), 0.5])
    loc[0, 1, 0, 0, 1] = torch.tensor([0.5, float("inf")])
    out = kernel_attn(cpu_kernel, value, shapes, starts, loc, attn)
    dropped = attn.clone()
    dropped[0, 0, 0, 0, 0] = 0
    dropped[0, 1, 0, 0, 1] = 0
    safe = loc.nan_to_num(0.5, 0.5)
    torch.testing.assert_close(out, ms_deform_attn_reference(value, shapes, starts, safe, dropped))


def test_no_queries(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs(queries=0)
    value.requires_grad_(True)
    out = kernel_attn(cpu_kernel, value, shapes, starts, loc, attn)
    assert out.shape == (2, 0, 8)
    out.sum().backward()
    assert not value.grad.any()


def test_non_contiguous_inputs():
    value, shapes, starts, loc, attn = make_inputs(heads=2, dims=4)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    loc_nc = torch.cat([loc, loc], dim=-1)[..., :2]
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous())
    out = ms_deform_attn(value_nc, shapes, starts, loc_nc, attn_nc)
    torch.testing.assert_close(out, ms_deform_attn_reference(value, shapes, starts, loc, attn))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(cpu_kernel, dtype):
    inputs = make_inputs(dtype=torch.float64)
    out = kernel_attn(cpu_kernel, *[t.to(dtype) if t.is_floating_point() else t for t in inputs])
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ms_deform_attn_reference(*inputs), rtol=2e-2, atol=2e-2)


def test_bit_identical_for_any_thread_count(cpu_kernel):
    inputs = make_inputs(batch=1, queries=300, heads=4, dims=8)
    grad_out = torch.randn(1, 300, 32, generator=make_generator(4))
    one, two = run_with_1_and_2_threads(lambda: grads(lambda *a: kernel_attn(cpu_kernel, *a), inputs, grad_out))
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("op", [ms_deform_attn, ms_deform_attn_reference])
def test_mixed_float_dtypes_are_promoted(op):
    """float16 values with float32 locations (autocast) compute in float32."""
    value, shapes, starts, loc, attn = make_inputs()
    out = op(value.half(), shapes, starts, loc, attn)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ms_deform_attn_reference(value.half().float(), shapes, starts, loc, attn))


def test_module_wraps_function():
    inputs = make_inputs()
    assert torch.equal(MSDeformAttnSampler()(*inputs), ms_deform_attn(*inputs))


def _bad(**changes):
    value, shapes, starts, loc, attn = make_inputs()
    args = dict(value=value, spatial_shapes=shapes, level_start_index=starts, sampling_locations=loc, attn_weights=attn)
    args.update(changes)
    return args


BAD_INPUTS = [
    (dict(value=torch.zeros(2, 31, 2, 4)), "cover 36 positions but value has S=31"),
    (dict(value=torch.zeros(2, 36, 2)), "value must have 4 dimensions"),
    (dict(spatial_shapes=torch.tensor([[5, 6], [3, 2]], dtype=torch.int32)), "spatial_shapes must have dtype"),
    (dict(spatial_shapes=torch.tensor([[-5, -6], [3, 2]])), "must be positive"),
    (dict(spatial_shapes=torch.tensor([[5, 6, 1], [3, 2, 1]])), r"\[L, 2\]"),
    (dict(level_start_index=torch.tensor([0, 29])), "level_start_index must be"),
    (dict(level_start_index=torch.tensor([-30, 30])), "level_start_index must be"),
    (dict(level_start_index=torch.tensor([0])), "level_start_index must have shape"),
    (dict(sampling_locations=torch.zeros(2, 9, 3, 2, 3, 2)), "sampling_locations must have shape"),
    (dict(sampling_locations=torch.zeros(2, 9, 2, 2, 3, 3)), "sampling_locations must have shape"),
    (dict(attn_weights=torch.zeros(2, 9, 2, 2, 4)), "attn_weights must have shape"),
    (dict(value=torch.zeros(2, 36, 2, 4, dtype=torch.int64)), "value must have dtype"),
]


@pytest.mark.parametrize("changes, match", BAD_INPUTS)
@pytest.mark.parametrize("op", [ms_deform_attn, ms_deform_attn_reference])
def test_bad_input_raises_named_error(op, changes, match):
    with pytest.raises(InputError, match=match):
        op(**_bad(**changes))


def test_kernel_itself_refuses_levels_outside_value(cpu_kernel):
    """The compiled entry point checks the level table too, so it never reads out of bounds."""
    value, shapes, _, loc, attn = make_inputs()
    for starts in (torch.tensor([0, 34]), torch.tensor([-1, 30])):
        with pytest.raises(ValueError, match="does not fit in value"):
            cpu_kernel.ms_deform_attn_forward(value, shapes, starts, loc, attn)
        with pytest.raises(ValueError, match="does not fit in value"):
            cpu_kernel.ms_deform_attn_backward(value, shapes, starts, loc, attn, torch.zeros(2, 9, 8))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_matches_reference(cuda_kernel, dtype, seed):
    """Against the float64 reference fed the same rounded inputs (see assert_matches_rounded_reference)."""
    inputs = make_inputs(batch=2, queries=50, heads=4, dims=16, dtype=torch.float64, seed=seed)
    grad_out = torch.randn(2, 50, 64, generator=make_generator(5 + seed), dtype=torch.float64)
    assert_matches_rounded_reference(ms_deform_attn, inputs, grad_out, dtype, "cuda")


@pytest.mark.cuda
def test_cuda_gradcheck_float64(cuda_kernel):
    value, shapes, starts, loc, attn = [t.cuda() for t in make_inputs(batch=1, queries=3, heads=2, dims=2, points=2,
                                                                       dtype=torch.float64)]
    leaves = [value.requires_grad_(True), loc.requires_grad_(True), attn.requires_grad_(True)]
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn(v, shapes, starts, l, a), leaves)


# -- GPU path readiness (checked on the CPU where possible) ----------------------------------------
def rounded_like_kernel(inputs, dtype):
    """The float inputs rounded to ``dtype`` (what a ``dtype`` kernel reads), back in float64."""
    return [t.to(dtype).double() if t.is_floating_point() else t for t in inputs]


def assert_matches_rounded_reference(fn, inputs, grad_out, dtype, device):
    """Run ``fn`` in ``dtype`` on ``device`` and compare with the float64 reference fed the SAME
    rounded inputs: a rounded location can cross a pixel edge, where the location gradient jumps,
    so the unrounded inputs are not a fair reference for 16-bit kernels.

    Tolerance: 16-bit outputs are rounded once from float32 sums, so 8 units of their epsilon;
    float32 sums of 16 products 1e-4 (as before), float64 1e-10; times 10 for the location
    gradient, which carries the map size (<= 7 here) as a factor.
    """
    exact = rounded_like_kernel(inputs, dtype)
    want = grads(ms_deform_attn_reference, exact, grad_out.to(dtype).double())
    dev_inputs = [t.to(device, dtype) if t.is_floating_point() else t for t in inputs]
    got = grads(fn, dev_inputs, grad_out.to(device, dtype))
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 8 * torch.finfo(dtype).eps)
    for name, g, w in zip(("out", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert g.dtype == dtype and g.device.type == torch.device(device).type
        scale = 10 if name == "grad_loc" else 1
        torch.testing.assert_close(g.double().cpu(), w, rtol=tol * scale, atol=tol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_stand_in_for_the_cuda_comparison(cpu_kernel, dtype, seed):
    """The CUDA test's comparison and tolerance, run with the CPU kernel (same sizes)."""
    inputs = make_inputs(batch=2, queries=50, heads=4, dims=16, dtype=torch.float64, seed=seed)
    grad_out = torch.randn(2, 50, 64, generator=make_generator(5 + seed), dtype=torch.float64)
    assert_matches_rounded_reference(lambda *a: kernel_attn(cpu_kernel, *a), inputs, grad_out, dtype, "cpu")


def test_double_backward_raises_instead_of_a_silent_zero(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs(batch=1, queries=3, dtype=torch.float64)
    value.requires_grad_(True)
    out = kernel_attn(cpu_kernel, value, shapes, starts, loc, attn)
    (grad,) = torch.autograd.grad((out**2).sum(), value, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.pow(2).sum().backward()


def test_backward_computes_only_the_gradients_asked_for(cpu_kernel, monkeypatch):
    """needs_input_grad reaches the kernel: no grad_value (no scatter) when value needs none."""
    value, shapes, starts, loc, attn = make_inputs()
    grad_out = torch.randn(2, 9, 8, generator=make_generator(3))
    _, want_value, want_loc, want_attn = grads(lambda *a: kernel_attn(cpu_kernel, *a), make_inputs(), grad_out)
    seen = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(cpu_kernel, name)

            def call(*args, **kwargs):
                seen.append((name, kwargs.get("need_grad_value")))
                return fn(*args, **kwargs)
            return call

    loc.requires_grad_(True)
    attn.requires_grad_(True)
    monkeypatch.setitem(_extension._cache, "cpu", Spy())  # what the registered CPU kernel calls
    out = kernel_attn(cpu_kernel, value, shapes, starts, loc, attn)
    got_loc, got_attn = torch.autograd.grad(out, (loc, attn), grad_out)
    monkeypatch.undo()
    assert ("ms_deform_attn_backward", False) in seen
    torch.testing.assert_close(got_loc, want_loc)
    torch.testing.assert_close(got_attn, want_attn)
    grad_value, _, _ = cpu_kernel.ms_deform_attn_backward(value, shapes, starts, loc.detach(), attn.detach(), grad_out,
                                                          need_grad_value=False)
    assert grad_value is None


def test_kernel_backward_checks_grad_out_device(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs()
    with pytest.raises(ValueError, match="grad_out must be on value's device"):
        cpu_kernel.ms_deform_attn_backward(value, shapes, starts, loc, attn, torch.zeros(2, 9, 8, device="meta"))


def test_kernel_wants_the_level_table_on_the_host(cpu_kernel):
    value, shapes, starts, loc, attn = make_inputs()
    with pytest.raises(ValueError, match="must be CPU tensors"):
        cpu_kernel.ms_deform_attn_forward(value, shapes.to("meta"), starts, loc, attn)


def test_host_level_table_needs_no_read_back(cpu_kernel):
    """With (h, w) pairs the wrapper reads no tensor value back (no device sync on a GPU)."""
    from bev_ddp.bench.host_sync import HostSyncError, forbid_host_sync

    value, shapes, starts, loc, attn = make_inputs()
    want = ms_deform_attn(value, shapes, starts, loc, attn)
    pairs = [tuple(row) for row in shapes.tolist()]
    with forbid_host_sync(cuda=False):
        got = ms_deform_attn(value, pairs, None, loc, attn)
        with pytest.raises(HostSyncError):  # a tensor table is read back once (documented)
            ms_deform_attn(value, shapes, starts, loc, attn)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_too_many_levels_is_a_named_error():
    value = torch.zeros(1, 17, 1, 2)
    with pytest.raises(InputError, match="at most 16 levels"):
        ms_deform_attn(value, [(1, 1)] * 17, None, torch.zeros(1, 1, 1, 17, 1, 2), torch.zeros(1, 1, 1, 17, 1))


@pytest.mark.cuda
def test_cuda_backward_is_flagged_non_deterministic(cuda_kernel):
    value, shapes, starts, loc, attn = [t.cuda() for t in make_inputs()]
    value.requires_grad_(True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = ms_deform_attn(value, shapes, starts, loc, attn)
        with pytest.raises(RuntimeError, match="ms_deform_attn_backward_cuda"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.cuda
def test_cuda_kernel_backward_checks_grad_out_device(cuda_kernel):
    value, shapes, starts, loc, attn = make_inputs()
    with pytest.raises(ValueError, match="grad_out must be on value's device"):
        cuda_kernel.ms_deform_attn_backward(value.cuda(), shapes, starts, loc.cuda(), attn.cuda(), torch.zeros(2, 9, 8))
