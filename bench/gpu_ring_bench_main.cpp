// gpu_ring_bench's command line: options through CLI11 (--help, unknown flags and bad values fail naming them),
// then the measurements (gpu_ring_bench.cu), then --json PATH (bench/bench_record.hpp): one record per measurement,
// each throughput against the bare host consumer's and the signal round trip against the bare ping-pong.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "bench_record.hpp"
#include "gpu_ring_bench.hpp"

namespace uccl::ep::bench {
namespace {

std::vector<Record> records(const GpuRingOptions& o, const GpuRingResults& r) {
  const nlohmann::json params = {
      {"device", r.device}, {"proxy_threads", o.threads},        {"rings", o.rings},
      {"warps", o.warps},   {"capacity", 1u << o.capacity_log2}, {"op", o.write ? "write" : "nop"}};
  Record rate;
  rate.bench = "gpu_ring_bench";
  rate.mode = "ring_throughput";
  rate.call = o.write ? "write" : "nop";
  rate.figures = {{"descriptors_per_s", r.proxy_mdesc_per_s * 1e6},
                  {"host_consumer_descriptors_per_s", r.host_mdesc_per_s * 1e6}};
  rate.params = params;
  Record signal;
  signal.bench = "gpu_ring_bench";
  signal.mode = "signal_round_trip";
  signal.call = "signal";
  signal.latency_us = r.signal_median_us;
  signal.figures = {{"p99_us", r.signal_p99_us}};
  signal.params = params;
  signal.params["iterations"] = o.iters - kGpuRingWarmup;
  signal.reference = Reference{"bare pinned ping-pong GPU->CPU->GPU", r.ping_pong_median_us, std::nullopt};
  return {rate, signal};
}

}  // namespace
}  // namespace uccl::ep::bench

int main(int argc, char** argv) {
  using namespace uccl::ep::bench;
  GpuRingOptions o;
  std::string op = "nop", json;
  uint64_t timeout_ms = o.timeout_ns / 1000000;
  CLI::App app{
      "GPU ring benchmark: descriptor throughput from persistent warps through rings and proxy threads "
      "(and against bare host consumers), and the GPU->proxy->GPU signal round trip (and the bare pinned "
      "ping-pong), on one GPU.",
      "gpu_ring_bench"};
  app.add_option("--threads", o.threads, "proxy threads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--rings", o.rings, "rings (ring r drains into proxy thread r % threads)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  app.add_option("--warps", o.warps, "producer warps")->check(CLI::Range(1u, 1u << 20))->capture_default_str();
  app.add_option("--descriptors", o.descriptors, "descriptors pushed in the throughput runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--op", op, "descriptor of the throughput runs")
      ->check(CLI::IsMember({"nop", "write"}))
      ->capture_default_str();
  app.add_option("--capacity-log2", o.capacity_log2, "ring capacity 2^N")
      ->check(CLI::Range(1u, 24u))
      ->capture_default_str();
  app.add_option("--iters", o.iters,
                 "latency iterations (the first " + std::to_string(kGpuRingWarmup) + " are warm-up)")
      ->check(CLI::Range(kGpuRingWarmup + 1, 100000000u))
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "every GPU wait fails after this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--json", json, "write the figures to this file as JSON (one object per measurement)");
  CLI11_PARSE(app, argc, argv);
  o.write = op == "write";
  o.timeout_ns = timeout_ms * 1000 * 1000;
  try {
    const GpuRingResults r = runGpuRingBench(o);
    if (!json.empty()) {
      writeRecords(json, records(o, r));
      std::printf("\nrecords written to %s\n", json.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_ring_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
