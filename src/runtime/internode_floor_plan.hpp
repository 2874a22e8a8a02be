// The proxy work of one internode normal-mode call (kernels/internode.hpp) as a transport-floor plan
// (uccl_ep/proxy/transport_floor.hpp): the writes and signals the kernels hand the proxies, on the lanes of the
// proxy threads that carry them, and the counters this rank then receives.
//
//   counts     (dispatch) per remote rank r: the counts row, one WRITE of its head and expert parts (the kernels post
//              two), then a SIGNAL adding 1 to r's arrival word of this rank.
//   entered    (combine) per remote rank r: a SIGNAL alone adding 1 to r's entered word of this rank.
//   streams    per (channel c, node b) stream this rank sends n records on: chunks of send_chunk records, each a WRITE
//              from the send ring to the peer's receive ring (two where the chunk wraps the ring, each with its
//              SIGNAL) and a SIGNAL adding the chunk's records to the peer's tail word; ring c * N + b.
//   room back  per stream this rank receives n records on: a SIGNAL alone per chunk adding its records to the
//              source's head word (the forwarder's acknowledgements); ring c * N + a.
// The floor posts everything at once: the room the acknowledgements give back is not waited for.
// Plain C++ (no CUDA): the CPU build serves it, and tests check it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/internode.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"

namespace uccl::ep::runtime {

struct InternodeFloorArgs {
  kernels::internode::RdmaLayout layout;  // region_bytes set: the call's rings
  int rank = 0, ranks_per_node = 1, send_chunk = 6;
  uint32_t signal_base = 0;               // the internode signal words' first index
  bool counts = false;                    // a dispatch: the counts exchange first
  bool entered = false;                   // a combine: the entered signals first
  std::vector<int32_t> sent;              // [C * N]: records this rank sends on stream (c, b)
  std::vector<int32_t> received;          // [C * N]: records it receives from its peer on node a, channel c
  int num_rings = 1;                      // the rings the kernels push into (Buffer: 2 per proxy thread)
  int num_threads = 1;                    // proxy threads, one lane each
};

// Throws InvalidArgument naming the argument whose size or value does not fit.
proxy::FloorPlan internodeFloorPlan(const InternodeFloorArgs& args);

}  // namespace uccl::ep::runtime
