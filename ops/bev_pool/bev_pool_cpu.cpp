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
//      and the block is written transposed into the [B, C, Z, X, Y] output (zeros for empty cells)
//      with non-temporal stores.
// The summation order of every cell depends on the inputs alone, so the output is bit-identical
// for any thread count.  The features (the largest read, N x C) are streamed once, in order, with
// kept rows prefetched into L2 a few points ahead; the rows of dropped points are not read.  At
// BEVFusion's size the kernel takes about 1.1x one plain read of the features (bench ops).
// Backward: each point recomputes its cell from coords and copies that cell's gradient row (0 for
// dropped points) with non-temporal stores into a reused buffer (gradient_buffer); nothing per
// point is kept from the forward pass.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bev_pool.h"

namespace bev_ddp {
namespace {

constexpr int64_t kChunkPoints = int64_t(1) << 20;        // points per chunk of the accumulation
constexpr int64_t kMaxChunks = 8;                         // most chunks (partial sums per cell)
constexpr int64_t kWorkspaceBytes = int64_t(512) << 20;   // most bytes of all chunks' partial sums
constexpr int64_t kMergeBlock = 128;                      // cells per block of the merge
constexpr int64_t kLookahead = 8;                         // feature rows prefetched ahead in pass 1
constexpr int64_t kCacheLine = 64;                        // bytes

// One chunk of pass 1: the rows of points [begin, end) added into `acc` ([cells, C], rows valid
// where `seen`).  Ranks are computed kLookahead points ahead of the adds and kept in a small ring,
// so the rows of kept points are prefetched in time and dropped points' rows are never read.
// The prefetch goes to L2 (locality 2): it does not hold one of the core's few L1 fill buffers,
// so more rows are in flight (5-10 % faster than an L1 prefetch here).
// Returns whether a batch index was out of range.
template <typename scalar_t, typename index_t, typename acc_t>
inline __attribute__((always_inline)) bool accumulate_points(const scalar_t* feats, const index_t* coords,
                                                             int64_t begin, int64_t end, int64_t channels,
                                                             const BevGrid& grid, acc_t* acc, uint8_t* seen) {
  const int64_t row_bytes = channels * static_cast<int64_t>(sizeof(scalar_t));
  int64_t ring[kLookahead];  // rank of point j at ring[j % kLookahead]
  bool bad = false;
  auto rank_ahead = [&](int64_t j) {
    const index_t* c = coords + 4 * j;
    bad |= !grid.batch_ok(c[3]);
    const int64_t rank = grid.point_rank(c[0], c[1], c[2], c[3]);
    ring[j % kLookahead] = rank;
    if (rank >= 0) {
      const char* row = reinterpret_cast<const char*>(feats + j * channels);
      for (int64_t byte = 0; byte < row_bytes; byte += kCacheLine) __builtin_prefetch(row + byte, 0, 2);
    }
  };
  for (int64_t j = begin; j < std::min(end, begin + kLookahead); ++j) rank_ahead(j);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t rank = ring[i % kLookahead];
    if (i + kLookahead < end) rank_ahead(i + kLookahead);
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
                               int64_t channels, const BevGrid& grid, acc_t* acc, uint8_t* seen) {
  return accumulate_points(feats, coords, begin, end, channels, grid, acc, seen);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BEV_POOL_HAVE_AVX2 1
// The same loop compiled for AVX2 (wider adds, fewer instructions per feature row).
template <typename scalar_t, typename index_t, typename acc_t>
__attribute__((target("avx2"))) bool accumulate_points_avx2(const scalar_t* feats, const index_t* coords,
                                                            int64_t begin, int64_t end, int64_t channels,
                                                            const BevGrid& grid, acc_t* acc, uint8_t* seen) {
  return accumulate_points(feats, coords, begin, end, channels, grid, acc, seen);
}
#endif

// Pass 1: per-chunk partial sums (chunk t into partial[t], rows valid where touched[t]).
template <typename scalar_t, typename index_t, typename acc_t>
void accumulate_chunks(const scalar_t* feats, const index_t* coords, int64_t n, int64_t channels,
                       const BevGrid& grid, int64_t num_chunks, acc_t* const* partial, uint8_t* touched,
                       std::atomic<bool>& bad_batch) {
  const int64_t cells = grid.batch_size * grid.cells_per_sample();
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
        bad = accumulate_points_avx2(feats, coords, begin, end, channels, grid, partial[t], touched + t * cells);
      else
#endif
        bad = accumulate_points_default(feats, coords, begin, end, channels, grid, partial[t], touched + t * cells);
      if (bad) bad_batch.store(true, std::memory_order_relaxed);
    }
  });
}

// Writes one row of the output.  float rows go through non-temporal stores where aligned: the
// output is written once and not read back here, so it skips the cache (no read-for-ownership).
template <typename scalar_t, typename acc_t>
inline void store_row(scalar_t* dst, const acc_t* src, int64_t len) {
  for (int64_t l = 0; l < len; ++l) dst[l] = static_cast<scalar_t>(src[l]);
}

#if defined(__SSE2__)
#define BEV_POOL_HAVE_STREAM_STORES 1
template <>
inline void store_row<float, float>(float* dst, const float* src, int64_t len) {
  int64_t l = 0;
  for (; l < len && (reinterpret_cast<uintptr_t>(dst + l) & 15) != 0; ++l) dst[l] = src[l];
  for (; l + 4 <= len; l += 4) _mm_stream_ps(dst + l, _mm_loadu_ps(src + l));
  for (; l < len; ++l) dst[l] = src[l];
}
#endif

// Pass 2: sum the chunks' partials of every cell in chunk order, write [B, C, Z*X*Y] transposed.
// Work is split into blocks of kMergeBlock cells: a block's sums are gathered channel-major in a
// small buffer ([C, block], in cache) and written as C runs of consecutive cells.
template <typename scalar_t, typename acc_t>
void merge_chunks(const acc_t* const* partial, const uint8_t* touched, int64_t num_chunks, int64_t batch_size,
                  int64_t cells_per_sample, int64_t channels, scalar_t* out) {
  const int64_t cells = batch_size * cells_per_sample;
  const int64_t blocks_per_sample = (cells_per_sample + kMergeBlock - 1) / kMergeBlock;
  at::parallel_for(0, batch_size * blocks_per_sample, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(static_cast<size_t>(channels * kMergeBlock));  // [C, block cells]
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks_per_sample;
      const int64_t s0 = (task % blocks_per_sample) * kMergeBlock;
      const int64_t len = std::min(kMergeBlock, cells_per_sample - s0);
      const int64_t cell0 = b * cells_per_sample + s0;
      std::fill(sum.begin(), sum.end(), acc_t(0));
      for (int64_t l = 0; l < len; ++l) {
        for (int64_t t = 0; t < num_chunks; ++t) {
          if (!touched[t * cells + cell0 + l]) continue;
          const acc_t* src = partial[t] + (cell0 + l) * channels;
          for (int64_t k = 0; k < channels; ++k) sum[k * kMergeBlock + l] += src[k];
        }
      }
      scalar_t* base = out + b * channels * cells_per_sample + s0;
      for (int64_t k = 0; k < channels; ++k)
        store_row<scalar_t, acc_t>(base + k * cells_per_sample, sum.data() + k * kMergeBlock, len);
    }
#ifdef BEV_POOL_HAVE_STREAM_STORES
    _mm_sfence();  // non-temporal stores visible before the caller reads the output
#endif
  });
}

}  // namespace

at::Tensor bev_pool_forward_cpu(const at::Tensor& feats_in, const at::Tensor& coords_in, const BevGrid& grid) {
  const at::Tensor feats = feats_in.contiguous();
  const at::Tensor coords = coords_in.contiguous();
  const int64_t n = feats.size(0), channels = feats.size(1);
  const int64_t cells_per_sample = grid.cells_per_sample();
  const int64_t cells = grid.batch_size * cells_per_sample;
  at::Tensor out = at::empty({grid.batch_size, channels, grid.nz, grid.nx, grid.ny}, feats.options());
  std::atomic<bool> bad_batch{false};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Chunks: from the number of points, fewer when all partial sums would not fit the workspace.
    const int64_t acc_bytes = cells * std::max<int64_t>(channels, 1) * static_cast<int64_t>(sizeof(acc_t));
    const int64_t num_chunks = std::clamp<int64_t>(
        std::min<int64_t>((n + kChunkPoints - 1) / kChunkPoints, kWorkspaceBytes / acc_bytes), 1, kMaxChunks);
    // Uninitialised: a row is written by its chunk's first point before it is read.
    const size_t chunk_elems = static_cast<size_t>(cells * channels);
    // One allocation per chunk: blocks of the output's size are below glibc's largest mmap
    // threshold, so malloc reuses them across calls instead of page-faulting fresh memory.
    std::vector<at::Tensor> scratch;
    std::vector<acc_t*> partial;  // partial[t]: [cells, C] sums of chunk t
    for (int64_t t = 0; t < num_chunks; ++t) {
      scratch.push_back(at::empty({static_cast<int64_t>(chunk_elems)},
                                  feats.options().dtype(c10::CppTypeToScalarType<acc_t>::value)));
      partial.push_back(scratch.back().data_ptr<acc_t>());
    }
    std::vector<uint8_t> touched(static_cast<size_t>(num_chunks * cells), 0);  // [K, cells]
    AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_accumulate", [&] {
      accumulate_chunks<scalar_t, index_t, acc_t>(feats.data_ptr<scalar_t>(), coords.data_ptr<index_t>(), n, channels,
                                                  grid, num_chunks, partial.data(), touched.data(), bad_batch);
    });
    TORCH_CHECK_VALUE(!bad_batch.load(), "bev_pool coords batch index (column 3) must lie in [0, ", grid.batch_size,
                      ")");
    if (channels > 0)
      merge_chunks<scalar_t, acc_t>(partial.data(), touched.data(), num_chunks, grid.batch_size, cells_per_sample,
                                    channels, out.data_ptr<scalar_t>());
  });
  return out;
}

namespace {

// The backward's [N, C] gradient (638 MB at BEVFusion's size) is the largest tensor the op writes.
// Fresh pages of that size cost more than the copy itself (the kernel zero-fills and maps every
// 4 KiB page on first touch), so the buffer of the last call is kept and handed out again when
// nothing else holds it any more (its storage's only owner is this cache: autograd has consumed
// the previous gradient).  A training loop thus writes its point gradients into the same pages
// every iteration.  BEV_DDP_BEV_POOL_REUSE_GRAD=0 turns the reuse off (the buffer is then freed
// with the gradient).
at::Tensor gradient_buffer(int64_t n, int64_t channels, const at::TensorOptions& options) {
  static const bool reuse = [] {
    const char* flag = std::getenv("BEV_DDP_BEV_POOL_REUSE_GRAD");
    return flag == nullptr || std::string(flag) != "0";
  }();
  if (!reuse) return at::empty({n, channels}, options);
  static std::mutex mutex;
  static at::Tensor* cached = new at::Tensor();  // never destroyed: no CPU free after torch's teardown
  std::lock_guard<std::mutex> lock(mutex);
  const int64_t numel = n * channels;
  const bool free_to_reuse = cached->defined() && cached->use_count() == 1 && cached->storage().use_count() == 1;
  if (!(free_to_reuse && cached->numel() == numel && cached->scalar_type() == options.dtype().toScalarType()))
    *cached = at::empty({numel}, options);  // the previous buffer (if any) is freed by its last holder
  return cached->view({n, channels});
}

// Copies `channels` values from src to dst; float rows of a multiple of 4 at 16-byte aligned
// addresses go through non-temporal stores (the gradient is written once and not read back here).
template <typename scalar_t>
inline void copy_row(scalar_t* dst, const scalar_t* src, int64_t channels) {
  std::memcpy(dst, src, sizeof(scalar_t) * channels);
}

#if defined(__SSE2__)
template <>
inline void copy_row<float>(float* dst, const float* src, int64_t channels) {
  if ((channels & 3) != 0 || (reinterpret_cast<uintptr_t>(dst) & 15) != 0) {
    std::memcpy(dst, src, sizeof(float) * channels);
    return;
  }
  for (int64_t k = 0; k < channels; k += 4) _mm_stream_ps(dst + k, _mm_loadu_ps(src + k));
}
#endif

}  // namespace

at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& coords_in) {
  const BevGrid grid{grad_out.size(0), grad_out.size(2), grad_out.size(3), grad_out.size(4)};
  const int64_t channels = grad_out.size(1);
  const int64_t cells_per_sample = grid.cells_per_sample();
  const at::Tensor coords = coords_in.contiguous();
  const int64_t n = coords.size(0);
  if (channels == 0 || n == 0) return at::empty({n, channels}, grad_out.options());
  // [B, C, Z*X*Y] -> [B, Z*X*Y, C]: one contiguous gradient row per cell
  const at::Tensor grad_cells =
      grad_out.reshape({grid.batch_size, channels, cells_per_sample}).transpose(1, 2).contiguous();
  at::Tensor grad_feats = gradient_buffer(n, channels, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "bev_pool_backward_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_backward_cpu", [&] {
      const scalar_t* src = grad_cells.data_ptr<scalar_t>();
      scalar_t* dst = grad_feats.data_ptr<scalar_t>();
      const index_t* c = coords.data_ptr<index_t>();
      at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t r = grid.point_rank(c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]);
          if (r >= 0)
            copy_row<scalar_t>(dst + i * channels, src + r * channels, channels);
          else
            std::memset(dst + i * channels, 0, sizeof(scalar_t) * channels);  // dropped point: no gradient
        }
#ifdef BEV_POOL_HAVE_STREAM_STORES
        _mm_sfence();  // non-temporal stores visible before the caller reads the gradient
#endif
      });
    });
  });
  return grad_feats;
}

}  // namespace bev_ddp
