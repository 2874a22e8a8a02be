#include "uccl_ep/util/dynamic_library.hpp"

#include <dlfcn.h>

#include <utility>

namespace uccl::ep {

DynamicLibrary::DynamicLibrary(std::vector<std::string> sonames) : sonames_(std::move(sonames)) {}

void DynamicLibrary::load() {
  std::string tried;
  for (const std::string& name : sonames_) {
    // RTLD_LOCAL: the library's symbols stay out of the global namespace, as if this were its only user.
    handle_ = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ != nullptr) return;
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + name + ": " + (why != nullptr ? why : "not found");
  }
  std::lock_guard<std::mutex> lock(mu_);
  error_ = "could not load " + tried;
}

bool DynamicLibrary::loaded() {
  std::call_once(once_, [this] { load(); });
  return handle_ != nullptr;
}

void* DynamicLibrary::symbol(const char* name) {
  if (!loaded()) return nullptr;
  void* p = dlsym(handle_, name);
  if (p == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = sonames_.front() + " has no symbol " + name;
  }
  return p;
}

std::string DynamicLibrary::error() {
  loaded();
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

}  // namespace uccl::ep
