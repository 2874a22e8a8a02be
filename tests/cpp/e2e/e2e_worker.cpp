// One rank of the end-to-end test: host threads play the GPU producers, the proxy moves their descriptors
// through a real transport to the other ranks (separate processes), and every byte and counter is checked.
//
//   e2e_worker --rank R --world W --port P --token T [--host H] [--transport tcp|shm] [--signal atomic|imm]
//              [--threads N] [--rings N] [--iters N] [--chunk BYTES] [--fault none|die|stop|corrupt]
//
// Each ring's producer writes, for every iteration and destination, one chunk into the destination's receive
// region at a slot of its own, then a SIGNAL adding (iter % 3) + 1 to the destination's counter for this rank.
// A rank is done when every source's counter reached its exact expected sum; then it checks every byte.
// Exit codes: 0 ok, 1 check failed, 2 timeout or transport error (message names the peer), 3 rejected input.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

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
  std::vector<int64_t> counters(a.world, 0);
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
  for (int r = 0; r < a.rings; ++r) {
    producers.emplace_back([&, r] {
      const ring::RingView& v = rings[r]->view();
      uint64_t last = 0;
      for (int it = 0; it < a.iters; ++it) {
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
  e2e::SignalWatch watch(a.world, want, start);
  std::vector<int64_t> seen(a.world);
  uint32_t spins = 0;
  for (;;) {
    for (int src = 0; src < a.world; ++src) seen[src] = __atomic_load_n(&counters[src], __ATOMIC_ACQUIRE);
    const auto now = std::chrono::steady_clock::now();
    if (watch.observe(seen, now)) break;
    if (group.hasError()) die(2, group.firstError());
    if (now - start > std::chrono::nanoseconds(timeout_ns)) die(2, watch.describe(a.rank, env().timeout_secs, now));
    uccl::ep::platform::spinRelax(spins);
  }
  rv.barrier();  // everyone's data has landed everywhere; no more signals are coming
  group.stop();
  group.checkError();
  for (int src = 0; src < a.world; ++src) {
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
              static_cast<unsigned long long>(descriptors), a.world, static_cast<long long>(want));
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
