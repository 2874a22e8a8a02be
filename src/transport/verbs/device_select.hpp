// Which RDMA device and port a Transport uses: UCCL_IB_HCA, round-robin over proxy threads.
//
// UCCL_IB_HCA is a comma list of exact device names, each optionally with ":port" ("mlx5_0", "mlx5_0:1",
// "mlx5_0:1,mlx5_1:1"). Proxy thread t uses entry t % count. A leading '=' on the whole list (NCCL's
// "exact match") is accepted and means the same; NCCL's '^' exclusion and prefix matching are not supported
// and are rejected with an error. Unset: every device with an ACTIVE port takes part, in the order
// ibv_get_device_list gives, each with its first ACTIVE port. Without a port, an entry uses its first
// ACTIVE port; an explicit port must be ACTIVE.
#pragma once

#include <infiniband/verbs.h>

#include <string>
#include <vector>

#include "transport/verbs/verbs_api.hpp"

namespace uccl::ep::transport::verbs {

struct HcaEntry {
  std::string name;
  int port = 0;  // 0: the first ACTIVE port
};

// Throws uccl::ep::Error on a malformed list (empty entry, bad port, '^').
std::vector<HcaEntry> parseHcaList(const std::string& spec);

struct OpenedDevice {
  ibv_context* ctx = nullptr;  // owned by the caller (close through the api)
  std::string name;
  uint8_t port = 0;
  ibv_device_attr device_attr{};
  ibv_port_attr port_attr{};
};

// Opens the device for proxy thread `thread_index` per `hca_spec` (UCCL_IB_HCA). Throws naming the device,
// port, the state found and the state expected, or the devices available when a name is unknown.
OpenedDevice openSelectedDevice(const VerbsApi& api, const std::string& hca_spec, int thread_index);

const char* portStateName(int state);

}  // namespace uccl::ep::transport::verbs
