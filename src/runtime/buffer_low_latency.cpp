// runtime::Buffer, low-latency mode: the layouts (checked once per shape), the buffer half each call uses, the
// launches of kernels/low_latency.hpp and their order against the caller's stream, the clean and the shrink mask.
#include <atomic>
#include <cstring>
#include <utility>

#include "runtime/buffer_impl.hpp"
#include "runtime/call_checks.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace ll = kernels::ll;

const ll::Layout& Buffer::lowLatencyLayout(const LowLatencyShape& shape) {
  Impl& m = *impl_;
  for (const auto& [key, layout] : m.ll_layouts) {
    if (key == shape) return layout;
  }
  m.requireUsable("a low-latency call");
  if (!m.cfg.low_latency_mode) {
    UCCL_EP_THROW("rank {}: low-latency call on a Buffer built with low_latency_mode=False; build it with "
                  "Buffer(group, 0, num_rdma_bytes, low_latency_mode=True)",
                  m.cfg.rank);
  }
  const ll::Layout l =
      runtime::lowLatencyLayout(shape.num_max_dispatch_tokens_per_rank, shape.hidden, m.cfg.num_ranks, shape.num_experts);
  if (l.totalBytes() > static_cast<size_t>(m.cfg.num_rdma_bytes)) {
    UCCL_EP_THROW_ARG("low-latency mode: the RDMA buffer is too small: these sizes need {} bytes "
                      "(Buffer.get_low_latency_rdma_size_hint({}, {}, {}, {})), the buffer has num_rdma_bytes={}",
                      l.totalBytes(), shape.num_max_dispatch_tokens_per_rank, shape.hidden, m.cfg.num_ranks,
                      shape.num_experts, m.cfg.num_rdma_bytes);
  }
  // The signal words and the scratch are sized by the limits at construction; the layout checks above keep every
  // shape inside them.
  UCCL_EP_CHECK(l.totalSignals() <= m.signal_count && ll::scratchInts(l) <= m.scratch_per_half,
                "low-latency layout exceeds the buffer's signal words or scratch");
  m.ll_layouts.emplace_back(shape, l);
  return m.ll_layouts.back().second;
}

ll::Context Buffer::Impl::lowLatencyContext(const ll::Layout& layout, int half) const {
  ll::Context c;
  c.layout = layout;
  c.rank = cfg.rank;
  c.half = half;
  c.gpu_base = gpuBuffer();
  c.gpu_signals = gpuSignals();
  c.rdma_base = rdma_base;
  c.rdma_signals = rdma_signals ? rdma_signals->device() : nullptr;
  c.peer_gpu_base = peer_gpu_base->get();
  c.peer_gpu_signals = peer_gpu_signals->get();
  c.rings = ring_views ? ring_views->get() : nullptr;
  c.num_rings = static_cast<int>(rings.size());
  c.rdma_region = 0;
  c.mask = mask->get();
  c.enable_shrink = cfg.enable_shrink;
  c.error = error->device();
  c.timeout_ns = env().timeoutNs();
  c.scratch = scratch->get() + static_cast<size_t>(half) * scratch_per_half;
  if (staging_tickets) c.staging_tickets = staging_tickets->get() + static_cast<size_t>(half) * 2 * rings.size();
  // Ranks sharing the GPU split its SMs, so that every one's launch is resident at once: their receive parts wait
  // for each other's send parts.
  c.num_sms = num_sms / ranks_on_gpu > 0 ? num_sms / ranks_on_gpu : 1;
  c.gpu_shared = ranks_on_gpu > 1;
  return c;
}

void Buffer::Impl::launchLowLatency(const ll::Layout& layout, const LowLatencyPending& p, ll::Phase phase,
                                    uintptr_t stream) const {
  ll::Context c = lowLatencyContext(layout, p.half);
  c.use_parity = p.use_parity;
  if (p.combine) {
    ll::launchCombine(c, p.combine_args, phase, reinterpret_cast<void*>(stream));
  } else {
    ll::launchDispatch(c, p.dispatch, phase, reinterpret_cast<void*>(stream));
  }
}

void Buffer::Impl::streamWaits(uintptr_t waiter, uintptr_t waited, bool capturing, const char* call) const {
  const auto from = reinterpret_cast<cudaStream_t>(waited);
  const auto to = reinterpret_cast<cudaStream_t>(waiter);
  if (!capturing) {
    UCCL_EP_CUDA_OR_THROW(cudaEventRecord(ll_order_event, from), "rank {}: {}: recording the stream-order event",
                          cfg.rank, call);
    UCCL_EP_CUDA_OR_THROW(cudaStreamWaitEvent(to, ll_order_event, 0), "rank {}: {}: a stream waiting for another",
                          cfg.rank, call);
    return;
  }
  // Inside a CUDA-graph capture (the wait joins `waiter` to it): an event of its own, as torch's wait_stream does, so
  // the event eager calls reuse never holds a capture's state. Destroying it once the wait is captured is allowed.
  cudaEvent_t e = nullptr;
  UCCL_EP_CUDA_OR_THROW(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "rank {}: {}: capture event", cfg.rank,
                        call);
  const cudaError_t recorded = cudaEventRecord(e, from);
  const cudaError_t waited_on = recorded == cudaSuccess ? cudaStreamWaitEvent(to, e, 0) : recorded;
  logCuda(cudaEventDestroy(e), "cudaEventDestroy", call);
  UCCL_EP_CUDA_OR_THROW(waited_on, "rank {}: {}: a stream waiting for another inside a graph capture", cfg.rank, call);
}

LowLatencyPending Buffer::lowLatencySend(LowLatencyPending p, bool return_recv_hook, const LowLatencyStreams& s) {
  Impl& m = *impl_;
  const char* call = p.combine ? "low_latency_combine" : "low_latency_dispatch";
  checkErrors();
  m.requireConnected(call);
  const ll::Layout& layout = lowLatencyLayout(p.shape);
  if (p.combine) {
    checkLowLatencyCombine(layout, p.combine_args);
  } else {
    checkLowLatencyDispatch(layout, p.dispatch);
  }
  p.half = m.ll_half;
  p.use_parity = static_cast<int>(m.ll_half_uses[p.half] & 1);
  // The comm stream joins a capture of the caller's stream through the first wait, so one query serves both.
  const bool other_stream = s.stream != s.caller_stream;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (other_stream) {
    UCCL_EP_CUDA_OR_THROW(cudaStreamIsCapturing(reinterpret_cast<cudaStream_t>(s.caller_stream), &capture),
                          "rank {}: {}: stream capture status", m.cfg.rank, call);
    m.streamWaits(s.stream, s.caller_stream, capture != cudaStreamCaptureStatusNone, call);
  }
  m.launchLowLatency(layout, p, return_recv_hook ? ll::Phase::kSend : ll::Phase::kBoth, s.stream);
  ++m.ll_half_uses[m.ll_half];
  m.ll_half ^= 1;  // only once the launch went through: every rank flips in step
  if (other_stream && s.caller_waits) {
    m.streamWaits(s.caller_stream, s.stream, capture != cudaStreamCaptureStatusNone, call);
  }
  return p;
}

LowLatencyPending Buffer::lowLatencyDispatch(const LowLatencyShape& shape, const ll::DispatchArgs& args,
                                             bool return_recv_hook, const LowLatencyStreams& streams) {
  LowLatencyPending p;
  p.shape = shape;
  p.dispatch = args;
  return lowLatencySend(std::move(p), return_recv_hook, streams);
}

LowLatencyPending Buffer::lowLatencyCombine(const LowLatencyShape& shape, const ll::CombineArgs& args,
                                            bool return_recv_hook, const LowLatencyStreams& streams) {
  LowLatencyPending p;
  p.shape = shape;
  p.combine = true;
  p.combine_args = args;
  return lowLatencySend(std::move(p), return_recv_hook, streams);
}

void Buffer::lowLatencyReceive(const LowLatencyPending& p, uintptr_t stream) {
  Impl& m = *impl_;
  m.requireConnected("a low-latency receive hook");
  m.raiseRecordedErrors(/*argument_errors=*/false);
  m.launchLowLatency(lowLatencyLayout(p.shape), p, ll::Phase::kRecv, stream);
  m.raiseRecordedErrors(/*argument_errors=*/true);
}

uintptr_t Buffer::nextLowLatencyCombineBuffer(const LowLatencyShape& shape) {
  Impl& m = *impl_;
  m.requireConnected("get_next_low_latency_combine_buffer");
  const ll::Layout& l = lowLatencyLayout(shape);
  const uint8_t* base = m.rdma_base != nullptr ? m.rdma_base : m.gpuBuffer();
  return reinterpret_cast<uintptr_t>(base + l.halfOffset(m.ll_half) + l.send_off);
}

void Buffer::cleanLowLatencyBuffer(const LowLatencyShape& shape, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "clean_low_latency_buffer";
  m.requireConnected(call);
  checkErrors();
  const ll::Layout& layout = lowLatencyLayout(shape);  // the sizes are checked like a call's
  auto s = reinterpret_cast<cudaStream_t>(stream);
  // The call words only: the clean epoch words before them count every rank's cleans and are never zeroed
  // (ll_layout.hpp), so a fast peer's arrival at this barrier is not lost.
  const size_t first = ll::callSignalsBegin(m.cfg.num_ranks), call_words = ll::signalWords(m.cfg.num_ranks) - first;
  UCCL_EP_CUDA_OR_THROW(cudaMemsetAsync(m.gpuSignals() + first, 0, call_words * sizeof(int64_t), s),
                        "rank {}: {}: signal words", m.cfg.rank, call);
  UCCL_EP_CUDA_OR_THROW(cudaMemsetAsync(m.scratch->get(), 0, 2 * m.scratch_per_half * sizeof(int32_t), s),
                        "rank {}: {}: scratch", m.cfg.rank, call);
  if (m.rdma_signals) {
    // Host-mapped words the proxies add to: zeroed from the CPU once earlier work on the stream is done, and before
    // the barrier tells the peers they may add to them again.
    m.waitForDevice("clean_low_latency_buffer: waiting for the stream", s);
    std::memset(static_cast<void*>(m.rdma_signals->host() + first), 0, call_words * sizeof(int64_t));
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // The barrier: every unmasked peer's clean with the same number, or the timeout (masked with enable_shrink, else
  // an error naming the ranks that did not join, raised below). The absent flags are zeroed from the CPU: the last
  // clean waited for its barrier kernel before it returned (a clean that Ctrl-C ended may leave one running, whose
  // late flag would only add a name).
  std::memset(static_cast<void*>(m.clean_absent->host()), 0, m.cfg.num_ranks * sizeof(int32_t));
  ll::CleanArgs args;
  args.call = m.clean_calls + 1;
  args.absent = m.clean_absent->device();
  ll::launchCleanBarrier(m.lowLatencyContext(layout, 0), args, s);
  ++m.clean_calls;
  m.waitForDevice("clean_low_latency_buffer: waiting for every rank to join", s);
  checkErrors();
}

namespace {
void requireShrink(const BufferConfig& c, const char* call) {
  if (!c.enable_shrink) {
    UCCL_EP_THROW("{}: the mask buffer exists only with enable_shrink=True; build the Buffer with enable_shrink=True",
                  call);
  }
}
}  // namespace

void Buffer::lowLatencyUpdateMaskBuffer(int rank_to_mask, bool mask, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "low_latency_update_mask_buffer";
  m.requireUsable(call);
  requireShrink(m.cfg, call);
  if (rank_to_mask < 0 || rank_to_mask >= m.cfg.num_ranks) {
    UCCL_EP_THROW_ARG("{}: rank_to_mask must be in [0, {}), got {}", call, m.cfg.num_ranks, rank_to_mask);
  }
  // Copied from a device constant: safe under graph capture and with no host memory to keep alive.
  UCCL_EP_CUDA_OR_THROW(cudaMemcpyAsync(m.mask->get() + rank_to_mask, m.mask_values->get() + (mask ? 1 : 0),
                                        sizeof(int32_t), cudaMemcpyDeviceToDevice,
                                        reinterpret_cast<cudaStream_t>(stream)),
                        "rank {}: {}", m.cfg.rank, call);
}

void Buffer::lowLatencyQueryMaskBuffer(uintptr_t mask_status, uintptr_t stream) const {
  const Impl& m = *impl_;
  const char* call = "low_latency_query_mask_buffer";
  m.requireUsable(call);
  requireShrink(m.cfg, call);
  UCCL_EP_CUDA_OR_THROW(cudaMemcpyAsync(reinterpret_cast<void*>(mask_status), m.mask->get(),
                                        sizeof(int32_t) * m.cfg.num_ranks, cudaMemcpyDeviceToDevice,
                                        reinterpret_cast<cudaStream_t>(stream)),
                        "rank {}: {}", m.cfg.rank, call);
}

void Buffer::lowLatencyCleanMaskBuffer(uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "low_latency_clean_mask_buffer";
  m.requireUsable(call);
  requireShrink(m.cfg, call);
  UCCL_EP_CUDA_OR_THROW(
      cudaMemsetAsync(m.mask->get(), 0, sizeof(int32_t) * m.cfg.num_ranks, reinterpret_cast<cudaStream_t>(stream)),
      "rank {}: {}", m.cfg.rank, call);
}

}  // namespace uccl::ep::runtime
