#include "proxy/stall_board.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

namespace uccl::ep::proxy {

StallBoard::Entry* StallBoard::addRing(std::string label) {
  entries_.push_back(std::make_unique<Entry>());
  entries_.back()->label = std::move(label);
  return entries_.back().get();
}

StallBoard::Entry* StallBoard::addPosting(std::string label) {
  Entry* e = addRing(std::move(label));
  e->posting = true;
  return e;
}

StallBoard::Blocked StallBoard::oldestPost(uint64_t now_ns, uint64_t min_ns) const {
  Blocked out;
  for (const auto& e : entries_) {
    if (!e->posting) continue;
    const uint64_t since = e->since_ns.load(std::memory_order_relaxed);
    if (since == 0 || since > now_ns || now_ns - since < min_ns || now_ns - since <= out.age_ns) continue;
    out = Blocked{e.get(), e->peer.load(std::memory_order_relaxed), now_ns - since};
  }
  return out;
}

std::string StallBoard::describeOthers(const Entry* except, uint64_t now_ns, uint64_t min_post_ns) const {
  struct Seen {
    bool posting;
    uint64_t age_ns;
    int32_t peer;
    const std::string* label;
  };
  std::vector<Seen> seen;
  for (const auto& e : entries_) {
    if (e.get() == except) continue;
    const uint64_t since = e->since_ns.load(std::memory_order_relaxed);
    const int32_t peer = e->peer.load(std::memory_order_relaxed);
    if (since == 0 || peer < 0 || since > now_ns) continue;
    const uint64_t age = now_ns - since;
    if (e->posting && age < min_post_ns) continue;
    seen.push_back({e->posting, age, peer, &e->label});
  }
  if (seen.empty()) return std::string();
  std::sort(seen.begin(), seen.end(), [](const Seen& a, const Seen& b) {
    return std::make_tuple(!a.posting, -static_cast<double>(a.age_ns)) <
           std::make_tuple(!b.posting, -static_cast<double>(b.age_ns));
  });
  std::string out = " The group also waits: ";
  for (size_t i = 0; i < seen.size(); ++i) {
    const Seen& s = seen[i];
    out += fmt::format("{}{} {} rank {} for {:.1f} s", i ? ", " : "", *s.label, s.posting ? "inside a post to" : "on",
                       s.peer, s.age_ns / 1e9);
  }
  return out;
}

}  // namespace uccl::ep::proxy
