// Producer kernels of the GPU ring tests (declared in ring_kernels.hpp).
#include "ring_kernels.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::test {
namespace {

namespace pf = platform;
using ring::Status;

__device__ uint32_t producerId() { return (blockIdx.x * blockDim.x + threadIdx.x) / pf::kWarpSize; }

__global__ void pushSequence(ring::RingView r, uint32_t per_producer, uint64_t timeout_ns, bool wait_last,
                             ProducerResult* out) {
  if (threadIdx.x % pf::kWarpSize != 0) return;
  const uint32_t producer = producerId();
  ProducerResult res{0, static_cast<uint32_t>(Status::kOk), 0, 0, 0};
  const uint64_t start = pf::nowNs();
  for (uint32_t seq = 0; seq < per_producer; ++seq) {
    const ring::PushResult p = ring::push(r, taggedDescriptor(producer, seq), timeout_ns);
    res.status = static_cast<uint32_t>(p.status);
    if (p.status != Status::kOk) break;
    res.last_ticket = p.ticket;
    ++res.pushed;
  }
  if (wait_last && res.pushed > 0 && res.status == static_cast<uint32_t>(Status::kOk)) {
    res.status = static_cast<uint32_t>(ring::waitCompleted(r, res.last_ticket, timeout_ns));
  }
  res.elapsed_ns = pf::nowNs() - start;
  out[producer] = res;
}

__global__ void pushAndFence(ring::RingView r, uint32_t per_producer, uint64_t timeout_ns, const uint64_t* processed,
                             ProducerResult* out) {
  if (threadIdx.x % pf::kWarpSize != 0) return;
  const uint32_t producer = producerId();
  ProducerResult res{0, static_cast<uint32_t>(Status::kOk), 0, 0, 0};
  const uint64_t start = pf::nowNs();
  for (uint32_t seq = 0; seq < per_producer; ++seq) {
    const ring::PushResult p = ring::push(r, taggedDescriptor(producer, seq), timeout_ns);
    Status s = p.status;
    if (s == Status::kOk) s = ring::waitCompleted(r, p.ticket, timeout_ns);
    res.status = static_cast<uint32_t>(s);
    if (s != Status::kOk) break;
    // Acquire loads after the fence: both must show what the consumer published before completed.
    if (pf::loadAcquire<pf::Scope::kSystem>(&processed[p.ticket]) == 0) ++res.violations;
    if (pf::loadAcquire<pf::Scope::kSystem>(&r.control->completed) <= p.ticket) ++res.violations;
    res.last_ticket = p.ticket;
    ++res.pushed;
  }
  res.elapsed_ns = pf::nowNs() - start;
  out[producer] = res;
}

}  // namespace

cudaError_t launchPushSequence(const ring::RingView& r, uint32_t blocks, uint32_t warps_per_block,
                               uint32_t per_producer, uint64_t timeout_ns, bool wait_last, ProducerResult* out,
                               cudaStream_t stream) {
  pushSequence<<<blocks, warps_per_block * pf::kWarpSize, 0, stream>>>(r, per_producer, timeout_ns, wait_last, out);
  return cudaGetLastError();
}

cudaError_t launchPushAndFence(const ring::RingView& r, uint32_t blocks, uint32_t warps_per_block,
                               uint32_t per_producer, uint64_t timeout_ns, const uint64_t* processed,
                               ProducerResult* out, cudaStream_t stream) {
  pushAndFence<<<blocks, warps_per_block * pf::kWarpSize, 0, stream>>>(r, per_producer, timeout_ns, processed, out);
  return cudaGetLastError();
}

}  // namespace uccl::ep::test
