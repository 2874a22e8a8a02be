#include <pthread.h>
#include <sched.h>

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

}  // namespace uccl::ep::proxy
