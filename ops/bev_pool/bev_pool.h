// bev_pool: sum point features into the cells of a [B, C, Z, X, Y] BEV grid.
//
// feats [N, C] float, coords [N, 4] int32/int64 (x, y, z, b).  Points with x, y or z outside the
// grid are dropped; a batch index outside [0, B) is an error.  Forward returns the pooled grid and
// the per-point flat cell rank (b * Z*X*Y + (z * X + x) * Y + y, or -1 for dropped points) that
// the backward pass uses to broadcast each cell's gradient back to its points.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <tuple>

namespace bev_ddp {

// CPU: one pass over contiguous point chunks into per-chunk cell-major partial sums, then a merge in
// chunk order (OpenMP over chunks, then over blocks of cells).
std::tuple<at::Tensor, at::Tensor> bev_pool_forward_cpu(const at::Tensor& feats, const at::Tensor& coords,
                                                        int64_t batch_size, int64_t nz, int64_t nx, int64_t ny);
at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& ranks);

#ifdef WITH_CUDA
// CUDA: ranks, stable radix sort, run starts, one thread per (run, channel), fp32 accumulation.
std::tuple<at::Tensor, at::Tensor> bev_pool_forward_cuda(const at::Tensor& feats, const at::Tensor& coords,
                                                         int64_t batch_size, int64_t nz, int64_t nx, int64_t ny);
at::Tensor bev_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& ranks);
#endif

// Checks shared by both devices; raise c10::ValueError (Python ValueError) naming the input.
inline void bev_pool_check_inputs(const at::Tensor& feats, const at::Tensor& coords, int64_t batch_size,
                                  int64_t nz, int64_t nx, int64_t ny) {
  TORCH_CHECK_VALUE(feats.dim() == 2, "bev_pool feats must be [N, C], got ", feats.sizes());
  TORCH_CHECK_VALUE(coords.dim() == 2 && coords.size(1) == 4, "bev_pool coords must be [N, 4], got ",
                    coords.sizes());
  TORCH_CHECK_VALUE(coords.size(0) == feats.size(0), "bev_pool feats ", feats.sizes(), " and coords ",
                    coords.sizes(), " differ in the number of points");
  TORCH_CHECK_VALUE(coords.scalar_type() == at::kInt || coords.scalar_type() == at::kLong,
                    "bev_pool coords must be int32 or int64, got ", coords.scalar_type());
  TORCH_CHECK_VALUE(c10::isFloatingType(feats.scalar_type()), "bev_pool feats must be floating point, got ",
                    feats.scalar_type());
  TORCH_CHECK_VALUE(feats.device() == coords.device(), "bev_pool feats and coords must be on one device");
  TORCH_CHECK_VALUE(batch_size > 0 && nz > 0 && nx > 0 && ny > 0,
                    "bev_pool batch size and grid must be positive, got B=", batch_size, " grid=(", nz, ", ", nx,
                    ", ", ny, ")");
}

// Device dispatch (one binding for both extensions; each is built with one of the two kernels).
inline std::tuple<at::Tensor, at::Tensor> bev_pool_forward(const at::Tensor& feats, const at::Tensor& coords,
                                                           int64_t batch_size, int64_t nz, int64_t nx,
                                                           int64_t ny) {
  bev_pool_check_inputs(feats, coords, batch_size, nz, nx, ny);
  if (feats.is_cuda()) {
#ifdef WITH_CUDA
    return bev_pool_forward_cuda(feats, coords, batch_size, nz, nx, ny);
#else
    TORCH_CHECK(false, "bev_pool: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return bev_pool_forward_cpu(feats, coords, batch_size, nz, nx, ny);
#else
  TORCH_CHECK(false, "bev_pool: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

inline at::Tensor bev_pool_backward(const at::Tensor& grad_out, const at::Tensor& ranks) {
  TORCH_CHECK_VALUE(grad_out.dim() == 5, "bev_pool grad_out must be [B, C, Z, X, Y], got ", grad_out.sizes());
  TORCH_CHECK_VALUE(ranks.dim() == 1 && ranks.scalar_type() == at::kLong, "bev_pool ranks must be int64 [N]");
  TORCH_CHECK_VALUE(grad_out.device() == ranks.device(), "bev_pool grad_out and ranks must be on one device");
  if (grad_out.is_cuda()) {
#ifdef WITH_CUDA
    return bev_pool_backward_cuda(grad_out, ranks);
#else
    TORCH_CHECK(false, "bev_pool: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return bev_pool_backward_cpu(grad_out, ranks);
#else
  TORCH_CHECK(false, "bev_pool: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

}  // namespace bev_ddp
