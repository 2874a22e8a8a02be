// The libibverbs RC backend, with its seam exposed for tests.
//
// createVerbsTransport() (backends.hpp) is createVerbsTransportWithApi(options, realVerbsApi(), env()). Tests
// pass a fake VerbsApi and an Env of their own. The table is copied; whatever its functions capture must
// outlive the Transport.
#pragma once

#include <memory>

#include "transport/verbs/verbs_api.hpp"
#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/env.hpp"

namespace uccl::ep::transport::verbs {

std::unique_ptr<Transport> createVerbsTransportWithApi(const TransportOptions& options, const VerbsApi& api,
                                                       const Env& env);
bool verbsDeviceAvailableWithApi(const VerbsApi& api);

}  // namespace uccl::ep::transport::verbs
