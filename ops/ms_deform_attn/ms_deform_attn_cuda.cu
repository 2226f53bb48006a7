// Multi-scale deformable attention CUDA kernels: float32 / float64 / float16 / bfloat16 inputs,
// arithmetic in the op-math type (float32 for the 16-bit types).
//
// Forward: one thread per output element (b, q, h, c); a warp reads neighbouring channels of the
// same bilinear taps (coalesced).  Backward: one thread per sample (b, q, h, l, p); it loops over
// the channels, writes its own grad_attn / grad_sampling_locations and atomically adds into an
// op-math grad_value buffer.  The level table is copied to the device once per call.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "ms_deform_attn.h"

namespace bev_ddp {
namespace {

constexpr int kThreads = 256;

inline int64_t num_blocks(int64_t work) { return std::min<int64_t>((work + kThreads - 1) / kThreads, 1 << 20); }

struct Dims {
  int64_t batch, num_values, heads, dims, queries, levels, points;
};

// Bilinear tap k (0..3) of pixel position (x, y) in a level of size h x w; false when outside.
template <typename acc_t>
__device__ inline bool tap(int k, acc_t x, acc_t y, int64_t h, int64_t w, int64_t& pixel, acc_t& weight, acc_t& dx,
                           acc_t& dy) {
  const acc_t xf = floor(x), yf = floor(y);
  const int64_t xi = static_cast<int64_t>(xf) + (k & 1), yi = static_cast<int64_t>(yf) + (k >> 1);
  if (xi < 0 || xi >= w || yi < 0 || yi >= h) return false;
  const acc_t lx = x - xf, ly = y - yf;
  const acc_t wx = (k & 1) ? lx : acc_t(1) - lx;
  const acc_t wy = (k >> 1) ? ly : acc_t(1) - ly;
  pixel = yi * w + xi;
  weight = wx * wy;
  dx = ((k & 1) ? acc_t(1) : acc_t(-1)) * wy;
  dy = ((k >> 1) ? acc_t(1) : acc_t(-1)) * wx;
  return true;
}

template <typename acc_t>
__device__ inline bool inside(acc_t x, acc_t y, int64_t h, int64_t w) {
  return x > acc_t(-1) && y > acc_t(-1) && x < acc_t(w) && y < acc_t(h);  // false for NaN
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ out, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = d.batch * d.queries * d.heads * d.dims;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = t % d.dims;
    const int64_t bqh = t / d.dims;  // (b * Q + q) * H + h
    const int64_t h = bqh % d.heads;
    const int64_t b = bqh / (d.heads * d.queries);
    acc_t acc = 0;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t lh = shapes[2 * l], lw = shapes[2 * l + 1];
      const scalar_t* v = value + ((b * d.num_values + starts[l]) * d.heads + h) * d.dims + c;
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t sample = (bqh * d.levels + l) * d.points + p;
        const acc_t x = static_cast<acc_t>(loc[2 * sample]) * lw - acc_t(0.5);
        const acc_t y = static_cast<acc_t>(loc[2 * sample + 1]) * lh - acc_t(0.5);
        if (!inside(x, y, lh, lw)) continue;
        const acc_t a = static_cast<acc_t>(attn[sample]);
        for (int k = 0; k < 4; ++k) {
          int64_t pixel;
          acc_t wk, dx, dy;
          if (tap(k, x, y, lh, lw, pixel, wk, dx, dy))
            acc += a * wk * static_cast<acc_t>(v[pixel * d.heads * d.dims]);
        }
      }
    }
    out[t] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn, const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = d.batch * d.queries * d.heads * d.levels * d.points;
  for (int64_t sample = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; sample < total;
       sample += (int64_t)gridDim.x * blockDim.x) {
    const int64_t l = (sample / d.points) % d.levels;
    const int64_t bqh = sample / (d.points * d.levels);
    const int64_t h = bqh % d.heads;
    const int64_t b = bqh / (d.heads * d.queries);
    const int64_t lh = shapes[2 * l], lw = shapes[2 * l + 1];
    const acc_t x = static_cast<acc_t>(loc[2 * sample]) * lw - acc_t(0.5);
    const acc_t y = static_cast<acc_t>(loc[2 * sample + 1]) * lh - acc_t(0.5);
    const acc_t a = static_cast<acc_t>(attn[sample]);
    acc_t d_attn = 0, d_x = 0, d_y = 0;
    if (inside(x, y, lh, lw)) {
      const int64_t offset = ((b * d.num_values + starts[l]) * d.heads + h) * d.dims;
      const scalar_t* g = grad_out + bqh * d.dims;  // grad_out[b, q, h, :]
      for (int k = 0; k < 4; ++k) {
        int64_t pixel;
        acc_t wk, dx, dy;
        if (!tap(k, x, y, lh, lw, pixel, wk, dx, dy)) continue;
        const scalar_t* vk = value + offset + pixel * d.heads * d.dims;
        acc_t* gvk = grad_value + offset + pixel * d.heads * d.dims;
        acc_t dot = 0;
        for (int64_t c = 0; c < d.dims; ++c) {
          const acc_t gc = static_cast<acc_t>(g[c]);
          dot += static_cast<acc_t>(vk[c]) * gc;
          atomicAdd(gvk + c, a * wk * gc);
        }
        d_attn += wk * dot;
        d_x += dx * dot;
        d_y += dy * dot;
      }
    }
    grad_attn[sample] = static_cast<scalar_t>(d_attn);
    grad_loc[2 * sample] = static_cast<scalar_t>(a * d_x * acc_t(lw));
    grad_loc[2 * sample + 1] = static_cast<scalar_t>(a * d_y * acc_t(lh));
  }
}

Dims read_dims(const at::Tensor& value, const at::Tensor& loc) {
  return {value.size(0), value.size(1), value.size(2), value.size(3), loc.size(1), loc.size(3), loc.size(4)};
}

// Level table on the device, after checking on the host that every level lies inside value.
std::pair<at::Tensor, at::Tensor> device_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                                                int64_t num_values, const at::Device& device) {
  const at::Tensor shapes = spatial_shapes.to(at::kCPU).contiguous();
  const at::Tensor starts = level_start_index.to(at::kCPU).contiguous();
  for (int64_t l = 0; l < shapes.size(0); ++l) {
    const int64_t h = shapes.data_ptr<int64_t>()[2 * l], w = shapes.data_ptr<int64_t>()[2 * l + 1];
    const int64_t start = starts.data_ptr<int64_t>()[l];
    TORCH_CHECK_VALUE(h > 0 && w > 0 && start >= 0 && start + h * w <= num_values, "ms_deform_attn level ", l,
                      " (h=", h, ", w=", w, ", start=", start, ") does not fit in value with S=", num_values);
  }
  return {shapes.to(device), starts.to(device)};
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& loc_in,
                                       const at::Tensor& attn_in) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const Dims d = read_dims(value, loc);
  auto [shapes, starts] = device_levels(spatial_shapes, level_start_index, d.num_values, value.device());
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.dims}, value.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<num_blocks(out.numel()), kThreads, 0, stream>>>(
        value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
        attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value_in, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc_in, const at::Tensor& attn_in, const at::Tensor& grad_out_in) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const at::Tensor grad_out = grad_out_in.to(value.scalar_type()).contiguous();
  const Dims d = read_dims(value, loc);
  auto [shapes, starts] = device_levels(spatial_shapes, level_start_index, d.num_values, value.device());
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::zeros(attn.sizes(), attn.options());
  if (attn.numel() > 0 && d.dims > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      backward_kernel<scalar_t><<<num_blocks(attn.numel()), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
          attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), grad_value.data_ptr<at::opmath_type<scalar_t>>(),
          grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(), d);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace bev_ddp
