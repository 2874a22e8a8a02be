// GPU ring benchmark: what a kernel gets out of the descriptor ring and the proxy, on one GPU.
//
//   throughput   persistent warps (lane 0 each) push NOP or WRITE descriptors into R rings (ring r -> proxy
//                thread r % T); time from the first warp's start to the last descriptor retired (each warp
//                waits for its last ticket), on the GPU's globaltimer. Then the same kernel against plain
//                host consumer threads (RingConsumer in a tight loop): the ring's own ceiling.
//   round trip   one GPU thread pushes a SIGNAL to its own rank; the proxy (null/loopback transport) adds to an
//                int64 counter in host-mapped memory; the thread spins until it changes. Beside it, the bare
//                pinned-memory ping-pong (GPU flag -> CPU echo -> GPU) that bounds it from below.
// Every GPU spin has a timeout; a stall names the ring or counter and the position, and the run fails.
//
// Usage: gpu_ring_bench [--threads 4] [--rings 8] [--warps 528] [--descriptors 4194304] [--op nop|write]
//                       [--capacity-log2 10] [--iters 10000] [--timeout-ms 10000] [--json PATH]
// (the command line: gpu_ring_bench_main.cpp; --help says more)
#include <cuda_runtime.h>

#include <cstdint>

#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::bench {

namespace pf = platform;

enum StallKind : uint32_t { kNoStall = 0, kPush = 1, kRetire = 2, kCounter = 3, kPong = 4 };

// Written once (the first stall wins) into host-mapped memory, read by the host after the kernel.
struct Stall {
  uint32_t kind;
  uint32_t index;     // ring or counter
  uint64_t position;  // ticket, or iteration
  uint64_t status;    // ring::Status, or the value last seen
};

struct Span {
  unsigned long long start;  // min over warps
  unsigned long long end;    // max over warps
};

__device__ void recordStall(Stall* s, uint32_t kind, uint32_t index, uint64_t position, uint64_t status) {
  if (atomicCAS(&s->kind, kNoStall, kind) != kNoStall) return;
  s->index = index;
  s->position = position;
  s->status = status;
  pf::fenceAcqRel<pf::Scope::kSystem>();
}

__global__ void produce(const ring::RingView* rings, uint32_t num_rings, uint32_t warps, uint64_t per_warp, bool write,
                        uint64_t timeout_ns, Span* span, Stall* stall) {
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / pf::kWarpSize;
  if (threadIdx.x % pf::kWarpSize != 0 || warp >= warps) return;
  const ring::RingView r = rings[warp % num_rings];
  atomicMin(&span->start, static_cast<unsigned long long>(pf::nowNs()));
  // WRITE: 64 bytes from region 0 to region 1 of this rank, a slot per warp (regions are 64 B x warps).
  const ring::Descriptor d =
      write ? ring::makeWrite(0, 0, uint64_t{warp} * 64, 1, uint64_t{warp} * 64, 64) : ring::makeNop();
  uint64_t last = 0;
  for (uint64_t i = 0; i < per_warp; ++i) {
    const ring::PushResult p = ring::push(r, d, timeout_ns);
    if (p.status != ring::Status::kOk) return recordStall(stall, kPush, r.ring_id, p.ticket, uint32_t(p.status));
    last = p.ticket;
  }
  const ring::Status s = ring::waitCompleted(r, last, timeout_ns);
  if (s != ring::Status::kOk) return recordStall(stall, kRetire, r.ring_id, last, uint32_t(s));
  atomicMax(&span->end, static_cast<unsigned long long>(pf::nowNs()));
}

// One thread: SIGNAL counter i % n of rank 0 (itself), wait until the proxy has added 1 to it.
__global__ void signalRoundTrip(ring::RingView r, int64_t* counters, uint32_t num_counters, uint32_t iters,
                                uint64_t timeout_ns, uint64_t* samples, Stall* stall) {
  for (uint32_t i = 0; i < iters; ++i) {
    const uint32_t idx = i % num_counters;
    const uint64_t want = i / num_counters + 1;
    uint64_t* counter = reinterpret_cast<uint64_t*>(&counters[idx]);
    const uint64_t t0 = pf::nowNs();
    const ring::PushResult p = ring::push(r, ring::makeSignal(0, idx, 1), timeout_ns);
    if (p.status != ring::Status::kOk) return recordStall(stall, kPush, r.ring_id, p.ticket, uint32_t(p.status));
    uint64_t seen;
    while ((seen = pf::loadAcquire<pf::Scope::kSystem>(counter)) < want) {
      if (pf::nowNs() - t0 > timeout_ns) return recordStall(stall, kCounter, idx, i, seen);
    }
    samples[i] = pf::nowNs() - t0;
  }
}

// One thread: write ping = i, wait until a CPU thread echoed pong = i. Flags in host-mapped memory.
__global__ void pingPong(uint64_t* ping, uint64_t* pong, uint32_t iters, uint64_t timeout_ns, uint64_t* samples,
                         Stall* stall) {
  for (uint32_t i = 1; i <= iters; ++i) {
    const uint64_t t0 = pf::nowNs();
    pf::storeRelease<pf::Scope::kSystem>(ping, i);
    uint64_t seen;
    while ((seen = pf::loadAcquire<pf::Scope::kSystem>(pong)) != i) {
      if (pf::nowNs() - t0 > timeout_ns) return recordStall(stall, kPong, 0, i, seen);
    }
    samples[i - 1] = pf::nowNs() - t0;
  }
}

}  // namespace uccl::ep::bench

// Host side. Hidden from nvcc's device pass: the consumer half of ring.hpp (RingConsumer, initRing) is
// host-only, so device-pass name lookup would fail on it.
#if !UCCL_EP_DEVICE_PASS
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gpu_ring_bench.hpp"
#include "runtime/gpu_ring.hpp"
#include "uccl_ep/proxy/proxy.hpp"

#define CUDA_CHECK UCCL_EP_CUDA_CHECK

namespace uccl::ep::bench {
namespace {

using Options = GpuRingOptions;

using runtime::DeviceArray;
using runtime::GpuRing;
using runtime::Mapped;

void throwOnStall(const Stall& s, const std::string& what) {
  static const char* kKinds[] = {"", "push into ring", "retire in ring", "signal counter", "ping-pong flag"};
  if (s.kind == kNoStall) return;
  throw std::runtime_error(what + ": GPU timed out waiting on " + kKinds[s.kind] + " " + std::to_string(s.index) +
                           " at position/iteration " + std::to_string(s.position) + " (status or value " +
                           std::to_string(s.status) + ")");
}

struct Throughput {
  uint64_t descriptors;
  double seconds;
};

// The produce kernel against `rings`, drained by whatever the caller started. `dump` explains a stall.
Throughput runProducers(const Options& o, std::vector<std::unique_ptr<GpuRing>>& rings,
                        const std::function<std::string()>& dump) {
  std::vector<ring::RingView> views;
  for (auto& r : rings) views.push_back(r->deviceView());
  DeviceArray<ring::RingView> d_views(views.size());
  CUDA_CHECK(cudaMemcpy(d_views.get(), views.data(), sizeof(ring::RingView) * views.size(), cudaMemcpyHostToDevice));
  Mapped<Span> span(1);
  Mapped<Stall> stall(1);
  span.host()->start = ~0ull;
  const uint64_t per_warp = (o.descriptors + o.warps - 1) / o.warps;
  constexpr uint32_t kWarpsPerBlock = 4;
  const uint32_t blocks = (o.warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  produce<<<blocks, kWarpsPerBlock * pf::kWarpSize>>>(d_views.get(), o.rings, o.warps, per_warp, o.write, o.timeout_ns,
                                                      span.device(), stall.device());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  if (stall.host()->kind != kNoStall) std::fprintf(stderr, "%s\n", dump().c_str());
  throwOnStall(*stall.host(), "throughput");
  return {per_warp * o.warps, double(span.host()->end - span.host()->start) * 1e-9};
}

proxy::ProxyConfig proxyConfig(const Options& o) {
  proxy::ProxyConfig c;
  c.rank = 0;
  c.world = 1;
  c.num_threads = o.threads;
  c.transport = "null";  // loopback: requests to this rank are carried out in memory
  c.timeout_ns = o.timeout_ns;
  char bus_id[32] = {};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device));
  c.gpu_pci_bus_id = bus_id;  // proxy threads run on the GPU's NUMA node
  return c;
}

Throughput proxyThroughput(const Options& o) {
  std::vector<std::unique_ptr<GpuRing>> rings;
  for (uint32_t r = 0; r < o.rings; ++r) rings.push_back(std::make_unique<GpuRing>(o.capacity_log2, r));
  std::vector<uint8_t> src(size_t{64} * o.warps), dst(size_t{64} * o.warps);
  std::vector<int64_t> counters(1);
  proxy::ProxyGroup g(proxyConfig(o));
  g.addRegion(0, src.data(), src.size(), transport::MemoryKind::kHost);
  g.addRegion(1, dst.data(), dst.size(), transport::MemoryKind::kHost);
  g.setSignalRegion(counters.data(), counters.size());
  for (auto& r : rings) g.addRing(r->hostView(), proxy::RingKind::kNormal);
  g.connect({g.localInfo()});
  g.start();
  Throughput t = runProducers(o, rings, [&] { return g.dumpState(); });
  g.stop();
  g.checkError();
  return t;
}

// Host threads in place of the proxy: thread t drains rings t, t + T, ... with RingConsumer, nothing else.
Throughput hostConsumerThroughput(const Options& o) {
  std::vector<std::unique_ptr<GpuRing>> rings;
  for (uint32_t r = 0; r < o.rings; ++r) rings.push_back(std::make_unique<GpuRing>(o.capacity_log2, r));
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<ring::RingConsumer> mine;
      for (uint32_t r = t; r < o.rings; r += o.threads) mine.emplace_back(rings[r]->hostView());
      ring::Descriptor d;
      while (!stop.load(std::memory_order_relaxed)) {
        for (auto& c : mine) {
          uint32_t n = 0;
          while (n < 32 && c.peek(&d)) c.advance(), ++n;
          if (n == 0) continue;
          c.publishTail();
          c.publishCompleted(c.position());
        }
      }
    });
  }
  Throughput t{};
  try {
    t = runProducers(o, rings, [&] {
      std::string s;
      for (auto& r : rings) {
        s += "ring " + std::to_string(r->hostView().ring_id) + ": tail " + std::to_string(r->control()->tail) +
             " completed " + std::to_string(r->control()->completed) + "\n";
      }
      return s;
    });
  } catch (...) {
    stop = true;
    for (auto& th : threads) th.join();
    throw;
  }
  stop = true;
  for (auto& th : threads) th.join();
  return t;
}

struct Latency {
  double median_us;
  double p99_us;
};

Latency summarize(const std::vector<uint64_t>& all, size_t warmup) {
  std::vector<uint64_t> s(all.begin() + std::min(warmup, all.size()), all.end());
  if (s.empty()) return {0, 0};
  std::sort(s.begin(), s.end());
  return {s[s.size() / 2] * 1e-3, s[std::min(s.size() - 1, s.size() * 99 / 100)] * 1e-3};
}

constexpr size_t kWarmup = kGpuRingWarmup;

Latency signalLatency(const Options& o) {
  constexpr uint32_t kCounters = 1024;
  GpuRing ring(o.capacity_log2, 0);
  Mapped<int64_t> counters(kCounters);
  Mapped<Stall> stall(1);
  DeviceArray<uint64_t> samples(o.iters);
  proxy::ProxyGroup g(proxyConfig(o));
  g.setSignalRegion(counters.host(), kCounters);
  g.addRing(ring.hostView(), proxy::RingKind::kLowLatency);
  g.connect({g.localInfo()});
  g.start();
  signalRoundTrip<<<1, 1>>>(ring.deviceView(), counters.device(), kCounters, o.iters, o.timeout_ns, samples.get(),
                            stall.device());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  if (stall.host()->kind != kNoStall) std::fprintf(stderr, "%s\n", g.dumpState().c_str());
  g.stop();
  g.checkError();
  throwOnStall(*stall.host(), "signal round trip");
  std::vector<uint64_t> h(o.iters);
  CUDA_CHECK(cudaMemcpy(h.data(), samples.get(), sizeof(uint64_t) * o.iters, cudaMemcpyDeviceToHost));
  return summarize(h, kWarmup);
}

Latency pingPongLatency(const Options& o) {
  Mapped<uint64_t> flags(16);  // ping and pong a cache line apart
  uint64_t* ping = flags.host();
  uint64_t* pong = flags.host() + 8;
  Mapped<Stall> stall(1);
  DeviceArray<uint64_t> samples(o.iters);
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    uint64_t last = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t v = pf::loadAcquire(ping);
      if (v != last) pf::storeRelease(pong, last = v);
    }
  });
  pingPong<<<1, 1>>>(flags.device(), flags.device() + 8, o.iters, o.timeout_ns, samples.get(), stall.device());
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t synced = cudaDeviceSynchronize();
  stop = true;
  echo.join();
  CUDA_CHECK(launched);
  CUDA_CHECK(synced);
  throwOnStall(*stall.host(), "ping-pong");
  std::vector<uint64_t> h(o.iters);
  CUDA_CHECK(cudaMemcpy(h.data(), samples.get(), sizeof(uint64_t) * o.iters, cudaMemcpyDeviceToHost));
  return summarize(h, kWarmup);
}

}  // namespace

GpuRingResults runGpuRingBench(const Options& o) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("gpu_ring_bench on %s: rings %u, proxy threads %d, warps %u, ring capacity %u, op %s\n", prop.name,
              o.rings, o.threads, o.warps, 1u << o.capacity_log2, o.write ? "write(64 B)" : "nop");
  std::fflush(stdout);
  const Throughput proxy_t = proxyThroughput(o);
  const Throughput host_t = hostConsumerThroughput(o);
  const Latency sig = signalLatency(o);
  const Latency pp = pingPongLatency(o);
  auto rate = [](const Throughput& t) { return t.seconds > 0 ? t.descriptors / t.seconds * 1e-6 : 0.0; };
  std::printf("\n%-42s %14s %s\n", "measurement", "value", "detail");
  std::printf("%-42s %9.2f M/s  %llu descriptors in %.2f ms\n", "descriptors/s, ProxyGroup (null transport)",
              rate(proxy_t), (unsigned long long)proxy_t.descriptors, proxy_t.seconds * 1e3);
  std::printf("%-42s %9.2f M/s  %llu descriptors in %.2f ms\n", "descriptors/s, host RingConsumer only", rate(host_t),
              (unsigned long long)host_t.descriptors, host_t.seconds * 1e3);
  std::printf("%-42s %9.2f us   p99 %.2f us, %u iterations (goal: median <= 2.5 us)\n",
              "signal round trip GPU->proxy->GPU, median", sig.median_us, sig.p99_us, o.iters - unsigned(kWarmup));
  std::printf("%-42s %9.2f us   p99 %.2f us, %u iterations\n", "bare pinned ping-pong GPU->CPU->GPU, median",
              pp.median_us, pp.p99_us, o.iters - unsigned(kWarmup));
  return GpuRingResults{prop.name, rate(proxy_t), rate(host_t), sig.median_us, sig.p99_us, pp.median_us, pp.p99_us};
}

}  // namespace uccl::ep::bench
#endif  // !UCCL_EP_DEVICE_PASS
