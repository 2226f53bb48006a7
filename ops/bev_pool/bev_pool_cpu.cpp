// bev_pool CPU kernel (C++, OpenMP through at::parallel_for).
//
// Forward:
//   1. rank of every point: its flat cell index b*Z*X*Y + (z*X + x)*Y + y, or -1 when outside
//      the grid (batch indices outside [0, B) are an error);
//   2. run starts: per-thread histograms of the ranks and their prefix sum give where each
//      cell's run would start in the points sorted by rank;
//   3. the cells are cut into contiguous rank ranges holding about equal numbers of points (read
//      off the run starts), and the points are stably counting-sorted by range: grouped by range,
//      in point order within a range;
//   4. per-run reduction, parallel over (range, channel chunk): a task streams through its points
//      in point order, adds each feature row into its range's accumulator and writes the range's
//      [C, cells] block of the [B, C, Z, X, Y] output (zeros for empty cells).
// Every run is summed by one task in point order, as after a stable sort by rank, so the output
// is bit-identical for any thread count.  Reading the feature rows in point order rather than in
// rank order keeps the largest read (N x C features) a forward stream instead of a random gather
// of rows.
// Backward: each point copies its cell's gradient row (0 for dropped points).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "bev_pool.h"

namespace bev_ddp {
namespace {

constexpr int64_t kRangeBytes = int64_t(4) << 20;  // target accumulator size of one cell range
constexpr int64_t kPrefetchDistance = 8;           // points read ahead in the reduction
constexpr int64_t kCacheLine = 64;                 // bytes

template <typename index_t>
void compute_ranks(const index_t* coords, int64_t n, int64_t batch_size, int64_t nz, int64_t nx, int64_t ny,
                   int64_t* ranks, std::atomic<bool>& bad_batch) {
  const int64_t cells_per_sample = nz * nx * ny;
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    bool bad = false;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t x = coords[4 * i], y = coords[4 * i + 1], z = coords[4 * i + 2], b = coords[4 * i + 3];
      const bool inside = x >= 0 && x < nx && y >= 0 && y < ny && z >= 0 && z < nz;
      const bool batch_ok = b >= 0 && b < batch_size;
      bad |= !batch_ok;
      ranks[i] = (inside && batch_ok) ? b * cells_per_sample + (z * nx + x) * ny + y : -1;
    }
    if (bad) bad_batch.store(true, std::memory_order_relaxed);
  });
}

// Work split of the forward pass (steps 2 and 3).
struct PoolPlan {
  std::vector<int64_t> range_cell;   // [R + 1] first cell of every range, range_cell[R] = cells
  std::vector<int64_t> range_start;  // [R + 1] first position in `order` of every range
  std::vector<int64_t> order;        // [M] kept points grouped by range, increasing within a range
};

PoolPlan make_plan(const int64_t* ranks, int64_t n, int64_t cells, int64_t num_ranges) {
  // Histograms per chunk of points (fewer chunks when the grid is huge compared with n).
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / (1 << 15)));
  while (chunks > 1 && chunks * cells > 4 * n + (1 << 20)) --chunks;
  const int64_t chunk_len = (n + chunks - 1) / chunks;
  std::vector<int64_t> hist(static_cast<size_t>(chunks * cells), 0);  // [chunks, cells]
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t t = cb; t < ce; ++t) {
      int64_t* h = hist.data() + t * cells;
      for (int64_t i = t * chunk_len, e = std::min(n, (t + 1) * chunk_len); i < e; ++i)
        if (ranks[i] >= 0) ++h[ranks[i]];
    }
  });
  // 2. run starts: run_start[c] = number of kept points in cells < c
  std::vector<int64_t> run_start(static_cast<size_t>(cells + 1), 0);
  for (int64_t c = 0; c < cells; ++c) {
    int64_t count = 0;
    for (int64_t t = 0; t < chunks; ++t) count += hist[t * cells + c];
    run_start[c + 1] = run_start[c] + count;
  }
  const int64_t kept = run_start[cells];

  // 3. ranges of about kept / R points each
  PoolPlan plan;
  plan.range_cell.assign(static_cast<size_t>(num_ranges + 1), 0);
  plan.range_cell[num_ranges] = cells;
  for (int64_t r = 1; r < num_ranges; ++r) {
    const int64_t target = kept * r / num_ranges;
    const int64_t cell = std::lower_bound(run_start.begin(), run_start.end(), target) - run_start.begin();
    plan.range_cell[r] = std::clamp<int64_t>(cell, plan.range_cell[r - 1], cells);
  }
  std::vector<int32_t> cell_range(static_cast<size_t>(cells));
  for (int64_t r = 0; r < num_ranges; ++r)
    std::fill(cell_range.begin() + plan.range_cell[r], cell_range.begin() + plan.range_cell[r + 1],
              static_cast<int32_t>(r));
  // stable counting sort by range: cursor[t][r] = where chunk t writes its next point of range r
  std::vector<int64_t> cursor(static_cast<size_t>(chunks * num_ranges), 0);  // [chunks, R]
  for (int64_t t = 0; t < chunks; ++t)
    for (int64_t r = 0; r < num_ranges; ++r)
      for (int64_t c = plan.range_cell[r]; c < plan.range_cell[r + 1]; ++c) cursor[t * num_ranges + r] += hist[t * cells + c];
  plan.range_start.assign(static_cast<size_t>(num_ranges + 1), 0);
  int64_t total = 0;
  for (int64_t r = 0; r < num_ranges; ++r) {  // exclusive prefix in (range, chunk) order
    plan.range_start[r] = total;
    for (int64_t t = 0; t < chunks; ++t) {
      const int64_t count = cursor[t * num_ranges + r];
      cursor[t * num_ranges + r] = total;
      total += count;
    }
  }
  plan.range_start[num_ranges] = total;
  plan.order.resize(static_cast<size_t>(total));
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t t = cb; t < ce; ++t) {
      int64_t* next = cursor.data() + t * num_ranges;
      for (int64_t i = t * chunk_len, e = std::min(n, (t + 1) * chunk_len); i < e; ++i)
        if (ranks[i] >= 0) plan.order[next[cell_range[ranks[i]]]++] = i;
    }
  });
  return plan;
}

// 4. per-run reduction over (range, channel chunk) tasks.
template <typename scalar_t>
void reduce_runs(const scalar_t* feats, const int64_t* ranks, int64_t channels, const PoolPlan& plan,
                 int64_t num_chunks, int64_t cells_per_sample, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_ranges = static_cast<int64_t>(plan.range_cell.size()) - 1;
  const int64_t chunk = (channels + num_chunks - 1) / num_chunks;
  at::parallel_for(0, num_ranges * num_chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / num_chunks;
      const int64_t c0 = (task % num_chunks) * chunk;
      const int64_t width = std::min(channels, c0 + chunk) - c0;
      if (width <= 0) continue;
      const int64_t cell0 = plan.range_cell[r], num_cells = plan.range_cell[r + 1] - cell0;
      acc.assign(static_cast<size_t>(num_cells * width), acc_t(0));  // [cells of the range, width]
      const int64_t range_end = plan.range_start[r + 1];
      const int64_t row_bytes = width * static_cast<int64_t>(sizeof(scalar_t));
      for (int64_t j = plan.range_start[r]; j < range_end; ++j) {
        const int64_t i = plan.order[j];
        if (j + kPrefetchDistance < range_end) {  // a range's rows are sparse in memory: fetch ahead
          const char* ahead = reinterpret_cast<const char*>(feats + plan.order[j + kPrefetchDistance] * channels + c0);
          for (int64_t byte = 0; byte < row_bytes; byte += kCacheLine) __builtin_prefetch(ahead + byte);
        }
        const scalar_t* row = feats + i * channels + c0;
        acc_t* dst = acc.data() + (ranks[i] - cell0) * width;
        for (int64_t k = 0; k < width; ++k) dst[k] += static_cast<acc_t>(row[k]);
      }
      // out[b, c, s] with cell = b * cells_per_sample + s
      for (int64_t local = 0; local < num_cells; ++local) {
        const int64_t cell = cell0 + local;
        const int64_t b = cell / cells_per_sample, s = cell % cells_per_sample;
        scalar_t* dst = out + (b * channels + c0) * cells_per_sample + s;
        const acc_t* src = acc.data() + local * width;
        for (int64_t k = 0; k < width; ++k) dst[k * cells_per_sample] = static_cast<scalar_t>(src[k]);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bev_pool_forward_cpu(const at::Tensor& feats_in, const at::Tensor& coords_in,
                                                        int64_t batch_size, int64_t nz, int64_t nx, int64_t ny) {
  const at::Tensor feats = feats_in.contiguous();
  const at::Tensor coords = coords_in.contiguous();
  const int64_t n = feats.size(0), channels = feats.size(1);
  const int64_t cells_per_sample = nz * nx * ny;
  const int64_t cells = batch_size * cells_per_sample;
  at::Tensor ranks = at::empty({n}, coords.options().dtype(at::kLong));
  std::atomic<bool> bad_batch{false};
  AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_ranks", [&] {
    compute_ranks<index_t>(coords.data_ptr<index_t>(), n, batch_size, nz, nx, ny, ranks.data_ptr<int64_t>(),
                           bad_batch);
  });
  TORCH_CHECK_VALUE(!bad_batch.load(), "bev_pool coords batch index (column 3) must lie in [0, ", batch_size, ")");

  // Ranges: a few per thread for balance, and enough that one range's accumulator stays small.
  const int64_t threads = at::get_num_threads();
  const int64_t acc_bytes = cells * std::max<int64_t>(channels, 1) * 4;
  const int64_t num_ranges =
      std::clamp<int64_t>(std::max<int64_t>(4 * threads, acc_bytes / kRangeBytes + 1), 1, cells);
  const PoolPlan plan = make_plan(ranks.data_ptr<int64_t>(), n, cells, num_ranges);
  // Channels are split too when there are fewer ranges than threads (e.g. a tiny grid).
  const int64_t num_chunks = std::clamp<int64_t>((2 * threads + num_ranges - 1) / num_ranges, 1,
                                                 std::max<int64_t>(1, channels / 8));

  at::Tensor out = at::empty({batch_size, channels, nz, nx, ny}, feats.options());
  if (channels > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cpu", [&] {
      reduce_runs<scalar_t>(feats.data_ptr<scalar_t>(), ranks.data_ptr<int64_t>(), channels, plan, num_chunks,
                            cells_per_sample, out.data_ptr<scalar_t>());
    });
  }
  return {out, ranks};
}

at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& ranks_in) {
  const int64_t batch_size = grad_out.size(0), channels = grad_out.size(1);
  const int64_t cells_per_sample = grad_out.size(2) * grad_out.size(3) * grad_out.size(4);
  const int64_t cells = batch_size * cells_per_sample;
  const at::Tensor ranks = ranks_in.contiguous();
  const int64_t n = ranks.size(0);
  // [B, C, Z*X*Y] -> [B, Z*X*Y, C]: one contiguous gradient row per cell
  const at::Tensor grad_cells = grad_out.reshape({batch_size, channels, cells_per_sample}).transpose(1, 2).contiguous();
  at::Tensor grad_feats = at::empty({n, channels}, grad_out.options());
  if (channels == 0 || n == 0) return grad_feats;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "bev_pool_backward_cpu", [&] {
    const scalar_t* src = grad_cells.data_ptr<scalar_t>();
    scalar_t* dst = grad_feats.data_ptr<scalar_t>();
    const int64_t* rank = ranks.data_ptr<int64_t>();
    const size_t row_bytes = sizeof(scalar_t) * channels;
    at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = rank[i];
        if (r >= 0 && r < cells)
          std::memcpy(dst + i * channels, src + r * channels, row_bytes);
        else
          std::memset(dst + i * channels, 0, row_bytes);  // dropped point: no gradient
      }
    });
  });
  return grad_feats;
}

}  // namespace bev_ddp
