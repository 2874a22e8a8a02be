// Every environment variable the library reads, read once through one helper (README lists them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace uccl::ep {

// The longest UCCL_EP_TIMEOUT_SECS accepted (about 11.6 days): far above any real wait, and far below the
// 584 years at which the nanosecond count would overflow uint64_t.
inline constexpr double kMaxTimeoutSecs = 1e6;

// Raw accessors; values that do not parse raise uccl::ep::Error naming the variable. Unset and empty are the same.
std::optional<std::string> envString(const char* name);
int64_t envInt(const char* name, int64_t fallback);
bool envFlag(const char* name, bool fallback);

// The one rule for booleans, here and in Python (through the bindings): 0/1/true/false/on/off/yes/no in any
// case, surrounding whitespace allowed. Anything else throws uccl::ep::Error naming `name`, the value and the
// accepted spellings.
bool parseFlag(const char* name, const std::string& value);
// A log level in any case, surrounding whitespace allowed: trace, debug, info, warn (or warning), error (or err),
// critical, off. Returns the canonical lower-case name (warning -> warn, err -> error); anything else throws
// naming `name`, the value and the accepted levels.
std::string parseLogLevel(const char* name, const std::string& value);

struct Env {
  std::string socket_ifname;              // UCCL_SOCKET_IFNAME
  int gid_index = -1;                     // UCCL_IB_GID_INDEX (-1: detect RoCEv2)
  std::string ib_hca;                     // UCCL_IB_HCA
  int ib_sl = 0;                          // UCCL_IB_SL
  int ib_tc = 0;                          // UCCL_IB_TC
  uint64_t max_inflight_bytes = 0;        // UCCL_IB_MAX_INFLIGHT_BYTES (0: unlimited)
  uint32_t max_inflight_normal = 0;       // UCCL_IB_MAX_INFLIGHT_NORMAL
  uint32_t max_inflight_low_latency = 0;  // UCCL_IB_MAX_INFLIGHT_LOW_LATENCY
  std::string transport = "auto";         // UCCL_EP_TRANSPORT: verbs | efa | tcp | shm | auto
  std::string fabric_hmem = "auto";       // UCCL_EP_FABRIC_HMEM: auto | on | off (GPU memory through libfabric)
  int num_proxy_threads = 4;              // UCCL_EP_NUM_PROXY_THREADS
  int ranks_per_node = 0;                 // UCCL_EP_RANKS_PER_NODE (0: unset)
  int local_world_size = 0;               // LOCAL_WORLD_SIZE, torchrun's ranks on this host (0: unset)
  bool normal_mnnvl = false;              // UCCL_EP_NORMAL_MNNVL or DEEP_EP_NORMAL_MNNVL true
  std::string normal_mnnvl_source;        // the variable that made normal_mnnvl true ("" when false), for messages
  std::string normal_path = "auto";       // UCCL_EP_NORMAL_PATH: auto | pipelined | staged (kernels/intranode.hpp)
  double timeout_secs = 100.0;            // UCCL_EP_TIMEOUT_SECS, in (0, kMaxTimeoutSecs]
  std::string log_level = "info";         // UCCL_LOG_LEVEL, canonical (parseLogLevel)

  // timeout_secs in nanoseconds. readEnv() only stores values in (0, kMaxTimeoutSecs]; a value set by hand
  // outside that range is clamped to [0, kMaxTimeoutSecs] (NaN gives 0) rather than cast unchecked.
  uint64_t timeoutNs() const;
};

// Read on first use; later changes to the environment are not seen (tests use readEnv directly). A bad value
// throws on every call, so each API call that needs the environment names the variable.
const Env& env();
Env readEnv();

}  // namespace uccl::ep
