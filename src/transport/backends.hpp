// Constructors of the backends, for the factory in transport.cpp and for tests that pick one directly.
#pragma once

#include <memory>
#include <string>

#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::transport {

// provider: "efa", "tcp" (tcp;ofi_rxm) or "shm".
std::unique_ptr<Transport> createFabricTransport(const TransportOptions& options, const std::string& provider);
// True when libfabric lists the provider on this host (without opening it).
bool fabricProviderAvailable(const std::string& provider);

std::unique_ptr<Transport> createVerbsTransport(const TransportOptions& options);
bool verbsDeviceAvailable();

// Completes every request at once without moving bytes. With loopback, requests to this rank are carried
// out in memory (writes copy, immediates are delivered, fetch-adds add), so one process can run the proxy
// end to end without a network.
std::unique_ptr<Transport> createNullTransport(const TransportOptions& options, bool loopback);

}  // namespace uccl::ep::transport
