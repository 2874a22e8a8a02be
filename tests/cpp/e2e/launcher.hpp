// Starts e2e_worker processes (optionally inside network namespaces) and collects their exit codes and stderr.
#pragma once

#include <string>
#include <vector>

namespace uccl::ep::e2e {

struct Outcome {
  int exit_code = -1;    // -1: killed after the deadline
  std::string output;    // stdout + stderr
  double seconds = 0;
};

struct Launch {
  std::vector<std::string> argv;  // full command line (argv[0] = program)
  std::vector<std::string> env;   // extra NAME=VALUE
};

// Runs all launches at once; kills any still running after `deadline_s`.
std::vector<Outcome> runAll(const std::vector<Launch>& launches, double deadline_s);

// Removes the shared-memory regions of ranks that are gone (killed by a fault test), as the next shm transport
// would at start-up; returns how many. A no-op where the fabric backend is not built.
size_t sweepDeadRanksShm();

int freeTcpPort();

// UCCL_EP_TIMEOUT_SECS of the fault tests: short, so that they end soon, yet above any healthy operation, or the
// test names a live rank. Under ThreadSanitizer a healthy first post over tcp;ofi_rxm (the rank's connection to
// itself) has taken more than 3 s, about once in 20 runs, and was then named as the stall; never in Release.
inline constexpr double kFaultTimeoutSecs =
#if defined(__SANITIZE_THREAD__)
    8;
#else
    3;
#endif
// UCCL_EP_TIMEOUT_SECS of the shrink test: long enough that a quarter of it (the bound on the survivors' exchange)
// holds a healthy exchange, the slow first tcp post under ThreadSanitizer included (above), and short of half of it
// (the stall limit at which the proxy drops a peer without a quicker verdict).
inline constexpr double kShrinkTimeoutSecs =
#if defined(__SANITIZE_THREAD__)
    24;
#else
    12;
#endif

// Two namespaces joined by a veth pair (10.77.<n>.1 and .2). Torn down by the destructor.
class NetnsPair {
 public:
  NetnsPair();
  ~NetnsPair();
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string ns(int i) const { return ns_[i]; }
  std::string dev(int i) const { return dev_[i]; }
  std::string addr(int i) const { return addr_[i]; }

 private:
  bool ok_ = false;
  std::string error_;
  std::string ns_[2], dev_[2], addr_[2];
};

}  // namespace uccl::ep::e2e
