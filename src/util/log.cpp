#include "uccl_ep/util/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdio>

#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep {

namespace {
// `canonical` comes from parseLogLevel, so every name has a level here: no spelling falls through to "off".
spdlog::level::level_enum spdlogLevel(const std::string& canonical) {
  if (canonical == "trace") return spdlog::level::trace;
  if (canonical == "debug") return spdlog::level::debug;
  if (canonical == "warn") return spdlog::level::warn;
  if (canonical == "error") return spdlog::level::err;
  if (canonical == "critical") return spdlog::level::critical;
  if (canonical == "off") return spdlog::level::off;
  return spdlog::level::info;
}

// The logger reads UCCL_LOG_LEVEL on its own (through the same parseLogLevel as env()), not through env():
// logging happens in destructors, proxy threads and error paths, where an exception from a bad variable (this one
// or any other one env() reads) would crash the process or hide the error being logged. A bad UCCL_LOG_LEVEL
// therefore logs at info and says so once on stderr; the error is not hidden, because env() still throws it,
// naming the variable, at the next API call that reads the environment.
spdlog::level::level_enum levelFromEnv() {
  const std::string raw = envString("UCCL_LOG_LEVEL").value_or("info");
  try {
    return spdlogLevel(parseLogLevel("UCCL_LOG_LEVEL", raw));
  } catch (const Error& e) {
    std::fprintf(stderr, "uccl_ep: %s; logging at info\n", e.what());
    return spdlog::level::info;
  }
}
}  // namespace

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("uccl_ep");
    l->set_level(levelFromEnv());
    l->set_pattern("[%H:%M:%S.%e] [uccl_ep %l] [pid %P tid %t] %v");
    return l;
  }();
  return *logger;
}

}  // namespace uccl::ep
