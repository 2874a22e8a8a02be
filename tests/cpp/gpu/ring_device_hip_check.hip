// HIP compile check of the ring's device side: built by the `hip_check` target with Debian's hipcc
// (--offload-arch=gfx90a, -c). Nothing runs it (no AMD GPU here); it exists so that every platform primitive
// and the producer half of the ring are instantiated in a real AMDGPU device pass, with 64-lane wavefronts,
// and a HIP regression fails the build instead of a user's first launch.
#include <hip/hip_runtime.h>

#include <cstdint>

#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::hip_check {

namespace pf = platform;

static_assert(pf::kWarpSize == 64, "CDNA wavefronts are 64 lanes");
static_assert(UCCL_EP_HIP == 1, "the HIP branch of platform.hpp must be selected");

struct Outcome {
  uint64_t ticket;
  uint32_t status;
  uint32_t lane;
};

// One lane per wavefront pushes a WRITE, then a SIGNAL (ordered after it by the proxy), then fences on the
// signal's ticket, as a dispatch kernel does at the end of a chunk.
__global__ void pushAndWait(ring::RingView r, uint64_t timeout_ns, Outcome* out, uint32_t* payload) {
  const uint32_t wave = (blockIdx.x * blockDim.x + threadIdx.x) / pf::kWarpSize;
  // The payload the descriptor points at is written by the whole block, then ordered before the commit by the
  // barrier plus the release store inside push (invariant 3 of ring.hpp).
  payload[blockIdx.x * blockDim.x + threadIdx.x] = threadIdx.x;
  __syncthreads();
  if (threadIdx.x % pf::kWarpSize != 0) return;
  const ring::Descriptor w = ring::makeWrite(/*dst_rank=*/wave % 8, /*src_region=*/0, uint64_t{wave} * 256,
                                             /*dst_region=*/1, uint64_t{wave} * 256, /*length=*/256);
  ring::PushResult pw = ring::push(r, w, timeout_ns);
  ring::PushResult ps = pw;
  if (pw.status == ring::Status::kOk) ps = ring::push(r, ring::makeSignal(wave % 8, wave, 1), timeout_ns);
  if (ps.status == ring::Status::kOk) ps.status = ring::waitCompleted(r, ps.ticket, timeout_ns);
  out[wave] = Outcome{ps.ticket, static_cast<uint32_t>(ps.status), threadIdx.x};
}

// A NOP as a pure ordering ticket, and the decoder (the proxy's view) compiled for the device too.
__global__ void nopTicket(ring::RingView r, uint64_t timeout_ns, uint64_t* out) {
  if (threadIdx.x != 0) return;
  const ring::PushResult p = ring::push(r, ring::makeNop(), timeout_ns);
  const ring::Decoded d = ring::decode(ring::makeSignal(3, 7, -1));
  out[0] = p.ticket;
  out[1] = static_cast<uint64_t>(p.status);
  out[2] = static_cast<uint64_t>(d.signal_value) + d.signal_index + d.dst_rank;
}

// Every platform primitive at both scopes, so each HIP builtin is lowered for gfx90a.
template <pf::Scope S>
__device__ void exerciseScope(uint64_t* words, uint64_t* out) {
  uint64_t acc = pf::loadAcquire<S>(&words[0]);
  acc += pf::loadRelaxed<S>(&words[1]);
  pf::storeRelease<S>(&words[2], acc);
  pf::storeRelaxed<S>(&words[5], acc);
  acc += pf::fetchAddRelaxed<S>(&words[3], 1);
  pf::fetchMaxRelaxed<S>(&words[4], acc);
  acc += pf::compareExchangeRelaxed<S>(&words[6], acc, acc + 1);
  // 32-bit words, both signednesses, in the last 64-bit word of this scope's eight.
  int32_t* s32 = reinterpret_cast<int32_t*>(&words[7]);
  uint32_t* u32 = reinterpret_cast<uint32_t*>(&words[7]) + 1;
  int32_t a32 = pf::loadAcquire<S>(s32) + pf::loadRelaxed<S>(s32);
  pf::storeRelease<S>(u32, static_cast<uint32_t>(a32));
  pf::storeRelaxed<S>(s32, a32);
  a32 += pf::fetchAddRelaxed<S>(s32, -1);
  a32 += static_cast<int32_t>(pf::fetchAddRelaxed<S>(u32, 1u));
  a32 += pf::compareExchangeRelaxed<S>(s32, 0, a32);
  a32 += static_cast<int32_t>(pf::compareExchangeRelaxed<S>(u32, 0u, 1u));
  pf::fenceAcqRel<S>();
  out[static_cast<int>(S)] = acc + static_cast<uint64_t>(a32);
}

__global__ void primitives(uint64_t* words, pf::U128* wide, uint64_t* out) {
  const uint64_t t0 = pf::nowNs();
  exerciseScope<pf::Scope::kDevice>(words, out);
  exerciseScope<pf::Scope::kSystem>(words + 8, out);
  pf::store128Release(&wide[threadIdx.x], t0, pf::nowNs() - t0);
}

}  // namespace uccl::ep::hip_check
