// Which source a rank blames when its signals stop arriving. A rank cut off by a lost peer stops sending too, so at
// the deadline several sources are short; the one that fell silent first is the likely cause, and a wait that took
// the sources one by one named whichever came first in rank order (rank 1, stuck behind a stopped rank 2, was named
// instead of rank 2). SignalWatch follows every source at once and names the one silent the longest.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace uccl::ep::e2e {

class SignalWatch {
 public:
  using Clock = std::chrono::steady_clock;

  // Every source must reach `want`; none is known to have advanced before `start`.
  SignalWatch(int world, int64_t want, Clock::time_point start)
      : want_(want), seen_(world, 0), changed_(world, start) {}

  // Records the counters read at `now`; true once every source has reached `want`.
  bool observe(const std::vector<int64_t>& counters, Clock::time_point now) {
    bool all = true;
    for (size_t src = 0; src < seen_.size(); ++src) {
      if (counters[src] != seen_[src]) {
        seen_[src] = counters[src];
        changed_[src] = now;
      }
      all &= seen_[src] >= want_;
    }
    return all;
  }

  // The short source that advanced last the longest ago; among those silent since the start, the one with the
  // least progress. -1 when no source is short.
  int culprit() const {
    int best = -1;
    for (size_t src = 0; src < seen_.size(); ++src) {
      if (seen_[src] >= want_) continue;
      if (best < 0 || changed_[src] < changed_[best] || (changed_[src] == changed_[best] && seen_[src] < seen_[best])) {
        best = static_cast<int>(src);
      }
    }
    return best;
  }

  // "rank R timed out after T s waiting for signals from rank C (counter c of w, unchanged for s s); also short:
  // rank X (...)", the culprit first.
  std::string describe(int rank, double timeout_secs, Clock::time_point now) const {
    const int c = culprit();
    if (c < 0) return fmt::format("rank {}: every source's signals arrived", rank);
    std::string out =
        fmt::format("rank {} timed out after {:.1f} s waiting for signals from rank {}", rank, timeout_secs, c) +
        shortfall(c, now);
    std::string others;
    for (size_t src = 0; src < seen_.size(); ++src) {
      if (static_cast<int>(src) == c || seen_[src] >= want_) continue;
      others += fmt::format("{}rank {}{}", others.empty() ? "" : ", ", src, shortfall(static_cast<int>(src), now));
    }
    return others.empty() ? out : out + "; also short: " + others;
  }

 private:
  std::string shortfall(int src, Clock::time_point now) const {
    return fmt::format(" (counter {} of {}, unchanged for {:.1f} s)", seen_[src], want_,
                       std::chrono::duration<double>(now - changed_[src]).count());
  }

  int64_t want_;
  std::vector<int64_t> seen_;
  std::vector<Clock::time_point> changed_;
};

}  // namespace uccl::ep::e2e
