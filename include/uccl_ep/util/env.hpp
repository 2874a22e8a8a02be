// Every environment variable the library reads, read once through one helper (README lists them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace uccl::ep {

// Raw accessors; values that do not parse raise uccl::ep::Error naming the variable.
std::optional<std::string> envString(const char* name);
int64_t envInt(const char* name, int64_t fallback);
bool envFlag(const char* name, bool fallback);

struct Env {
  std::string socket_ifname;           // UCCL_SOCKET_IFNAME
  int gid_index = -1;                  // UCCL_IB_GID_INDEX (-1: detect RoCEv2)
  std::string ib_hca;                  // UCCL_IB_HCA
  int ib_sl = 0;                       // UCCL_IB_SL
  int ib_tc = 0;                       // UCCL_IB_TC
  uint64_t max_inflight_bytes = 0;     // UCCL_IB_MAX_INFLIGHT_BYTES (0: unlimited)
  uint32_t max_inflight_normal = 0;    // UCCL_IB_MAX_INFLIGHT_NORMAL
  uint32_t max_inflight_low_latency = 0;  // UCCL_IB_MAX_INFLIGHT_LOW_LATENCY
  bool aggressive_atomic = false;      // UCCL_EP_ENABLE_AGGRESSIVE_ATOMIC
  std::string transport = "auto";      // UCCL_EP_TRANSPORT: verbs | efa | tcp | shm | auto
  int num_proxy_threads = 4;           // UCCL_EP_NUM_PROXY_THREADS
  int ranks_per_node = 0;              // UCCL_EP_RANKS_PER_NODE (0: from the launcher)
  bool normal_mnnvl = false;           // UCCL_EP_NORMAL_MNNVL or DEEP_EP_NORMAL_MNNVL
  double timeout_secs = 100.0;         // UCCL_EP_TIMEOUT_SECS
  std::string log_level = "info";      // UCCL_LOG_LEVEL

  uint64_t timeoutNs() const { return static_cast<uint64_t>(timeout_secs * 1e9); }
};

// Read on first use; later changes to the environment are not seen (tests use readEnv directly).
const Env& env();
Env readEnv();

}  // namespace uccl::ep
