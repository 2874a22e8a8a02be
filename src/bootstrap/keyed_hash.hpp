// HMAC-SHA256 and random nonces for the rendezvous handshake (challenge-response: both sides prove they hold the
// job's token without sending it). HMAC comes from OpenSSL's libcrypto, opened at run time (util/dynamic_library):
// no build dependency, and libcrypto is on every host that runs a job. Nonces come from getrandom().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace uccl::ep::bootstrap::detail {

constexpr size_t kMacBytes = 32;
constexpr size_t kNonceBytes = 32;
using Mac = std::array<uint8_t, kMacBytes>;
using Nonce = std::array<uint8_t, kNonceBytes>;

// HMAC-SHA256(key, message). Throws uccl::ep::Error naming libcrypto when it cannot be loaded.
Mac keyedHash(const std::string& key, const std::vector<uint8_t>& message);
// Whether keyedHash works here (libcrypto loads and exports HMAC and EVP_sha256); `why` says what is missing.
bool keyedHashAvailable(std::string* why);
Nonce randomNonce();
// Compares in time independent of where the first difference is.
bool macsEqual(const Mac& a, const Mac& b);

}  // namespace uccl::ep::bootstrap::detail
