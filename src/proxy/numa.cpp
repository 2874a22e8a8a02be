#include <pthread.h>
#include <sched.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <string>

#include "uccl_ep/proxy/proxy.hpp"

namespace uccl::ep::proxy {

bool pinToNumaNode(int node) {
  std::ifstream f("/sys/devices/system/node/node" + std::to_string(node) + "/cpulist");
  std::string list;
  if (!f || !std::getline(f, list) || list.empty()) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  std::stringstream ss(list);
  std::string range;
  int count = 0;
  while (std::getline(ss, range, ',')) {
    const size_t dash = range.find('-');
    const int lo = std::stoi(range.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(range.substr(dash + 1));
    for (int c = lo; c <= hi && c < CPU_SETSIZE; ++c, ++count) CPU_SET(c, &set);
  }
  return count > 0 && pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

int numaNodeOfPciDevice(const std::string& bus_id) {
  std::string id;
  for (char ch : bus_id) id += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // CUDA prints an 8-digit PCI domain ("00000000:1A:00.0"); sysfs uses 4 digits.
  if (id.size() == 16 && id.compare(0, 4, "0000") == 0) id.erase(0, 4);
  std::ifstream f("/sys/bus/pci/devices/" + id + "/numa_node");
  int node = -1;
  if (!f || !(f >> node)) return -1;
  return node;
}

}  // namespace uccl::ep::proxy
