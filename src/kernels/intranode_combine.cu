// Normal-mode combine within one memory domain: the grid kernels and the launcher (intranode.hpp has the protocol;
// intranode.cu the shared 1-block steps).
//
// Rows a rank sends back to source s land in s's buffer in blocks by rank: the block of rank r starts after the rows
// of the ranks before r, count(s -> r') = prefix[s][r'] - prefix[s-1][r'] (the handle's inclusive prefix matrix).
// Rows a rank received from itself never move: the reduce reads them from the combine input.
//
// push      staged path: warps store received rows of other sources back into those sources' buffers.
// reduce    staged path: per own token (one warp), the sum of its rows from every rank it went to, in rank order.
// transfer  pipelined path: the push with chunk flags, then the reduce, each row after its chunk's flag.
#include "kernels/intranode_device.cuh"
#include "kernels/intranode_reduce.cuh"
#include "kernels/intranode_handle.hpp"
#include "kernels/intranode_steps.hpp"
#include "kernels/launch.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

using namespace dev;

__device__ __forceinline__ int64_t countOf(const int32_t* prefix, int R, int s, int r) {
  return prefix[s * R + r] - (s > 0 ? prefix[(s - 1) * R + r] : 0);
}

// Every row of the handle's rank_prefix_matrix (intranode_handle.hpp combinePrefixRow), shared out to the block's
// threads; false (for every thread) when one is bad, which voids the call. What it bounds: every row this rank reads
// from x, writes into a source's block or reads back here, and every chunk flag.
__device__ bool blockPrefixOk(const Context& ctx, const CombineArgs& a) {
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (int s = threadIdx.x; s < ctx.num_ranks; s += blockDim.x) {
    const BadEntry e = combinePrefixRow(a.rank_prefix_matrix, ctx.num_ranks, ctx.rank, s, a.num_recv_tokens,
                                        a.num_tokens);
    if (e.found()) {
      voidCall(ctx, a.layout, kOpCombine, e.row, e.col, e.value);
      bad = 1;
    }
  }
  __syncthreads();
  return bad == 0;
}

// Rows this rank sends back to source s (the rows it received from s) and where they land in s's buffer. A source
// whose buffer would overflow gets nothing (recorded; the source sees the same and reads nothing).
struct Source {
  int64_t first;  // first of those rows in the combine input (receive order)
  int64_t count;
  int64_t base;   // byte offset of this rank's block in s's buffer
  int64_t held;   // rows s gets back from every rank
};
__device__ __forceinline__ Source sourceOf(const Context& ctx, const CombineArgs& a, int s) {
  const int R = ctx.num_ranks, me = ctx.rank;
  const int32_t* prefix = a.rank_prefix_matrix;
  Source src;
  src.first = s > 0 ? prefix[(s - 1) * R + me] : 0;
  src.count = prefix[s * R + me] - src.first;
  int64_t before = 0;
  src.held = 0;
  for (int r = 0; r < R; ++r) {
    const int64_t c = countOf(prefix, R, s, r);
    before += r < me ? c : 0;
    src.held += c;
  }
  const size_t need = a.layout.combineBytes(src.held);
  if (need > ctx.buffer_bytes) {
    fail(ctx, kSlotOverflow, kOpNvlOverflow, s, -1, need);
    src.count = 0;
  }
  src.base = static_cast<int64_t>(a.layout.data_off + before * a.layout.combine_row_stride);
  return src;
}

// What this rank gets back: the byte offset of each rank's block here (block_of[r]), its rows (sent_to[r], the rows
// this rank sent to r: the bound of send_pos[t][r]), and whether they fit.
__device__ __forceinline__ bool blocksHere(const Context& ctx, const CombineArgs& a, int64_t* block_of,
                                           int64_t* sent_to) {
  int64_t rows = 0;
  for (int r = 0; r < ctx.num_ranks; ++r) {
    block_of[r] = static_cast<int64_t>(a.layout.data_off + rows * a.layout.combine_row_stride);
    sent_to[r] = countOf(a.rank_prefix_matrix, ctx.num_ranks, ctx.rank, r);
    rows += sent_to[r];
  }
  return a.layout.combineBytes(rows) <= ctx.buffer_bytes;  // otherwise the ranks stored nothing
}

// The warp lists token t's rows in `mine` (rank order; one per rank it went to) and returns how many; *self_slot
// and *self_row say which entry is this rank's own row and where it is in the combine input. A send_pos entry other
// than -1 outside [0, sent_to[r]) is recorded (kBadHandle) and skipped. With kWait, each row of another rank is
// listed after its chunk's flag (chunk pos / chunk_rows, flag fbase[r] + chunk); false when a wait failed or r voided
// the call.
template <bool kWait>
__device__ bool listRows(const Context& ctx, const CombineArgs& a, int t, const int64_t* block_of,
                         const int64_t* sent_to, const uint8_t** mine, int* n_out, int* self_slot, int64_t* self_row,
                         const int64_t* fbase, int64_t chunk_rows, uint64_t epoch) {
  const int R = ctx.num_ranks, me = ctx.rank, lane = platform::laneId();
  const int32_t* prefix = a.rank_prefix_matrix;
  const int64_t self_first = me > 0 ? prefix[(me - 1) * R + me] : 0;
  int n = 0;
  *self_slot = -1;
  bool ok = true;
  for (int base = 0; base < R; base += kWarpSize) {
    const int r = base + lane;
    int pos = r < R ? a.send_pos[static_cast<size_t>(t) * R + r] : -1;
    if (pos != -1 && !sendPosOk(pos, sent_to[r])) {
      recordBadEntry(ctx, kOpCombine, kHandleSendPos, t, r, pos);
      pos = -1;
    }
    if constexpr (kWait) {
      if (pos >= 0 && r != me) {
        const int64_t chunk = pos / chunk_rows;
        const uint64_t* flag = word(ctx.self, a.layout.flags_off + static_cast<size_t>(fbase[r] + chunk) * 8);
        const uint64_t start = platform::nowNs();
        for (uint32_t spins = 1; platform::loadAcquire<Scope::kSystem>(flag) < epoch; ++spins) {
          if ((spins & 1023) == 0) {
            const bool voided = voidedBy(ctx, a.layout, r, kOpCombine);
            const bool late = !voided && platform::nowNs() - start > ctx.timeout_ns;
            if (late) fail(ctx, kTimeout, kOpChunk, r, -1, chunk);
            if (voided || late || failed(ctx)) {
              ok = false;
              break;
            }
          }
        }
      }
      // __syncwarp orders the other lanes' later loads of the rows after each lane's acquire of its flag.
      if (platform::ballot(!ok) != 0) return false;
    }
    const uint64_t bits = platform::ballot(pos >= 0);
    if (pos >= 0) {
      const int before = platform::popcount64(bits & ((uint64_t{1} << lane) - 1));
      if (r == me) {
        mine[n + before] = static_cast<const uint8_t*>(a.x) + (self_first + pos) * static_cast<int64_t>(a.hidden) * 2;
      } else {
        mine[n + before] = ctx.self + block_of[r] + static_cast<size_t>(pos) * a.layout.combine_row_stride;
      }
    }
    const uint64_t self_bit = me >= base && me < base + kWarpSize ? (bits >> (me - base)) & 1 : 0;
    if (self_bit) {
      *self_slot = n + platform::popcount64(bits & ((uint64_t{1} << (me - base)) - 1));
      *self_row = self_first + platform::shfl(pos, me - base);
    }
    n += platform::popcount64(bits);
  }
  platform::syncWarp();
  *n_out = n;
  return true;
}

// ---- staged path --------------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kCopyThreads) combinePushKernel(Context ctx, CombineArgs a) {
  extern __shared__ int64_t comb_smem[];  // [R] first row, [R] rows, [R] byte offset at source s
  if (blockFailed(ctx) || !blockPrefixOk(ctx, a)) return;
  const int R = ctx.num_ranks, me = ctx.rank;
  int64_t *first_of = comb_smem, *count_of = comb_smem + R, *base_of = comb_smem + 2 * R;
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    const Source src = s == me ? Source{0, 0, 0, 0} : sourceOf(ctx, a, s);
    first_of[s] = src.first;
    count_of[s] = src.count;
    base_of[s] = src.base;
  }
  __syncthreads();
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  for (int k = 1; k < R; ++k) {  // sources me+1, me+2, ...: at any moment the ranks write to different receivers
    const int s = (me + k) % R;
    uint8_t* dst = ctx.peers[s] + base_of[s];
    UCCL_EP_FOR_ITEMS(first, count_of[s], step, global_warp, warps) {
      const int64_t last = first + step < count_of[s] ? first + step : count_of[s];
      for (int64_t j = first; j < last; ++j) storeBack(a, first_of[s] + j, dst + j * a.layout.combine_row_stride);
    }
  }
}

// One warp per token; its row list lives in shared memory ([warps][R] pointers after the [R] block offsets).
__global__ void __launch_bounds__(kCopyThreads) combineReduceKernel(Context ctx, CombineArgs a) {
  extern __shared__ int64_t reduce_smem[];
  if (blockFailed(ctx)) return;
  const int R = ctx.num_ranks;
  // The push kernel checked the matrix (a bad one voided the call); a source that voided it sent nothing back.
  if (blockVoided(ctx, a.layout, kOpCombine, [&](int r) { return countOf(a.rank_prefix_matrix, R, ctx.rank, r); })) {
    return;
  }
  int64_t* block_of = reduce_smem;
  int64_t* sent_to = reduce_smem + R;
  const uint8_t** rows_of = reinterpret_cast<const uint8_t**>(reduce_smem + 2 * R);
  __shared__ bool fits;
  if (threadIdx.x == 0) fits = blocksHere(ctx, a, block_of, sent_to);
  __syncthreads();
  if (!fits) return;
  const int warps_per_block = platform::numWarps();
  const uint8_t** mine = rows_of + static_cast<size_t>(platform::warpId()) * R;
  for (int t = blockIdx.x * warps_per_block + platform::warpId(); t < a.num_tokens; t += gridDim.x * warps_per_block) {
    int n = 0, self_slot = -1;
    int64_t self_row = 0;
    listRows<false>(ctx, a, t, block_of, sent_to, mine, &n, &self_slot, &self_row, nullptr, 1, 0);
    reduceToken<false>(a, t, mine, n, self_slot, self_row);
    platform::syncWarp();
  }
}

// ---- pipelined path -----------------------------------------------------------------------------------------
// Shared memory: [R] int64 each: by k = 1..R-1 (source (me + k) % R) at index k - 1: first row, rows, byte offset,
// first flag index, rows per chunk, inclusive prefix of chunk counts; by rank r: block offset here, first flag index
// here, rows sent to r; then the warps' row lists ([warps][R] pointers).
constexpr int kTransferArrays = 9;

__device__ __forceinline__ int upperBound(const int64_t* inclusive_end, int n, int64_t item) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (inclusive_end[mid] > item)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

__global__ void __launch_bounds__(kCopyThreads) combineTransferKernel(Context ctx, CombineArgs a) {
  extern __shared__ int64_t xfer[];
  // A bad matrix voids the call before any row moves (the peers stop waiting for this rank's chunks).
  if (blockFailed(ctx) || !blockPrefixOk(ctx, a)) return;
  const int R = ctx.num_ranks, me = ctx.rank;
  const int32_t* prefix = a.rank_prefix_matrix;
  const uint64_t epoch = epochOf(ctx);
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  int64_t *first_of = xfer, *count_of = xfer + R, *base_of = xfer + 2 * R, *flag0 = xfer + 3 * R;
  int64_t *crows = xfer + 4 * R, *send_end = xfer + 5 * R, *block_of = xfer + 6 * R, *fbase = xfer + 7 * R;
  int64_t* sent_to = xfer + 8 * R;
  const uint8_t** rows_of = reinterpret_cast<const uint8_t**>(xfer + kTransferArrays * R);
  __shared__ bool fits;
  __shared__ int64_t my_crows;
  for (int i = threadIdx.x; i < R - 1; i += blockDim.x) {
    const int s = (me + i + 1) % R;
    const Source src = sourceOf(ctx, a, s);
    first_of[i] = src.first;
    count_of[i] = src.count;
    base_of[i] = src.base;
    crows[i] = chunkRows(src.held, step, R);
    int64_t f = 0;  // chunks of the ranks before this one in s's buffer, s's own block included
    for (int r = 0; r < me; ++r) f += ceilDiv(countOf(prefix, R, s, r), crows[i]);
    flag0[i] = f;
  }
  if (threadIdx.x == 0) {
    fits = blocksHere(ctx, a, block_of, sent_to);
    int64_t held = 0;
    for (int r = 0; r < R; ++r) held += countOf(prefix, R, me, r);
    my_crows = chunkRows(held, step, R);
    int64_t flags = 0;
    for (int r = 0; r < R; ++r) {
      fbase[r] = flags;
      flags += ceilDiv(countOf(prefix, R, me, r), my_crows);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t sent = 0;
    for (int i = 0; i < R - 1; ++i) send_end[i] = (sent += ceilDiv(count_of[i], crows[i]));
  }
  __syncthreads();
  // 1. Chunks back to their sources, each published by its flag.
  const int64_t n_send = R > 1 ? send_end[R - 2] : 0;
  Claims sends(ctx, kClaimSendOff);
  for (int64_t item = sends.next(); item < n_send; item = sends.next()) {
    const int i = upperBound(send_end, R - 1, item);
    const int s = (me + i + 1) % R;
    const int64_t chunk = item - (i > 0 ? send_end[i - 1] : 0);
    const int64_t first = chunk * crows[i], last = first + crows[i] < count_of[i] ? first + crows[i] : count_of[i];
    uint8_t* dst = ctx.peers[s] + base_of[i];
    for (int64_t j = first; j < last; ++j) storeBack(a, first_of[i] + j, dst + j * a.layout.combine_row_stride);
    publishChunk(word(ctx.peers[s], a.layout.flags_off + static_cast<size_t>(flag0[i] + chunk) * 8), epoch);
  }
  // 2. Own tokens, each once the chunks holding its rows are here.
  if (!fits) return;
  const uint8_t** mine = rows_of + static_cast<size_t>(platform::warpId()) * R;
  Claims tokens(ctx, kClaimRecvOff);
  for (int64_t t = tokens.next(); t < a.num_tokens; t = tokens.next()) {
    int n = 0, self_slot = -1;
    int64_t self_row = 0;
    if (!listRows<true>(ctx, a, static_cast<int>(t), block_of, sent_to, mine, &n, &self_slot, &self_row, fbase,
                        my_crows, epoch)) {
      return;
    }
    reduceToken<true>(a, static_cast<int>(t), mine, n, self_slot, self_row);
    platform::syncWarp();
  }
}

// One carveout for every kernel, low-latency and normal alike (launch.hpp says why).
void setCarveout() {
  static const bool once = [] {
    preferMaxShared({reinterpret_cast<const void*>(&combinePushKernel), reinterpret_cast<const void*>(&combineReduceKernel),
                     reinterpret_cast<const void*>(&combineTransferKernel)});
    return true;
  }();
  (void)once;
}

int grid(const Context& ctx) { return ctx.num_sms > 0 ? ctx.num_sms : 1; }

// As many warps per block as keep the per-warp row lists within 32 KiB of shared memory.
int listWarps(size_t R) {
  int warps = static_cast<int>(32768 / (sizeof(void*) * R));
  return warps < 1 ? 1 : (warps > kCopyThreads / kWarpSize ? kCopyThreads / kWarpSize : warps);
}

}  // namespace

void launchCombine(const Context& ctx, const CombineArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  const size_t R = static_cast<size_t>(ctx.num_ranks);
  const int warps = listWarps(R);
  launchReuse(ctx, s, "combine (reuse wait)");
  if (ctx.pipelined) {
    // Runs even with no rows: the peers wait for this rank's chunks.
    const size_t shm = sizeof(int64_t) * kTransferArrays * R + sizeof(void*) * R * warps;
    allowDynamicShared(reinterpret_cast<const void*>(&combineTransferKernel), shm);
    combineTransferKernel<<<grid(ctx), warps * kWarpSize, shm, s>>>(ctx, a);
    checkLaunch(gpuGetLastError(), "combine (transfer)");
  } else {
    // Runs even with no rows: it checks the handle's matrix before the reduce uses it.
    combinePushKernel<<<grid(ctx), kCopyThreads, sizeof(int64_t) * 3 * R, s>>>(ctx, a);
    checkLaunch(gpuGetLastError(), "combine (push)");
    launchArrive(ctx, a.layout.pushed_off, s, "combine (arrive)");
    if (a.num_tokens > 0) {
      const size_t shm = sizeof(int64_t) * 2 * R + sizeof(void*) * R * warps;
      // The kernel's static shared words come on top of the dynamic bytes (48 KiB at 1024 ranks).
      allowDynamicShared(reinterpret_cast<const void*>(&combineReduceKernel), shm + 1024);
      combineReduceKernel<<<grid(ctx), warps * kWarpSize, shm, s>>>(ctx, a);
      checkLaunch(gpuGetLastError(), "combine (reduce)");
    }
  }
  launchFinish(ctx, s, "combine (finish)");
}

}  // namespace uccl::ep::kernels::intranode
