// Proxy benchmark: what the ring + proxy cost, and how close they stay to the transport's own figure.
//
//   proxy_bench [--transport shm|tcp|all] [--threads 4] [--producers 4] [--seconds 2] [--min 4096] [--max 1048576]
//               [--skip-rate] [--skip-bw] [--json PATH]      (--help says more)
//
// 1. Descriptor rate: host producer threads push WRITE descriptors into rings drained by a ProxyGroup over the
//    null transport (nothing moves): descriptors retired per second.
// 2. Bandwidth: two processes; rank 0 writes S-byte chunks to rank 1, (a) posting through the transport's
//    post/poll directly with a fixed window ("raw": fi_write underneath), (b) pushing descriptors through a ring
//    and a proxy thread. Same binary, same sizes, same provider.
// --json PATH writes one record per measurement (bench/bench_record.hpp); the raw figure is the bandwidth's reference.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_record.hpp"
#include "transport/backends.hpp"
#include "uccl_ep/bootstrap/rendezvous.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/host_ring.hpp"
#include "uccl_ep/util/error.hpp"

namespace {

using namespace uccl::ep;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kTimeoutNs = 60ull * 1000 * 1000 * 1000;

struct Opts {
  std::string transport = "all";
  int threads = 4, producers = 4;
  double seconds = 2;
  uint64_t min = 4096, max = 1 << 20;
  bool rate = true, bw = true;
  std::string json;  // where the records go; empty: nowhere
};

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- 1. descriptor rate over the null transport ------------------------------------------------------------
double descriptorRate(const Opts& o) {
  proxy::ProxyConfig c;
  c.num_threads = o.threads;
  c.transport_factory = [](const transport::TransportOptions& t) { return transport::createNullTransport(t, false); };
  proxy::ProxyGroup g(c);
  static std::vector<uint8_t> region(1 << 20);
  g.addRegion(0, region.data(), region.size(), transport::MemoryKind::kHost);
  std::vector<std::unique_ptr<ring::HostRing>> rings;
  for (int r = 0; r < o.producers; ++r) {
    rings.push_back(std::make_unique<ring::HostRing>(12, r));
    g.addRing(rings.back()->view(), proxy::RingKind::kNormal);
  }
  g.connect({g.localInfo()});
  g.start();
  std::atomic<bool> stop{false};
  std::vector<uint64_t> last(o.producers, 0);
  std::vector<std::thread> ts;
  const auto t0 = Clock::now();
  for (int p = 0; p < o.producers; ++p) {
    ts.emplace_back([&, p] {
      const ring::Descriptor d = ring::makeWrite(0, 0, 0, 0, 4096, 4096);
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 256; ++i) last[p] = ring::push(rings[p]->view(), d, kTimeoutNs).ticket;
      }
      ring::waitCompleted(rings[p]->view(), last[p], kTimeoutNs);
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  stop.store(true);
  for (auto& t : ts) t.join();
  const double secs = since(t0);
  uint64_t n = 0;
  for (int t = 0; t < g.numThreads(); ++t) n += g.stats(t).descriptors;
  g.stop();
  g.checkError();
  return n / secs;
}

// ---- 2. bandwidth, two processes ---------------------------------------------------------------------------
struct BwResult {
  double raw_gbs, proxy_gbs;
};

uint64_t countFor(uint64_t size) { return std::max<uint64_t>(64, (512ull << 20) / size); }

// Rank 0 side of the raw measurement: post `count` writes of `size` with at most `window` in flight.
double rawWrites(transport::Transport& t, const transport::LocalMemory& src, const transport::RemoteMemory& dst,
                 uint64_t size, uint64_t count, uint64_t window) {
  std::vector<transport::Completion> comps(256);
  std::vector<transport::WorkRequest> batch(window);
  uint64_t posted = 0, done = 0;
  const auto t0 = Clock::now();
  while (done < count) {
    // Fill the window with one post() call, as the proxy posts one batch per destination.
    const uint64_t n_batch = std::min(count - posted, window - (posted - done));
    for (uint64_t i = 0; i < n_batch; ++i) {
      transport::WorkRequest& w = batch[i];
      w = transport::WorkRequest{};
      w.kind = transport::OpKind::kWrite;
      w.peer = 1;
      w.local_mem = src.id;
      w.length = size;
      w.remote = dst;
      w.remote_offset = ((posted + i) % 8) * size;
      w.wr_id = posted + i;
    }
    if (n_batch > 0) posted += t.post(batch.data(), n_batch);
    const size_t n = t.poll(comps.data(), comps.size());
    for (size_t i = 0; i < n; ++i) {
      UCCL_EP_CHECK(comps[i].ok, "raw write failed: {}", t.describe(comps[i]));
      if (comps[i].kind == transport::Completion::Kind::kLocal) ++done;
    }
    if (since(t0) > 120) UCCL_EP_THROW("raw writes stalled at {} of {}", done, count);
  }
  return size * count / since(t0) / 1e9;
}

double proxyWrites(const ring::RingView& v, uint64_t size, uint64_t count) {
  const auto t0 = Clock::now();
  uint64_t last = 0;
  for (uint64_t i = 0; i < count; ++i) {
    last = ring::push(v, ring::makeWrite(1, 0, 0, 1, (i % 8) * size, static_cast<uint32_t>(size)), kTimeoutNs).ticket;
  }
  UCCL_EP_CHECK(ring::waitCompleted(v, last, kTimeoutNs) == ring::Status::kOk, "proxy writes stalled");
  return size * count / since(t0) / 1e9;
}

// Both ranks run this; rank 0 measures, rank 1 only keeps its endpoints progressing.
std::vector<BwResult> bandwidthRank(int rank, int port, const std::string& provider, const Opts& o,
                                    const std::vector<uint64_t>& sizes) {
  bootstrap::RendezvousOptions ro;
  ro.port = port;
  ro.rank = rank;
  ro.world = 2;
  ro.token = "proxy-bench";
  bootstrap::TcpRendezvous rv(ro);
  const uint64_t window = 64;
  const size_t bytes = o.max * 8;
  std::vector<uint8_t> src(bytes, static_cast<uint8_t>(rank + 1)), dst(bytes, 0);

  // Raw: one endpoint each, exchanged through the rendezvous.
  transport::TransportOptions to;
  to.rank = rank;
  to.world = 2;
  to.all_peers_local = true;
  auto t = transport::createFabricTransport(to, provider);
  const transport::LocalMemory s = t->registerMemory(src.data(), bytes, transport::MemoryKind::kHost);
  const transport::LocalMemory d = t->registerMemory(dst.data(), bytes, transport::MemoryKind::kHost);
  transport::Blob mine;
  transport::appendBlob(mine, t->address());
  transport::appendBlob(mine, transport::encodeRemote(d.remote));
  const auto all = rv.allGather(mine);
  std::vector<transport::Blob> addrs;
  transport::RemoteMemory peer_dst;
  for (int r = 0; r < 2; ++r) {
    size_t off = 0;
    addrs.push_back(transport::readBlob(all[r], &off));
    const transport::RemoteMemory m = transport::decodeRemote(transport::readBlob(all[r], &off));
    if (r == 1) peer_dst = m;
  }
  t->connect(addrs);

  std::vector<BwResult> out;
  std::atomic<bool> stop{false};
  std::thread progress;
  if (rank == 1) {
    progress = std::thread([&] {
      std::vector<transport::Completion> c(64);
      uint32_t spins = 0;
      while (!stop.load()) {
        if (t->poll(c.data(), c.size()) == 0) platform::spinRelax(spins);
      }
    });
  }
  for (uint64_t size : sizes) {
    rv.barrier();
    if (rank == 0) {
      rawWrites(*t, s, peer_dst, size, countFor(size) / 4, window);  // warm-up
      double best = 0;
      for (int rep = 0; rep < 3; ++rep) best = std::max(best, rawWrites(*t, s, peer_dst, size, countFor(size), window));
      out.push_back({best, 0});
    }
  }
  rv.barrier();
  stop.store(true);
  if (progress.joinable()) progress.join();

  // Through ring + proxy: one proxy thread per rank, one ring on rank 0.
  proxy::ProxyConfig pc;
  pc.rank = rank;
  pc.world = 2;
  pc.num_threads = 1;
  pc.transport = provider;
  pc.all_peers_local = true;
  pc.max_inflight_normal = window;
  proxy::ProxyGroup g(pc);
  g.addRegion(0, src.data(), bytes, transport::MemoryKind::kHost);
  g.addRegion(1, dst.data(), bytes, transport::MemoryKind::kHost);
  ring::HostRing ring(10, 0);
  if (rank == 0) g.addRing(ring.view(), proxy::RingKind::kNormal);
  g.connect(rv.allGather(g.localInfo()));
  g.start();
  for (size_t i = 0; i < sizes.size(); ++i) {
    rv.barrier();
    if (rank == 0) {
      proxyWrites(ring.view(), sizes[i], countFor(sizes[i]) / 4);
      double best = 0;
      for (int rep = 0; rep < 3; ++rep) best = std::max(best, proxyWrites(ring.view(), sizes[i], countFor(sizes[i])));
      out[i].proxy_gbs = best;
    }
  }
  rv.barrier();
  g.stop();
  g.checkError();
  return out;
}

void bandwidth(const std::string& provider, const Opts& o, std::vector<bench::Record>& records) {
  std::vector<uint64_t> sizes;
  for (uint64_t s = o.min; s <= o.max; s *= 4) sizes.push_back(s);
  const int port = 20000 + getpid() % 20000;
  std::fflush(nullptr);  // else the child inherits, and prints again, what the parent has not written yet
  const pid_t child = fork();
  if (child == 0) {
    try {
      bandwidthRank(1, port, provider, o, sizes);
      std::_Exit(0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank 1: %s\n", e.what());
      std::_Exit(1);
    }
  }
  const auto res = bandwidthRank(0, port, provider, o, sizes);
  int st = 0;
  waitpid(child, &st, 0);
  std::printf("\n%-5s write bandwidth, 2 processes, window 64 (GB/s, best of 3)\n", provider.c_str());
  std::printf("%10s %10s %14s %8s\n", "size", "raw", "ring+proxy", "ratio");
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::printf("%10llu %10.2f %14.2f %8.2f\n", static_cast<unsigned long long>(sizes[i]), res[i].raw_gbs,
                res[i].proxy_gbs, res[i].proxy_gbs / res[i].raw_gbs);
    bench::Record r;
    r.bench = "proxy_bench";
    r.mode = "bandwidth";
    r.call = "write";
    r.num_ranks = 2;  // two processes, each its own node: every write goes through the transport
    r.bandwidth_gbs = res[i].proxy_gbs;
    r.params = {{"transport", provider}, {"message_bytes", sizes[i]}, {"window", 64}};
    r.reference = bench::Reference{"raw transport writes", std::nullopt, res[i].raw_gbs};
    records.push_back(r);
  }
}

bench::Record rateRecord(const Opts& o, double per_second) {
  bench::Record r;
  r.bench = "proxy_bench";
  r.mode = "descriptor_rate";
  r.figures["descriptors_per_s"] = per_second;
  r.params = {{"transport", "null"}, {"proxy_threads", o.threads}, {"producer_threads", o.producers}};
  return r;
}

void run(const Opts& o) {
  std::vector<bench::Record> records;
  std::printf("proxy_bench on %u hardware threads\n", std::thread::hardware_concurrency());
  if (o.rate) {
    std::printf("\ndescriptor rate, null transport, %d proxy threads, %d producer threads\n", o.threads, o.producers);
    const double many = descriptorRate(o);
    std::printf("  %.2f M descriptors/s\n", many / 1e6);
    records.push_back(rateRecord(o, many));
    Opts one = o;
    one.threads = 1;
    one.producers = 1;
    std::printf("descriptor rate, null transport, 1 proxy thread, 1 producer thread\n");
    const double single = descriptorRate(one);
    std::printf("  %.2f M descriptors/s\n", single / 1e6);
    records.push_back(rateRecord(one, single));
  }
  if (o.bw) {
    for (const std::string p : {"shm", "tcp"}) {
      if (o.transport == p || o.transport == "all") bandwidth(p, o, records);
    }
  }
  if (!o.json.empty()) {
    bench::writeRecords(o.json, records);
    std::printf("\n%zu records written to %s\n", records.size(), o.json.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{
      "Proxy benchmark: the descriptor rate of ring + proxy over the null transport, and write bandwidth "
      "between two processes through the transport directly and through a ring and a proxy thread.",
      "proxy_bench"};
  app.add_option("--transport", o.transport, "bandwidth over this libfabric provider, or both")
      ->check(CLI::IsMember({"shm", "tcp", "all"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "proxy threads of the descriptor rate")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--producers", o.producers, "producer threads (one ring each) of the descriptor rate")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "duration of each descriptor-rate run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--min", o.min, "smallest write of the bandwidth sweep (bytes; x4 per step)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max", o.max, "largest write of the bandwidth sweep (bytes)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag(
      "--skip-rate", [&](int64_t) { o.rate = false; }, "skip the descriptor rate");
  app.add_flag(
      "--skip-bw", [&](int64_t) { o.bw = false; }, "skip the bandwidth sweep");
  app.add_option("--json", o.json, "write the figures to this file as JSON (one object per measurement)");
  CLI11_PARSE(app, argc, argv);
  if (o.min > o.max) {
    std::fprintf(stderr, "proxy_bench: --min %llu is above --max %llu\n", static_cast<unsigned long long>(o.min),
                 static_cast<unsigned long long>(o.max));
    return 2;
  }
  try {
    run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "proxy_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
