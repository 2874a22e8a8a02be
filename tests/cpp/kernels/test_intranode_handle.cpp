// The rules a normal-mode handle's entries must meet (kernels/intranode_handle.hpp), on hand-made matrices: the
// matrices dispatch returns pass, each kind of forged entry is named by row, column and value, and any matrix that
// passes keeps every row index the kernels derive from it inside the rows they index.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/intranode_handle.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

// counts[s][r]: rows source s sends to rank r; the matrix is their inclusive prefix over s.
struct Matrix {
  int R;
  std::vector<int32_t> counts, prefix;
  int32_t& at(int s, int r) { return prefix[s * R + r]; }
  int32_t count(int s, int r) const { return counts[s * R + r]; }
  int32_t total(int r) const { return prefix[(R - 1) * R + r]; }
};

Matrix honest(int R, uint32_t seed, int max_count = 9) {
  std::mt19937 rng(seed);
  Matrix m{R, std::vector<int32_t>(R * R), std::vector<int32_t>(R * R)};
  for (int s = 0; s < R; ++s) {
    for (int r = 0; r < R; ++r) {
      m.counts[s * R + r] = static_cast<int32_t>(rng() % (max_count + 1));
      m.prefix[s * R + r] = m.counts[s * R + r] + (s > 0 ? m.prefix[(s - 1) * R + r] : 0);
    }
  }
  return m;
}

// The first bad entry any thread of a combine would find (rows in thread order).
BadEntry combineCheck(const Matrix& m, int me, int64_t num_recv, int64_t num_tokens) {
  for (int s = 0; s < m.R; ++s) {
    const BadEntry e = combinePrefixRow(m.prefix.data(), m.R, me, s, num_recv, num_tokens);
    if (e.found()) return e;
  }
  return BadEntry{};
}

BadEntry dispatchCheck(const Matrix& m, int me, const std::vector<int32_t>& planned, int64_t rows, bool worst) {
  for (int r = 0; r < m.R; ++r) {
    const BadEntry e = dispatchPrefixEntries(m.prefix.data(), m.R, me, r, planned[r]);
    if (e.found()) return e;
  }
  return dispatchReceiveEnd(m.prefix.data(), m.R, me, rows, worst);
}

std::vector<int32_t> planOf(const Matrix& m, int me) {
  return std::vector<int32_t>(m.counts.begin() + me * m.R, m.counts.begin() + (me + 1) * m.R);
}

void expectEntry(const BadEntry& e, int row, int col, int32_t value) {
  EXPECT_TRUE(e.found());
  EXPECT_EQ(e.row, row);
  EXPECT_EQ(e.col, col);
  EXPECT_EQ(e.value, value);
}

TEST(IntranodeHandle, TheMatricesDispatchReturnsPassOnEveryRank) {
  for (int R : {1, 2, 3, 8, 24}) {
    for (uint32_t seed = 0; seed < 20; ++seed) {
      const Matrix m = honest(R, seed);
      for (int me = 0; me < R; ++me) {
        int64_t most = 0;
        for (int r = 0; r < R; ++r) most = std::max<int64_t>(most, m.count(me, r));
        EXPECT_FALSE(combineCheck(m, me, m.total(me), most).found()) << R << " " << seed << " " << me;
        EXPECT_FALSE(dispatchCheck(m, me, planOf(m, me), m.total(me), false).found());
        EXPECT_FALSE(dispatchCheck(m, me, planOf(m, me), m.total(me) + 5, true).found());  // num_worst_tokens
      }
    }
  }
}

TEST(IntranodeHandle, CombineNamesAnEntryPastTheReceiveCountANegativeOneAndADecreasingOne) {
  const int R = 4, me = 1;
  Matrix m = honest(R, 7);
  const int64_t rows = m.total(me);
  m.at(R - 1, me) = static_cast<int32_t>(rows + 1);
  expectEntry(combineCheck(m, me, rows, 1000), R - 1, me, static_cast<int32_t>(rows + 1));
  m = honest(R, 7);
  m.at(0, 2) = -1;
  expectEntry(combineCheck(m, me, rows, 1000), 0, 2, -1);
  m = honest(R, 7, 9);
  m.at(2, 3) = m.at(1, 3) - 1;
  expectEntry(combineCheck(m, me, rows, 1000), 2, 3, m.at(2, 3));
  m = honest(R, 7);
  EXPECT_FALSE(combineCheck(m, me, rows, 9).found());
  expectEntry(combineCheck(m, me, rows, m.count(me, 0) - 1), me, 0, m.at(me, 0));  // more rows sent than tokens
}

TEST(IntranodeHandle, CachedDispatchNamesACountThatIsNotThePlanAColumnEndAndADecreasingEntry) {
  const int R = 3, me = 2;
  const Matrix good = honest(R, 3);
  std::vector<int32_t> plan = planOf(good, me);
  Matrix m = good;
  m.at(me, 1) += 1;  // this rank would send one row more to rank 1 than is_token_in_rank lists
  expectEntry(dispatchCheck(m, me, plan, good.total(me), false), me, 1, m.at(me, 1));
  m = good;
  m.at(0, 0) = m.at(0, 0) + 100;  // row 0 above row 1: column 0 decreases
  expectEntry(dispatchCheck(m, me, plan, good.total(me), false), 1, 0, m.at(1, 0));
  m = good;
  expectEntry(dispatchCheck(m, me, plan, good.total(me) + 1, false), R - 1, me, good.total(me));
  EXPECT_FALSE(dispatchCheck(m, me, plan, good.total(me) + 1, true).found());  // padding rows with num_worst_tokens
  expectEntry(dispatchCheck(m, me, plan, good.total(me) - 1, true), R - 1, me, good.total(me));
  const Matrix first = honest(R, 4);
  m = first;
  plan = planOf(first, 0);
  m.at(R - 1, 2) = m.at(0, 2) - 1;  // the column of rank 2 ends below this rank's entry
  expectEntry(dispatchCheck(m, 0, plan, first.total(0), false), R - 1, 2, m.at(R - 1, 2));
}

TEST(IntranodeHandle, SendPosIsMinusOneOrBelowTheRowsSent) {
  EXPECT_TRUE(sendPosOk(-1, 0));
  EXPECT_TRUE(sendPosOk(0, 1));
  EXPECT_TRUE(sendPosOk(4, 5));
  EXPECT_FALSE(sendPosOk(5, 5));
  EXPECT_FALSE(sendPosOk(0, 0));
  EXPECT_FALSE(sendPosOk(-2, 5));
  EXPECT_FALSE(sendPosOk(INT32_MIN, 5));
  EXPECT_FALSE(sendPosOk(INT32_MAX, 5));
}

// Random forgeries of a few entries: whatever passes keeps the kernels' derived rows inside what they index.
TEST(IntranodeHandle, AnyMatrixThatPassesKeepsEveryDerivedRowInBounds) {
  std::mt19937 rng(11);
  const int32_t kValues[] = {-1, 0, 1, 2, 5, 9, 40, INT32_MAX, INT32_MIN};
  int passed = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int R = 1 + static_cast<int>(rng() % 5), me = static_cast<int>(rng() % R);
    Matrix m = honest(R, rng(), 3);
    const std::vector<int32_t> plan = planOf(m, me);
    const int64_t rows = m.total(me), tokens = 3;
    for (int k = 1 + static_cast<int>(rng() % 2); k > 0; --k) {
      int32_t& e = m.prefix[rng() % (R * R)];
      e = rng() % 2 ? kValues[rng() % 9] : e + static_cast<int32_t>(rng() % 3) - 1;
    }
    if (!combineCheck(m, me, rows, tokens).found()) {
      ++passed;
      int64_t here = 0;
      for (int s = 0; s < R; ++s) {
        const int64_t first = s > 0 ? m.at(s - 1, me) : 0, count = m.at(s, me) - first;
        ASSERT_TRUE(first >= 0 && count >= 0 && first + count <= rows);  // rows of x sent back to s
        int64_t before = 0, held = 0;
        for (int r = 0; r < R; ++r) {
          const int64_t c = m.at(s, r) - (s > 0 ? m.at(s - 1, r) : 0);
          ASSERT_GE(c, 0);
          before += r < me ? c : 0;
          held += c;
        }
        ASSERT_LE(before + count, held);  // this rank's block inside s's rows
        const int64_t sent = m.at(me, s) - (me > 0 ? m.at(me - 1, s) : 0);
        ASSERT_TRUE(sent >= 0 && sent <= tokens);  // send_pos bound
        here += sent;
      }
      ASSERT_LE(here, tokens * R);
    }
    if (!dispatchCheck(m, me, plan, rows, false).found()) {
      ++passed;
      int64_t got = 0;
      for (int r = 0; r < R; ++r) {
        const int64_t before = me > 0 ? m.at(me - 1, r) : 0;
        ASSERT_TRUE(before >= 0 && before + plan[r] <= m.total(r));  // this rank's records inside r's rows
        const int64_t from = m.at(r, me) - (r > 0 ? m.at(r - 1, me) : 0);
        ASSERT_GE(from, 0);
        got += from;
      }
      ASSERT_EQ(got, rows);  // every received row is an output row
    }
  }
  EXPECT_GT(passed, 100);  // the forgeries include harmless ones (an entry set to its own value)
}

}  // namespace
}  // namespace uccl::ep::kernels::intranode
