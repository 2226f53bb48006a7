// bev_pool CPU kernel (C++17, OpenMP through at::parallel_for).
//
// Forward: 1. per-point flat cell rank (-1 when outside the grid),
//          2. stable parallel counting sort of the points by rank (histogram per thread chunk,
//             prefix sum, scatter) -> point order and the start of each cell's run,
//          3. per-run reduction, parallel over (cell, channel chunk): each cell sums the feature
//             rows of its run in point order (deterministic for any thread count) and writes its
//             C sums into the [B, C, Z, X, Y] output (zeros for empty cells).
// Backward: broadcast each cell's gradient to its points (row gather from [B*Z*X*Y, C]).
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

constexpr int64_t kMaxChannelChunk = 128;  // channels reduced together per task (stack accumulator)
constexpr int64_t kCacheLine = 64;
constexpr int64_t kPrefetchDistance = 8;  // points

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

// Stable counting sort of points 0..n-1 by ranks (>= 0; -1 skipped).  Fills order[0..m) with
// point indices and cell_start[0..cells] with the run boundaries (run of cell c = [start[c], start[c+1])).
void counting_sort(const int64_t* ranks, int64_t n, int64_t cells, std::vector<int64_t>& order,
                   std::vector<int64_t>& cell_start) {
  // One histogram per chunk of points; fall back to fewer chunks when the grid is huge.
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
  // Exclusive prefix sum in (cell, chunk) order keeps the sort stable.
  cell_start.assign(static_cast<size_t>(cells + 1), 0);
  int64_t total = 0;
  for (int64_t c = 0; c < cells; ++c) {
    cell_start[c] = total;
    for (int64_t t = 0; t < chunks; ++t) {
      const int64_t count = hist[t * cells + c];
      hist[t * cells + c] = total;
      total += count;
    }
  }
  cell_start[cells] = total;
  order.resize(static_cast<size_t>(total));
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t t = cb; t < ce; ++t) {
      int64_t* cursor = hist.data() + t * cells;
      for (int64_t i = t * chunk_len, e = std::min(n, (t + 1) * chunk_len); i < e; ++i)
        if (ranks[i] >= 0) order[cursor[ranks[i]]++] = i;
    }
  });
}

template <typename scalar_t>
void reduce_runs(const scalar_t* feats, int64_t channels, const std::vector<int64_t>& order,
                 const std::vector<int64_t>& cell_start, int64_t cells, int64_t cells_per_sample, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  // Tasks are (cell, channel chunk).  Channels are split only as far as the stack accumulator
  // needs, or further when there are too few cells to keep every thread busy.
  const int64_t min_chunks = (channels + kMaxChannelChunk - 1) / kMaxChannelChunk;
  const int64_t wanted = (4 * at::get_num_threads() + cells - 1) / cells;
  const int64_t num_chunks = std::max<int64_t>(1, std::max(min_chunks, std::min(wanted, (channels + 7) / 8)));
  const int64_t chunk = (channels + num_chunks - 1) / num_chunks;
  const int64_t chunk_bytes = chunk * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t num_kept = static_cast<int64_t>(order.size());
  at::parallel_for(0, cells * num_chunks, 256, [&](int64_t begin, int64_t end) {
    acc_t acc[kMaxChannelChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t cell = task / num_chunks;
      const int64_t c0 = (task % num_chunks) * chunk;
      const int64_t c1 = std::min(channels, c0 + chunk);
      const int64_t width = c1 - c0;
      std::fill(acc, acc + width, acc_t(0));
      const int64_t run_end = cell_start[cell + 1];
      for (int64_t j = cell_start[cell]; j < run_end; ++j) {
        // Rows are scattered in memory: fetch the row kPrefetchDistance points ahead in sorted
        // order (usually the next cell's, which this task reduces next).
        if (j + kPrefetchDistance < num_kept) {
          const char* ahead = reinterpret_cast<const char*>(feats + order[j + kPrefetchDistance] * channels + c0);
          for (int64_t byte = 0; byte < chunk_bytes; byte += kCacheLine) __builtin_prefetch(ahead + byte);
        }
        const scalar_t* row = feats + order[j] * channels + c0;
        for (int64_t k = 0; k < width; ++k) acc[k] += static_cast<acc_t>(row[k]);
      }
      // out[b, c, s] with cell = b * cells_per_sample + s
      const int64_t b = cell / cells_per_sample, s = cell % cells_per_sample;
      scalar_t* dst = out + (b * channels + c0) * cells_per_sample + s;
      for (int64_t k = 0; k < width; ++k) dst[k * cells_per_sample] = static_cast<scalar_t>(acc[k]);
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

  std::vector<int64_t> order, cell_start;
  counting_sort(ranks.data_ptr<int64_t>(), n, cells, order, cell_start);

  at::Tensor out = at::empty({batch_size, channels, nz, nx, ny}, feats.options());
  if (channels > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cpu", [&] {
      reduce_runs<scalar_t>(feats.data_ptr<scalar_t>(), channels, order, cell_start, cells, cells_per_sample,
                            out.data_ptr<scalar_t>());
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
