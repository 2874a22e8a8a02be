// The rules a normal-mode handle's entries must meet before a kernel uses them as an index or a count, one function
// per reading site. Plain C++ too (host and device): the kernels (intranode_dispatch.cu, intranode_combine.cu) call
// them in the threads that read the entries, and the CPU tests run the same rules on hand-made matrices.
//
// rank_prefix_matrix is [R, R] int32, row-major: entry [s][r] counts the rows sources 0..s send to rank r (an
// inclusive prefix over source ranks), so count(s, r) = [s][r] - [s-1][r] with [-1][r] = 0. send_pos is [T, R]:
// the position of token t among the rows this rank sent to r, or -1.
//
// What the rules guarantee, given the sizes the runtime checked: every row a kernel reads from x or writes to an
// output lies below num_tokens / the output rows, every row written into a rank's staging or combine block lies
// within that rank's rows (whose total the kernels check against num_nvl_bytes), and every chunk flag index lies
// within kChunkFlags. They do not make a matrix equal to the peers' (nothing local could): a matrix that passes but
// differs from the one dispatch returned moves rows to the wrong places, inside the buffers.
#pragma once

#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::intranode {

// The first entry a rule rejected: its row, column and value; row < 0 when none.
struct BadEntry {
  int row = -1, col = -1;
  int32_t value = 0;
  UCCL_EP_HOST_DEVICE bool found() const { return row >= 0; }
};

// Combine, row s against row s - 1 (every row is checked, one thread each): no count negative (so every entry is
// >= 0 and every column non-decreasing), this rank's column at most the rows it received (num_recv_tokens, the rows
// of the combine input), and this rank's own row counting at most num_tokens rows per rank.
UCCL_EP_HOST_DEVICE inline BadEntry combinePrefixRow(const int32_t* prefix, int R, int me, int s,
                                                     int64_t num_recv_tokens, int64_t num_tokens) {
  for (int r = 0; r < R; ++r) {
    const int32_t hi = prefix[s * R + r], lo = s > 0 ? prefix[(s - 1) * R + r] : 0;
    const bool bad = hi < lo || (r == me && hi > num_recv_tokens) ||
                     (s == me && static_cast<int64_t>(hi) - lo > num_tokens);
    if (bad) return BadEntry{s, r, hi};
  }
  return BadEntry{};
}

// Cached dispatch, the entries the thread of rank r reads (every r is checked, one thread each): column r
// non-decreasing from 0 down to row me, this rank's count to r (row me minus row me - 1) equal to `planned` (the
// plan kernel's count of is_token_in_rank's column r, the tokens the send half will read), the column's last entry
// at least row me's, and column me non-decreasing at row r.
UCCL_EP_HOST_DEVICE inline BadEntry dispatchPrefixEntries(const int32_t* prefix, int R, int me, int r,
                                                          int32_t planned) {
  int32_t above = 0;
  for (int s = 0; s <= me; ++s) {
    const int32_t v = prefix[s * R + r];
    if (v < above || (s == me && static_cast<int64_t>(v) - above != planned)) return BadEntry{s, r, v};
    above = v;
  }
  const int32_t last = prefix[(R - 1) * R + r];
  if (last < above) return BadEntry{R - 1, r, last};
  const int32_t lo = r > 0 ? prefix[(r - 1) * R + me] : 0, hi = prefix[r * R + me];
  if (hi < lo) return BadEntry{r, me, hi};
  return BadEntry{};
}

// Cached dispatch, the receive side once the outputs exist: column me ends at the output rows (at most, with
// num_worst_tokens: the rest are padding).
UCCL_EP_HOST_DEVICE inline BadEntry dispatchReceiveEnd(const int32_t* prefix, int R, int me, int64_t out_rows,
                                                       bool worst_tokens) {
  const int32_t total = prefix[(R - 1) * R + me];
  const bool bad = worst_tokens ? total > out_rows : total != out_rows;
  return bad ? BadEntry{R - 1, me, total} : BadEntry{};
}

// Combine, send_pos[t][r]: -1 (the token did not go to r) or below sent_to, the rows this rank sent to r
// (count(me, r) of a checked matrix).
UCCL_EP_HOST_DEVICE inline bool sendPosOk(int32_t pos, int64_t sent_to) {
  return pos == -1 || (pos >= 0 && pos < sent_to);
}

}  // namespace uccl::ep::kernels::intranode
