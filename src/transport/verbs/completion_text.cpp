// VerbsTransport::describe(): a failed completion in words, with the peer and a likely cause (cold path).
#include <fmt/format.h>

#include "transport/verbs/verbs_endpoint.hpp"

namespace uccl::ep::transport::verbs {
namespace {

std::string hint(int status, uint32_t peer) {
  switch (status) {
    case IBV_WC_RETRY_EXC_ERR:
      return fmt::format("retry exhausted: peer {} unreachable (link down, wrong UCCL_IB_GID_INDEX, or its QP is gone)",
                         peer);
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return fmt::format("receiver not ready: peer {} had no receive posted", peer);
    case IBV_WC_REM_ACCESS_ERR:
      return fmt::format(
          "remote access error: peer {} rejected the address or rkey (region not registered there, "
          "deregistered, or out of bounds)",
          peer);
    case IBV_WC_REM_INV_REQ_ERR:
      return fmt::format("remote invalid request: peer {} refused the operation (length or opcode)", peer);
    case IBV_WC_REM_OP_ERR:
      return fmt::format("remote operation error at peer {}", peer);
    case IBV_WC_LOC_PROT_ERR:
      return fmt::format("local protection error on a request to peer {}: local buffer outside its region", peer);
    case IBV_WC_WR_FLUSH_ERR:
      return fmt::format("flushed: the QP to peer {} had already failed (see its first error)", peer);
    default:
      return fmt::format("peer {}", peer);
  }
}

}  // namespace

std::string VerbsTransport::describe(const Completion& c) const {
  const char* what = c.kind == Completion::Kind::kRemoteData ? "receive from" : "request to";
  if (c.ok) return fmt::format("{}: {} peer {} (wr_id={}) completed", name_, what, c.peer, c.wr_id);
  const char* status = api_.wcStatusStr(static_cast<ibv_wc_status>(c.error));
  return fmt::format("{}: {} peer {} (wr_id={}) failed: {} (ibv_wc_status {}): {}", name_, what, c.peer, c.wr_id,
                     status != nullptr ? status : "?", c.error, hint(c.error, c.peer));
}

}  // namespace uccl::ep::transport::verbs
