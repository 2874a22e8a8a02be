// gpu_ring_bench's options and figures, shared by its measuring half (gpu_ring_bench.cu, nvcc) and its command
// line (gpu_ring_bench_main.cpp, the host compiler: option parsing and JSON stay out of nvcc).
#pragma once

#include <cstdint>
#include <string>

namespace uccl::ep::bench {

// Iterations of each latency run left out of its figures.
inline constexpr uint32_t kGpuRingWarmup = 100;

struct GpuRingOptions {
  int threads = 4;           // proxy threads
  uint32_t rings = 8;        // ring r drains into proxy thread r % threads
  uint32_t warps = 132 * 4;  // producer warps (lane 0 each)
  uint64_t descriptors = uint64_t{1} << 22;
  uint32_t capacity_log2 = 10;  // ring capacity 2^capacity_log2
  bool write = false;           // WRITE (64 B) descriptors instead of NOP
  uint32_t iters = 10000;       // latency iterations, kGpuRingWarmup of them warm-up
  uint64_t timeout_ns = 10ull * 1000 * 1000 * 1000;
};

struct GpuRingResults {
  std::string device;
  double proxy_mdesc_per_s = 0, host_mdesc_per_s = 0;    // throughput: ProxyGroup, bare host consumer
  double signal_median_us = 0, signal_p99_us = 0;        // GPU -> proxy -> GPU signal round trip
  double ping_pong_median_us = 0, ping_pong_p99_us = 0;  // bare pinned-memory GPU -> CPU -> GPU
};

// Runs every measurement on the current GPU, prints the table, and returns the figures. Throws naming the ring or
// counter a GPU wait timed out on.
GpuRingResults runGpuRingBench(const GpuRingOptions& o);

}  // namespace uccl::ep::bench
