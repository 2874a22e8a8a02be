#include "uccl_ep/util/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "uccl_ep/util/env.hpp"

namespace uccl::ep {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("uccl_ep");
    l->set_level(spdlog::level::from_str(env().log_level));
    l->set_pattern("[%H:%M:%S.%e] [uccl_ep %l] [pid %P tid %t] %v");
    return l;
  }();
  return *logger;
}

}  // namespace uccl::ep
