// The proxy work of one low-latency call as a transport-floor plan (uccl_ep/proxy/transport_floor.hpp): the writes
// (sizes and offsets in the RDMA buffer) and signals (counter and value) the kernels of kernels/low_latency.cu hand
// the proxies, on the lanes of the proxy threads that carry them, and the counters this rank then receives.
// Plain C++ (no CUDA): the CPU build of the bindings serves it, and tests compare it with bench/ll_reference.py.
//
//   dispatch  per global expert e whose rank dst is a proxy peer, with count(e) = tokens of this rank that picked e:
//             a WRITE of count(e) messages from e's staging run to dst's receive slots for (e's local index, this
//             rank) when count(e) > 0, then a SIGNAL adding count(e) + 1 to dst's dispatch count word; ring e % rings.
//   combine   per (local expert el, source rank s), s a proxy peer, with count = the rows s sent to el: a WRITE of
//             count rows from the send area (at the source's begin in layout_range) to s's combine_recv[expert][0]
//             when count > 0, then a SIGNAL adding 1 to s's combine flag of that expert; ring (el * R + s) % rings.
// Ring r is drained by proxy thread threadOfRing(r, threads), the op's lane. Masked ranks (enable_shrink) are not
// modelled: the floor is the unmasked call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ll_layout.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"

namespace uccl::ep::runtime {

enum class LowLatencyCall : uint8_t { kDispatch = 0, kCombine = 1 };
// "dispatch" or "combine" (the Python names); InvalidArgument otherwise.
LowLatencyCall lowLatencyCallOf(const std::string& name);

struct LowLatencyFloorArgs {
  kernels::ll::Layout layout;
  LowLatencyCall call = LowLatencyCall::kDispatch;
  int rank = 0;
  std::vector<int32_t> counts;      // [R * E]: counts[s * E + e] = tokens of rank s whose top-k holds expert e
  std::vector<uint8_t> proxy_peer;  // [R]: nonzero when rank p is reached through the proxies
  int half = 0;                     // the buffer half whose offsets and signal words the plan uses
  int num_rings = 1;                // the rings the kernels push into (Buffer: 2 per proxy thread)
  int num_threads = 1;              // proxy threads, one lane each
};

// Throws InvalidArgument naming the argument whose size or value does not fit the layout.
proxy::FloorPlan lowLatencyFloorPlan(const LowLatencyFloorArgs& args);

}  // namespace uccl::ep::runtime
