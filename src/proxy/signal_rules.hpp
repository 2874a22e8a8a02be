// How a SIGNAL reaches its counter over a given transport (architecture.md, decision 4): the rules the proxy threads
// and the transport floor (transport_floor.hpp) share, so that the floor posts what a proxy would.
#pragma once

#include <cstdint>

#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy {

// The path `asked` resolves to over `t` (never kAuto): kAuto picks atomics when the transport has native atomics
// and ordered delivery (or no remote CQ data), else immediates. Throws naming the transport when it cannot carry
// the path asked for.
SignalPath resolveSignalPath(SignalPath asked, const transport::Transport& t);

// A signal as immediate data: index << 32 | value in 8 bytes, else index << 16 | value (16-bit each).
class ImmediateCodec {
 public:
  explicit ImmediateCodec(uint32_t immediate_bytes = 8) : wide_(immediate_bytes >= 8) {}
  // *fits (when given): whether index and value survive the narrow form.
  uint64_t encode(uint32_t index, int32_t value, bool* fits) const {
    if (fits != nullptr) *fits = wide_ || (index <= 0xffff && value >= INT16_MIN && value <= INT16_MAX);
    return wide_ ? (uint64_t{index} << 32) | static_cast<uint32_t>(value)
                 : (uint64_t{index} << 16) | static_cast<uint16_t>(value);
  }
  void decode(uint64_t imm, uint64_t* index, int64_t* value) const {
    if (wide_) {
      *index = imm >> 32;
      *value = static_cast<int32_t>(static_cast<uint32_t>(imm));
    } else {
      *index = (imm >> 16) & 0xffff;
      *value = static_cast<int16_t>(static_cast<uint16_t>(imm));
    }
  }

 private:
  bool wide_;
};

}  // namespace uccl::ep::proxy
