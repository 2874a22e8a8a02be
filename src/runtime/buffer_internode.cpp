// runtime::Buffer, normal mode across nodes (kernels/internode.hpp): the context (the node's NVLink group, the RDMA
// buffer's layout, rings, signal words and counters), the checks that make a call fit the buffers, and the launches
// of both halves of a dispatch. The CPU wait is buffer_normal.cpp's (the same HostCounts).
#include <algorithm>
#include <utility>

#include "runtime/buffer_impl.hpp"
#include "runtime/call_checks.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace intranode = kernels::intranode;
namespace internode = kernels::internode;

namespace {
constexpr int kDefaultRdmaSendTokens = 6;    // Config's defaults
constexpr int kDefaultRdmaRecvTokens = 256;
}  // namespace

internode::Context Buffer::Impl::internodeContext(const char* call, const NormalConfig& config, int num_experts,
                                                  size_t token_bytes) const {
  const int R = cfg.num_ranks, P = topo.ranks_per_node, N = topo.num_nodes;
  if (R % P != 0) {
    UCCL_EP_THROW("{}: {}: normal mode across nodes needs whole nodes ({} ranks do not make nodes of {})", call,
                  topo.describe(), R, P);
  }
  if (P > internode::kMaxNodeRanks || N > internode::kMaxNodes) {
    UCCL_EP_THROW("{}: {}: normal mode across nodes supports up to {} nodes of up to {} ranks", call, topo.describe(),
                  internode::kMaxNodes, internode::kMaxNodeRanks);
  }
  if (!uses_proxy || !internode_counters) {
    UCCL_EP_THROW_ARG("{}: {}: normal mode across nodes needs an RDMA buffer; build the Buffer with num_rdma_bytes > "
                      "0 (Config.get_rdma_buffer_size_hint)",
                      call, topo.describe());
  }
  internode::Context c;
  c.global = nvlContext(call, config);
  c.global.pipelined = false;
  c.node = c.global;
  c.node_index = topo.nodeOf(cfg.rank);
  c.nodes = N;
  c.ranks_per_node = P;
  c.local = cfg.rank % P;
  c.node.rank = c.local;
  c.node.num_ranks = P;
  c.node.rank_base = c.node_index * P;
  c.node.peers = peer_nvl->get() + static_cast<size_t>(c.node_index) * P;
  const int channels = c.global.num_sms / 2;
  if (channels < 1 || channels > internode::kMaxChannels) {
    UCCL_EP_THROW_ARG("{}: Config.num_sms = {} makes {} channels (num_sms / 2); across nodes 1 to {} are supported",
                      call, c.global.num_sms, channels, internode::kMaxChannels);
  }
  const int send = config.num_max_rdma_chunked_send_tokens > 0 ? config.num_max_rdma_chunked_send_tokens
                                                              : kDefaultRdmaSendTokens;
  const int slots = config.num_max_rdma_chunked_recv_tokens > 0 ? config.num_max_rdma_chunked_recv_tokens
                                                               : kDefaultRdmaRecvTokens;
  if (send > slots / 2) {
    UCCL_EP_THROW_ARG("{}: num_max_rdma_chunked_send_tokens ({}) must be at most half of "
                      "num_max_rdma_chunked_recv_tokens ({})",
                      call, send, slots);
  }
  c.send_chunk = send;
  c.rdma_layout = internode::makeRdmaLayout(channels, N, R, num_experts / R, slots, token_bytes);
  c.rdma_layout.region_bytes = c.rdma_layout.regionOf(static_cast<size_t>(cfg.num_rdma_bytes));
  const size_t need = c.rdma_layout.neededBytes();
  if (c.rdma_layout.regionNeed() > c.rdma_layout.region_bytes) {
    UCCL_EP_THROW_ARG("{}: the RDMA buffer is too small: {} channels x {} nodes x 2 rings of {} records of {} bytes "
                      "and the counts areas need {} bytes, the buffer has num_rdma_bytes={}; build the Buffer with "
                      "num_rdma_bytes >= {} (Config.get_rdma_buffer_size_hint) or lower "
                      "num_max_rdma_chunked_recv_tokens",
                      call, channels, N, slots, c.rdma_layout.record_bytes, need, cfg.num_rdma_bytes,
                      (need + kernels::kBufferSizeUnit - 1) / kernels::kBufferSizeUnit * kernels::kBufferSizeUnit);
  }
  c.rdma = rdma_base;
  c.rdma_region = 0;
  c.signals = rdma_signals->device() + internode_signal_base;
  c.signal_base = static_cast<uint32_t>(internode_signal_base);
  c.rings = ring_views->get();
  c.num_rings = static_cast<int>(rings.size());
  c.counters = internode_counters->get();
  return c;
}

void Buffer::Impl::internodeDispatchSend(intranode::DispatchArgs a, bool cached, const NormalConfig& config,
                                         uintptr_t stream) {
  const char* call = "dispatch";
  a.layout = dispatchLayout(cfg.num_ranks, a, cached);
  const internode::Context c =
      internodeContext(call, config, a.num_experts, internode::recordBytes(a.layout.token_stride, topo.ranks_per_node));
  if (a.send_pos == nullptr) UCCL_EP_THROW_ARG("{}: across nodes send_pos is needed (every record carries it)", call);
  if (!cached && a.recv_gbl_rank_prefix_sum == nullptr) {
    UCCL_EP_THROW_ARG("{}: across nodes the handle's recv_gbl_rank_prefix_sum is an output", call);
  }
  // The own tokens' lists and the staging of what this rank receives live in its nvl buffer, as within a node.
  const size_t own = a.layout.dispatchBytes(a.num_tokens, 0);
  if (own > static_cast<size_t>(cfg.num_nvl_bytes)) {
    UCCL_EP_THROW_ARG("{}: the NVLink buffer is too small: dispatching {} tokens needs {} bytes before any row, the "
                      "buffer has num_nvl_bytes={}",
                      call, a.num_tokens, own, cfg.num_nvl_bytes);
  }
  a.report_to_host = !cached && a.num_worst_tokens == 0;
  a.cached = cached;
  if (a.report_to_host) __atomic_store_n(&host_counts->host()->ready, 0, __ATOMIC_RELEASE);
  pending_dispatch.reset();
  pending_internode.reset();
  internode::launchDispatchSend(c, a, cached ? nullptr : a.recv_gbl_rank_prefix_sum, internode_prefix->get(),
                                reinterpret_cast<void*>(stream));
  pending_dispatch = a;
  pending_internode = c;
}

void Buffer::Impl::internodeDispatchRecv(const intranode::DispatchOutputs& outputs, uintptr_t stream) {
  intranode::DispatchArgs a = *pending_dispatch;
  const internode::Context c = *pending_internode;
  checkDispatchOutputs(a, outputs);
  if (outputs.num_forward < 0 || (outputs.num_forward > 0 && (outputs.forward_positions == nullptr ||
                                                               outputs.forward_source_token == nullptr))) {
    UCCL_EP_THROW_ARG("dispatch: across nodes the forward map needs both tensors for its {} rows",
                      outputs.num_forward);
  }
  a.out = outputs;
  pending_dispatch.reset();
  pending_internode.reset();
  internode::ForwardMap fwd;
  fwd.positions = outputs.forward_positions;
  fwd.source_token = outputs.forward_source_token;
  fwd.num_forward = outputs.num_forward;
  const int32_t* prefix = a.cached ? internode_prefix->get() : a.rank_prefix_matrix;
  internode::launchDispatchRecv(c, a, prefix, fwd, reinterpret_cast<void*>(stream));
}

void Buffer::Impl::internodeCombine(intranode::CombineArgs a, const NormalConfig& config, uintptr_t stream) {
  const char* call = "combine";
  a.layout = combineLayout(cfg.num_ranks, a);
  const internode::Context c =
      internodeContext(call, config, 0, internode::combineRecordBytes(a.hidden, a.num_topk));
  if (a.is_token_in_rank == nullptr || a.send_pos == nullptr || a.rank_prefix_matrix == nullptr) {
    UCCL_EP_THROW_ARG("{}: across nodes the handle's is_token_in_rank, send_pos and rank_prefix_matrix are needed",
                      call);
  }
  if (a.num_forward < 0 || (a.num_forward > 0 && (a.forward_positions == nullptr || a.forward_source_token == nullptr))) {
    UCCL_EP_THROW_ARG("{}: across nodes the handle's forward map is needed for its {} rows", call, a.num_forward);
  }
  internode::launchCombine(c, a, reinterpret_cast<void*>(stream));
}

int Buffer::dispatchForwardCount() const {
  const Impl& m = *impl_;
  m.requireConnected("dispatch");
  return m.internode ? __atomic_load_n(&m.host_counts->host()->num_forward, __ATOMIC_ACQUIRE) : 0;
}

}  // namespace uccl::ep::runtime
