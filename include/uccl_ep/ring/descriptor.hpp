// The work descriptor: the one contract between GPU producers and CPU proxies.
//
// A descriptor is 16 bytes, written by one 128-bit store (platform::store128Release) whose top bit is the
// ring's lap parity. The consumer reads the 16 bytes with one load and accepts them only when the parity
// matches the lap it expects, so a zero, stale or half-written slot is never taken for work, and no payload
// value is reserved as an "empty" marker.
//
// Memory is named by region index + offset, never by address or key: the proxy looks both regions up in its
// tables and bounds-checks the transfer before posting anything.
//
// Layout (bit 0 = least significant):
//   hi[63]     lap parity (1 on laps 0, 2, 4, ...; 0 on odd laps)
//   hi[62:60]  version (kDescriptorVersion)
//   hi[59:56]  opcode
//   hi[55:40]  destination rank
//   hi[39:36]  source region (local)          WRITE only
//   hi[35:32]  destination region (at dst)    WRITE only
//   hi[31:0]   WRITE: length in bytes         SIGNAL: value added to the counter (int32)
//   lo[31:0]   WRITE: source offset / 16      SIGNAL: counter index in the destination's signal region
//   lo[63:32]  WRITE: destination offset / 16 SIGNAL: zero
//
// Semantics the proxy guarantees: a SIGNAL becomes visible at its destination only after every WRITE that
// precedes it in the same ring is visible there (to any destination).
#pragma once

#include <cstddef>
#include <cstdint>

#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::ring {

inline constexpr uint32_t kDescriptorVersion = 1;
inline constexpr uint32_t kMaxRegions = 16;         // 4 bits each for source and destination region
inline constexpr uint32_t kMaxRanks = 1u << 16;     // 16-bit destination rank
inline constexpr uint64_t kOffsetUnit = 16;         // offsets are 16-byte aligned
inline constexpr uint64_t kMaxRegionBytes = (uint64_t{1} << 32) * kOffsetUnit;  // 64 GiB addressable
inline constexpr uint64_t kMaxWriteBytes = 0xffffffffull;

enum class Opcode : uint8_t {
  kInvalid = 0,
  kWrite = 1,   // copy len bytes from (src_region, src_off) here to (dst_region, dst_off) at dst_rank
  kSignal = 2,  // add value to signal counter `index` at dst_rank, after all earlier writes of the ring
  kNop = 3,     // completes without moving data; producers use it as a pure ordering ticket
};

struct alignas(16) Descriptor {
  uint64_t lo;
  uint64_t hi;
};
static_assert(sizeof(Descriptor) == 16, "descriptor is one 128-bit word");
static_assert(alignof(Descriptor) == 16, "descriptor must be 16-byte aligned for the single store");
static_assert(offsetof(Descriptor, lo) == 0 && offsetof(Descriptor, hi) == 8, "lo word first (little endian)");
static_assert(sizeof(Descriptor) == sizeof(platform::U128), "descriptor and U128 must alias");

namespace bits {
inline constexpr int kParity = 63;
inline constexpr int kVersion = 60;
inline constexpr int kOpcode = 56;
inline constexpr int kDstRank = 40;
inline constexpr int kSrcRegion = 36;
inline constexpr int kDstRegion = 32;
inline constexpr uint64_t kParityMask = uint64_t{1} << kParity;
}  // namespace bits

// Decoded view, used by the proxy and by tests. Producers build descriptors through makeWrite/makeSignal.
struct Decoded {
  Opcode opcode;
  uint32_t version;
  uint32_t dst_rank;
  uint32_t src_region;
  uint32_t dst_region;
  uint64_t src_offset;  // bytes
  uint64_t dst_offset;  // bytes
  uint64_t length;      // bytes (WRITE)
  uint32_t signal_index;
  int32_t signal_value;
  uint32_t reserved;    // must be zero
};

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t headerBits(Opcode op, uint32_t dst_rank) {
  return (uint64_t{kDescriptorVersion} << bits::kVersion) | (uint64_t(op) << bits::kOpcode) |
         (uint64_t(dst_rank & 0xffff) << bits::kDstRank);
}

// Offsets must be multiples of kOffsetUnit; regions < kMaxRegions; the producer checks nothing (hot path):
// the proxy validates every field and rejects what does not fit.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE Descriptor makeWrite(uint32_t dst_rank, uint32_t src_region,
                                                             uint64_t src_offset, uint32_t dst_region,
                                                             uint64_t dst_offset, uint32_t length) {
  Descriptor d;
  d.lo = (src_offset / kOffsetUnit & 0xffffffffull) | ((dst_offset / kOffsetUnit & 0xffffffffull) << 32);
  d.hi = headerBits(Opcode::kWrite, dst_rank) | (uint64_t(src_region & 0xf) << bits::kSrcRegion) |
         (uint64_t(dst_region & 0xf) << bits::kDstRegion) | length;
  return d;
}

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE Descriptor makeSignal(uint32_t dst_rank, uint32_t index, int32_t value) {
  Descriptor d;
  d.lo = index;
  d.hi = headerBits(Opcode::kSignal, dst_rank) | static_cast<uint32_t>(value);
  return d;
}

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE Descriptor makeNop() {
  Descriptor d;
  d.lo = 0;
  d.hi = headerBits(Opcode::kNop, 0);
  return d;
}

// Lap parity for ring position `pos` in a ring of `capacity` (a power of two) slots. Lap 0 writes 1, so the
// zero-filled ring reads as empty without any initialisation pass.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t parityFor(uint64_t pos, uint64_t capacity_log2) {
  return ((~(pos >> capacity_log2)) & 1ull) << bits::kParity;
}

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE Decoded decode(const Descriptor& d) {
  Decoded r;
  r.version = static_cast<uint32_t>((d.hi >> bits::kVersion) & 0x7);
  r.opcode = static_cast<Opcode>((d.hi >> bits::kOpcode) & 0xf);
  r.dst_rank = static_cast<uint32_t>((d.hi >> bits::kDstRank) & 0xffff);
  r.src_region = static_cast<uint32_t>((d.hi >> bits::kSrcRegion) & 0xf);
  r.dst_region = static_cast<uint32_t>((d.hi >> bits::kDstRegion) & 0xf);
  r.src_offset = (d.lo & 0xffffffffull) * kOffsetUnit;
  r.dst_offset = (d.lo >> 32) * kOffsetUnit;
  r.length = d.hi & 0xffffffffull;
  r.signal_index = static_cast<uint32_t>(d.lo & 0xffffffffull);
  r.signal_value = static_cast<int32_t>(static_cast<uint32_t>(d.hi & 0xffffffffull));
  r.reserved = r.opcode == Opcode::kSignal ? static_cast<uint32_t>(d.lo >> 32)
                                           : (r.opcode == Opcode::kNop ? static_cast<uint32_t>(d.hi) : 0);
  return r;
}

}  // namespace uccl::ep::ring
