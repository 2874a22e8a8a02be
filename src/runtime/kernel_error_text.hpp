// What a kernel's ErrorRecord (kernels/error_record.hpp) means, in words: the message an exception carries and
// which exception it is. Plain C++ (no CUDA): the CPU tests decode hand-made records through it. The Buffer
// (kernel_errors.cpp) reads the record, asks this file for the text, and throws.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/error_record.hpp"

namespace uccl::ep::runtime {

// Where the record was read: what the message names besides the record's own fields.
struct KernelErrorSite {
  int rank = 0;
  int num_ranks = 0;
  double timeout_secs = 0;
  int64_t num_nvl_bytes = 0;
  // " over NVLink" or " through the proxies (<transport>)" for a peer of a low-latency call; "" when not known.
  std::function<std::string(int peer)> path_to;
  // kOpClean: every rank that did not join the barrier, ascending (empty: only the record's lowest one is known).
  std::vector<int> clean_absent;
};

enum class KernelErrorKind {
  kFatal,     // uccl::ep::Error: the Buffer is unusable
  kTimeout,   // uccl::ep::TimeoutError: a stall; the Buffer is unusable
  kArgument,  // uccl::ep::InvalidArgument: the caller's input; the call finished without it and the Buffer is usable
};

struct KernelErrorText {
  KernelErrorKind kind = KernelErrorKind::kFatal;
  std::string message;  // names the step, this rank and what went wrong; without the "unusable" advice
};

KernelErrorText describeKernelError(const kernels::ErrorRecord& rec, const KernelErrorSite& site);

}  // namespace uccl::ep::runtime
