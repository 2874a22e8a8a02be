// Producer kernels of the GPU ring tests, behind plain launch functions so the tests and the host consumer
// compile as host C++ (the consumer half of ring.hpp is host-only and hidden from nvcc's device pass).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::test {

struct ProducerResult {
  uint32_t pushed;  // descriptors committed
  uint32_t status;  // ring::Status of the last push or wait
  uint64_t last_ticket;
  uint64_t elapsed_ns;  // from the producer's first push to its return (GPU globaltimer)
  uint64_t violations;  // fence checks that failed (waitCompleted returned before the work was done)
};

// The descriptor producer `producer` pushes as its `seq`-th: a WRITE whose fields are plain integers to the
// ring, so the consumer can check identity and order.
UCCL_EP_HOST_DEVICE inline ring::Descriptor taggedDescriptor(uint32_t producer, uint32_t seq) {
  return ring::makeWrite(0, 0, uint64_t{seq} * ring::kOffsetUnit, 0, uint64_t{producer} * ring::kOffsetUnit, seq);
}

// One producer per warp (lane 0), blocks x warps_per_block producers; out[producer] gets each one's result.
// pushSequence: push per_producer tagged descriptors; with wait_last, then waitCompleted on the last ticket.
cudaError_t launchPushSequence(const ring::RingView& r, uint32_t blocks, uint32_t warps_per_block,
                               uint32_t per_producer, uint64_t timeout_ns, bool wait_last, ProducerResult* out,
                               cudaStream_t stream);

// pushAndFence: push, waitCompleted(ticket), then check that processed[ticket] (host-mapped, set by the
// consumer before it publishes completed) and RingControl::completed are visible; count violations.
cudaError_t launchPushAndFence(const ring::RingView& r, uint32_t blocks, uint32_t warps_per_block,
                               uint32_t per_producer, uint64_t timeout_ns, const uint64_t* processed,
                               ProducerResult* out, cudaStream_t stream);

}  // namespace uccl::ep::test
