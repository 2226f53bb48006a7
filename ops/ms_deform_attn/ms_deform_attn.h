// Multi-scale deformable attention (Deformable DETR, Eq. 3): bilinear sampling of per-head value
// maps at normalised locations, weighted sum over levels and points.
//
// value [B, S, H, D], spatial_shapes int64 [L, 2] (h, w), level_start_index int64 [L],
// sampling_locations [B, Q, H, L, P, 2] (x, y) in [0, 1], attn_weights [B, Q, H, L, P]
// -> out [B, Q, H*D].  Bilinear taps follow grid_sample(align_corners=False, padding zeros):
// pixel coordinates are (x * w - 0.5, y * h - 0.5) and taps outside the map contribute zero.
//
// The level table (spatial_shapes, level_start_index) lives on the host for every device: the CPU
// kernels read it in place and the CUDA kernels receive it by value as a launch argument, so a
// call never copies it between host and device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <tuple>
#include <vector>

namespace bev_ddp {

constexpr int64_t kMaxLevels = 16;  // bound of the CUDA launch-argument level table

struct Level {
  int64_t h, w, start;
};

// Host level table after checking that every level lies inside value (S = num_values): the kernels
// never read outside value whatever the caller passes.
inline std::vector<Level> read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                                      int64_t num_values) {
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const int64_t* shape_ptr = shapes.data_ptr<int64_t>();
  const int64_t* start_ptr = starts.data_ptr<int64_t>();
  std::vector<Level> levels(static_cast<size_t>(shapes.size(0)));
  for (size_t l = 0; l < levels.size(); ++l) {
    levels[l] = {shape_ptr[2 * l], shape_ptr[2 * l + 1], start_ptr[l]};
    TORCH_CHECK_VALUE(levels[l].h > 0 && levels[l].w > 0 && levels[l].start >= 0 &&
                          levels[l].start + levels[l].h * levels[l].w <= num_values,
                      "ms_deform_attn level ", l, " (h=", levels[l].h, ", w=", levels[l].w, ", start=",
                      levels[l].start, ") does not fit in value with S=", num_values);
  }
  return levels;
}

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attn_weights);
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attn_weights, const at::Tensor& grad_out,
    bool need_grad_value);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attn_weights);
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attn_weights, const at::Tensor& grad_out,
    bool need_grad_value);
#endif

// Shape, dtype and device checks shared by both devices (Python ValueError naming the input).
// The level table's values (positive sizes summing to S, start offsets) are checked by the Python
// caller; read_levels additionally keeps every level inside value.
inline void ms_deform_attn_check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index, const at::Tensor& loc,
                                        const at::Tensor& attn) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn value must be [B, S, H, D], got ", value.sizes());
  TORCH_CHECK_VALUE(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.size(0) > 0,
                    "ms_deform_attn spatial_shapes must be [L, 2], got ", spatial_shapes.sizes());
  TORCH_CHECK_VALUE(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
                    "ms_deform_attn spatial_shapes and level_start_index must be int64");
  TORCH_CHECK_VALUE(spatial_shapes.is_cpu() && level_start_index.is_cpu(),
                    "ms_deform_attn spatial_shapes and level_start_index must be CPU tensors (a host level table), "
                    "got ", spatial_shapes.device(), " and ", level_start_index.device());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(levels <= kMaxLevels, "ms_deform_attn supports at most ", kMaxLevels, " levels, got ", levels);
  TORCH_CHECK_VALUE(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
                    "ms_deform_attn level_start_index must be [L=", levels, "], got ", level_start_index.sizes());
  TORCH_CHECK_VALUE(loc.dim() == 6 && loc.size(0) == value.size(0) && loc.size(2) == value.size(2) &&
                        loc.size(3) == levels && loc.size(5) == 2,
                    "ms_deform_attn sampling_locations must be [B, Q, H, L, P, 2], got ", loc.sizes());
  TORCH_CHECK_VALUE(attn.dim() == 5 && attn.sizes() == loc.sizes().slice(0, 5),
                    "ms_deform_attn attn_weights must be [B, Q, H, L, P], got ", attn.sizes());
  TORCH_CHECK_VALUE(value.scalar_type() == loc.scalar_type() && value.scalar_type() == attn.scalar_type(),
                    "ms_deform_attn value, sampling_locations and attn_weights must share one dtype");
  TORCH_CHECK_VALUE(value.device() == loc.device() && value.device() == attn.device(),
                    "ms_deform_attn value, sampling_locations and attn_weights must be on one device");
}

inline at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                         const at::Tensor& level_start_index, const at::Tensor& loc,
                                         const at::Tensor& attn) {
  ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index, loc, attn);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_forward_cuda(value, spatial_shapes, level_start_index, loc, attn);
#else
    TORCH_CHECK(false, "ms_deform_attn: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return ms_deform_attn_forward_cpu(value, spatial_shapes, level_start_index, loc, attn);
#else
  TORCH_CHECK(false, "ms_deform_attn: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc, const at::Tensor& attn, const at::Tensor& grad_out, bool need_grad_value) {
  ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index, loc, attn);
  TORCH_CHECK_VALUE(grad_out.dim() == 3 && grad_out.size(0) == loc.size(0) && grad_out.size(1) == loc.size(1) &&
                        grad_out.size(2) == value.size(2) * value.size(3),
                    "ms_deform_attn grad_out must be [B, Q, H*D], got ", grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.device() == value.device(), "ms_deform_attn grad_out must be on value's device ",
                    value.device(), ", got ", grad_out.device());
  TORCH_CHECK_VALUE(c10::isFloatingType(grad_out.scalar_type()), "ms_deform_attn grad_out must be floating point, got ",
                    grad_out.scalar_type());
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_backward_cuda(value, spatial_shapes, level_start_index, loc, attn, grad_out, need_grad_value);
#else
    TORCH_CHECK(false, "ms_deform_attn: this extension has no CUDA kernel (use bev_ddp._ops_cuda)");
#endif
  }
#ifdef WITH_CPU_KERNELS
  return ms_deform_attn_backward_cpu(value, spatial_shapes, level_start_index, loc, attn, grad_out, need_grad_value);
#else
  TORCH_CHECK(false, "ms_deform_attn: this extension has no CPU kernel (use bev_ddp._ops_cpu)");
#endif
}

}  // namespace bev_ddp
