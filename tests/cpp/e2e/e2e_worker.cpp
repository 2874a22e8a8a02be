// One rank of the end-to-end test: host threads play the GPU producers, the proxy moves their descriptors
// through a real transport to the other ranks (separate processes), and every byte and counter is checked.
//
//   e2e_worker --rank R --world W --port P --token T [--host H] [--transport tcp|shm] [--signal atomic|imm]
//              [--threads N] [--rings N] [--iters N] [--chunk BYTES] [--fault none|die|kill|kill-busy|stop|corrupt]
//              [--shrink 0|1]
//
// Each ring's producer writes, for every iteration and destination, one chunk into the destination's receive
// region at a slot of its own, then a SIGNAL adding (iter % 3) + 1 to the destination's counter for this rank.
// A rank is done when every source's counter reached its exact expected sum; then it checks every byte.
// --shrink 1 (the proxy's enable_shrink) with a fault: the last rank is lost and the others expect everything from
// each other, no error, the lost rank among the proxy's dead peers, and the exchange done within 0.4 of the
// timeout (the stall verdict comes at half); they end by telling each other they are done (a second counter per source) instead of a barrier.
// kill-busy: as kill, but the lost rank dies halfway through its own writes, not after them.
// Exit codes: 0 ok, 1 check failed, 2 timeout or transport error (message names the peer), 3 rejected input.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fmt/ranges.h>

#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/host_ring.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "signal_watch.hpp"
#include "worker_common.hpp"

namespace {

using namespace uccl::ep;

struct Args : e2e::WorkerFlags {
  int rings = 2, iters = 16;
  uint32_t chunk = 4096;
};

Args parse(int argc, char** argv) {
  Args a;
  static_cast<e2e::WorkerFlags&>(a) = e2e::WorkerFlags::parse(argc, argv);
  a.number("--rings", a.rings), a.number("--iters", a.iters), a.number("--chunk", a.chunk);
  return a;
}

uint8_t pattern(int src, int dst, int ring, int iter, uint32_t i) {
  return static_cast<uint8_t>(src * 131 + dst * 71 + ring * 37 + iter * 13 + i * 7 + (i >> 8));
}

int64_t expectedSum(const Args& a) {
  int64_t s = 0;
  for (int it = 0; it < a.iters; ++it) s += (it % 3) + 1;
  return s * a.rings;
}

[[noreturn]] void die(int code, const std::string& msg) { e2e::die("e2e rank", code, msg); }

int run(const Args& a) {
  const uint64_t timeout_ns = env().timeoutNs();
  const uint64_t slot = a.chunk;                                    // one chunk per (src, ring, iter)
  const uint64_t per_src = slot * a.rings * a.iters;
  std::vector<uint8_t, std::allocator<uint8_t>> send(per_src * a.world), recv(per_src * a.world, 0);
  std::vector<int64_t> counters(2 * a.world, 0);  // [world, 2 world): done words (--shrink)
  // Source chunk for (dst, ring, iter) at the same layout as the destination slot of this rank.
  for (int dst = 0; dst < a.world; ++dst)
    for (int r = 0; r < a.rings; ++r)
      for (int it = 0; it < a.iters; ++it)
        for (uint32_t i = 0; i < a.chunk; ++i)
          send[dst * per_src + (r * a.iters + it) * slot + i] = pattern(a.rank, dst, r, it, i);

  bootstrap::TcpRendezvous rv(a.rendezvous());
  proxy::ProxyGroup group(a.proxyConfig());
  group.addRegion(0, send.data(), send.size(), transport::MemoryKind::kHost);
  group.addRegion(1, recv.data(), recv.size(), transport::MemoryKind::kHost);
  group.setSignalRegion(counters.data(), counters.size());
  std::vector<std::unique_ptr<ring::HostRing>> rings;
  for (int r = 0; r < a.rings; ++r) {
    rings.push_back(std::make_unique<ring::HostRing>(8, r));
    group.addRing(rings.back()->view(), proxy::RingKind::kNormal);
  }
  group.connect(rv.allGather(group.localInfo()));
  group.start();
  rv.barrier();
  std::fprintf(stderr, "e2e rank %d: %s, signals %s\n", a.rank, group.transport(0).name().c_str(),
               group.signalPath() == proxy::SignalPath::kAtomic ? "atomic" : "immediate");

  if (a.fault == "die" && a.rank == a.world - 1) std::_Exit(0);  // vanish without a word, as a crash would
  // The sources this rank waits for: under shrink with a fault, every rank but the lost one.
  const int lost = a.shrink != 0 && a.fault != "none" ? a.world - 1 : -1;
  const auto exchange_start = std::chrono::steady_clock::now();
  if (a.fault == "stop" && a.rank == a.world - 1) e2e::freezeWithWatchdog();

  if (a.fault == "corrupt") {
    // A write whose destination runs past the end of the peer's region: must be rejected, nothing written.
    const int dst = (a.rank + 1) % a.world;
    const uint64_t t = ring::push(rings[0]->view(), ring::makeWrite(dst, 0, 0, 1, recv.size() - 16, 64), timeout_ns).ticket;
    if (ring::waitCompleted(rings[0]->view(), t, timeout_ns) == ring::Status::kConsumerError) {
      rv.barrier();  // every rank has had its own bad descriptor rejected: nothing may have landed anywhere
      for (size_t i = 0; i < recv.size(); ++i) {
        if (recv[i] != 0) die(1, fmt::format("byte {} of the receive region changed after a rejected descriptor", i));
      }
      die(3, group.firstError());
    }
    die(1, "a corrupted descriptor was not rejected");
  }

  std::vector<std::thread> producers;
  std::vector<ring::Status> status(a.rings, ring::Status::kOk);
  // kill-busy: the lost rank dies in the middle of its own traffic, its proxy mid-post or mid-progress.
  const bool dies_busy = a.fault == "kill-busy" && a.rank == a.world - 1;
  for (int r = 0; r < a.rings; ++r) {
    producers.emplace_back([&, r] {
      const ring::RingView& v = rings[r]->view();
      uint64_t last = 0;
      for (int it = 0; it < a.iters; ++it) {
        if (dies_busy && r == 0 && it == a.iters / 2) kill(getpid(), SIGKILL);
        for (int k = 0; k < a.world; ++k) {
          const int dst = (a.rank + k) % a.world;  // start at a different peer on every rank
          const uint64_t src_off = dst * per_src + (r * a.iters + it) * slot;
          const uint64_t dst_off = a.rank * per_src + (r * a.iters + it) * slot;
          ring::PushResult p = ring::push(v, ring::makeWrite(dst, 0, src_off, 1, dst_off, a.chunk), timeout_ns);
          if (p.status == ring::Status::kOk) p = ring::push(v, ring::makeSignal(dst, a.rank, (it % 3) + 1), timeout_ns);
          if (p.status != ring::Status::kOk) {
            status[r] = p.status;
            return;
          }
          last = p.ticket;
        }
      }
      status[r] = ring::waitCompleted(v, last, timeout_ns);
    });
  }
  for (auto& t : producers) t.join();
  // Killed once its own writes are done and it idled a moment (the others may still be writing to it): between
  // operations, as a rank killed from outside mostly is. kill-busy (above) kills it in the middle of its writes.
  if (a.fault == "kill" && a.rank == a.world - 1 && status[0] == ring::Status::kOk) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    kill(getpid(), SIGKILL);
  }
  for (int r = 0; r < a.rings; ++r) {
    if (status[r] != ring::Status::kOk) {
      // The proxy's stall timer may have started later than this wait (a full ring blocks the producer while
      // earlier positions still retire); give it one more timeout period to name the peer.
      const auto grace = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
      while (!group.hasError() && std::chrono::steady_clock::now() < grace) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      die(2, group.hasError() ? group.firstError()
                              : fmt::format("ring {} of rank {} stalled (status {})", r, a.rank, int(status[r])));
    }
  }

  // Wait for every source's signals at once; at the deadline the source silent the longest is named.
  const int64_t want = expectedSum(a);
  const auto start = std::chrono::steady_clock::now();
  const int sources = lost >= 0 ? lost : a.world;  // the lost rank is the last
  e2e::SignalWatch watch(sources, want, start);
  std::vector<int64_t> seen(sources);
  uint32_t spins = 0;
  for (;;) {
    for (int src = 0; src < sources; ++src) seen[src] = __atomic_load_n(&counters[src], __ATOMIC_ACQUIRE);
    const auto now = std::chrono::steady_clock::now();
    if (watch.observe(seen, now)) break;
    if (group.hasError()) die(2, group.firstError());
    if (now - start > std::chrono::nanoseconds(timeout_ns)) die(2, watch.describe(a.rank, env().timeout_secs, now));
    uccl::ep::platform::spinRelax(spins);
  }
  if (lost >= 0) {
    // Writes to the lost rank until the proxy declares it dead, as the next calls would; each must complete (here,
    // unsent) promptly, and so must the done signals to the live peers queued behind them.
    const ring::RingView& v = rings[0]->view();
    while (group.deadPeers().empty()) {
      if (std::chrono::steady_clock::now() - exchange_start > std::chrono::nanoseconds(timeout_ns)) {
        die(2, fmt::format("rank {} was never declared dead", lost));
      }
      ring::PushResult p = ring::push(v, ring::makeWrite(lost, 0, lost * per_src, 1, a.rank * per_src, a.chunk),
                                      timeout_ns);
      if (p.status == ring::Status::kOk) p = ring::push(v, ring::makeSignal(lost, a.rank, 1), timeout_ns);
      // Data to the live peers behind it (their first chunk again, the same bytes): a transport whose completions
      // queue behind the lost rank's (one shm endpoint for every peer) holds these until the stall limit.
      for (int dst = 0; dst < lost && p.status == ring::Status::kOk; ++dst) {
        if (dst == a.rank) continue;
        p = ring::push(v, ring::makeWrite(dst, 0, dst * per_src, 1, a.rank * per_src, a.chunk), timeout_ns);
      }
      if (p.status != ring::Status::kOk || ring::waitCompleted(v, p.ticket, timeout_ns) != ring::Status::kOk) {
        die(2, group.hasError() ? group.firstError() : fmt::format("a write to lost rank {} did not complete", lost));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - exchange_start).count();
    if (group.hasError()) die(2, group.firstError());
    const std::vector<int> dead = group.deadPeers();
    if (dead != std::vector<int>{lost}) {
      die(1, fmt::format("dead peers [{}], expected [{}]", fmt::join(dead, ", "), lost));
    }
    // Below the stall verdict (half the timeout) with room to spare: a loaded machine under ThreadSanitizer took
    // 6.2 s of a 24 s timeout for the quick verdict (the lost process gone).
    if (seconds > env().timeout_secs * 0.4) {
      die(1, fmt::format("the exchange without rank {} took {:.2f} s, more than 0.4 of the {:.1f} s timeout",
                         lost, seconds, env().timeout_secs));
    }
    std::fprintf(stderr, "e2e rank %d: exchange done in %.2f s, dead peers [%d]\n", a.rank, seconds, lost);
    // Done: every live peer has all of this rank's data. The proxy keeps serving until every peer says the same.
    for (int dst = 0; dst < sources; ++dst) {
      if (ring::push(rings[0]->view(), ring::makeSignal(dst, a.world + a.rank, 1), timeout_ns).status !=
          ring::Status::kOk) {
        die(2, fmt::format("rank {}: pushing the done signal to rank {} failed", a.rank, dst));
      }
    }
    for (int src = 0; src < sources; ++src) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
      while (__atomic_load_n(&counters[a.world + src], __ATOMIC_ACQUIRE) == 0) {
        if (std::chrono::steady_clock::now() > deadline) die(2, fmt::format("rank {} never said it was done", src));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  } else {
    rv.barrier();  // everyone's data has landed everywhere; no more signals are coming
  }
  group.stop();
  group.checkError();
  for (int src = 0; src < sources; ++src) {
    if (counters[src] != want) die(1, fmt::format("counter for rank {} is {}, expected exactly {}", src, counters[src], want));
    for (int r = 0; r < a.rings; ++r)
      for (int it = 0; it < a.iters; ++it)
        for (uint32_t i = 0; i < a.chunk; ++i) {
          const uint8_t got = recv[src * per_src + (r * a.iters + it) * slot + i];
          if (got != pattern(src, a.rank, r, it, i)) {
            die(1, fmt::format("byte {} of chunk (src {}, ring {}, iter {}) is {:#x}, expected {:#x}", i, src, r, it,
                               got, pattern(src, a.rank, r, it, i)));
          }
        }
  }
  uint64_t descriptors = 0;
  for (int t = 0; t < group.numThreads(); ++t) descriptors += group.stats(t).descriptors;
  std::printf("e2e rank %d ok: %llu descriptors, %d sources x %lld signal units verified\n", a.rank,
              static_cast<unsigned long long>(descriptors), sources, static_cast<long long>(want));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const uccl::ep::TimeoutError& e) {
    die(2, e.what());
  } catch (const std::exception& e) {
    die(2, e.what());
  }
}
