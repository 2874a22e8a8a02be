#include "transport/verbs/device_select.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <functional>
#include <memory>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::verbs {
namespace {

// The device list, freed on every exit path. Opened contexts stay valid after the list is freed.
class DeviceList {
 public:
  explicit DeviceList(const VerbsApi& api) : api_(api) {
    list_ = api_.getDeviceList(&count_);
    if (list_ == nullptr) count_ = 0;
  }
  ~DeviceList() {
    if (list_ != nullptr) api_.freeDeviceList(list_);
  }
  DeviceList(const DeviceList&) = delete;
  DeviceList& operator=(const DeviceList&) = delete;

  int size() const { return count_; }
  ibv_device* at(int i) const { return list_[i]; }
  std::string name(int i) const { return api_.deviceName(list_[i]); }
  int find(const std::string& name) const {
    for (int i = 0; i < count_; ++i) {
      if (this->name(i) == name) return i;
    }
    return -1;
  }
  std::string names() const {
    std::string s;
    for (int i = 0; i < count_; ++i) s += (i ? ", " : "") + name(i);
    return s.empty() ? "none" : s;
  }

 private:
  const VerbsApi& api_;
  ibv_device** list_ = nullptr;
  int count_ = 0;
};

// Opens `dev` and settles its port: `want` when non-zero (must be ACTIVE), else the first ACTIVE one.
// Returns a device with ctx == nullptr when no ACTIVE port exists and `quiet` (probing with UCCL_IB_HCA unset).
OpenedDevice openWithPort(const VerbsApi& api, ibv_device* dev, const std::string& name, int want, bool quiet) {
  OpenedDevice d;
  d.name = name;
  d.ctx = api.openDevice(dev);
  UCCL_EP_CHECK(d.ctx != nullptr, "verbs: ibv_open_device({}) failed", name);
  auto closeOnThrow = std::unique_ptr<ibv_context, std::function<void(ibv_context*)>>(
      d.ctx, [&api](ibv_context* c) { api.closeDevice(c); });
  UCCL_EP_CHECK(api.queryDevice(d.ctx, &d.device_attr) == 0, "verbs: ibv_query_device({}) failed", name);
  const int ports = d.device_attr.phys_port_cnt;
  if (want > 0) {
    if (want > ports)
      UCCL_EP_THROW("verbs: UCCL_IB_HCA asks for {} port {}, but {} has {} port(s)", name, want, name, ports);
    UCCL_EP_CHECK(api.queryPort(d.ctx, static_cast<uint8_t>(want), &d.port_attr) == 0,
                  "verbs: ibv_query_port({} port {}) failed", name, want);
    if (d.port_attr.state != IBV_PORT_ACTIVE) {
      UCCL_EP_THROW("verbs: {} port {} is {} (expected ACTIVE)", name, want, portStateName(d.port_attr.state));
    }
    d.port = static_cast<uint8_t>(want);
    closeOnThrow.release();
    return d;
  }
  for (int p = 1; p <= ports; ++p) {
    ibv_port_attr attr{};
    if (api.queryPort(d.ctx, static_cast<uint8_t>(p), &attr) == 0 && attr.state == IBV_PORT_ACTIVE) {
      d.port = static_cast<uint8_t>(p);
      d.port_attr = attr;
      closeOnThrow.release();
      return d;
    }
  }
  if (quiet) return OpenedDevice{};  // closeOnThrow closes the context
  UCCL_EP_THROW("verbs: {} has no ACTIVE port among its {} port(s) (expected at least one ACTIVE)", name, ports);
}

}  // namespace

const char* portStateName(int state) {
  switch (state) {
    case IBV_PORT_NOP:
      return "NOP";
    case IBV_PORT_DOWN:
      return "DOWN";
    case IBV_PORT_INIT:
      return "INIT";
    case IBV_PORT_ARMED:
      return "ARMED";
    case IBV_PORT_ACTIVE:
      return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER:
      return "ACTIVE_DEFER";
    default:
      return "UNKNOWN";
  }
}

std::vector<HcaEntry> parseHcaList(const std::string& spec_in) {
  std::string spec = spec_in;
  if (!spec.empty() && spec[0] == '=') spec.erase(0, 1);
  if (!spec.empty() && spec[0] == '^') {
    UCCL_EP_THROW("verbs: UCCL_IB_HCA='{}': exclusion lists ('^') are not supported; name the devices to use", spec_in);
  }
  std::vector<HcaEntry> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    if (item.empty()) UCCL_EP_THROW("verbs: UCCL_IB_HCA='{}' has an empty entry (expected name[:port],...)", spec_in);
    HcaEntry e;
    const size_t colon = item.find(':');
    e.name = item.substr(0, colon);
    if (colon != std::string::npos) {
      const std::string port = item.substr(colon + 1);
      char* end = nullptr;
      const long p = std::strtol(port.c_str(), &end, 10);
      if (port.empty() || *end != '\0' || p < 1 || p > 255) {
        UCCL_EP_THROW("verbs: UCCL_IB_HCA entry '{}' has port '{}' (expected a number from 1 to 255)", item, port);
      }
      e.port = static_cast<int>(p);
    }
    if (e.name.empty()) UCCL_EP_THROW("verbs: UCCL_IB_HCA entry '{}' has no device name", item);
    out.push_back(e);
  }
  return out;
}

OpenedDevice openSelectedDevice(const VerbsApi& api, const std::string& hca_spec, int thread_index) {
  DeviceList list(api);
  if (list.size() == 0) {
    const std::string why = libibverbsError();
    UCCL_EP_THROW("verbs: no RDMA device found (ibv_get_device_list returned none{})",
                  why.empty() ? std::string() : "; libibverbs " + why);
  }
  const size_t t = static_cast<size_t>(thread_index < 0 ? 0 : thread_index);

  if (!hca_spec.empty()) {
    const std::vector<HcaEntry> entries = parseHcaList(hca_spec);
    for (const HcaEntry& e : entries) {
      if (list.find(e.name) < 0) {
        UCCL_EP_THROW("verbs: UCCL_IB_HCA names '{}', which is not an RDMA device on this host (devices: {})", e.name,
                      list.names());
      }
    }
    const HcaEntry& e = entries[t % entries.size()];
    const int i = list.find(e.name);
    return openWithPort(api, list.at(i), e.name, e.port, /*quiet=*/false);
  }

  // Unset: probe every device, keep those with an ACTIVE port, and pick round-robin by thread index.
  std::vector<int> usable;
  for (int i = 0; i < list.size(); ++i) {
    OpenedDevice d = openWithPort(api, list.at(i), list.name(i), 0, /*quiet=*/true);
    if (d.ctx != nullptr) {
      usable.push_back(i);
      api.closeDevice(d.ctx);
    }
  }
  if (usable.empty()) {
    UCCL_EP_THROW("verbs: no RDMA device has an ACTIVE port (devices: {}; set UCCL_IB_HCA=name:port)", list.names());
  }
  const int i = usable[t % usable.size()];
  return openWithPort(api, list.at(i), list.name(i), 0, /*quiet=*/false);
}

}  // namespace uccl::ep::transport::verbs
