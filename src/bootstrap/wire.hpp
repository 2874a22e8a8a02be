// The rendezvous wire format. Integers are little-endian regardless of the host, so a mixed cluster (or a
// future big-endian port) agrees on every field.
//
//   hello  (rank r -> 0, once):  u32 magic, u32 version, u32 rank, u32 world, u32 token_len, token bytes
//   verdict (0 -> rank r, once): u32 magic, u32 Verdict; the connection is closed unless kAccepted
//   blob   (rank r -> 0, per collective): u64 seq, u64 len, len bytes
//   reply  (0 -> rank r, per collective): u64 seq, u64 world, then world x (u64 len, len bytes)
//
// seq counts collectives on the object from 1; both sides check it, so a rank that skipped or repeated a
// collective is reported instead of silently receiving another round's blobs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "uccl_ep/util/blob.hpp"

namespace uccl::ep::bootstrap::detail {

constexpr uint32_t kMagic = 0x52504555;  // "UEPR"
constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kHelloBytes = 20;
constexpr size_t kVerdictBytes = 8;
constexpr size_t kHeaderBytes = 16;
// Bounds on lengths read from the wire, so a corrupt or hostile length cannot make us allocate gigabytes.
// The token bound applies before the token is checked; the blob bound only to authenticated ranks.
constexpr size_t kMaxTokenBytes = 4096;
// What the protocol needs: a rank's blob is its addresses, keys and handles (kilobytes). Blobs are also read in
// chunks as they arrive (recvBlob), so an announced length costs memory only once its bytes came.
constexpr uint64_t kMaxBlobBytes = uint64_t{64} << 20;

enum class Verdict : uint32_t {
  kAccepted = 0,
  kBadVersion = 1,
  kBadToken = 2,
  kBadWorld = 3,
  kBadRank = 4,
  kDuplicateRank = 5,
};

inline const char* verdictText(Verdict v) {
  switch (v) {
    case Verdict::kAccepted:
      return "accepted";
    case Verdict::kBadVersion:
      return "protocol version mismatch";
    case Verdict::kBadToken:
      return "wrong job token";
    case Verdict::kBadWorld:
      return "world size differs from rank 0's";
    case Verdict::kBadRank:
      return "rank out of range";
    case Verdict::kDuplicateRank:
      return "another connection already holds this rank";
  }
  return "unknown verdict";
}

inline void putU32(std::vector<uint8_t>& out, uint32_t v) { appendLe(out, v, 4); }
inline void putU64(std::vector<uint8_t>& out, uint64_t v) { appendLe(out, v, 8); }
inline uint32_t getU32(const uint8_t* p) { return static_cast<uint32_t>(loadLe(p, 4)); }
inline uint64_t getU64(const uint8_t* p) { return loadLe(p, 8); }

// Compares in time that depends only on the expected token's length, so response timing does not tell an
// intruder how many leading bytes it guessed right.
inline bool tokensEqual(const std::string& expected, const std::string& presented) {
  volatile uint8_t diff = expected.size() == presented.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    uint8_t other = i < presented.size() ? static_cast<uint8_t>(presented[i]) : 0;
    diff = diff | (static_cast<uint8_t>(expected[i]) ^ other);
  }
  return diff == 0;
}

}  // namespace uccl::ep::bootstrap::detail
