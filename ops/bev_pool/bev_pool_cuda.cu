// bev_pool CUDA kernel: float32 / float16 / bfloat16 / float64 features, accumulation in the
// op-math type (float32 for the 16-bit types).
//
// Forward: 1. per-point flat cell rank (-1 when dropped: outside the grid, or a bad batch index,
//             which also raises a device flag),
//          2. stable radix sort of all points by rank (at::sort),
//          3. one thread per (sorted position, channel): a thread at the start of a run of kept
//             points sums the run in point order and writes the cell; every other thread returns.
//          The host reads the bad-batch flag once, after the last launch: one synchronisation per
//          call, and no nonzero() (whose output size needs a synchronisation each).
// Backward: one thread per (point, channel) recomputes the point's cell from coords and copies the
// cell gradient (0 for dropped points).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>

#include "bev_pool.h"

namespace bev_ddp {
namespace {

constexpr int kThreads = 256;

inline int64_t num_blocks(int64_t work) { return std::min<int64_t>((work + kThreads - 1) / kThreads, 1 << 20); }

template <typename index_t>
__global__ void ranks_kernel(const index_t* __restrict__ coords, int64_t n, BevGrid grid,
                             int64_t* __restrict__ ranks, int* __restrict__ bad_batch) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const index_t* c = coords + 4 * i;
    ranks[i] = grid.point_rank(c[0], c[1], c[2], c[3]);
    if (!grid.batch_ok(c[3])) *bad_batch = 1;  // every writer stores the same value: no atomic needed
  }
}

// One thread per (sorted position j, channel c).  Positions with a negative rank (dropped points
// sort first) and positions inside a run return at once; the thread at a run's first position sums
// the run.  Neighbouring threads hold neighbouring channels of one position, so a warp takes one
// branch and reads neighbouring feature entries.
template <typename scalar_t>
__global__ void reduce_runs_kernel(const scalar_t* __restrict__ feats, const int64_t* __restrict__ order,
                                   const int64_t* __restrict__ sorted_ranks, int64_t n, int64_t channels,
                                   int64_t cells_per_sample, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = n * channels;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t begin = t / channels, c = t % channels;
    const int64_t cell = sorted_ranks[begin];
    if (cell < 0 || (begin > 0 && sorted_ranks[begin - 1] == cell)) continue;  // dropped, or not a run start
    acc_t acc = 0;
    for (int64_t j = begin; j < n && sorted_ranks[j] == cell; ++j) acc += static_cast<acc_t>(feats[order[j] * channels + c]);
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
  // 1. ranks [N]: flat cell of every point, -1 when dropped; bad_batch set by any out-of-range batch index
  at::Tensor ranks = at::empty({n}, coords.options().dtype(at::kLong));
  at::Tensor bad_batch = at::zeros({1}, coords.options().dtype(at::kInt));
  AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_ranks_cuda", [&] {
    ranks_kernel<index_t><<<num_blocks(n), kThreads, 0, stream>>>(coords.data_ptr<index_t>(), n, grid,
                                                                  ranks.data_ptr<int64_t>(), bad_batch.data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (channels > 0) {
    // 2. stable sort of all points by rank (dropped points, rank -1, come first)
    auto [sorted_ranks, order] = at::sort(ranks, /*stable=*/true, /*dim=*/0, /*descending=*/false);  // [N] each
    // 3. per-run reduction
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cuda", [&] {
      reduce_runs_kernel<scalar_t><<<num_blocks(n * channels), kThreads, 0, stream>>>(
          feats.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), sorted_ranks.data_ptr<int64_t>(), n, channels,
          cells_per_sample, out.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // the one synchronisation of the call: the same check and message as the CPU kernel
  TORCH_CHECK_VALUE(bad_batch.item<int>() == 0, "bev_pool coords batch index (column 3) must lie in [0, ",
                    grid.batch_size, ")");
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
