// Non-blocking TCP plumbing for the rendezvous: every call takes a deadline, so no wait can outlive the job's
// timeout, and every socket is CLOEXEC (a launcher that forks and execs must not leak the job's connections).
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace uccl::ep::bootstrap::detail {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Owns one file descriptor; closes it on destruction.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { reset(); }
  Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// Outcome of a bounded transfer. kClosed covers an orderly EOF as well as ECONNRESET/EPIPE: to the
// rendezvous all three mean "the peer is gone", and `err` keeps the errno for the message.
enum class IoStatus { kOk, kClosed, kTimeout };
struct IoResult {
  IoStatus status = IoStatus::kOk;
  int err = 0;
};

int remainingMs(Deadline deadline);
// Waits for `events` on fd; false when the deadline passed first. Retries EINTR with the remaining time.
bool waitFor(int fd, short events, Deadline deadline);

// Moves exactly `len` bytes, however the kernel splits them; never raises SIGPIPE.
IoResult sendAll(int fd, const void* data, size_t len, Deadline deadline);
IoResult recvAll(int fd, void* data, size_t len, Deadline deadline);
// `len` bytes into `out`, grown a chunk at a time as they arrive: a peer that announces a large length and sends
// little makes us hold only what it sent.
IoResult recvBlob(int fd, std::vector<uint8_t>* out, uint64_t len, Deadline deadline);

// IPv4 address of `host` (a dotted quad or a name); throws uccl::ep::Error naming the host.
sockaddr_in resolveIpv4(const std::string& host, int port);
std::string formatAddress(const sockaddr_in& addr);
// "ip:port" of the far end of a connected socket, for log lines about connections we refuse.
std::string peerAddress(int fd);

// A non-blocking listener bound to `addr` (port 0: ephemeral); *port receives the port actually bound.
Socket listenOn(const sockaddr_in& addr, int backlog, int* port);
// Accepts one pending connection, or returns an invalid Socket when none is queued.
Socket acceptOne(int listen_fd);
// Connects, retrying with exponential backoff while the listener is not up yet (rank 0 may start last).
// Returns an invalid Socket if the deadline passes; other failures throw uccl::ep::Error.
Socket connectWithRetry(const sockaddr_in& addr, Deadline deadline);

}  // namespace uccl::ep::bootstrap::detail
