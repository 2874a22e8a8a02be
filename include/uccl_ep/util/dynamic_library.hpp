// A shared library opened at run time (dlopen) and its symbols (dlsym). The transports reach libfabric and
// libibverbs this way instead of linking them, so the package imports and runs on hosts that lack one or both (it
// uses what is there, as NCCL does with its network plugins), and one build serves every host; the rendezvous
// reaches libcrypto's HMAC the same way.
#pragma once

#include <mutex>
#include <string>
#include <vector>

namespace uccl::ep {

class DynamicLibrary {
 public:
  // `sonames` are tried in order on first use; the first that loads is kept for the life of the process.
  explicit DynamicLibrary(std::vector<std::string> sonames);
  DynamicLibrary(const DynamicLibrary&) = delete;
  DynamicLibrary& operator=(const DynamicLibrary&) = delete;

  bool loaded();
  // The symbol's address, or nullptr when the library did not load or lacks it (error() then says why).
  void* symbol(const char* name);
  // symbol() as a pointer to the function type F (e.g. decltype(fi_getinfo)).
  template <typename F>
  F* function(const char* name) {
    return reinterpret_cast<F*>(symbol(name));
  }
  // Why the library or the last missing symbol is unavailable, naming the sonames tried; "" when all is well.
  std::string error();

 private:
  void load();
  std::vector<std::string> sonames_;
  std::once_flag once_;
  void* handle_ = nullptr;
  std::mutex mu_;
  std::string error_;
};

}  // namespace uccl::ep
