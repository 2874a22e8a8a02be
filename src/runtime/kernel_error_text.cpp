// runtime::describeKernelError (kernel_error_text.hpp): one message per (code, op) of kernels/error_record.hpp.
#include "runtime/kernel_error_text.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::runtime {

namespace k = kernels;

namespace {

const char* stepName(int32_t op) {
  switch (op) {
    case k::kOpDispatchSend: return "low-latency dispatch (send)";
    case k::kOpDispatchRecv: return "low-latency dispatch (receive)";
    case k::kOpCombineSend: return "low-latency combine (send)";
    case k::kOpCombineRecv: return "low-latency combine (receive)";
    case k::kOpReuse: return "normal-mode dispatch/combine (waiting to reuse the nvl buffer)";
    case k::kOpReady: return "normal-mode dispatch/combine (waiting for the peers' data)";
    case k::kOpWorstOverflow: return "normal-mode dispatch (num_worst_tokens)";
    case k::kOpNvlOverflow: return "normal-mode dispatch/combine (the rows a rank receives)";
    case k::kOpArrive: return "normal-mode dispatch/combine (waiting for the peers' rows)";
    case k::kOpChunk: return "normal-mode dispatch/combine (waiting for a chunk of a peer's rows)";
    case k::kOpLayout: return "get_dispatch_layout";
    case k::kOpClean: return "clean_low_latency_buffer";
    case k::kOpCachedDispatch: return "dispatch (handle given)";
    case k::kOpCombine: return "combine";
    case k::kOpRdmaCounts: return "normal-mode dispatch across nodes (the counts exchange)";
    case k::kOpRdmaRoom: return "normal-mode dispatch across nodes (sending records to another node)";
    case k::kOpRdmaRows: return "normal-mode dispatch across nodes (forwarding another node's records)";
    case k::kOpRdmaPartialRoom: return "normal-mode combine across nodes (sending partial sums to another node)";
    case k::kOpRdmaPartials:
    case k::kOpRdmaEntered: return "normal-mode combine across nodes (receiving another node's partial sums)";
    default: return "kernel (unknown step)";
  }
}

const char* ringStatusName(uint32_t status) {
  switch (static_cast<ring::Status>(status)) {
    case ring::Status::kOk: return "ok";
    case ring::Status::kTimeout: return "timed out: the proxy did not take or complete the ring's descriptors";
    case ring::Status::kConsumerError: return "the proxy consuming the ring failed";
  }
  return "unknown ring status";
}

std::string timeoutText(const k::ErrorRecord& rec, const KernelErrorSite& site, const std::string& step,
                        const std::string& expert, const std::string& path) {
  const int32_t op = rec.op;
  const int32_t peer = rec.peer;
  const double secs = site.timeout_secs;
  switch (op) {
    case k::kOpReuse:
      return fmt::format("{} on rank {}: rank {} did not finish reading this rank's nvl buffer from the previous "
                         "dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s (it never joined that call, or failed)",
                         step, site.rank, peer, secs);
    case k::kOpArrive:
      return fmt::format("{} on rank {}: rank {} did not push its rows for this dispatch/combine within "
                         "UCCL_EP_TIMEOUT_SECS={}s",
                         step, site.rank, peer, secs);
    case k::kOpChunk:
      return fmt::format("{} on rank {}: rank {} did not push chunk {} of its rows for this dispatch/combine within "
                         "UCCL_EP_TIMEOUT_SECS={}s",
                         step, site.rank, peer, rec.detail, secs);
    case k::kOpReady:
      return fmt::format("{} on rank {}: rank {} did not join this dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s",
                         step, site.rank, peer, secs);
    case k::kOpRdmaCounts:
      return fmt::format("{} on rank {}: the counts of rank {}{} (call {}) did not arrive within "
                         "UCCL_EP_TIMEOUT_SECS={}s (it never joined this dispatch, or failed)",
                         step, site.rank, peer, path, rec.detail, secs);
    case k::kOpRdmaRoom:
    case k::kOpRdmaRows:
    case k::kOpRdmaPartialRoom:
    case k::kOpRdmaPartials: {
      // A stream of one channel (detail): what the peer did not do, and what that left this rank without.
      const char* what = op == k::kOpRdmaRoom          ? "consume the records"
                         : op == k::kOpRdmaRows        ? "send the records"
                         : op == k::kOpRdmaPartialRoom ? "take the partial sums"
                                                       : "send the partial sums";
      const char* tail = op == k::kOpRdmaRoom || op == k::kOpRdmaPartialRoom ? ", so no room was left to send more"
                         : op == k::kOpRdmaPartials ? " (every rank of its node began this combine)"
                                                    : "";
      return fmt::format("{} on rank {}: rank {}{} did not {} of channel {} within UCCL_EP_TIMEOUT_SECS={}s{}", step,
                         site.rank, peer, path, what, rec.detail, secs, tail);
    }
    case k::kOpRdmaEntered:
      // detail: the peer that sums the node's rows for this rank (the absent rank itself, or one waiting for it).
      return fmt::format("{} on rank {}: rank {}{} did not begin this combine within UCCL_EP_TIMEOUT_SECS={}s (it "
                         "never joined it, or failed){}",
                         step, site.rank, peer, path, secs,
                         rec.detail == static_cast<uint64_t>(peer)
                             ? std::string()
                             : fmt::format(", so rank {}, which sums its node's rows for this rank, could not send "
                                           "them", rec.detail));
    case k::kOpClean: {
      // detail: the clean's call number << 32 | how many ranks did not join; peer: the lowest of them.
      const uint32_t missing = static_cast<uint32_t>(rec.detail);
      std::string who = fmt::format("rank {}{}", peer, path);
      if (site.clean_absent.size() > 1) {
        who = fmt::format("ranks {}", fmt::join(site.clean_absent, ", "));
      } else if (missing > 1) {
        who += fmt::format(" (and {} more ranks)", missing - 1);
      }
      return fmt::format("{} on rank {}: {} did not join this barrier (clean call {} of this Buffer) within "
                         "UCCL_EP_TIMEOUT_SECS={}s; build the Buffer with enable_shrink=True to mask ranks that do "
                         "not join",
                         step, site.rank, who, rec.detail >> 32, secs);
    }
    case k::kOpDispatchRecv:
    case k::kOpCombineRecv:
      return fmt::format("{} on rank {}: rank {} did not deliver its {}{}{} within UCCL_EP_TIMEOUT_SECS={}s", step,
                         site.rank, peer, op == k::kOpDispatchRecv ? "dispatched tokens" : "combined rows", expert,
                         path, secs);
    default:
      return fmt::format("{} on rank {}: writing to rank {}{}{} did not complete within UCCL_EP_TIMEOUT_SECS={}s",
                         step, site.rank, peer, expert, path, secs);
  }
}

std::string slotOverflowText(const k::ErrorRecord& rec, const KernelErrorSite& site, const std::string& step,
                             const std::string& expert) {
  if (rec.op == k::kOpNvlOverflow) {
    return fmt::format("{} on rank {}: the rows rank {} receives need {} bytes of nvl buffer, num_nvl_bytes is {}; "
                       "build the Buffer with a larger num_nvl_bytes (Config.get_nvl_buffer_size_hint)",
                       step, site.rank, rec.peer, rec.detail, site.num_nvl_bytes);
  }
  if (rec.op == k::kOpWorstOverflow) {
    return fmt::format("{} on rank {}: {} rows arrived but num_worst_tokens leaves room for fewer; rows beyond it "
                       "were dropped",
                       step, site.rank, rec.detail);
  }
  return fmt::format("{} on rank {}: rank {}{} sent more tokens than num_max_dispatch_tokens_per_rank allows "
                     "(slot {})",
                     step, site.rank, rec.peer, expert, rec.detail);
}

// kBadHandle: detail = handleDetail(field, value); token, topk_col = the entry's row and column.
std::string badHandleText(const k::ErrorRecord& rec, const KernelErrorSite& site, const std::string& step) {
  const uint32_t field = static_cast<uint32_t>(rec.detail >> 32);
  const int32_t value = static_cast<int32_t>(static_cast<uint32_t>(rec.detail));
  switch (field) {
    case k::kHandleRankPrefixMatrix:
      return fmt::format(
          "{} on rank {}: handle[0] (rank_prefix_matrix)[{}][{}] holds {}, which is not the matrix dispatch returned: "
          "expected an inclusive prefix over source ranks (entries >= 0, non-decreasing down each column) whose row "
          "{} counts the rows this rank sent to each rank{} and whose column {} ends at the rows this rank received "
          "(handle[2]). The call moved no rows on this rank (nor from it to any rank); its outputs are not valid",
          step, site.rank, rec.token, rec.topk_col, value, site.rank,
          rec.op == k::kOpCachedDispatch ? " (handle[4], is_token_in_rank)" : "", site.rank);
    case k::kHandleSendPos:
      return fmt::format(
          "{} on rank {}: handle[1] (send_pos)[{}][{}] holds {}; expected -1 (token {} did not go to rank {}) or its "
          "position among the rows this rank sent to rank {} (>= 0 and below the count in handle[0], "
          "rank_prefix_matrix). The call skipped that entry; combined_x row {} is not valid",
          step, site.rank, rec.token, rec.topk_col, value, rec.token, rec.topk_col, rec.topk_col, rec.token);
    case k::kHandleForwardMap:
      return fmt::format(
          "{} on rank {}: handle[6] (forward map)[{}][{}] holds {}; expected -1 (that record skipped local rank {} of "
          "this node) or the record's position among the rows that rank received from the record's source (below "
          "the count in handle[0], rank_prefix_matrix). The call skipped that entry: the partial sum this rank sent "
          "back for that record lacks that rank's row",
          step, site.rank, rec.token, rec.topk_col, value, rec.topk_col);
    case k::kHandleOfPeer:
      return fmt::format("{} on rank {}: rank {} rejected an entry of its handle (its call raises naming it), so it "
                         "sent this rank no rows in that call; this rank's outputs of that call are not valid",
                         step, site.rank, rec.peer);
    default:
      return fmt::format("{} on rank {}: handle field {} holds {} at [{}][{}], out of range", step, site.rank, field,
                         value, rec.token, rec.topk_col);
  }
}

}  // namespace

KernelErrorText describeKernelError(const k::ErrorRecord& rec, const KernelErrorSite& site) {
  const int32_t peer = rec.peer;
  const std::string step = stepName(rec.op);
  const std::string expert = rec.expert >= 0 ? fmt::format(" (expert {})", rec.expert) : std::string();
  const std::string path =
      peer < 0 || peer >= site.num_ranks || !site.path_to ? std::string() : site.path_to(peer);
  KernelErrorText out;
  switch (rec.code) {
    case k::kTimeout:
      out.kind = KernelErrorKind::kTimeout;
      out.message = timeoutText(rec, site, step, expert, path);
      return out;
    case k::kRingError: {
      // detail: ring id in the high half, ring::Status in the low half.
      const uint32_t ring_id = static_cast<uint32_t>(rec.detail >> 32);
      const uint32_t status = static_cast<uint32_t>(rec.detail);
      const bool timeout = status == static_cast<uint32_t>(ring::Status::kTimeout);
      const std::string target = peer >= 0 ? fmt::format(" carrying rows for rank {}{}", peer, expert) : "";
      out.kind = timeout ? KernelErrorKind::kTimeout : KernelErrorKind::kFatal;
      out.message = fmt::format("{} on rank {}: descriptor ring {}{} failed with status {} ({}){}", step, site.rank,
                                ring_id, target, status, ringStatusName(status),
                                timeout ? fmt::format(" within UCCL_EP_TIMEOUT_SECS={}s", site.timeout_secs)
                                        : std::string());
      return out;
    }
    case k::kSlotOverflow:
      out.message = slotOverflowText(rec, site, step, expert);
      return out;
    case k::kBadExpertId:
      // detail: the entry as the caller wrote it (int64). The kernel skipped it: the token went to its other experts.
      out.kind = KernelErrorKind::kArgument;
      out.message = fmt::format("{} on rank {}: topk_idx[{}][{}] holds expert id {}; expected -1 (no expert) or an "
                                "id in [0, num_experts). The call skipped that entry and went on",
                                step, site.rank, rec.token, rec.topk_col, static_cast<int64_t>(rec.detail));
      return out;
    case k::kBadHandle:
      // The kernels moved nothing out of bounds and finished the call: the caller's argument, the buffer is usable.
      out.kind = KernelErrorKind::kArgument;
      out.message = badHandleText(rec, site, step);
      return out;
    case k::kBadRecord:
      if (rec.op == k::kOpRdmaCounts) {
        out.message = fmt::format("{} on rank {}: the counts row from rank {}{} says it sends {} tokens to rank {}, "
                                  "out of range; counted as 0 (a corrupt or forged network write)",
                                  step, site.rank, peer, path, static_cast<int32_t>(rec.detail), rec.expert);
        return out;
      }
      if (rec.op == k::kOpRdmaPartials) {
        out.message = fmt::format("{} on rank {}: a partial sum from rank {}{} names token {}, not a token of this "
                                  "rank that went to that node; the record was dropped (a corrupt or forged network "
                                  "write)",
                                  step, site.rank, peer, path, static_cast<int32_t>(rec.detail));
        return out;
      }
      out.message = fmt::format("{} on rank {}: a record from rank {}{} names position {} at the rank of local index "
                                "{}, beyond the rows the counts exchange announced; the record was dropped (a "
                                "corrupt or forged network write)",
                                step, site.rank, peer, path, rec.detail, rec.expert);
      return out;
    default:
      out.message = fmt::format("{} on rank {}: error code {} about rank {}{} (detail {})", step, site.rank, rec.code,
                                peer, expert, rec.detail);
      return out;
  }
}

}  // namespace uccl::ep::runtime
