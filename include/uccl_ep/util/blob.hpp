// Byte blobs and the little-endian fields inside them: every wire format of the project (the bootstrap's
// messages, the tables the proxies exchange, memory keys, the verbs endpoint address) is written and read
// through these, so a mixed cluster (or a big-endian port) agrees on every field.
//
// Readers bounds-check against the blob and throw uccl::ep::Error on truncation: their input comes from a peer
// or a socket and is never trusted (architecture.md, decision 10).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace uccl::ep {

using Blob = std::vector<uint8_t>;

// `bytes` (1 to 8) low bytes of v, least significant first.
void appendLe(Blob& out, uint64_t v, int bytes);
// The inverse of appendLe over `bytes` bytes at p; the caller has checked that they exist.
uint64_t loadLe(const uint8_t* p, int bytes);

// Length-prefixed tables: u64 fields and (u64 length, bytes) items. *offset advances past what was read.
void appendU64(Blob& out, uint64_t v);
uint64_t readU64(const Blob& in, size_t* offset);  // throws on truncation
void appendBlob(Blob& out, const Blob& item);
Blob readBlob(const Blob& in, size_t* offset);  // throws on truncation

}  // namespace uccl::ep
