// TEMPORARY stand-in until the kernels branch lands (it defines these in this header itself).
#pragma once
#include "kernels/intranode.hpp"
#include "kernels/low_latency.hpp"
namespace uccl::ep::kernels {
using ll::ErrorRecord;
using ll::kNoError; using ll::kTimeout; using ll::kRingError; using ll::kSlotOverflow;
using ll::kOpDispatchSend; using ll::kOpDispatchRecv; using ll::kOpCombineSend; using ll::kOpCombineRecv;
using intranode::kOpReuse; using intranode::kOpReady; using intranode::kOpWorstOverflow;
}
