#include "launcher.hpp"

#if UCCL_EP_E2E_SHM_SWEEP
#include "transport/fabric/fabric_info.hpp"
#endif

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::e2e {

size_t sweepDeadRanksShm() {
#if UCCL_EP_E2E_SHM_SWEEP
  return transport::fabric::removeStaleShmRegions("/dev/shm");
#else
  return 0;
#endif
}

std::vector<Outcome> runAll(const std::vector<Launch>& launches, double deadline_s) {
  struct Child {
    pid_t pid;
    int fd;
  };
  std::vector<Child> kids;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Launch& l : launches) {
    int pipefd[2];
    UCCL_EP_CHECK(pipe(pipefd) == 0, "pipe failed");
    const pid_t pid = fork();
    UCCL_EP_CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
      dup2(pipefd[1], 1);
      dup2(pipefd[1], 2);
      close(pipefd[0]);
      for (const std::string& e : l.env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (const std::string& a : l.argv) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    close(pipefd[1]);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    kids.push_back({pid, pipefd[0]});
  }
  std::vector<Outcome> out(kids.size());
  std::vector<bool> done(kids.size(), false);
  size_t remaining = kids.size();
  char buf[4096];
  while (remaining > 0) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t i = 0; i < kids.size(); ++i) {
      for (ssize_t n; (n = read(kids[i].fd, buf, sizeof(buf))) > 0;) out[i].output.append(buf, n);
      if (done[i]) continue;
      int st = 0;
      if (waitpid(kids[i].pid, &st, WNOHANG) == kids[i].pid) {
        done[i] = true;
        --remaining;
        out[i].exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        out[i].seconds = elapsed;
      } else if (elapsed > deadline_s) {
        kill(kids[i].pid, SIGKILL);
        waitpid(kids[i].pid, &st, 0);
        done[i] = true;
        --remaining;
        out[i].exit_code = -1;
        out[i].seconds = elapsed;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (size_t i = 0; i < kids.size(); ++i) {
    for (ssize_t n; (n = read(kids[i].fd, buf, sizeof(buf))) > 0;) out[i].output.append(buf, n);
    close(kids[i].fd);
  }
  return out;
}

int freeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  UCCL_EP_CHECK(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0, "bind for a free port failed");
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

namespace {
int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }
}  // namespace

NetnsPair::NetnsPair() {
  const int id = getpid() % 200 + 20;
  const std::string tag = std::to_string(getpid());
  for (int i = 0; i < 2; ++i) {
    ns_[i] = "ucclep" + tag + (i ? "b" : "a");
    dev_[i] = "uv" + tag + (i ? "b" : "a");
    addr_[i] = "10.77." + std::to_string(id) + "." + std::to_string(i + 1);
  }
  const std::string steps[] = {
      "ip netns add " + ns_[0],
      "ip netns add " + ns_[1],
      "ip link add " + dev_[0] + " type veth peer name " + dev_[1],
      "ip link set " + dev_[0] + " netns " + ns_[0],
      "ip link set " + dev_[1] + " netns " + ns_[1],
  };
  for (const std::string& s : steps) {
    if (sh(s) != 0) {
      error_ = "'" + s + "' failed (needs root and network namespace support)";
      return;
    }
  }
  for (int i = 0; i < 2; ++i) {
    const std::string n = "ip -n " + ns_[i] + " ";
    if (sh(n + "addr add " + addr_[i] + "/24 dev " + dev_[i]) || sh(n + "link set " + dev_[i] + " up") ||
        sh(n + "link set lo up")) {
      error_ = "configuring namespace " + ns_[i] + " failed";
      return;
    }
  }
  ok_ = true;
}

NetnsPair::~NetnsPair() {
  for (int i = 0; i < 2; ++i) sh("ip netns del " + ns_[i]);
}

}  // namespace uccl::ep::e2e
