#include "bootstrap/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::bootstrap::detail {

namespace {

// Backoff bounds for connecting before rank 0 listens: short first retries keep startup fast when ranks
// start together; the cap keeps a late rank 0 from waiting long after it appears.
constexpr auto kFirstBackoff = std::chrono::milliseconds(5);
constexpr auto kMaxBackoff = std::chrono::milliseconds(200);

bool isPeerGone(int err) { return err == ECONNRESET || err == EPIPE || err == ENOTCONN || err == ETIMEDOUT; }

// Errors that mean "nobody is listening there yet": worth another try until the deadline.
bool isRetryableConnect(int err) {
  return err == ECONNREFUSED || err == ETIMEDOUT || err == ENETUNREACH || err == EHOSTUNREACH || err == ECONNRESET ||
         err == ECONNABORTED || err == EAGAIN;
}

void setNoDelay(int fd) {
  int one = 1;
  // Collectives are request/response with small messages; Nagle would add a delayed-ACK round trip to each.
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    UCCL_EP_THROW("setsockopt(TCP_NODELAY) failed: {}", std::strerror(errno));
  }
}

Socket newTcpSocket() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) UCCL_EP_THROW("socket(AF_INET, SOCK_STREAM) failed: {}", std::strerror(errno));
  return Socket(fd);
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void Socket::reset() {
  // close() is not retried on EINTR: on Linux the descriptor is released even then.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int remainingMs(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left + 1, 1 << 30));  // round up: never wake just before it
}

bool waitFor(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remainingMs(deadline));
    if (n > 0) return true;  // readiness includes POLLERR/POLLHUP: the next I/O call reports them
    if (n == 0) {
      if (Clock::now() >= deadline) return false;
      continue;
    }
    if (errno != EINTR) UCCL_EP_THROW("poll failed: {}", std::strerror(errno));
  }
}

IoResult sendAll(int fd, const void* data, size_t len, Deadline deadline) {
  auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!waitFor(fd, POLLOUT, deadline)) return {IoStatus::kTimeout, 0};
      continue;
    }
    if (n < 0 && isPeerGone(errno)) return {IoStatus::kClosed, errno};
    UCCL_EP_THROW("send failed: {}", std::strerror(errno));
  }
  return {};
}

IoResult recvBlob(int fd, std::vector<uint8_t>* out, uint64_t len, Deadline deadline) {
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  out->clear();
  while (out->size() < len) {
    const size_t have = out->size();
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - have));
    out->resize(have + n);
    const IoResult r = recvAll(fd, out->data() + have, n, deadline);
    if (r.status != IoStatus::kOk) return r;
  }
  return {};
}

IoResult recvAll(int fd, void* data, size_t len, Deadline deadline) {
  auto* p = static_cast<uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, 0);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return {IoStatus::kClosed, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!waitFor(fd, POLLIN, deadline)) return {IoStatus::kTimeout, 0};
      continue;
    }
    if (isPeerGone(errno)) return {IoStatus::kClosed, errno};
    UCCL_EP_THROW("recv failed: {}", std::strerror(errno));
  }
  return {};
}

sockaddr_in resolveIpv4(const std::string& host, int port) {
  UCCL_EP_CHECK(port >= 0 && port <= 65535, "port {} out of range 0..65535", port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1) return addr;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr)
    UCCL_EP_THROW("cannot resolve host '{}' to an IPv4 address: {}", host, gai_strerror(rc));
  addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return addr;
}

std::string formatAddress(const sockaddr_in& addr) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(ntohs(addr.sin_port));
}

std::string peerAddress(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "<unknown peer>";
  return formatAddress(addr);
}

Socket listenOn(const sockaddr_in& addr, int backlog, int* port) {
  Socket s = newTcpSocket();
  int one = 1;
  // A restarted job may reuse its fixed port while the old connections sit in TIME_WAIT.
  setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    UCCL_EP_THROW("bind to {} failed: {}", formatAddress(addr), std::strerror(errno));
  }
  if (::listen(s.fd(), backlog) != 0)
    UCCL_EP_THROW("listen on {} failed: {}", formatAddress(addr), std::strerror(errno));
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(s.fd(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    UCCL_EP_THROW("getsockname on the listener failed: {}", std::strerror(errno));
  }
  *port = ntohs(bound.sin_port);
  return s;
}

Socket acceptOne(int listen_fd) {
  for (;;) {
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Socket s(fd);
      setNoDelay(fd);
      return s;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that gave up before we got to it
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Socket();
    UCCL_EP_THROW("accept failed: {}", std::strerror(errno));
  }
}

Socket connectWithRetry(const sockaddr_in& addr, Deadline deadline) {
  auto backoff = std::chrono::duration_cast<Clock::duration>(kFirstBackoff);
  for (;;) {
    Socket s = newTcpSocket();
    int err = 0;
    if (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      err = errno;
      if (err == EINPROGRESS || err == EINTR) {
        // Non-blocking connect completes in the background; SO_ERROR reports how it ended.
        if (!waitFor(s.fd(), POLLOUT, deadline)) return Socket();
        socklen_t len = sizeof(err);
        if (getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
    if (err == 0) {
      setNoDelay(s.fd());
      return s;
    }
    if (!isRetryableConnect(err)) UCCL_EP_THROW("connect to {} failed: {}", formatAddress(addr), std::strerror(err));
    auto now = Clock::now();
    if (now >= deadline) return Socket();
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
  }
}

}  // namespace uccl::ep::bootstrap::detail
