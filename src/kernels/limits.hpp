// The limits of the kernels, defined once. The runtime checks every call against these before a kernel runs, the
// buffer layouts size themselves by them, and the Python layer reads them from uccl.ep._C (same names) instead of
// repeating them. Plain C++: the CPU build of the bindings carries them too.
#pragma once

#include <cstddef>

namespace uccl::ep::kernels {

// Both modes.
inline constexpr int kMaxTopk = 16;           // top-k entries per token (scratch and per-thread arrays are sized by it)
inline constexpr int kChannelsPerScale = 128;  // one FP8 scale per 128 channels
inline constexpr int kUe8m0ChannelsPerInt = 4 * kChannelsPerScale;  // four UE8M0 exponents packed in one int32
inline constexpr size_t kRowAlign = 16;       // rows move in 16-byte vectors: row sizes, strides and bases align
inline constexpr size_t kBufferSizeUnit = 128;  // num_nvl_bytes and num_rdma_bytes are multiples of this

// Low-latency mode (ll_layout.hpp): signal words and scratch are sized by these.
inline constexpr int kMaxExpertsPerRank = 256;
inline constexpr int kMaxTokensPerRank = 1024;  // num_max_dispatch_tokens_per_rank
inline constexpr int kMinHidden = 128;
inline constexpr int kMaxHidden = 8192;

// Normal mode within one NVLink domain (intranode.hpp).
inline constexpr int kMaxNormalExperts = 8192;  // the host-mapped per-expert counts are sized by it
inline constexpr int kMaxNvlRanks = 1024;       // NVLink peers in one call (MNNVL domains are 72 today)

}  // namespace uccl::ep::kernels
