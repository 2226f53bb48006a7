// bev_pool CPU kernel (C++, OpenMP through at::parallel_for).
//
// Forward:
//   1. the points are cut into K contiguous chunks, K set by the number of points and the grid
//      size only (never by the thread count); one pass over each chunk computes every point's rank
//      (its flat cell index b*Z*X*Y + (z*X + x)*Y + y, or -1 when outside the grid; batch indices
//      outside [0, B) are an error) and adds its feature row, in point order, into the chunk's own
//      cell-major [cells, C] partial sums; a cell's row is initialised by the chunk's first point
//      in it, so only the cells a chunk touches are ever written;
//   2. merge, parallel over blocks of cells: every cell's partial sums are added in chunk order
//      and the block is written transposed into the [B, C, Z, X, Y] output (zeros for empty cells).
// The summation order of every cell depends on the inputs alone, so the output is bit-identical
// for any thread count; the features (the largest read, N x C) are streamed once, in order, and
// the rows of dropped points are not read at all.
// Backward: each point copies its cell's gradient row (0 for dropped points).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bev_pool.h"

namespace bev_ddp {
namespace {

constexpr int64_t kChunkPoints = int64_t(1) << 20;        // points per chunk of the accumulation
constexpr int64_t kMaxChunks = 8;                         // most chunks (partial sums per cell)
constexpr int64_t kWorkspaceBytes = int64_t(512) << 20;   // most bytes of all chunks' partial sums
constexpr int64_t kMergeBlock = 16;                       // cells per block of the merge
constexpr int64_t kPrefetchRows = 6;                      // feature rows read ahead in pass 1
constexpr int64_t kCacheLine = 64;                        // bytes

// One chunk of pass 1: ranks of points [begin, end) and their rows added into `acc` ([cells, C],
// rows valid where `seen`).  Ranks are computed kPrefetchRows points ahead of the adds, so only
// the rows of kept points are fetched (dropped points' rows are never read).  Returns whether a
// batch index was out of range.
template <typename scalar_t, typename index_t, typename acc_t>
inline __attribute__((always_inline)) bool accumulate_points(
    const scalar_t* feats, const index_t* coords, int64_t begin, int64_t end, int64_t channels,
    int64_t batch_size, int64_t nz, int64_t nx, int64_t ny, int64_t* ranks, acc_t* acc, uint8_t* seen) {
  const int64_t cells_per_sample = nz * nx * ny;
  const int64_t row_bytes = channels * static_cast<int64_t>(sizeof(scalar_t));
  bool bad = false;
  auto rank_ahead = [&](int64_t j) {  // rank of point j into ranks[j]; its row fetched when kept
    const int64_t x = coords[4 * j], y = coords[4 * j + 1], z = coords[4 * j + 2], b = coords[4 * j + 3];
    const bool inside = x >= 0 && x < nx && y >= 0 && y < ny && z >= 0 && z < nz;
    const bool batch_ok = b >= 0 && b < batch_size;
    bad |= !batch_ok;
    const int64_t rank = (inside && batch_ok) ? b * cells_per_sample + (z * nx + x) * ny + y : -1;
    ranks[j] = rank;
    if (rank >= 0) {
      const char* row = reinterpret_cast<const char*>(feats + j * channels);
      for (int64_t byte = 0; byte < row_bytes; byte += kCacheLine) __builtin_prefetch(row + byte);
    }
  };
  for (int64_t j = begin; j < std::min(end, begin + kPrefetchRows); ++j) rank_ahead(j);
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchRows < end) rank_ahead(i + kPrefetchRows);
    const int64_t rank = ranks[i];
    if (rank < 0) continue;
    const scalar_t* row = feats + i * channels;
    acc_t* dst = acc + rank * channels;
    if (seen[rank]) {
      for (int64_t k = 0; k < channels; ++k) dst[k] += static_cast<acc_t>(row[k]);
    } else {
      seen[rank] = 1;
      for (int64_t k = 0; k < channels; ++k) dst[k] = acc_t(0) + static_cast<acc_t>(row[k]);
    }
  }
  return bad;
}

template <typename scalar_t, typename index_t, typename acc_t>
bool accumulate_points_default(const scalar_t* feats, const index_t* coords, int64_t begin, int64_t end,
                               int64_t channels, int64_t batch_size, int64_t nz, int64_t nx, int64_t ny,
                               int64_t* ranks, acc_t* acc, uint8_t* seen) {
  return accumulate_points(feats, coords, begin, end, channels, batch_size, nz, nx, ny, ranks, acc, seen);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BEV_POOL_HAVE_AVX2 1
// The same loop compiled for AVX2 (wider adds, fewer instructions per feature row).
template <typename scalar_t, typename index_t, typename acc_t>
__attribute__((target("avx2"))) bool accumulate_points_avx2(
    const scalar_t* feats, const index_t* coords, int64_t begin, int64_t end, int64_t channels,
    int64_t batch_size, int64_t nz, int64_t nx, int64_t ny, int64_t* ranks, acc_t* acc, uint8_t* seen) {
  return accumulate_points(feats, coords, begin, end, channels, batch_size, nz, nx, ny, ranks, acc, seen);
}
#endif

// Pass 1: ranks and per-chunk partial sums (chunk t into partial[t], rows valid where touched[t]).
template <typename scalar_t, typename index_t, typename acc_t>
void accumulate_chunks(const scalar_t* feats, const index_t* coords, int64_t n, int64_t channels,
                       int64_t batch_size, int64_t nz, int64_t nx, int64_t ny, int64_t num_chunks,
                       int64_t* ranks, acc_t* const* partial, uint8_t* touched, std::atomic<bool>& bad_batch) {
  const int64_t cells = batch_size * nz * nx * ny;
  const int64_t chunk_len = (n + num_chunks - 1) / num_chunks;
#ifdef BEV_POOL_HAVE_AVX2
  const bool avx2 = __builtin_cpu_supports("avx2");
#endif
  at::parallel_for(0, num_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t t = cb; t < ce; ++t) {
      const int64_t begin = t * chunk_len, end = std::min(n, (t + 1) * chunk_len);
      bool bad;
#ifdef BEV_POOL_HAVE_AVX2
      if (avx2)
        bad = accumulate_points_avx2(feats, coords, begin, end, channels, batch_size, nz, nx, ny, ranks, partial[t],
                                     touched + t * cells);
      else
#endif
        bad = accumulate_points_default(feats, coords, begin, end, channels, batch_size, nz, nx, ny, ranks,
                                        partial[t], touched + t * cells);
      if (bad) bad_batch.store(true, std::memory_order_relaxed);
    }
  });
}

// Pass 2: sum the chunks' partials of every cell in chunk order, write [B, C, Z*X*Y] transposed.
template <typename scalar_t, typename acc_t>
void merge_chunks(const acc_t* const* partial, const uint8_t* touched, int64_t num_chunks, int64_t batch_size,
                  int64_t cells_per_sample, int64_t channels, scalar_t* out) {
  const int64_t cells = batch_size * cells_per_sample;
  const int64_t blocks_per_sample = (cells_per_sample + kMergeBlock - 1) / kMergeBlock;
  at::parallel_for(0, batch_size * blocks_per_sample, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(static_cast<size_t>(kMergeBlock * channels));  // [block cells, C]
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks_per_sample;
      const int64_t s0 = (task % blocks_per_sample) * kMergeBlock;
      const int64_t len = std::min(kMergeBlock, cells_per_sample - s0);
      const int64_t cell0 = b * cells_per_sample + s0;
      for (int64_t l = 0; l < len; ++l) {
        acc_t* dst = sum.data() + l * channels;
        std::fill(dst, dst + channels, acc_t(0));
        for (int64_t t = 0; t < num_chunks; ++t) {
          if (!touched[t * cells + cell0 + l]) continue;
          const acc_t* src = partial[t] + (cell0 + l) * channels;
          for (int64_t k = 0; k < channels; ++k) dst[k] += src[k];
        }
      }
      scalar_t* base = out + b * channels * cells_per_sample + s0;
      for (int64_t k = 0; k < channels; ++k) {
        scalar_t* dst = base + k * cells_per_sample;
        for (int64_t l = 0; l < len; ++l) dst[l] = static_cast<scalar_t>(sum[l * channels + k]);
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
  at::Tensor out = at::empty({batch_size, channels, nz, nx, ny}, feats.options());
  std::atomic<bool> bad_batch{false};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Chunks: from the number of points, fewer when all partial sums would not fit the workspace.
    const int64_t acc_bytes = cells * std::max<int64_t>(channels, 1) * static_cast<int64_t>(sizeof(acc_t));
    const int64_t num_chunks = std::clamp<int64_t>(
        std::min<int64_t>((n + kChunkPoints - 1) / kChunkPoints, kWorkspaceBytes / acc_bytes), 1, kMaxChunks);
    // Uninitialised: a row is written by its chunk's first point before it is read.
    // One allocation per chunk: blocks of the size of the output are reused by malloc across calls.
    std::vector<at::Tensor> partials;
    std::vector<acc_t*> partial;
    for (int64_t t = 0; t < num_chunks; ++t) {
      partials.push_back(at::empty({cells * channels}, feats.options().dtype(c10::CppTypeToScalarType<acc_t>::value)));
      partial.push_back(partials.back().data_ptr<acc_t>());
    }
    std::vector<uint8_t> touched(static_cast<size_t>(num_chunks * cells), 0);  // [K, cells]
    AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_accumulate", [&] {
      accumulate_chunks<scalar_t, index_t, acc_t>(feats.data_ptr<scalar_t>(), coords.data_ptr<index_t>(), n, channels,
                                                  batch_size, nz, nx, ny, num_chunks, ranks.data_ptr<int64_t>(),
                                                  partial.data(), touched.data(), bad_batch);
    });
    TORCH_CHECK_VALUE(!bad_batch.load(), "bev_pool coords batch index (column 3) must lie in [0, ", batch_size,
                      ")");
    if (channels > 0)
      merge_chunks<scalar_t, acc_t>(partial.data(), touched.data(), num_chunks, batch_size,
                                    cells_per_sample, channels, out.data_ptr<scalar_t>());
  });
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
