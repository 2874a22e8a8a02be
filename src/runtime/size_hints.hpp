// Buffer sizes the kernels need: for a Config in normal mode (uccl.ep.Config.get_nvl_buffer_size_hint /
// get_rdma_buffer_size_hint), and for a shape in low-latency mode (Buffer.get_low_latency_rdma_size_hint, at the end).
// Plain C++: the CPU build of the bindings serves them too. The normal-mode hints are upper bounds from one formula
// that holds for every kernel version, not tuned to the byte:
//
//   token_bytes = kernels/internode.hpp recordBytes(hidden_bytes, ceil(hidden_bytes / 128) * 4, kMaxTopk):
//                 the row, kMaxTopk * (8 + 4) (top-k ids and weights), one float scale per 128 bytes of row (FP8
//                 payloads), 12 bytes of source index and destination mask, rounded up to 16 bytes
//   per ring    = recv_tokens * token_bytes + 64 (head/tail counters), one ring per (channel, peer)
//   nvl hint    = channels * nvl_peers * per ring (nvl recv tokens)             rounded up to kBufferSizeUnit
//   rdma hint   = channels * nodes * per ring (rdma recv tokens) * 2            rounded up to kBufferSizeUnit
//                 (a send and a receive ring per node); 0 when the NVLink domain holds every rank
//
// channels = num_sms / 2. The node size comes from the argument when positive, else from the environment
// (runtime/topology.hpp: UCCL_EP_RANKS_PER_NODE, LOCAL_WORLD_SIZE), else 8. With UCCL_EP_NORMAL_MNNVL /
// DEEP_EP_NORMAL_MNNVL every rank is an NVLink peer.
#pragma once

#include <cstddef>

namespace uccl::ep::runtime {

struct SizeHintArgs {
  int num_sms = 20;
  int recv_tokens = 256;  // num_max_nvl_chunked_recv_tokens or num_max_rdma_chunked_recv_tokens
  long long hidden_bytes = 0;
  int num_ranks = 1;
  int num_ranks_per_node = 0;  // 0: from the environment
};

// Throw InvalidArgument naming the argument for a non-positive size, rank count or SM count.
size_t nvlBufferSizeHint(const SizeHintArgs& a);
size_t rdmaBufferSizeHint(const SizeHintArgs& a);

// num_rdma_bytes low-latency mode needs (Buffer.get_low_latency_rdma_size_hint): both halves of the layout of
// kernels/ll_layout.hpp, a multiple of kBufferSizeUnit. Throws InvalidArgument naming the argument for any sizes a
// low-latency call would reject (the same check, runtime::lowLatencyLayout).
size_t lowLatencyRdmaSizeHint(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts);

}  // namespace uccl::ep::runtime
