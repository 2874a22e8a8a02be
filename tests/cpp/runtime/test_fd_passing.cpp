// Passing a file descriptor between processes (runtime/fd_passing.hpp) with a memfd standing in for the fd of a
// VMM allocation: a forked child serves it, the parent (and many threads at once) receive it and read the same
// bytes; waits on absent or silent servers end in TimeoutError naming the peer rank and the socket.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "message_of.hpp"
#include "runtime/fd_passing.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMs = 1000 * 1000;
constexpr size_t kPatternBytes = 64 * 1024;

uint8_t patternByte(size_t i) { return static_cast<uint8_t>(i * 31 + 7); }

int makeMemfd() {
  const int fd = ::memfd_create("uccl-ep-test-fd", MFD_CLOEXEC);
  if (fd < 0) return -1;
  std::vector<uint8_t> data(kPatternBytes);
  for (size_t i = 0; i < data.size(); ++i) data[i] = patternByte(i);
  if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) return -1;
  return fd;
}

// The fd is a different descriptor onto the same file: same size, same bytes.
::testing::AssertionResult holdsPattern(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size != static_cast<off_t>(kPatternBytes)) {
    return ::testing::AssertionFailure() << "fd " << fd << " has size " << st.st_size;
  }
  std::vector<uint8_t> data(kPatternBytes);
  if (::pread(fd, data.data(), data.size(), 0) != static_cast<ssize_t>(data.size())) {
    return ::testing::AssertionFailure() << "pread failed: " << std::strerror(errno);
  }
  for (size_t i = 0; i < data.size(); ++i) {
    if (data[i] != patternByte(i)) return ::testing::AssertionFailure() << "byte " << i << " differs";
  }
  return ::testing::AssertionSuccess();
}

// A child process that serves a memfd until the parent closes `control_` (or 30 s pass).
class ServingChild {
 public:
  ServingChild() {
    int name_pipe[2];
    int control[2];
    if (::pipe(name_pipe) != 0 || ::pipe(control) != 0) throw Error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(name_pipe[0]);
      ::close(control[1]);
      _exit(serve(name_pipe[1], control[0]));
    }
    ::close(name_pipe[1]);
    ::close(control[0]);
    control_ = control[1];
    char buf[256] = {};
    pollfd p{name_pipe[0], POLLIN, 0};
    const ssize_t n = ::poll(&p, 1, 10000) == 1 ? ::read(name_pipe[0], buf, sizeof(buf)) : -1;
    ::close(name_pipe[0]);
    if (n > 0) name_.assign(buf, static_cast<size_t>(n));
  }
  ~ServingChild() { stop(); }

  // Ends the child's server; its exit status (0: clean) is returned.
  int stop() {
    if (pid_ <= 0) return status_;
    ::close(control_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    return status_;
  }
  const std::string& name() const { return name_; }

 private:
  static int serve(int name_out, int control_in) {
    try {
      FdServer server(makeMemfd(), "the test child's memfd");
      if (::write(name_out, server.name().data(), server.name().size()) < 0) return 2;
      ::close(name_out);
      pollfd p{control_in, POLLIN, 0};
      ::poll(&p, 1, 30000);  // readable (EOF) once the parent closes its end
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "serving child: %s\n", e.what());
      return 3;
    }
  }

  pid_t pid_ = -1;
  int control_ = -1;
  int status_ = 0;
  std::string name_;
};

TEST(FdPassing, ParentReceivesTheChildsMemfd) {
  ServingChild child;
  ASSERT_FALSE(child.name().empty()) << "the child did not report its socket name";
  EXPECT_EQ(child.name().rfind("uccl-ep-fd-", 0), 0u) << child.name();
  const int fd = receiveFd(child.name(), 1, 5000 * kMs);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(holdsPattern(fd));
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) << "received fds must be close-on-exec";
  ::close(fd);
  EXPECT_EQ(child.stop(), 0);
}

TEST(FdPassing, ManyConcurrentReceivers) {
  ServingChild child;
  ASSERT_FALSE(child.name().empty());
  constexpr int kReceivers = 16;
  std::vector<int> fds(kReceivers, -1);
  std::vector<std::string> errors(kReceivers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReceivers; ++i) {
    threads.emplace_back([&, i] {
      try {
        fds[i] = receiveFd(child.name(), 1, 5000 * kMs);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kReceivers; ++i) {
    EXPECT_EQ(errors[i], "") << "receiver " << i;
    if (fds[i] < 0) continue;
    EXPECT_TRUE(holdsPattern(fds[i])) << "receiver " << i;
    for (int j = 0; j < i; ++j) EXPECT_NE(fds[i], fds[j]) << "every receiver gets its own descriptor";
  }
  for (int fd : fds)
    if (fd >= 0) ::close(fd);
  EXPECT_EQ(child.stop(), 0);
}

TEST(FdPassing, MissingServerTimesOutNamingThePeer) {
  const std::string name = "uccl-ep-fd-test-nobody-listens-" + std::to_string(::getpid());
  const auto start = Clock::now();
  EXPECT_TRUE(mentions(messageOf<TimeoutError>([&] { receiveFd(name, 7, 200 * kMs); }), {"rank 7", "@" + name}));
  const auto took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(200));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST(FdPassing, SilentListenerTimesOut) {
  // Something listens under the name but never answers: the connection succeeds, the fd never comes.
  const std::string name = "uccl-ep-fd-test-silent-" + std::to_string(::getpid());
  const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), offsetof(sockaddr_un, sun_path) + 1 + name.size()), 0);
  ASSERT_EQ(::listen(s, 4), 0);
  EXPECT_TRUE(mentions(messageOf<TimeoutError>([&] { receiveFd(name, 4, 150 * kMs); }), {"rank 4", "no fd received"}));
  ::close(s);
}

TEST(FdPassing, StoppedServerIsGoneAtOnce) {
  auto server = std::make_unique<FdServer>(makeMemfd(), "an in-process memfd");
  const std::string name = server->name();
  const int fd = receiveFd(name, 0, 2000 * kMs);  // the same process may receive its own fd, too
  EXPECT_TRUE(holdsPattern(fd));
  ::close(fd);
  // served() counts after sendmsg returns on the server thread, which may be just after the fd arrived here.
  for (int i = 0; i < 1000 && server->served() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(server->served(), 1u);
  const auto start = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(10 * FdServer::kPollMs))
      << "the destructor must not linger";
  EXPECT_THROW(receiveFd(name, 0, 100 * kMs), TimeoutError);
}

// A listening abstract socket under `name`, held by this process, that never answers.
int listenOn(const std::string& name) {
  const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), offsetof(sockaddr_un, sun_path) + 1 + name.size()) != 0 ||
      ::listen(s, 4) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

TEST(FdPassing, ASquatterOfAnotherProcessesNameIsRefusedAtOnce) {
  // The name says pid 1 exported it (alive in every pid namespace); this process holds the socket instead.
  const std::string name = "uccl-ep-fd-0000000001-squat" + std::to_string(::getpid());
  const int s = listenOn(name);
  ASSERT_GE(s, 0);
  const auto start = Clock::now();
  EXPECT_TRUE(mentions(messageOf<Error>([&] { receiveFd(name, 5, 2000 * kMs); }),
                       {"rank 5", "@" + name, "not by pid 1", "squats"}));
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500)) << "refused before waiting for an fd";
  ::close(s);
}

// Runs `body` in a child process as uid 65534 (nobody); returns the child's exit status. Needs root.
int asAnotherUser(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(90);
    _exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

TEST(FdPassing, AnotherUsersServerIsRefused) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run a process as another user (CI runs as root)";
  int ready[2];
  int done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const std::string name = "uccl-ep-fd-other-user-" + std::to_string(::getpid());
  std::thread other([&] {
    asAnotherUser([&] {
      ::close(done[1]);  // the child's copy: its poll sees EOF once the parent closes its own
      const int s = listenOn(name);
      const char c = s >= 0 ? 1 : 0;
      if (::write(ready[1], &c, 1) != 1 || s < 0) return 2;
      pollfd p{done[0], POLLIN, 0};
      ::poll(&p, 1, 10000);
      return 0;
    });
  });
  char c = 0;
  pollfd p{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 1);
  EXPECT_TRUE(mentions(messageOf<Error>([&] { receiveFd(name, 6, 2000 * kMs); }),
                       {"rank 6", "uid 65534", "another user", "squats"}));
  ::close(done[1]);
  other.join();
  for (int fd : {ready[0], ready[1], done[0]}) ::close(fd);
}

TEST(FdPassing, RefusalsOfAFloodAreCountedAndTheirWarningsCapped) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run a process as another user (CI runs as root)";
  FdServer server(makeMemfd(), "a memfd another user floods");
  const std::string name = server.name();
  constexpr int kFlood = 60;
  const int status = asAnotherUser([&] {
    for (int i = 0; i < kFlood; ++i) {
      const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path + 1, name.data(), name.size());
      if (::connect(s, reinterpret_cast<sockaddr*>(&addr), offsetof(sockaddr_un, sun_path) + 1 + name.size()) != 0) {
        return 3;
      }
      char b;
      pollfd p{s, POLLIN, 0};
      ::poll(&p, 1, 2000);  // the server closes without sending: EOF
      if (::recv(s, &b, 1, 0) != 0) return 4;
      ::close(s);
    }
    return 0;
  });
  EXPECT_EQ(status, 0);
  for (int i = 0; i < 1000 && server.refused() < kFlood; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(server.refused(), static_cast<uint64_t>(kFlood));
  EXPECT_EQ(server.served(), 0u);
  EXPECT_LE(server.refusalWarnings(), FdServer::kRefusalsLoggedInFull + 1) << "one summary line per period at most";
  const int fd = receiveFd(name, 0, 2000 * kMs);  // the owner's own user is still served
  EXPECT_TRUE(holdsPattern(fd));
  ::close(fd);
}

TEST(FdPassing, BadNamesAndNonServersAreErrors) {
  EXPECT_TRUE(mentions(messageOf([] { receiveFd("", 3, kMs); }), {"rank 3", "not a valid abstract socket name"}));
  EXPECT_THROW(receiveFd(std::string(kMaxFdSocketNameBytes + 1, 'x'), 3, kMs), Error);
  EXPECT_THROW(FdServer(-1, "nothing"), Error);
}

}  // namespace
}  // namespace uccl::ep::runtime
