// Polling a condition another thread makes true, for the proxy and transport-floor tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>

namespace uccl::ep::proxy::testing {

inline constexpr uint64_t kSecond = 1000ull * 1000 * 1000;

// True once `pred` holds; false after `seconds`.
inline bool waitUntil(const std::function<bool()>& pred, double seconds = 10) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

}  // namespace uccl::ep::proxy::testing
