// interfaceAddress: the IPv4 address rank 0 binds to when UCCL_SOCKET_IFNAME names an interface.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "uccl_ep/bootstrap/rendezvous.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::bootstrap {

std::string interfaceAddress(const std::string& ifname) {
  ifaddrs* raw = nullptr;
  if (getifaddrs(&raw) != 0)
    UCCL_EP_THROW("getifaddrs failed while looking up interface '{}': {}", ifname, std::strerror(errno));
  std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> list(raw, &freeifaddrs);

  // Names are collected for the error message: a typo in UCCL_SOCKET_IFNAME is the usual cause, and the
  // fix is obvious once the user sees what the host has.
  std::vector<std::string> names;
  bool name_seen = false;
  for (ifaddrs* it = list.get(); it != nullptr; it = it->ifa_next) {
    if (it->ifa_name == nullptr) continue;
    std::string name = it->ifa_name;
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    if (name != ifname) continue;
    name_seen = true;
    if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(it->ifa_addr)->sin_addr, buf, sizeof(buf));
    return buf;
  }
  std::string available;
  for (const auto& n : names) available += (available.empty() ? "" : ", ") + n;
  if (name_seen) UCCL_EP_THROW("network interface '{}' has no IPv4 address (interfaces: {})", ifname, available);
  UCCL_EP_THROW("network interface '{}' not found (UCCL_SOCKET_IFNAME); available interfaces: {}", ifname, available);
}

}  // namespace uccl::ep::bootstrap
