#include "uccl_ep/transport/transport.hpp"

#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport {

std::unique_ptr<Transport> createTransport(const TransportOptions& o) {
  const std::string& k = o.kind;
  if (k == "null") return createNullTransport(o, /*loopback=*/true);
#if UCCL_EP_HAVE_VERBS
  if (k == "verbs") return createVerbsTransport(o);
#endif
#if UCCL_EP_HAVE_FABRIC
  if (k == "efa" || k == "tcp" || k == "shm") return createFabricTransport(o, k);
  if (k == "auto") {
    if (fabricProviderAvailable("efa")) return createFabricTransport(o, "efa");
#if UCCL_EP_HAVE_VERBS
    if (verbsDeviceAvailable()) return createVerbsTransport(o);
#endif
    if (o.all_peers_local && fabricProviderAvailable("shm")) return createFabricTransport(o, "shm");
    return createFabricTransport(o, "tcp");
  }
#endif
  UCCL_EP_THROW("transport '{}' is not available in this build (compiled backends:{}{} null)", k,
#if UCCL_EP_HAVE_FABRIC
                " efa tcp shm",
#else
                "",
#endif
#if UCCL_EP_HAVE_VERBS
                " verbs"
#else
                ""
#endif
  );
}

}  // namespace uccl::ep::transport
