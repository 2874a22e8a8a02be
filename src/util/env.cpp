#include "uccl_ep/util/env.hpp"

#include <cerrno>
#include <cstdlib>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep {

std::optional<std::string> envString(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int64_t envInt(const char* name, int64_t fallback) {
  auto v = envString(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v->c_str(), &end, 0);
  if (errno != 0 || end == v->c_str() || *end != '\0') {
    UCCL_EP_THROW("environment variable {}='{}' is not an integer", name, *v);
  }
  return x;
}

bool envFlag(const char* name, bool fallback) {
  auto v = envString(name);
  if (!v) return fallback;
  if (*v == "1" || *v == "true" || *v == "TRUE" || *v == "on") return true;
  if (*v == "0" || *v == "false" || *v == "FALSE" || *v == "off") return false;
  UCCL_EP_THROW("environment variable {}='{}' is not a flag (expected 0 or 1)", name, *v);
}

namespace {
double envDouble(const char* name, double fallback) {
  auto v = envString(name);
  if (!v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0' || !(x > 0)) {
    UCCL_EP_THROW("environment variable {}='{}' is not a positive number", name, *v);
  }
  return x;
}

template <typename T>
T nonNegative(const char* name, int64_t fallback) {
  const int64_t v = envInt(name, fallback);
  if (v < 0) UCCL_EP_THROW("environment variable {}={} must not be negative", name, v);
  return static_cast<T>(v);
}
}  // namespace

Env readEnv() {
  Env e;
  e.socket_ifname = envString("UCCL_SOCKET_IFNAME").value_or("");
  e.gid_index = static_cast<int>(envInt("UCCL_IB_GID_INDEX", -1));
  e.ib_hca = envString("UCCL_IB_HCA").value_or("");
  e.ib_sl = nonNegative<int>("UCCL_IB_SL", 0);
  e.ib_tc = nonNegative<int>("UCCL_IB_TC", 0);
  e.max_inflight_bytes = nonNegative<uint64_t>("UCCL_IB_MAX_INFLIGHT_BYTES", 0);
  e.max_inflight_normal = nonNegative<uint32_t>("UCCL_IB_MAX_INFLIGHT_NORMAL", 0);
  e.max_inflight_low_latency = nonNegative<uint32_t>("UCCL_IB_MAX_INFLIGHT_LOW_LATENCY", 0);
  e.aggressive_atomic = envFlag("UCCL_EP_ENABLE_AGGRESSIVE_ATOMIC", false);
  e.transport = envString("UCCL_EP_TRANSPORT").value_or("auto");
  if (e.transport != "auto" && e.transport != "verbs" && e.transport != "efa" && e.transport != "tcp" &&
      e.transport != "shm") {
    UCCL_EP_THROW("UCCL_EP_TRANSPORT='{}' is not one of verbs, efa, tcp, shm, auto", e.transport);
  }
  e.num_proxy_threads = static_cast<int>(envInt("UCCL_EP_NUM_PROXY_THREADS", 4));
  if (e.num_proxy_threads < 1 || e.num_proxy_threads > 64) {
    UCCL_EP_THROW("UCCL_EP_NUM_PROXY_THREADS={} must be between 1 and 64", e.num_proxy_threads);
  }
  e.ranks_per_node = nonNegative<int>("UCCL_EP_RANKS_PER_NODE", 0);
  e.normal_mnnvl = envFlag("UCCL_EP_NORMAL_MNNVL", envFlag("DEEP_EP_NORMAL_MNNVL", false));
  e.timeout_secs = envDouble("UCCL_EP_TIMEOUT_SECS", 100.0);
  e.log_level = envString("UCCL_LOG_LEVEL").value_or("info");
  return e;
}

const Env& env() {
  static const Env e = readEnv();
  return e;
}

}  // namespace uccl::ep
