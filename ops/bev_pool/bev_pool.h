// bev_pool: sum point features into the cells of a [B, C, Z, X, Y] BEV grid.
//
// feats [N, C] float, coords [N, 4] int32/int64 (x, y, z, b).  Points with x, y or z outside the
// grid are dropped; a batch index outside [0, B) is an error.  Forward returns the pooled grid;
// backward takes the same coords and recomputes every point's cell (point_rank) to broadcast each
// cell's gradient back to its points, so no per-point state is stored between the two.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace bev_ddp {

// Flat cell index of a point in a [B, Z, X, Y] grid, b * Z*X*Y + (z * X + x) * Y + y, or -1 when
// the point is dropped (x, y or z outside the grid, or b outside [0, B)).
struct BevGrid {
  int64_t batch_size, nz, nx, ny;

  C10_HOST_DEVICE int64_t cells_per_sample() const { return nz * nx * ny; }
  C10_HOST_DEVICE bool batch_ok(int64_t b) const { return b >= 0 && b < batch_size; }
  C10_HOST_DEVICE int64_t point_rank(int64_t x, int64_t y, int64_t z, int64_t b) const {
    const bool inside = x >= 0 && x < nx && y >= 0 && y < ny && z >= 0 && z < nz;
    return (inside && batch_ok(b)) ? b * cells_per_sample() + (z * nx + x) * ny + y : -1;
  }
};

// CPU: one pass over contiguous point chunks into per-chunk cell-major partial sums, then a merge in
// chunk order (OpenMP over chunks, then over blocks of cells).
at::Tensor bev_pool_forward_cpu(const at::Tensor& feats, const at::Tensor& coords, const BevGrid& grid);
at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& coords);

#ifdef WITH_CUDA
// CUDA: ranks, stable radix sort, run starts, one thread per (run, channel), fp32 accumulation.
at::Tensor bev_pool_forward_cuda(const at::Tensor& feats, const at::Tensor& coords, const BevGrid& grid);
at::Tensor bev_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& coords);
#endif

// Checks shared by both devices; raise c10::ValueError (Python ValueError) naming the input.
inline void bev_pool_check_coords(const at::Tensor& coords) {
  TORCH_CHECK_VALUE(coords.dim() == 2 && coords.size(1) == 4, "bev_pool coords must be [N, 4], got ",
                    coords.sizes());
  TORCH_CHECK_VALUE(coords.scalar_type() == at::kInt || coords.scalar_type() == at::kLong,
                    "bev_pool coords must be int32 or int64, got ", coords.scalar_type());
}

inline void bev_pool_check_inputs(const at::Tensor& feats, const at::Tensor& coords, int64_t batch_size,
                                  int64_t nz, int64_t nx, int64_t ny) {
  TORCH_CHECK_VALUE(feats.dim() == 2, "bev_pool feats must be [N, C], got ", feats.sizes());
  bev_pool_check_coords(coords);
  TORCH_CHECK_VALUE(coords.size(0) == feats.size(0), "bev_pool feats ", feats.sizes(), " and coords ",
                    coords.sizes(), " differ in the number of points");
  TORCH_CHECK_VALUE(c10::isFloatingType(feats.scalar_type()), "bev_pool feats must be floating point, got ",
                    feats.scalar_type());
  TORCH_CHECK_VALUE(feats.device() == coords.device(), "bev_pool feats and coords must be on one device");
  TORCH_CHECK_VALUE(batch_size > 0 && nz > 0 && nx > 0 && ny > 0,
                    "bev_pool batch size and grid must be positive, got B=", batch_size, " grid=(", nz, ", ", nx,
                    ", ", ny, ")");
}

// Device dispatch (one binding for both extensions; each is built with one of the two kernels).
inline at::Tensor bev_pool_forward(const at::Tensor& feats, const at::Tensor& coords, int64_t batch_size,
                                   int64_t nz, int64_t nx, int64_t ny) {
  bev_pool_check_inputs(feats, coords, batch_size, nz, nx, ny);
  const BevGrid grid{batch_size, nz, nx, ny};
  if (feats.is_cuda()) {
#ifdef WITH_CUDA
    return bev_pool_forward_cuda(feats, coords, grid);
#else
    TORCH_CHECK(false, "bev_pool: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return bev_pool_forward_cpu(feats, coords, grid);
#else
  TORCH_CHECK(false, "bev_pool: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

// Backward: coords are the forward's; the grid is read from grad_out's shape [B, C, Z, X, Y].
inline at::Tensor bev_pool_backward(const at::Tensor& grad_out, const at::Tensor& coords) {
  TORCH_CHECK_VALUE(grad_out.dim() == 5, "bev_pool grad_out must be [B, C, Z, X, Y], got ", grad_out.sizes());
  bev_pool_check_coords(coords);
  TORCH_CHECK_VALUE(grad_out.device() == coords.device(), "bev_pool grad_out and coords must be on one device");
  if (grad_out.is_cuda()) {
#ifdef WITH_CUDA
    return bev_pool_backward_cuda(grad_out, coords);
#else
    TORCH_CHECK(false, "bev_pool: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return bev_pool_backward_cpu(grad_out, coords);
#else
  TORCH_CHECK(false, "bev_pool: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

}  // namespace bev_ddp
