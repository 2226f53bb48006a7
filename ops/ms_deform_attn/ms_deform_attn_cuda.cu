// Multi-scale deformable attention CUDA kernels: float32 / float64 / float16 / bfloat16 inputs,
// arithmetic in the op-math type (float32 for the 16-bit types).
//
// Forward: one thread per output element (b, q, h, c); a warp reads neighbouring channels of the
// same bilinear taps (coalesced).  Backward: one thread per sample (b, q, h, l, p); it loops over
// the channels, writes its own grad_attn / grad_sampling_locations and atomically adds into an
// op-math grad_value buffer (skipped when value needs no gradient).  The fp32 atomics make the
// order of the additions, hence grad_value's last bits, vary from run to run: the backward tells
// torch.use_deterministic_algorithms so.  The level table travels by value as a launch argument
// (no host<->device copy, no synchronisation).
#include <ATen/Context.h>
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

// Level table passed by value to the kernels (kMaxLevels * 24 bytes of launch arguments).
struct LevelTable {
  int64_t h[kMaxLevels], w[kMaxLevels], start[kMaxLevels];
};

LevelTable level_table(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t num_values) {
  LevelTable table{};
  const std::vector<Level> levels = read_levels(spatial_shapes, level_start_index, num_values);
  for (size_t l = 0; l < levels.size(); ++l) {
    table.h[l] = levels[l].h;
    table.w[l] = levels[l].w;
    table.start[l] = levels[l].start;
  }
  return table;
}

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
__global__ void forward_kernel(const scalar_t* __restrict__ value, const LevelTable levels, const scalar_t* __restrict__ loc,
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
      const int64_t lh = levels.h[l], lw = levels.w[l];
      const scalar_t* v = value + ((b * d.num_values + levels.start[l]) * d.heads + h) * d.dims + c;
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

// kValueGrad = false skips the atomics into grad_value (value needs no gradient; grad_value may be null).
template <typename scalar_t, bool kValueGrad>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const LevelTable levels,
                                const scalar_t* __restrict__ loc,
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
    const int64_t lh = levels.h[l], lw = levels.w[l];
    const acc_t x = static_cast<acc_t>(loc[2 * sample]) * lw - acc_t(0.5);
    const acc_t y = static_cast<acc_t>(loc[2 * sample + 1]) * lh - acc_t(0.5);
    const acc_t a = static_cast<acc_t>(attn[sample]);
    acc_t d_attn = 0, d_x = 0, d_y = 0;
    if (inside(x, y, lh, lw)) {
      const int64_t offset = ((b * d.num_values + levels.start[l]) * d.heads + h) * d.dims;
      const scalar_t* g = grad_out + bqh * d.dims;  // grad_out[b, q, h, :]
      for (int k = 0; k < 4; ++k) {
        int64_t pixel;
        acc_t wk, dx, dy;
        if (!tap(k, x, y, lh, lw, pixel, wk, dx, dy)) continue;
        const scalar_t* vk = value + offset + pixel * d.heads * d.dims;
        acc_t dot = 0;
        if constexpr (kValueGrad) {
          acc_t* gvk = grad_value + offset + pixel * d.heads * d.dims;
          for (int64_t c = 0; c < d.dims; ++c) {
            const acc_t gc = static_cast<acc_t>(g[c]);
            dot += static_cast<acc_t>(vk[c]) * gc;
            atomicAdd(gvk + c, a * wk * gc);
          }
        } else {
          for (int64_t c = 0; c < d.dims; ++c) dot += static_cast<acc_t>(vk[c]) * static_cast<acc_t>(g[c]);
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

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& loc_in,
                                       const at::Tensor& attn_in) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const Dims d = read_dims(value, loc);
  const LevelTable levels = level_table(spatial_shapes, level_start_index, d.num_values);
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.dims}, value.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<num_blocks(out.numel()), kThreads, 0, stream>>>(
        value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value_in, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc_in, const at::Tensor& attn_in, const at::Tensor& grad_out_in, bool need_grad_value) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const at::Tensor grad_out = grad_out_in.to(value.scalar_type()).contiguous();
  const Dims d = read_dims(value, loc);
  const LevelTable levels = level_table(spatial_shapes, level_start_index, d.num_values);
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = need_grad_value ? at::zeros(value.sizes(), value.options().dtype(acc_type)) : at::Tensor();
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::zeros(attn.sizes(), attn.options());
  if (attn.numel() > 0 && d.dims > 0) {
    if (need_grad_value) at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda");
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (need_grad_value)
        backward_kernel<scalar_t, true><<<num_blocks(attn.numel()), kThreads, 0, stream>>>(
            value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
            grad_out.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<scalar_t>(),
            grad_attn.data_ptr<scalar_t>(), d);
      else
        backward_kernel<scalar_t, false><<<num_blocks(attn.numel()), kThreads, 0, stream>>>(
            value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
            grad_out.data_ptr<scalar_t>(), nullptr, grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(), d);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {need_grad_value ? grad_value.to(value.scalar_type()) : grad_value, grad_loc, grad_attn};
}

}  // namespace bev_ddp
