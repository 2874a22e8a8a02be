// The rendezvous wire format. Integers are little-endian regardless of the host, so a mixed cluster (or a
// future big-endian port) agrees on every field.
//
//   hello     (rank r -> 0, once): u32 magic, u32 version, u32 rank, u32 world, 32-byte nonce Nr
//   challenge (0 -> rank r, once): u32 magic, u32 Verdict (kAccepted, or kBadVersion and close), 32-byte nonce N0,
//                                  32-byte proof P0 = HMAC-SHA256(token, kRootLabel | Nr | N0 | rank | world)
//   proof     (rank r -> 0, once): 32-byte proof Pr = HMAC-SHA256(token, kRankLabel | N0 | Nr | rank | world)
//   verdict   (0 -> rank r, once): u32 magic, u32 Verdict; the connection is closed unless kAccepted
// The token never crosses the wire: each side proves it holds it over the other side's fresh nonce, so neither a
// stranger that listens on rank 0's port first nor one that connects to it learns the token or can replay a proof,
// and the two labels keep one side's proof from being reflected as the other's. rank 0 checks the proof before it
// looks at rank and world, so a stranger learns nothing about the job's shape.
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

#include "bootstrap/keyed_hash.hpp"
#include "uccl_ep/util/blob.hpp"

namespace uccl::ep::bootstrap::detail {

constexpr uint32_t kMagic = 0x52504555;  // "UEPR"
constexpr uint32_t kProtocolVersion = 2;  // 2: challenge-response (1 sent the token)
constexpr size_t kHelloBytes = 16 + kNonceBytes;
constexpr size_t kChallengeBytes = 8 + kNonceBytes + kMacBytes;
constexpr size_t kVerdictBytes = 8;
constexpr char kRootLabel[] = "uccl-ep rendezvous v2: rank 0";
constexpr char kRankLabel[] = "uccl-ep rendezvous v2: joining rank";
constexpr size_t kHeaderBytes = 16;
// Bounds: the token (an option, never on the wire), and lengths read from the wire, so a corrupt or hostile length
// cannot make us allocate gigabytes (the blob bound applies to authenticated ranks only).
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

// The proof one side sends: HMAC-SHA256(token, label | first nonce | second nonce | rank | world).
inline Mac proofOf(const std::string& token, const char* label, const Nonce& first, const Nonce& second,
                   uint32_t rank, uint32_t world) {
  std::vector<uint8_t> msg(label, label + std::char_traits<char>::length(label));
  msg.insert(msg.end(), first.begin(), first.end());
  msg.insert(msg.end(), second.begin(), second.end());
  putU32(msg, rank);
  putU32(msg, world);
  return keyedHash(token, msg);
}

}  // namespace uccl::ep::bootstrap::detail
