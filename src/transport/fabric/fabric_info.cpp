// fi_getinfo for the libfabric backend: optional features, their fallback order, and the tcp domain choice.
#include "transport/fabric/fabric_info.hpp"
#include "transport/fabric/libfabric_loader.hpp"

#include <dirent.h>
#include <fmt/format.h>
#include <rdma/fi_endpoint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/process.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport::fabric {
namespace {

constexpr uint32_t kApiVersion = FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION);

// Optional features as bits of a "dropped" mask. Counting the mask up from 0 tries every combination, and
// because lower bits are given up first the preference is: ordering, then FI_SOURCE, then delivery complete,
// then atomics (the last one is what the proxy's native-signal path needs most).
enum Dropped : uint32_t { kDropOrder = 1, kDropSource = 2, kDropDelivery = 4, kDropAtomics = 8, kDropAll = 16 };

std::string tostr(const void* data, enum fi_type type) {
  char buf[1024];
  fi_tostr_r(buf, sizeof(buf), data, type);
  return buf;
}

// shm names its region /dev/shm/<pid>:<uid>:<n> by default and refuses fi_enable (EBUSY) when a file of that name
// records a live owner. A process killed before closing leaves its file behind, so a later process that gets the
// same pid finds "itself" as the owner and cannot open. We name each endpoint ourselves: the pid plus a random
// tag, with no "fi_shm://" prefix so that shm takes the name as it is. The width is fixed because every rank's
// address must have the same length (the default names grow a digit with the pid and the endpoint count).
constexpr size_t kShmNameLength = 8 + 10 + 1 + 16;  // uccl_ep_<10-digit pid>_<16 hex digits>

void setShmName(fi_info& hints) {
  // A rank that died (SIGKILL) never closed its endpoints: its regions would stay in /dev/shm for good.
  static std::once_flag swept;
  std::call_once(swept, [] {
    const size_t removed = removeStaleShmRegions("/dev/shm");
    if (removed > 0) log().info("fabric/shm: removed {} region(s) left in /dev/shm by dead processes", removed);
  });
  static thread_local std::mt19937_64 gen{std::random_device{}()};
  const std::string name = fmt::format("uccl_ep_{:010d}_{:016x}", static_cast<long>(getpid()), gen());
  hints.addr_format = FI_ADDR_STR;
  hints.src_addr = strdup(name.c_str());  // fi_freeinfo frees it
  UCCL_EP_CHECK(hints.src_addr != nullptr, "fabric/shm: out of memory naming the endpoint");
  hints.src_addrlen = name.size() + 1;
}

InfoPtr makeHints(const std::string& prov, uint32_t dropped, bool hmem) {
  if (!libfabric().loaded()) {
    UCCL_EP_THROW("fabric/{}: libfabric is not available ({}); install libfabric 1.x to use the tcp, shm or efa "
                  "transports",
                  prov, libfabric().error());
  }
  InfoPtr hints(fi_allocinfo());
  UCCL_EP_CHECK(hints != nullptr, "fabric: fi_allocinfo failed for provider {}", prov);
  hints->fabric_attr->prov_name = strdup(prov.c_str());  // fi_freeinfo frees it
  hints->ep_attr->type = FI_EP_RDM;
  // FI_MSG only so that zero-length receives can be posted when a provider sets FI_RX_CQ_DATA.
  hints->caps = FI_RMA | FI_WRITE | FI_READ | FI_REMOTE_WRITE | FI_REMOTE_READ | FI_MSG;
  if (!(dropped & kDropAtomics)) hints->caps |= FI_ATOMIC;
  if (!(dropped & kDropSource)) hints->caps |= FI_SOURCE;
  if (hmem) hints->caps |= FI_HMEM;
  // Modes we can live with: every op carries a fi_context2 from our pool, and remote CQ data may consume a
  // posted receive.
  hints->mode = FI_CONTEXT | FI_CONTEXT2 | FI_RX_CQ_DATA;
  // Provider keys only where the provider needs them (efa's come from the NIC): tcp and shm then take the random
  // keys we request instead of their own, which count up from 1.
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_ENDPOINT;
  if (prov == "efa") hints->domain_attr->mr_mode |= FI_MR_PROV_KEY;
  if (hmem) hints->domain_attr->mr_mode |= FI_MR_HMEM;  // device memory is registered, and named by its iface
  hints->domain_attr->threading = FI_THREAD_DOMAIN;  // one proxy thread per Transport
  hints->domain_attr->av_type = FI_AV_TABLE;
  if (!(dropped & kDropDelivery)) hints->tx_attr->op_flags = FI_DELIVERY_COMPLETE;
  if (!(dropped & kDropOrder)) {
    hints->tx_attr->msg_order = FI_ORDER_WAW | FI_ORDER_RMA_WAW;
    if (!(dropped & kDropAtomics)) hints->tx_attr->msg_order |= FI_ORDER_ATOMIC_WAW;
  }
  if (prov == "shm") setShmName(*hints);
  return hints;
}

bool isLoopback(const fi_info& i) { return i.domain_attr->name && std::string(i.domain_attr->name) == "lo"; }
bool isIpv4(const fi_info& i) { return i.addr_format == FI_SOCKADDR_IN; }

// Domain choice (only tcp lists several): options.ifname (UCCL_SOCKET_IFNAME) when set; else "lo" when every
// peer is on this host (loopback needs no working NIC, and is what single-host tests should use); else the first
// non-loopback interface, since "lo" cannot reach another host. IPv4 is preferred within an interface because
// rxm then names peers by the address that `ip addr` shows. shm and efa take the provider's first entry.
const fi_info* pickDomain(const fi_info* list, const TransportOptions& o, const std::string& provider) {
  if (provider != "tcp") return list;
  auto best = [&](auto&& accept) -> const fi_info* {
    const fi_info* any = nullptr;
    for (const fi_info* i = list; i; i = i->next) {
      if (!accept(*i)) continue;
      if (isIpv4(*i)) return i;
      if (!any) any = i;
    }
    return any;
  };
  if (!o.ifname.empty()) {
    return best([&](const fi_info& i) { return i.domain_attr->name && o.ifname == i.domain_attr->name; });
  }
  if (o.all_peers_local) {
    if (const fi_info* lo = best(isLoopback)) return lo;
  }
  return best([](const fi_info& i) { return !isLoopback(i); });
}

std::string domainNames(const fi_info* list) {
  std::string out;
  for (const fi_info* i = list; i; i = i->next) {
    out += fmt::format("{}{}({})", out.empty() ? "" : ", ", i->domain_attr->name ? i->domain_attr->name : "?",
                       i->fabric_attr->name ? i->fabric_attr->name : "?");
  }
  return out;
}

}  // namespace

std::string providerString(const std::string& provider) {
  if (provider == "tcp") return "tcp;ofi_rxm";
  if (provider == "shm" || provider == "efa") return provider;
  UCCL_EP_THROW("fabric: unknown provider '{}' (expected efa, tcp or shm)", provider);
}

InfoPtr shmLaneInfo(const fi_info& info, size_t depth) {
  InfoPtr copy(fi_dupinfo(&info));
  UCCL_EP_CHECK(copy != nullptr, "fabric/shm: fi_dupinfo failed");
  free(copy->src_addr);  // fi_dupinfo copied the first endpoint's name
  copy->src_addr = nullptr;
  setShmName(*copy);
  copy->tx_attr->size = std::min(copy->tx_attr->size, depth);
  copy->rx_attr->size = std::min(copy->rx_attr->size, depth);
  return copy;
}

Selection selectInfo(const TransportOptions& options, const std::string& provider, bool hmem) {
  const std::string prov = providerString(provider);
  std::string seenDomains;
  int lastError = -FI_ENODATA;
  for (uint32_t dropped = 0; dropped < kDropAll; ++dropped) {
    InfoPtr hints = makeHints(prov, dropped, hmem);
    fi_info* raw = nullptr;
    const int rc = fi_getinfo(kApiVersion, nullptr, nullptr, 0, hints.get(), &raw);
    if (rc != 0) {
      lastError = rc;
      continue;
    }
    InfoPtr list(raw);
    const fi_info* chosen = pickDomain(list.get(), options, provider);
    if (!chosen) {
      seenDomains = domainNames(list.get());
      continue;
    }
    Selection s;
    s.info.reset(fi_dupinfo(chosen));
    UCCL_EP_CHECK(s.info != nullptr, "fabric/{}: fi_dupinfo failed", prov);
    fi_freeinfo(s.info->next);  // fi_dupinfo copies one entry, but be sure the list ends here
    s.info->next = nullptr;
    s.atomics = !(dropped & kDropAtomics) && (s.info->caps & FI_ATOMIC);
    s.source = !(dropped & kDropSource) && (s.info->caps & FI_SOURCE);
    s.delivery = !(dropped & kDropDelivery) && (s.info->tx_attr->op_flags & FI_DELIVERY_COMPLETE);
    s.ordered = !(dropped & kDropOrder);
    s.hmem = hmem && (s.info->caps & FI_HMEM);
    log().debug("fabric/{}: fi_getinfo granted the hints{} with optional features dropped mask {:#x}", prov,
                hmem ? " with FI_HMEM" : "", dropped);
    return s;
  }
  if (!seenDomains.empty()) {
    UCCL_EP_THROW("fabric/{}: no domain matches (ifname '{}', all_peers_local {}); the provider offers: {}", prov,
                  options.ifname, options.all_peers_local, seenDomains);
  }
  UCCL_EP_THROW("fabric/{}: fi_getinfo found no FI_EP_RDM endpoint with FI_RMA and remote write{}: {}", prov,
                hmem ? " and FI_HMEM" : "", fi_strerror(-lastError));
}

bool orderedDelivery(const fi_info& info) {
  constexpr uint64_t kNeeded = FI_ORDER_WAW | FI_ORDER_RMA_WAW;
  const bool atomics = info.caps & FI_ATOMIC;
  const uint64_t needed = kNeeded | (atomics ? FI_ORDER_ATOMIC_WAW : 0);
  if ((info.tx_attr->msg_order & needed) != needed) return false;
  return info.ep_attr->max_order_waw_size >= info.ep_attr->max_msg_size;
}

std::string describeInfo(const fi_info& i) {
  return fmt::format(
      "provider {} fabric {} domain {} | caps [{}] | mode [{}] | mr_mode [{}] | tx op_flags [{}] | tx msg_order [{}] "
      "| max_order_waw_size {} | cq_data_size {} | tx size {} inject {} | rx size {} | progress data {}",
      i.fabric_attr->prov_name, i.fabric_attr->name, i.domain_attr->name, tostr(&i.caps, FI_TYPE_CAPS),
      tostr(&i.mode, FI_TYPE_MODE), tostr(&i.domain_attr->mr_mode, FI_TYPE_MR_MODE),
      tostr(&i.tx_attr->op_flags, FI_TYPE_OP_FLAGS), tostr(&i.tx_attr->msg_order, FI_TYPE_MSG_ORDER),
      i.ep_attr->max_order_waw_size, i.domain_attr->cq_data_size, i.tx_attr->size, i.tx_attr->inject_size,
      i.rx_attr->size, tostr(&i.domain_attr->data_progress, FI_TYPE_PROGRESS));
}

int shmNamePid(const std::string& name) {
  const std::string prefix = "uccl_ep_";
  if (name.size() != kShmNameLength || name.compare(0, prefix.size(), prefix) != 0 || name[prefix.size() + 10] != '_') {
    return 0;
  }
  const std::string digits = name.substr(prefix.size(), 10);
  if (digits.find_first_not_of("0123456789") != std::string::npos ||
      name.find_first_not_of("0123456789abcdef", prefix.size() + 11) != std::string::npos) {
    return 0;
  }
  return static_cast<int>(std::stol(digits));
}

size_t removeStaleShmRegions(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  size_t removed = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const pid_t pid = static_cast<pid_t>(shmNamePid(name));
    if (!uccl::ep::processGone(pid)) continue;  // alive, or not ours to judge
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::getuid()) continue;
    if (::unlink(path.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace uccl::ep::transport::fabric

namespace uccl::ep::transport {

bool fabricProviderAvailable(const std::string& provider) {
  std::string prov;
  try {
    prov = fabric::providerString(provider);
  } catch (const Error&) {
    return false;
  }
  if (!fabric::libfabric().loaded()) return false;
  fabric::InfoPtr hints(fi_allocinfo());
  if (!hints) return false;
  hints->fabric_attr->prov_name = strdup(prov.c_str());
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_RMA | FI_REMOTE_WRITE;
  hints->mode = FI_CONTEXT | FI_CONTEXT2 | FI_RX_CQ_DATA;
  // Provider keys only where the provider needs them (efa's come from the NIC): tcp and shm then take the random
  // keys we request instead of their own, which count up from 1.
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_ENDPOINT;
  if (prov == "efa") hints->domain_attr->mr_mode |= FI_MR_PROV_KEY;
  fi_info* raw = nullptr;
  const int rc = fi_getinfo(fabric::kApiVersion, nullptr, nullptr, 0, hints.get(), &raw);
  fi_freeinfo(raw);
  return rc == 0;
}

}  // namespace uccl::ep::transport
