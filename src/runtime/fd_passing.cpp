#include "runtime/fd_passing.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <utility>

#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/interrupt.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// Sent with the fd, so a receiver that reached some other abstract socket notices.
constexpr char kTag[8] = {'U', 'E', 'P', 'F', 'D', 0, 0, 1};

// Abstract address: sun_path starts with a NUL and the name is not NUL-terminated; the length says where it ends.
socklen_t abstractAddress(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

std::string randomName() {
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) | rd();
  return fmt::format("uccl-ep-fd-{:010d}-{:016x}", static_cast<int>(getpid()), r);
}

void closeFd(int fd) {
  if (fd >= 0) ::close(fd);
}

// The exporter's pid randomName() put in the name, or 0 when the name does not carry one.
pid_t namedPid(const std::string& name) {
  const std::string prefix = "uccl-ep-fd-";
  if (name.compare(0, prefix.size(), prefix) != 0) return 0;
  const size_t end = name.find('-', prefix.size());
  if (end == std::string::npos || end == prefix.size()) return 0;
  pid_t pid = 0;
  for (size_t i = prefix.size(); i < end; ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 100000000) return 0;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}

// True when `pid` runs in this process's pid namespace: then its pid here is the pid it put in its socket name.
bool inOurPidNamespace(pid_t pid) {
  char ours[128] = {}, theirs[128] = {};
  const std::string path = fmt::format("/proc/{}/ns/pid", static_cast<int>(pid));
  const ssize_t a = ::readlink("/proc/self/ns/pid", ours, sizeof(ours) - 1);
  const ssize_t b = ::readlink(path.c_str(), theirs, sizeof(theirs) - 1);
  return a > 0 && b > 0 && std::strcmp(ours, theirs) == 0;
}

// Who holds the socket the importer reached: the same user, and the exporter the name says where that can be known.
void checkExporter(int sock, const std::string& name, int peer_rank) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    UCCL_EP_THROW("fd of rank {}: SO_PEERCRED on @{} failed: {}", peer_rank, name, std::strerror(errno));
  }
  if (cred.uid != ::getuid()) {
    UCCL_EP_THROW("fd of rank {}: socket @{} is held by pid {} of uid {}, this process runs as uid {}: another user's "
                  "process squats the name; refusing its memory",
                  peer_rank, name, cred.pid, cred.uid, ::getuid());
  }
  const pid_t named = namedPid(name);
  if (named > 0 && cred.pid > 0 && cred.pid != named && inOurPidNamespace(cred.pid)) {
    UCCL_EP_THROW("fd of rank {}: socket @{} is held by pid {}, not by pid {} that exported it: another process "
                  "squats the name; refusing its memory",
                  peer_rank, name, cred.pid, named);
  }
}

}  // namespace

FdServer::FdServer(int fd, std::string what) : fd_(fd), what_(std::move(what)) {
  try {
    UCCL_EP_CHECK(fd_ >= 0, "FdServer for {}: no fd to serve ({})", what_, fd_);
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) UCCL_EP_THROW("FdServer for {}: socket(AF_UNIX) failed: {}", what_, std::strerror(errno));
    // A random part makes a clash with a stale name under a reused pid unlikely; retry the few that happen.
    for (int attempt = 0;; ++attempt) {
      name_ = randomName();
      sockaddr_un addr;
      const socklen_t len = abstractAddress(name_, &addr);
      if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
      if (errno != EADDRINUSE || attempt >= 8) {
        UCCL_EP_THROW("FdServer for {}: bind(@{}) failed: {}", what_, name_, std::strerror(errno));
      }
    }
    if (::listen(listen_fd_, 128) != 0) {
      UCCL_EP_THROW("FdServer for {}: listen(@{}) failed: {}", what_, name_, std::strerror(errno));
    }
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    closeFd(listen_fd_);
    closeFd(fd_);
    throw;
  }
  log().debug("fd server for {} listening on @{}", what_, name_);
}

FdServer::~FdServer() {
  stop_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
  closeFd(listen_fd_);
  closeFd(fd_);
  log().debug("fd server for {} on @{} stopped after serving {} peers", what_, name_, served());
}

void FdServer::run() noexcept {
  while (!stop_.load(std::memory_order_relaxed)) {
    pollfd p{listen_fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, kPollMs);
    if (n < 0 && errno != EINTR) {
      log().error("fd server for {} on @{}: poll failed: {}; no more peers are served", what_, name_,
                  std::strerror(errno));
      return;
    }
    if (n <= 0) continue;
    // Drain every queued connection: several peers usually connect at once.
    for (;;) {
      const int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) break;  // EAGAIN (queue empty) or a connection that died in the queue
      serveOne(conn);
      ::close(conn);
    }
  }
}

void FdServer::serveOne(int conn) noexcept {
  // Anyone in this network namespace can reach an abstract socket: hand GPU memory to our own user only.
  ucred cred{};
  socklen_t cred_len = sizeof(cred);
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 || cred.uid != ::getuid()) {
    const uint64_t n = refused_.fetch_add(1, std::memory_order_relaxed) + 1;
    const auto now = Clock::now();
    if (n <= kRefusalsLoggedInFull) {
      log().warn("fd server for {} on @{}: refusing pid {} (uid {}; this process runs as uid {})", what_, name_,
                 cred.pid, cred.uid, ::getuid());
      refusal_warnings_.fetch_add(1, std::memory_order_relaxed);
      last_summary_ = now;
    } else {
      ++refused_unlogged_;
      if (now - last_summary_ >= std::chrono::seconds(kRefusalLogPeriodSec)) {
        log().warn("fd server for {} on @{}: refused {} more connections from other users (latest pid {}, uid {})",
                   what_, name_, refused_unlogged_, cred.pid, cred.uid);
        refusal_warnings_.fetch_add(1, std::memory_order_relaxed);
        refused_unlogged_ = 0;
        last_summary_ = now;
      }
    }
    return;
  }
  char data[sizeof(kTag)];
  std::memcpy(data, kTag, sizeof(kTag));
  iovec iov{data, sizeof(data)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd_, sizeof(int));
  // The connection is fresh and its buffer empty, so this small non-blocking send either goes whole or fails.
  if (::sendmsg(conn, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(data))) {
    log().warn("fd server for {} on @{}: sending the fd to pid {} failed: {}", what_, name_, cred.pid,
               std::strerror(errno));
    return;
  }
  served_.fetch_add(1, std::memory_order_relaxed);
  log().debug("fd server for {} on @{}: fd sent to pid {}", what_, name_, cred.pid);
}

int receiveFd(const std::string& name, int peer_rank, uint64_t timeout_ns) {
  if (name.empty() || name.size() > kMaxFdSocketNameBytes || name.find('\0') != std::string::npos) {
    UCCL_EP_THROW("rank {}'s fd socket name '{}' is not a valid abstract socket name (1 to {} bytes, no NUL)",
                  peer_rank, name, kMaxFdSocketNameBytes);
  }
  const auto start = Clock::now();
  // Clamped so that start + timeout cannot overflow (callers may pass UINT64_MAX for "no limit").
  const auto deadline = start + std::chrono::nanoseconds(std::min<uint64_t>(timeout_ns, uint64_t{1} << 62));
  auto timeout = [&](const char* stage, int err) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    throw TimeoutError(
        fmt::format("timed out after {} ms waiting for the fd of rank {} on socket @{} ({}{}{}): is "
                    "rank {} alive, on this host and in this network namespace?",
                    ms, peer_rank, name, stage, err ? ": " : "", err ? std::strerror(err) : "", peer_rank));
  };
  sockaddr_un addr;
  const socklen_t addr_len = abstractAddress(name, &addr);

  // Connect, retrying while the server is not listening yet (ECONNREFUSED) or its queue is full (EAGAIN).
  int sock = -1;
  auto backoff = std::chrono::milliseconds(1);
  InterruptPoll interrupt("waiting for a peer's fd");
  for (;;) {
    interrupt.poll();
    sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0) UCCL_EP_THROW("fd of rank {}: socket(AF_UNIX) failed: {}", peer_rank, std::strerror(errno));
    if (::connect(sock, reinterpret_cast<const sockaddr*>(&addr), addr_len) == 0) break;
    const int err = errno;
    ::close(sock);
    if (err != ECONNREFUSED && err != ENOENT && err != EAGAIN && err != EINTR) {
      UCCL_EP_THROW("fd of rank {}: connect(@{}) failed: {}", peer_rank, name, std::strerror(err));
    }
    const auto now = Clock::now();
    if (now >= deadline) timeout("connecting", err);
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }

  // The server sends the tag and the fd as soon as it accepts.
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{sock};
  checkExporter(sock, name, peer_rank);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) timeout("connected, no fd received", 0);
    checkInterrupt("waiting for a peer's fd");
    pollfd p{sock, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, kInterruptPollMs)));
    if (n > 0) break;
    if (n < 0 && errno != EINTR)
      UCCL_EP_THROW("fd of rank {}: poll(@{}) failed: {}", peer_rank, name, std::strerror(errno));
  }
  char data[sizeof(kTag)] = {};
  iovec iov{data, sizeof(data)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t got = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  if (got < 0) UCCL_EP_THROW("fd of rank {}: recvmsg(@{}) failed: {}", peer_rank, name, std::strerror(errno));
  // Collect whatever fds came, so none leaks when the handshake turns out wrong.
  int fd = -1;
  int extra = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (fd < 0) {
        fd = f;
      } else {
        ::close(f);
        ++extra;
      }
    }
  }
  const bool tag_ok = got == static_cast<ssize_t>(sizeof(kTag)) && std::memcmp(data, kTag, sizeof(kTag)) == 0;
  if (!tag_ok || fd < 0 || extra != 0 || (msg.msg_flags & MSG_CTRUNC) != 0) {
    closeFd(fd);
    UCCL_EP_THROW("fd of rank {}: socket @{} answered {} bytes{} with {} fds{}: {}", peer_rank, name, got,
                  tag_ok ? "" : " (not the uccl-ep fd tag)", fd < 0 ? 0 : 1 + extra,
                  (msg.msg_flags & MSG_CTRUNC) ? " (truncated)" : "",
                  got == 0 ? "the server closed the connection without sending (another user's process?)"
                           : "not a uccl-ep fd server");
  }
  return fd;
}

}  // namespace uccl::ep::runtime
