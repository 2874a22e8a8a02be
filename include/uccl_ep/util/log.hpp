// The library's logger (spdlog), level from UCCL_LOG_LEVEL (trace, debug, info, warn, error, critical, off; any
// case; see parseLogLevel in env.hpp). A bad value logs at info with one line on stderr; env() throws it.
#pragma once

#include <spdlog/spdlog.h>

namespace uccl::ep {

spdlog::logger& log();

}  // namespace uccl::ep
