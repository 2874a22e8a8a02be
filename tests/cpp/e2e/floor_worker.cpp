// One rank of the transport-floor end-to-end test: the low-latency dispatch and combine plans (runtime/ll_floor_plan)
// of a random top-k, posted by a TransportFloor over a real provider to the other ranks (separate processes), and
// every byte that lands and every counter checked.
//
//   floor_worker --rank R --world W --port P --token T [--transport tcp|shm] [--signal auto|atomic|imm]
//                [--threads N] [--ranks-per-node K] [--tokens M] [--hidden H] [--experts E] [--topk K]
//                [--iters N] [--seed S] [--fault none|stop|late]
//
// Every rank's top-k comes from the seed, so each rank knows every plan: what it sends, and what each peer sends it.
// The data region starts as a pattern of this rank's own; after the runs, every range a peer wrote must hold the
// peer's pattern of the source range (and have changed). Exit codes: 0 ok, 1 check failed, 2 timeout or transport
// error (the message names the peer).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/ll_floor_plan.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "worker_common.hpp"

namespace {

using namespace uccl::ep;

struct Args : e2e::WorkerFlags {
  int ranks_per_node = 1, tokens = 16, hidden = 256, experts = 8, topk = 3, iters = 5, seed = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  static_cast<e2e::WorkerFlags&>(a) = e2e::WorkerFlags::parse(argc, argv);
  a.number("--ranks-per-node", a.ranks_per_node), a.number("--tokens", a.tokens), a.number("--hidden", a.hidden);
  a.number("--experts", a.experts), a.number("--topk", a.topk), a.number("--iters", a.iters);
  a.number("--seed", a.seed);
  return a;
}

[[noreturn]] void die(int code, const std::string& msg) { e2e::die("floor rank", code, msg); }

constexpr int kLateMs = 300;  // --fault late: the last rank starts each run this much after the barrier

uint8_t pattern(int rank, uint64_t offset) {
  return static_cast<uint8_t>(rank * 71 + offset * 131 + (offset >> 9) * 7 + 1);
}

// counts[s * E + e]: tokens of rank s whose top-k holds e. K distinct experts per token, about one entry in ten -1.
std::vector<int32_t> topkCounts(const Args& a) {
  std::vector<int32_t> counts(static_cast<size_t>(a.world) * a.experts, 0);
  for (int s = 0; s < a.world; ++s) {
    std::mt19937_64 gen(static_cast<uint64_t>(a.seed) * 1000003 + s);
    std::vector<int> experts(a.experts);
    for (int t = 0; t < a.tokens; ++t) {
      for (int e = 0; e < a.experts; ++e) experts[e] = e;
      for (int k = 0; k < a.topk; ++k) {
        std::swap(experts[k], experts[k + gen() % (a.experts - k)]);
        if (gen() % 10 != 0) ++counts[static_cast<size_t>(s) * a.experts + experts[k]];
      }
    }
  }
  return counts;
}

proxy::FloorPlan planOf(const Args& a, const kernels::ll::Layout& layout, runtime::LowLatencyCall call, int rank,
                        const std::vector<int32_t>& counts) {
  runtime::LowLatencyFloorArgs f;
  f.layout = layout;
  f.call = call;
  f.rank = rank;
  f.counts = counts;
  for (int p = 0; p < a.world; ++p) f.proxy_peer.push_back(p / a.ranks_per_node != rank / a.ranks_per_node);
  f.half = call == runtime::LowLatencyCall::kDispatch ? 0 : 1;  // as the calls alternate: their areas never overlap
  f.num_threads = a.threads;
  f.num_rings = 2 * a.threads;
  return runtime::lowLatencyFloorPlan(f);
}

int run(const Args& a) {
  const kernels::ll::Layout layout = kernels::ll::makeLayout(a.tokens, a.hidden, a.world, a.experts);
  std::vector<uint8_t> region(layout.totalBytes());
  for (size_t i = 0; i < region.size(); ++i) region[i] = pattern(a.rank, i);
  const std::vector<uint8_t> initial = region;
  const std::vector<int32_t> counts = topkCounts(a);

  bootstrap::TcpRendezvous rv(a.rendezvous());
  const proxy::ProxyConfig pc = a.proxyConfig();
  proxy::TransportFloor floor(pc, region.data(), region.size(), transport::MemoryKind::kHost, layout.totalSignals());
  floor.connect(rv.allGather(floor.localInfo()));
  std::fprintf(stderr, "floor rank %d: %s, signals %s\n", a.rank, floor.transportName().c_str(),
               floor.signalPath() == proxy::SignalPath::kAtomic ? "atomic" : "immediate");

  // Every range a peer wrote here in `call` holds the peer's pattern of its source range, and changed. The dispatch
  // runs on half 0 and the combine on half 1, so the two calls' receive areas (one region per half) do not overlap.
  size_t checked = 0;
  auto verify = [&](runtime::LowLatencyCall call) {
    for (int src = 0; src < a.world; ++src) {
      if (src == a.rank) continue;
      for (const proxy::FloorOp& o : planOf(a, layout, call, src, counts).ops) {
        if (o.peer != static_cast<uint32_t>(a.rank) || o.bytes == 0) continue;
        bool changed = false;
        for (uint64_t i = 0; i < o.bytes; ++i) {
          const uint8_t want = pattern(src, o.src_offset + i);
          if (region[o.dst_offset + i] != want) {
            die(1, fmt::format("byte {} of the write from rank {} (to offset {}) is {:#x}, expected {:#x}", i, src,
                               o.dst_offset, region[o.dst_offset + i], want));
          }
          changed |= initial[o.dst_offset + i] != want;
        }
        if (!changed) die(1, fmt::format("the write from rank {} to offset {} changed nothing", src, o.dst_offset));
        checked += o.bytes;
      }
    }
  };

  for (const auto call : {runtime::LowLatencyCall::kDispatch, runtime::LowLatencyCall::kCombine}) {
    const char* name = call == runtime::LowLatencyCall::kDispatch ? "dispatch" : "combine";
    const proxy::FloorPlan plan = planOf(a, layout, call, a.rank, counts);
    std::vector<double> us;
    for (int it = 0; it < a.iters; ++it) {
      rv.barrier();
      if (a.fault == "stop" && a.rank == a.world - 1) e2e::freezeWithWatchdog();  // others time out
      // The plans start together (FloorPlan::start_together): a rank late by far more than a run changes no floor.
      if (a.fault == "late" && a.rank == a.world - 1) std::this_thread::sleep_for(std::chrono::milliseconds(kLateMs));
      // A failed run ends the process here, before any destructor: a stopped peer may keep the endpoints' teardown
      // waiting (seen with shm under TSan), and the failure is what the fault test checks.
      const proxy::FloorResult r = [&] {
        try {
          return floor.run(plan);
        } catch (const std::exception& e) {
          die(2, e.what());
        }
      }();
      if (!(r.seconds > 0) || r.sends_seconds < 0 || r.writes != plan.writes() || r.bytes != plan.bytes() ||
          r.signals != plan.ops.size()) {
        die(1, fmt::format("{} run {}: {} s, sends {} s, {} writes of {} bytes, {} signals; the plan has {} writes, "
                           "{} bytes, {} ops",
                           name, it, r.seconds, r.sends_seconds, r.writes, r.bytes, r.signals, plan.writes(),
                           plan.bytes(), plan.ops.size()));
      }
      us.push_back(r.seconds * 1e6);
    }
    std::sort(us.begin(), us.end());
    std::printf("floor rank %d %s: %zu ops, %llu bytes, median %.1f us\n", a.rank, name, plan.ops.size(),
                static_cast<unsigned long long>(plan.bytes()), us[us.size() / 2]);
  }

  rv.barrier();  // every rank's runs are done: nothing more lands here
  floor.stop();  // joins the lanes, so what they wrote is ordered before the checks below
  verify(runtime::LowLatencyCall::kDispatch);
  verify(runtime::LowLatencyCall::kCombine);
  std::printf("floor rank %d ok: %zu bytes from peers verified\n", a.rank, checked);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    die(2, e.what());
  }
}
