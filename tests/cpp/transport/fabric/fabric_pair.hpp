// Two libfabric endpoints in one process (rank 0 and rank 1 of a world of 2) and one write-with-immediate between
// them, polled on both sides (rxm and shm progress only when polled) until it landed: for the tests of what a
// provider's endpoint can register (host memory, and GPU memory through FI_HMEM).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::testing {

struct FabricPair {
  std::unique_ptr<Transport> t[2];

  // Both endpoints from `o` (rank and world set here); throws what opening throws.
  FabricPair(TransportOptions o, const std::string& provider) {
    std::vector<Blob> addrs;
    for (int r = 0; r < 2; ++r) {
      o.rank = r;
      o.world = 2;
      o.all_peers_local = true;
      t[r] = createFabricTransport(o, provider);
      addrs.push_back(t[r]->address());
    }
    for (auto& e : t) e->connect(addrs);
  }

  // Rank 0 writes `len` bytes of `src` into `dst` at rank 1 with immediate `imm`. Returns "" once rank 1 got the
  // immediate and rank 0 the completion, else what went wrong (a failed completion, or nothing within 20 s).
  std::string writeWithImm(const LocalMemory& src, const LocalMemory& dst, size_t len, uint64_t imm) {
    WorkRequest w;
    w.kind = OpKind::kWriteImm;
    w.peer = 1;
    w.local_mem = src.id;
    w.length = len;
    w.remote = decodeRemote(encodeRemote(dst.remote));  // as a peer gets it
    w.imm = imm;
    w.wr_id = 7;
    bool posted = false, landed = false, completed = false;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(landed && completed)) {
      if (std::chrono::steady_clock::now() > end) return "nothing within 20 s";
      if (!posted) posted = t[0]->post(&w, 1) == 1;
      Completion c[8];
      for (int r = 0; r < 2; ++r) {
        const size_t n = t[r]->poll(c, 8);
        for (size_t i = 0; i < n; ++i) {
          if (!c[i].ok) return t[r]->describe(c[i]);
          if (c[i].kind == Completion::Kind::kRemoteData) landed |= c[i].imm == imm;
          if (c[i].kind == Completion::Kind::kLocal) completed |= c[i].wr_id == w.wr_id;
        }
      }
    }
    return "";
  }
};

}  // namespace uccl::ep::transport::testing
