#include <pthread.h>
#include <sched.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "uccl_ep/proxy/proxy.hpp"

namespace uccl::ep::proxy {
namespace {

// The first line of a small sysfs file, without its newline; empty when unreadable. C stdio on purpose: this
// runs inside Python processes whose C++ runtime may not be the one these objects were built against, and
// iostream locale facets are where such mixes break.
std::string firstLine(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return {};
  char buf[4096];
  std::string line;
  if (std::fgets(buf, sizeof(buf), f) != nullptr) line = buf;
  std::fclose(f);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace

bool pinToNumaNode(int node) {
  const std::string list = firstLine("/sys/devices/system/node/node" + std::to_string(node) + "/cpulist");
  if (list.empty()) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  int count = 0;
  const char* p = list.c_str();
  while (*p != '\0') {  // "0-3,8,10-11"
    char* end = nullptr;
    const long lo = std::strtol(p, &end, 10);
    if (end == p) return false;
    long hi = lo;
    p = end;
    if (*p == '-') {
      hi = std::strtol(p + 1, &end, 10);
      if (end == p + 1) return false;
      p = end;
    }
    for (long c = lo; c <= hi && c < CPU_SETSIZE; ++c, ++count) CPU_SET(static_cast<int>(c), &set);
    if (*p == ',') ++p;
    else if (*p != '\0') return false;
  }
  return count > 0 && pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

int numaNodeOfPciDevice(const std::string& bus_id) {
  std::string id;
  for (char ch : bus_id) id += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // CUDA prints an 8-digit PCI domain ("00000000:1A:00.0"); sysfs uses 4 digits.
  if (id.size() == 16 && id.compare(0, 4, "0000") == 0) id.erase(0, 4);
  const std::string text = firstLine("/sys/bus/pci/devices/" + id + "/numa_node");
  char* end = nullptr;
  const long node = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || end == text.c_str()) return -1;
  return static_cast<int>(node);
}

}  // namespace uccl::ep::proxy
