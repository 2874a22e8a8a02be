#include "uccl_ep/util/env.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <limits>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep {

namespace {
constexpr const char* kFlagSpellings = "0, 1, true, false, on, off, yes, no (any case)";
constexpr const char* kLogLevels = "trace, debug, info, warn (or warning), error (or err), critical, off (any case)";

std::string trimmedLower(const std::string& s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  auto b = std::find_if_not(s.begin(), s.end(), space);
  auto e = std::find_if_not(s.rbegin(), s.rend(), space).base();
  std::string out(b, std::max(b, e));
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}
}  // namespace

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
    UCCL_EP_THROW_ARG("environment variable {}='{}' is not an integer", name, *v);
  }
  return x;
}

bool parseFlag(const char* name, const std::string& value) {
  const std::string v = trimmedLower(value);
  if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "off" || v == "no") return false;
  UCCL_EP_THROW_ARG("environment variable {}='{}' is not a flag (expected one of {})", name, value, kFlagSpellings);
}

bool envFlag(const char* name, bool fallback) {
  auto v = envString(name);
  return v ? parseFlag(name, *v) : fallback;
}

std::string parseLogLevel(const char* name, const std::string& value) {
  const std::string v = trimmedLower(value);
  if (v == "warning") return "warn";
  if (v == "err") return "error";
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    if (v == level) return v;
  }
  UCCL_EP_THROW_ARG("environment variable {}='{}' is not a log level (expected one of {})", name, value, kLogLevels);
}

uint64_t Env::timeoutNs() const {
  if (!(timeout_secs > 0)) return 0;  // also NaN
  return static_cast<uint64_t>(std::min(timeout_secs, kMaxTimeoutSecs) * 1e9);
}

namespace {
// A timeout in seconds. Checked before it is ever turned into nanoseconds: a float-to-integer cast of inf, NaN or
// anything past uint64_t's range is undefined, and used to turn 1e10 into an arbitrary (often tiny) timeout.
double envTimeoutSecs(const char* name, double fallback) {
  auto v = envString(name);
  if (!v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0' || !std::isfinite(x) || !(x > 0) || x > kMaxTimeoutSecs) {
    UCCL_EP_THROW_ARG("environment variable {}='{}' is not a number of seconds in (0, {:g}]", name, *v, kMaxTimeoutSecs);
  }
  return x;
}

// An integer variable within [lo, hi] (README's table gives each range), else InvalidArgument naming it.
template <typename T>
T inRange(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const int64_t v = envInt(name, fallback);
  if (v < lo || v > hi) UCCL_EP_THROW_ARG("environment variable {}={} is outside [{}, {}]", name, v, lo, hi);
  return static_cast<T>(v);
}

template <typename T>
T nonNegative(const char* name, int64_t fallback) {
  return inRange<T>(name, fallback, 0, static_cast<int64_t>(std::min<uint64_t>(std::numeric_limits<T>::max(),
                                                                              std::numeric_limits<int64_t>::max())));
}

// 0 when unset; otherwise a positive int (a launcher that sets it to 0 or garbage is misconfigured, not "unset").
int positiveOrUnset(const char* name) {
  auto v = envString(name);
  if (!v) return 0;
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  if (errno != 0 || end == v->c_str() || *end != '\0' || x < 1 || x > std::numeric_limits<int>::max()) {
    UCCL_EP_THROW_ARG("environment variable {}='{}' is not a positive integer", name, *v);
  }
  return static_cast<int>(x);
}

// The value if it is one of `allowed` (listed in this order when it is not); unset or empty gives `fallback`.
std::string oneOf(const char* name, const char* fallback, std::initializer_list<const char*> allowed) {
  const std::string v = envString(name).value_or(fallback);
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return v;
    list += list.empty() ? a : std::string(", ") + a;
  }
  UCCL_EP_THROW_ARG("{}='{}' is not one of {}", name, v, list);
}
}  // namespace

Env readEnv() {
  Env e;
  e.socket_ifname = envString("UCCL_SOCKET_IFNAME").value_or("");
  e.gid_index = inRange<int>("UCCL_IB_GID_INDEX", -1, -1, 255);
  e.ib_hca = envString("UCCL_IB_HCA").value_or("");
  e.ib_sl = inRange<int>("UCCL_IB_SL", 0, 0, 15);    // 4-bit InfiniBand service level
  e.ib_tc = inRange<int>("UCCL_IB_TC", 0, 0, 255);   // 8-bit traffic class
  e.max_inflight_bytes = nonNegative<uint64_t>("UCCL_IB_MAX_INFLIGHT_BYTES", 0);
  e.max_inflight_normal = nonNegative<uint32_t>("UCCL_IB_MAX_INFLIGHT_NORMAL", 0);
  e.max_inflight_low_latency = nonNegative<uint32_t>("UCCL_IB_MAX_INFLIGHT_LOW_LATENCY", 0);
  e.transport = oneOf("UCCL_EP_TRANSPORT", "auto", {"verbs", "efa", "tcp", "shm", "auto"});
  e.fabric_hmem = oneOf("UCCL_EP_FABRIC_HMEM", "auto", {"auto", "on", "off"});
  e.num_proxy_threads = inRange<int>("UCCL_EP_NUM_PROXY_THREADS", 4, 1, 64);
  e.ranks_per_node = inRange<int>("UCCL_EP_RANKS_PER_NODE", 0, 0, std::numeric_limits<int>::max());
  e.local_world_size = positiveOrUnset("LOCAL_WORLD_SIZE");
  // Both are parsed, so a typo in either is reported even when the other one is set.
  for (const char* name : {"UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"}) {
    if (envFlag(name, false) && !e.normal_mnnvl) {
      e.normal_mnnvl = true;
      e.normal_mnnvl_source = name;
    }
  }
  e.normal_path = oneOf("UCCL_EP_NORMAL_PATH", "auto", {"auto", "pipelined", "staged"});
  e.timeout_secs = envTimeoutSecs("UCCL_EP_TIMEOUT_SECS", 100.0);
  e.log_level = parseLogLevel("UCCL_LOG_LEVEL", envString("UCCL_LOG_LEVEL").value_or("info"));
  return e;
}

const Env& env() {
  static const Env e = readEnv();
  return e;
}

}  // namespace uccl::ep
