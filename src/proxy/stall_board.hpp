// What every proxy thread of a group waits on, readable by the others: each ring's oldest position that stopped
// retiring (its peer, since when) and each thread's transport call that has not returned (the peer it posts to,
// since when). When one ring times out, its error names everything else the group waits on too. A ring alone can
// blame the wrong peer: over shm, a rank that is alive but whose proxy spins on a lock that a stopped rank holds
// stops completing as well, and the ring that reaches its peer first names that rank, not the stopped one.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace uccl::ep::proxy {

class StallBoard {
 public:
  struct Entry {
    std::atomic<int32_t> peer{-1};
    std::atomic<uint64_t> since_ns{0};  // 0: not waiting
    std::string label;                  // "ring 3 (proxy thread 1)", "proxy thread 1"
    bool posting = false;               // a transport call rather than a ring
  };

  // Before the threads start; the entries stay where they are for the board's life.
  Entry* addRing(std::string label);
  Entry* addPosting(std::string label);

  // Set by the entry's own thread (relaxed: the reader only reports).
  static void set(Entry* e, uint32_t peer, uint64_t now_ns) {
    e->peer.store(static_cast<int32_t>(peer), std::memory_order_relaxed);
    e->since_ns.store(now_ns, std::memory_order_relaxed);
  }
  static void clear(Entry* e) { e->since_ns.store(0, std::memory_order_relaxed); }

  // The transport call that has gone on longest, when it is older than min_ns: the thread inside it cannot time itself
  // out, so whoever asks for the group's errors does. `entry` is nullptr when there is none.
  struct Blocked {
    const Entry* entry = nullptr;
    int32_t peer = -1;
    uint64_t age_ns = 0;
  };
  Blocked oldestPost(uint64_t now_ns, uint64_t min_ns) const;

  // " The group also waits: proxy thread 0 inside a post to rank 2 for 3.1 s, ring 0 (proxy thread 0) on rank 2 for
  // 3.0 s", transport calls first (the transport itself is blocked on that peer), then rings, oldest first; empty
  // when nothing but `except` waits. A transport call younger than min_post_ns is ordinary and left out.
  std::string describeOthers(const Entry* except, uint64_t now_ns, uint64_t min_post_ns) const;

 private:
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace uccl::ep::proxy
