// The library's logger (spdlog), level from UCCL_LOG_LEVEL (trace, debug, info, warn, error, off).
#pragma once

#include <spdlog/spdlog.h>

namespace uccl::ep {

spdlog::logger& log();

}  // namespace uccl::ep
