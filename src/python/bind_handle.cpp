// uccl.ep._C's handle rules (kernels/intranode_handle.hpp) and the words of a kernel's error record
// (runtime/kernel_error_text.hpp), for the CPU stand-in of the runtime (tests/python/test_intranode_fake.py): it
// checks a forged handle by the kernels' own rules and raises the runtime's own message. The matrix crosses as a
// flat list of R * R ints; a rule returns None or the (row, column, value) of the entry it rejects.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels/error_record.hpp"
#include "kernels/intranode_handle.hpp"
#include "python/bind.hpp"
#include "runtime/kernel_error_text.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::python {

namespace {
namespace k = kernels;
namespace in = kernels::intranode;
using Entry = std::optional<std::tuple<int, int, int32_t>>;

Entry entryOf(const in::BadEntry& e) {
  if (!e.found()) return std::nullopt;
  return std::make_tuple(e.row, e.col, e.value);
}

const int32_t* matrixOf(const std::vector<int32_t>& m, int num_ranks, int rank) {
  if (num_ranks < 1 || m.size() != static_cast<size_t>(num_ranks) * num_ranks || rank < 0 || rank >= num_ranks) {
    UCCL_EP_THROW_ARG("handle rules: rank_prefix_matrix has {} entries, rank {} of {} ranks: expected {} entries "
                      "and a rank in [0, {})",
                      m.size(), rank, num_ranks, static_cast<size_t>(num_ranks) * num_ranks, num_ranks);
  }
  return m.data();
}

void checkIndex(const char* name, int i, int num_ranks) {
  if (i < 0 || i >= num_ranks) UCCL_EP_THROW_ARG("handle rules: {} = {} outside [0, {})", name, i, num_ranks);
}
}  // namespace

void bindHandleRules(py::module_& m) {
  using py::arg;
  m.attr("kBadHandle") = static_cast<int>(k::kBadHandle);
  m.attr("kOpCombine") = static_cast<int>(k::kOpCombine);
  m.attr("kOpCachedDispatch") = static_cast<int>(k::kOpCachedDispatch);
  m.attr("kHandleRankPrefixMatrix") = static_cast<int>(k::kHandleRankPrefixMatrix);
  m.attr("kHandleSendPos") = static_cast<int>(k::kHandleSendPos);
  m.attr("kHandleOfPeer") = static_cast<int>(k::kHandleOfPeer);
  m.def(
      "combine_prefix_row",
      [](const std::vector<int32_t>& prefix, int num_ranks, int rank, int row, int64_t num_recv_tokens,
         int64_t num_tokens) {
        checkIndex("row", row, num_ranks);
        return entryOf(in::combinePrefixRow(matrixOf(prefix, num_ranks, rank), num_ranks, rank, row, num_recv_tokens,
                                            num_tokens));
      },
      py::kw_only(), arg("rank_prefix_matrix"), arg("num_ranks"), arg("rank"), arg("row"), arg("num_recv_tokens"),
      arg("num_tokens"), "combine's rule for row `row` of the matrix (intranode_handle.hpp combinePrefixRow)");
  m.def(
      "dispatch_prefix_entries",
      [](const std::vector<int32_t>& prefix, int num_ranks, int rank, int col, int32_t planned) {
        checkIndex("col", col, num_ranks);
        return entryOf(in::dispatchPrefixEntries(matrixOf(prefix, num_ranks, rank), num_ranks, rank, col, planned));
      },
      py::kw_only(), arg("rank_prefix_matrix"), arg("num_ranks"), arg("rank"), arg("col"), arg("planned"),
      "a cached dispatch's rule for the entries of rank `col` (dispatchPrefixEntries)");
  m.def(
      "dispatch_receive_end",
      [](const std::vector<int32_t>& prefix, int num_ranks, int rank, int64_t out_rows, bool worst_tokens) {
        return entryOf(in::dispatchReceiveEnd(matrixOf(prefix, num_ranks, rank), num_ranks, rank, out_rows,
                                              worst_tokens));
      },
      py::kw_only(), arg("rank_prefix_matrix"), arg("num_ranks"), arg("rank"), arg("out_rows"), arg("worst_tokens"),
      "a cached dispatch's rule for the end of this rank's column (dispatchReceiveEnd)");
  m.def("send_pos_ok", &in::sendPosOk, py::kw_only(), arg("pos"), arg("sent_to"),
        "combine's rule for a send_pos entry (sendPosOk)");
  m.def(
      "kernel_error_text",
      [](int code, int op, int peer, int expert, uint64_t detail, int token, int topk_col, int rank, int num_ranks) {
        k::ErrorRecord rec{};
        k::recordError(&rec, code, op, peer, expert, detail, token, topk_col);
        runtime::KernelErrorSite site;
        site.rank = rank;
        site.num_ranks = num_ranks;
        const runtime::KernelErrorText t = runtime::describeKernelError(rec, site);
        return std::make_tuple(t.kind == runtime::KernelErrorKind::kArgument, t.message);
      },
      py::kw_only(), arg("code"), arg("op"), arg("peer"), arg("expert") = -1, arg("detail"), arg("token") = -1,
      arg("topk_col") = -1, arg("rank"), arg("num_ranks"),
      "(is an ArgumentError, message) of a kernel error record (runtime/kernel_error_text.hpp)");
}

}  // namespace uccl::ep::python
