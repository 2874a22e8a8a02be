// The value checks of every call, made once per call by the runtime before anything runs, and the layouts they
// yield. Plain C++ (no CUDA): the CPU build of the bindings exposes them, so the Python layer's CPU stand-in of the
// runtime runs the very same checks. Failures throw uccl::ep::InvalidArgument (Python: ValueError) naming the
// call, the argument, the value and what was expected.
#pragma once

#include <cstddef>

#include "kernels/intranode.hpp"
#include "kernels/ll_layout.hpp"
#include "kernels/low_latency.hpp"

namespace uccl::ep::runtime {

// --- low-latency mode ------------------------------------------------------------------------------------------
// The layout for these sizes, after checking them against the limits (kernels/limits.hpp) and the group size: the
// one place low-latency sizes are checked (the calls, the buffer's layouts and the size hint all come through here).
// `call` names the API the sizes came through, first in the message.
kernels::ll::Layout lowLatencyLayout(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts,
                                     const char* call = "low-latency mode");
void checkLowLatencyDispatch(const kernels::ll::Layout& layout, const kernels::ll::DispatchArgs& a);
void checkLowLatencyCombine(const kernels::ll::Layout& layout, const kernels::ll::CombineArgs& a);

// --- normal mode -----------------------------------------------------------------------------------------------
void checkDispatchLayout(int num_ranks, const kernels::intranode::LayoutArgs& a);
// The nvl-buffer layout of a dispatch (cached: the handle's layout, nothing counted, num_experts 0). The bytes it
// needs on this rank depend on the rows it receives, known only on the GPU (the kernels check them exactly); before
// the call the runtime checks dispatchBytes(num_tokens, num_tokens), a rank receiving as many rows as it sends.
kernels::intranode::Layout dispatchLayout(int num_ranks, const kernels::intranode::DispatchArgs& a, bool cached);
// Checks the receive half's outputs against the send half's arguments.
void checkDispatchOutputs(const kernels::intranode::DispatchArgs& sent, const kernels::intranode::DispatchOutputs& out);
// The nvl-buffer layout of a combine; it needs layout.combineBytes(a.num_recv_tokens) bytes on this rank.
kernels::intranode::Layout combineLayout(int num_ranks, const kernels::intranode::CombineArgs& a);

}  // namespace uccl::ep::runtime
