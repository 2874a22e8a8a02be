// Host launchers of the 1-block steps both normal-mode calls share (intranode.cu), for intranode_dispatch.cu and
// intranode_combine.cu. `call` names the step in a launch error, e.g. "dispatch (reuse wait)".
#pragma once

#include "kernels/intranode.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"

namespace uccl::ep::kernels::intranode {

void launchReuse(const Context& ctx, gpuStream_t s, const char* call);
// count: the prefix matrix and the receive counts (a non-cached dispatch); report_to_host: HostCounts too.
void launchPublish(const Context& ctx, const Layout& l, bool count, bool report_to_host, int32_t* prefix,
                   bool have_expert_counts, gpuStream_t s);
void launchArrive(const Context& ctx, size_t pushed_off, gpuStream_t s, const char* call);
void launchFinish(const Context& ctx, gpuStream_t s, const char* call);
// The dispatch grid steps the internode dispatch shares (intranode_dispatch.cu): plan (lists, send_pos and counts
// over ctx.num_ranks destinations) and the staged path's unpack (staging and own rows into the outputs).
void launchDispatchPlan(const Context& ctx, const DispatchArgs& a, gpuStream_t s);
void launchDispatchUnpack(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, gpuStream_t s);

}  // namespace uccl::ep::kernels::intranode
