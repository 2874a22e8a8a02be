#include "uccl_ep/util/process.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>

#include <fmt/format.h>

namespace uccl::ep {

std::string processSpace() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string boot;
  if (!f || !std::getline(f, boot) || boot.empty()) return "";
  char ns[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
  if (n <= 0) return "";
  return boot + " " + std::string(ns, static_cast<size_t>(n));
}

bool processGone(int pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0) return errno == ESRCH;  // EPERM: someone else's process, alive
  // /proc/<pid>/stat: "pid (comm) S ...", the state right after the last ')' (comm may hold anything).
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(f, line)) return false;
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  const char state = line[close + 2];
  return state == 'Z' || state == 'X';
}

}  // namespace uccl::ep
