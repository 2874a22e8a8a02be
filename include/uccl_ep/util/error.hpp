// Host-side errors: one exception type whose message names the thing that failed and what was expected.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace uccl::ep {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A wait that ran past UCCL_EP_TIMEOUT_SECS. Separate so callers (and Python) can tell a stall from a bug.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// An argument value the library rejects (a size out of range, a count that does not divide, a buffer too small),
// raised before anything runs; the object it was passed to stays usable. Python sees a ValueError.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

}  // namespace uccl::ep

#define UCCL_EP_THROW(...) throw ::uccl::ep::Error(::fmt::format(__VA_ARGS__))
#define UCCL_EP_THROW_ARG(...) throw ::uccl::ep::InvalidArgument(::fmt::format(__VA_ARGS__))
#define UCCL_EP_CHECK(cond, ...)                                                                          \
  do {                                                                                                    \
    if (!(cond)) throw ::uccl::ep::Error(::fmt::format("{} (check `{}` failed at {}:{})",              \
                                                       ::fmt::format(__VA_ARGS__), #cond, __FILE__, __LINE__)); \
  } while (0)
