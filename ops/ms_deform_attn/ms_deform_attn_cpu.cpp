// Multi-scale deformable attention CPU kernels (C++17, OpenMP through at::parallel_for).
//
// Forward is parallel over (batch, query): each task accumulates its H heads' D-vectors from the
// four bilinear taps of every (level, point) sample.  Backward is parallel over (batch, head):
// the task owning head h is the only writer of grad_value[b, :, h, :], so the scatter-add needs no
// atomics and the result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <vector>

#include "ms_deform_attn.h"

namespace bev_ddp {
namespace {

// Bilinear taps of one sample: up to 4 (pixel offset, weight, d weight/dx, d weight/dy).
template <typename acc_t>
struct Taps {
  int count = 0;
  int64_t pixel[4];
  acc_t weight[4], dx[4], dy[4];
};

// x, y in pixel coordinates of a level of size h x w (align_corners=False convention).
template <typename acc_t>
inline Taps<acc_t> bilinear_taps(acc_t x, acc_t y, int64_t h, int64_t w) {
  Taps<acc_t> taps;
  if (!(x > acc_t(-1) && y > acc_t(-1) && x < acc_t(w) && y < acc_t(h))) return taps;  // also NaN
  const acc_t xf = std::floor(x), yf = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  const acc_t lx = x - xf, ly = y - yf, hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const acc_t ws[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const acc_t dxs[4] = {-hy, hy, -ly, ly};
  const acc_t dys[4] = {-hx, -lx, hx, lx};
  for (int k = 0; k < 4; ++k) {
    if (xs[k] < 0 || xs[k] >= w || ys[k] < 0 || ys[k] >= h) continue;  // zero padding
    taps.pixel[taps.count] = ys[k] * w + xs[k];
    taps.weight[taps.count] = ws[k];
    taps.dx[taps.count] = dxs[k];
    taps.dy[taps.count] = dys[k];
    ++taps.count;
  }
  return taps;
}

struct Dims {
  int64_t batch, num_values, heads, dims, queries, levels, points;
};

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const std::vector<Level>& levels, const scalar_t* loc,
                    const scalar_t* attn, scalar_t* out, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixel_stride = d.heads * d.dims;  // value[b, s, h, :] -> value[b, s + 1, h, :]
  at::parallel_for(0, d.batch * d.queries, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(static_cast<size_t>(d.dims));
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / d.queries;
      for (int64_t h = 0; h < d.heads; ++h) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const int64_t sample0 = (bq * d.heads + h) * d.levels * d.points;  // index into [B, Q, H, L, P]
        for (int64_t l = 0; l < d.levels; ++l) {
          const Level& lv = levels[l];
          const scalar_t* v = value + ((b * d.num_values + lv.start) * d.heads + h) * d.dims;
          for (int64_t p = 0; p < d.points; ++p) {
            const int64_t sample = sample0 + l * d.points + p;
            const acc_t x = static_cast<acc_t>(loc[2 * sample]) * lv.w - acc_t(0.5);
            const acc_t y = static_cast<acc_t>(loc[2 * sample + 1]) * lv.h - acc_t(0.5);
            const acc_t a = static_cast<acc_t>(attn[sample]);
            const Taps<acc_t> taps = bilinear_taps(x, y, lv.h, lv.w);
            for (int k = 0; k < taps.count; ++k) {
              const acc_t wk = a * taps.weight[k];
              const scalar_t* vk = v + taps.pixel[k] * pixel_stride;
              for (int64_t c = 0; c < d.dims; ++c) acc[c] += wk * static_cast<acc_t>(vk[c]);
            }
          }
        }
        scalar_t* o = out + (bq * d.heads + h) * d.dims;  // out[b, q, h, :]
        for (int64_t c = 0; c < d.dims; ++c) o[c] = static_cast<scalar_t>(acc[c]);
      }
    }
  });
}

// kValueGrad = false skips the scatter into grad_value (its input needs no gradient).
template <typename scalar_t, bool kValueGrad>
void backward_kernel(const scalar_t* value, const std::vector<Level>& levels, const scalar_t* loc,
                     const scalar_t* attn, const scalar_t* grad_out, at::opmath_type<scalar_t>* grad_value,
                     scalar_t* grad_loc, scalar_t* grad_attn, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixel_stride = d.heads * d.dims;
  at::parallel_for(0, d.batch * d.heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / d.heads, h = bh % d.heads;
      for (int64_t q = 0; q < d.queries; ++q) {
        const scalar_t* g = grad_out + ((b * d.queries + q) * d.heads + h) * d.dims;  // grad_out[b, q, h, :]
        const int64_t sample0 = ((b * d.queries + q) * d.heads + h) * d.levels * d.points;
        for (int64_t l = 0; l < d.levels; ++l) {
          const Level& lv = levels[l];
          const int64_t offset = ((b * d.num_values + lv.start) * d.heads + h) * d.dims;
          const scalar_t* v = value + offset;
          acc_t* gv = kValueGrad ? grad_value + offset : nullptr;
          for (int64_t p = 0; p < d.points; ++p) {
            const int64_t sample = sample0 + l * d.points + p;
            const acc_t x = static_cast<acc_t>(loc[2 * sample]) * lv.w - acc_t(0.5);
            const acc_t y = static_cast<acc_t>(loc[2 * sample + 1]) * lv.h - acc_t(0.5);
            const acc_t a = static_cast<acc_t>(attn[sample]);
            const Taps<acc_t> taps = bilinear_taps(x, y, lv.h, lv.w);
            acc_t d_attn = 0, d_x = 0, d_y = 0;
            for (int k = 0; k < taps.count; ++k) {
              const scalar_t* vk = v + taps.pixel[k] * pixel_stride;
              acc_t dot = 0;  // <value tap, grad_out>
              if constexpr (kValueGrad) {
                acc_t* gvk = gv + taps.pixel[k] * pixel_stride;
                const acc_t wk = a * taps.weight[k];
                for (int64_t c = 0; c < d.dims; ++c) {
                  const acc_t gc = static_cast<acc_t>(g[c]);
                  dot += static_cast<acc_t>(vk[c]) * gc;
                  gvk[c] += wk * gc;
                }
              } else {
                for (int64_t c = 0; c < d.dims; ++c) dot += static_cast<acc_t>(vk[c]) * static_cast<acc_t>(g[c]);
              }
              d_attn += taps.weight[k] * dot;
              d_x += taps.dx[k] * dot;
              d_y += taps.dy[k] * dot;
            }
            grad_attn[sample] = static_cast<scalar_t>(d_attn);
            // chain rule through x = loc_x * w - 0.5, y = loc_y * h - 0.5
            grad_loc[2 * sample] = static_cast<scalar_t>(a * d_x * acc_t(lv.w));
            grad_loc[2 * sample + 1] = static_cast<scalar_t>(a * d_y * acc_t(lv.h));
          }
        }
      }
    }
  });
}

Dims read_dims(const at::Tensor& value, const at::Tensor& loc) {
  return {value.size(0), value.size(1), value.size(2), value.size(3), loc.size(1), loc.size(3), loc.size(4)};
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& loc_in,
                                      const at::Tensor& attn_in) {
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const Dims d = read_dims(value, loc);
  const std::vector<Level> levels = read_levels(spatial_shapes, level_start_index, d.num_values);
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.dims}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value_in, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc_in, const at::Tensor& attn_in, const at::Tensor& grad_out_in, bool need_grad_value) {
  const at::Tensor value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const at::Tensor grad_out = grad_out_in.to(value.scalar_type()).contiguous();
  const Dims d = read_dims(value, loc);
  const std::vector<Level> levels = read_levels(spatial_shapes, level_start_index, d.num_values);
  // grad_value accumulates in the op-math type (float for half/bfloat16 inputs); undefined when not needed
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = need_grad_value ? at::zeros(value.sizes(), value.options().dtype(acc_type)) : at::Tensor();
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::zeros(attn.sizes(), attn.options());
  if (attn.numel() > 0 && d.dims > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (need_grad_value)
        backward_kernel<scalar_t, true>(value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(),
                                        attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                                        grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<scalar_t>(),
                                        grad_attn.data_ptr<scalar_t>(), d);
      else
        backward_kernel<scalar_t, false>(value.data_ptr<scalar_t>(), levels, loc.data_ptr<scalar_t>(),
                                         attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), nullptr,
                                         grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(), d);
    });
  }
  return {need_grad_value ? grad_value.to(value.scalar_type()) : grad_value, grad_loc, grad_attn};
}

}  // namespace bev_ddp
