// Handing one file descriptor to other processes of this host. A POSIX fd means nothing outside its process, so
// the owner of a VMM allocation exported as an fd serves it on an abstract-namespace Unix socket and every
// importer that connects receives its own duplicate through SCM_RIGHTS. No CUDA here: the tests use a memfd.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

namespace uccl::ep::runtime {

// Longest abstract socket name: sockaddr_un::sun_path (108 bytes) minus the leading NUL.
inline constexpr size_t kMaxFdSocketNameBytes = 107;

// Serves one fd to every process that connects, from a thread of its own, until destroyed. Only processes of
// the same user (SO_PEERCRED) are served. The socket lives in the abstract namespace, so nothing is left in
// the file system when the process dies, and it is private to this network namespace.
class FdServer {
 public:
  // Takes ownership of `fd` (closed by the destructor, also when the constructor throws). `what` names the fd in
  // log lines and errors ("rank 3's shared allocation"). Throws uccl::ep::Error when the socket cannot be set up.
  FdServer(int fd, std::string what);
  // Stops the thread (it polls with a short timeout, so this takes at most about kPollMs), then closes the
  // socket and the fd. A peer that connects afterwards gets ECONNREFUSED and keeps retrying until its timeout.
  ~FdServer();
  FdServer(const FdServer&) = delete;
  FdServer& operator=(const FdServer&) = delete;

  // The abstract socket name, without the leading NUL: "uccl-ep-fd-<pid>-<random>". What the blob carries.
  const std::string& name() const { return name_; }
  uint64_t served() const { return served_.load(std::memory_order_relaxed); }
  // Connections refused (another user), and the warnings logged about them: the first kRefusalsLoggedInFull each,
  // then one line per kRefusalLogPeriodSec summing up, so another user cannot flood the log.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t refusalWarnings() const { return refusal_warnings_.load(std::memory_order_relaxed); }

  static constexpr int kPollMs = 20;
  static constexpr uint64_t kRefusalsLoggedInFull = 3;
  static constexpr int kRefusalLogPeriodSec = 10;

 private:
  void run() noexcept;
  void serveOne(int conn) noexcept;

  int fd_ = -1;
  int listen_fd_ = -1;
  std::string what_;
  std::string name_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> served_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> refusal_warnings_{0};
  uint64_t refused_unlogged_ = 0;                       // server thread only
  std::chrono::steady_clock::time_point last_summary_;  // server thread only
  std::thread thread_;
};

// Connects to the FdServer named `name` and returns the fd it hands over (CLOEXEC; the caller closes it).
// Retries the connection while the server is not up yet. Before taking anything it checks who holds the socket
// (SO_PEERCRED): the same user, and, where the exporter's process is visible in this pid namespace, the pid the name
// carries; anyone else squats the name. Throws uccl::ep::TimeoutError naming peer_rank and the socket when no fd
// arrived within timeout_ns, and uccl::ep::Error on a bad name, a squatted socket or a refused handshake.
int receiveFd(const std::string& name, int peer_rank, uint64_t timeout_ns);

}  // namespace uccl::ep::runtime
