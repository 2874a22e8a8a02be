// GPU memory helpers for registration, without linking libcuda or the CUDA runtime.
//
// The library must import on machines without a GPU, so the CUDA driver is reached at run time through
// dlopen("libcuda.so.1") and dlsym; a missing library or entry point is reported as text, never as a crash.
#pragma once

#include <cstddef>
#include <string>

namespace uccl::ep::transport::verbs {

// A dma-buf fd for [base, base + size) of device memory (both page-aligned), or -1 with *why explained.
int cudaDmabufFdViaDriver(void* base, size_t size, std::string* why);
// True when libcuda.so.1 loads and exports cuMemGetHandleForAddressRange (CUDA 11.7+ drivers).
bool cudaDmabufEntryPointPresent();
// True when the nvidia-peermem (or legacy nv_peer_mem) module lets ibv_reg_mr pin device memory.
bool peermemModuleLoaded();

}  // namespace uccl::ep::transport::verbs
