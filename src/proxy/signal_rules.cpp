#include "proxy/signal_rules.hpp"

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::proxy {

SignalPath resolveSignalPath(SignalPath asked, const transport::Transport& t) {
  const uint32_t caps = t.capabilities();
  const bool ordered = (caps & transport::kOrderedDelivery) != 0;
  const bool atomics = (caps & transport::kNativeAtomics) != 0;
  const bool imm = (caps & transport::kRemoteCqData) != 0;
  switch (asked) {
    case SignalPath::kAuto:
      UCCL_EP_CHECK(atomics || imm, "transport {} offers neither native atomics nor remote CQ data for signals",
                    t.name());
      return (atomics && ordered) || !imm ? SignalPath::kAtomic : SignalPath::kImmediate;
    case SignalPath::kAtomic:
      UCCL_EP_CHECK(atomics, "signal path 'atomic' asked for, but transport {} has no native atomics", t.name());
      return SignalPath::kAtomic;
    case SignalPath::kImmediate:
      UCCL_EP_CHECK(imm, "signal path 'immediate' asked for, but transport {} has no remote CQ data", t.name());
      return SignalPath::kImmediate;
  }
  UCCL_EP_THROW("unknown signal path {}", static_cast<int>(asked));
}

}  // namespace uccl::ep::proxy
