// Test helpers for messages: what an expression throws, and whether a message names every expected part.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

// The message of the E that f throws; "" and a test failure when it throws none.
template <typename E = Error, typename F>
std::string messageOf(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "the expected exception was not thrown";
  return "";
}

inline ::testing::AssertionResult mentions(const std::string& msg, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) {
    if (msg.find(part) == std::string::npos) return ::testing::AssertionFailure() << "'" << part << "' not in: " << msg;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace uccl::ep::runtime
