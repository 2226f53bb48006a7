// bev_pool CUDA kernel: float32 / float16 / bfloat16 / float64 features, accumulation in the
// op-math type (float32 for the 16-bit types).
//
// Forward: 1. per-point flat cell rank (-1 when outside the grid or the batch),
//          2. stable radix sort of the kept points by rank (at::sort), run starts,
//          3. one thread per (run, channel) sums its run in point order and writes the cell.
// Backward: one thread per (point, channel) recomputes the point's cell from coords and copies the
// cell gradient (0 for dropped points).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>

#include "bev_pool.h"

namespace bev_ddp {
namespace {

constexpr int kThreads = 256;

inline int64_t num_blocks(int64_t work) { return std::min<int64_t>((work + kThreads - 1) / kThreads, 1 << 20); }

template <typename index_t>
__global__ void ranks_kernel(const index_t* __restrict__ coords, int64_t n, BevGrid grid,
                             int64_t* __restrict__ ranks) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const index_t* c = coords + 4 * i;
    ranks[i] = grid.point_rank(c[0], c[1], c[2], c[3]);
  }
}

template <typename scalar_t>
__global__ void reduce_runs_kernel(const scalar_t* __restrict__ feats, const int64_t* __restrict__ order,
                                   const int64_t* __restrict__ sorted_ranks, const int64_t* __restrict__ run_start,
                                   int64_t num_runs, int64_t num_kept, int64_t channels, int64_t cells_per_sample,
                                   scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_runs * channels;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t run = t / channels, c = t % channels;  // neighbouring threads read neighbouring channels
    const int64_t begin = run_start[run];
    const int64_t end = run + 1 < num_runs ? run_start[run + 1] : num_kept;
    acc_t acc = 0;
    for (int64_t j = begin; j < end; ++j) acc += static_cast<acc_t>(feats[order[j] * channels + c]);
    const int64_t cell = sorted_ranks[begin];
    const int64_t b = cell / cells_per_sample, s = cell % cells_per_sample;
    out[(b * channels + c) * cells_per_sample + s] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
__global__ void broadcast_grad_kernel(const scalar_t* __restrict__ grad_cells, const index_t* __restrict__ coords,
                                      int64_t n, int64_t channels, BevGrid grid, scalar_t* __restrict__ grad_feats) {
  const int64_t total = n * channels;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = t / channels, ch = t % channels;
    const index_t* c = coords + 4 * i;
    const int64_t r = grid.point_rank(c[0], c[1], c[2], c[3]);
    grad_feats[t] = r >= 0 ? grad_cells[r * channels + ch] : static_cast<scalar_t>(0);
  }
}

}  // namespace

at::Tensor bev_pool_forward_cuda(const at::Tensor& feats_in, const at::Tensor& coords_in, const BevGrid& grid) {
  const c10::cuda::CUDAGuard guard(feats_in.device());
  const at::Tensor feats = feats_in.contiguous();
  const at::Tensor coords = coords_in.contiguous();
  const int64_t n = feats.size(0), channels = feats.size(1);
  const int64_t cells_per_sample = grid.cells_per_sample();
  auto stream = c10::cuda::getCurrentCUDAStream();

  at::Tensor out = at::zeros({grid.batch_size, channels, grid.nz, grid.nx, grid.ny}, feats.options());
  if (n == 0) return out;
  // 1. ranks [N]: flat cell of every point, -1 when dropped
  at::Tensor ranks = at::empty({n}, coords.options().dtype(at::kLong));
  AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_ranks_cuda", [&] {
    ranks_kernel<index_t><<<num_blocks(n), kThreads, 0, stream>>>(coords.data_ptr<index_t>(), n, grid,
                                                                  ranks.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 2. stable sort of the kept points by rank, then run starts
  const at::Tensor kept = at::nonzero(ranks.ge(0)).squeeze(1);  // [M] point indices
  const int64_t num_kept = kept.size(0);
  if (num_kept == 0 || channels == 0) return out;
  auto [sorted_ranks, perm] = at::sort(ranks.index_select(0, kept), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor order = kept.index_select(0, perm);  // [M] point index per sorted position
  at::Tensor is_start = at::ones({num_kept}, ranks.options().dtype(at::kBool));
  if (num_kept > 1) is_start.slice(0, 1).copy_(sorted_ranks.slice(0, 1).ne(sorted_ranks.slice(0, 0, num_kept - 1)));
  const at::Tensor run_start = at::nonzero(is_start).squeeze(1).contiguous();  // [R]
  const int64_t num_runs = run_start.size(0);

  // 3. per-run reduction
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cuda", [&] {
    reduce_runs_kernel<scalar_t><<<num_blocks(num_runs * channels), kThreads, 0, stream>>>(
        feats.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), sorted_ranks.data_ptr<int64_t>(),
        run_start.data_ptr<int64_t>(), num_runs, num_kept, channels, cells_per_sample, out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor bev_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& coords_in) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const BevGrid grid{grad_out.size(0), grad_out.size(2), grad_out.size(3), grad_out.size(4)};
  const int64_t batch_size = grid.batch_size, channels = grad_out.size(1);
  const int64_t cells_per_sample = grid.cells_per_sample();
  const at::Tensor coords = coords_in.contiguous();
  const int64_t n = coords.size(0);
  at::Tensor grad_feats = at::empty({n, channels}, grad_out.options());
  if (n == 0 || channels == 0) return grad_feats;
  // [B, C, Z*X*Y] -> [B, Z*X*Y, C]: coalesced row reads per point
  const at::Tensor grad_cells = grad_out.reshape({batch_size, channels, cells_per_sample}).transpose(1, 2).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "bev_pool_backward_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_backward_cuda", [&] {
      broadcast_grad_kernel<scalar_t, index_t><<<num_blocks(n * channels), kThreads, 0, stream>>>(
          grad_cells.data_ptr<scalar_t>(), coords.data_ptr<index_t>(), n, channels, grid,
          grad_feats.data_ptr<scalar_t>());
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_feats;
}

}  // namespace bev_ddp
