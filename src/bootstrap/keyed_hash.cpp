#include "bootstrap/keyed_hash.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "uccl_ep/util/dynamic_library.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::bootstrap::detail {
namespace {

// libcrypto's entry points, declared here so that the build needs no OpenSSL headers (the ABI of both functions is
// the same in OpenSSL 1.1 and 3).
using EvpSha256Fn = const void*();
using HmacFn = unsigned char*(const void* md, const void* key, int key_len, const unsigned char* data, size_t data_len,
                              unsigned char* out, unsigned int* out_len);

struct Crypto {
  DynamicLibrary lib{{"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"}};
  EvpSha256Fn* sha256 = lib.function<EvpSha256Fn>("EVP_sha256");
  HmacFn* hmac = lib.function<HmacFn>("HMAC");
};

Crypto& crypto() {
  static Crypto c;
  return c;
}

}  // namespace

bool keyedHashAvailable(std::string* why) {
  Crypto& c = crypto();
  if (c.sha256 != nullptr && c.hmac != nullptr) return true;
  if (why != nullptr) *why = c.lib.error();
  return false;
}

Mac keyedHash(const std::string& key, const std::vector<uint8_t>& message) {
  std::string why;
  if (!keyedHashAvailable(&why)) {
    UCCL_EP_THROW("rendezvous: the handshake authenticates with HMAC-SHA256 from OpenSSL's libcrypto, which is not "
                  "available ({}); install libcrypto (OpenSSL 1.1 or 3)",
                  why);
  }
  Mac out{};
  unsigned int len = 0;
  const unsigned char* r = crypto().hmac(crypto().sha256(), key.data(), static_cast<int>(key.size()),
                                         message.data(), message.size(), out.data(), &len);
  UCCL_EP_CHECK(r != nullptr && len == kMacBytes, "rendezvous: HMAC-SHA256 failed (length {})", len);
  return out;
}

Nonce randomNonce() {
  Nonce n{};
  size_t have = 0;
  while (have < n.size()) {
    const ssize_t got = getrandom(n.data() + have, n.size() - have, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      UCCL_EP_THROW("rendezvous: getrandom failed: {}", std::strerror(errno));
    }
    have += static_cast<size_t>(got);
  }
  return n;
}

bool macsEqual(const Mac& a, const Mac& b) {
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < kMacBytes; ++i) diff = diff | (a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace uccl::ep::bootstrap::detail
