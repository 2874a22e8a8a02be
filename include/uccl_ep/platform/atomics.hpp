// Atomics, fences and 128-bit accesses with an explicit memory order and scope.
//
// Scope says who must observe the access: kDevice for agents on one GPU, kSystem for the CPU (and NICs)
// observing GPU memory or GPU threads observing pinned host memory. On the host every access is
// system-wide, so the scope only matters in the device pass.
//
// Every width has the same operations: 64-bit words (uint64_t; callers holding int64_t words cast) and 32-bit
// words (int32_t or uint32_t, deduced). Loads and stores default to kSystem, read-modify-writes to kDevice.
//
// The 128-bit store and load are single-copy atomic for 16-byte aligned addresses: one vector store on the
// GPU (one PCIe write), one SSE/NEON load on the CPU (x86 with AVX and Armv8.4 LSE2 guarantee it). The ring
// relies on this: a descriptor and its lap parity are committed by one store and seen whole or not at all.
#pragma once

#include <cstdint>
#include <type_traits>

#include "uccl_ep/platform/platform.hpp"

#if !UCCL_EP_DEVICE_PASS
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif
#endif

namespace uccl::ep::platform {

enum class Scope { kDevice, kSystem };

// The 32-bit operations take int32_t or uint32_t words; PTX sees them as untyped 32-bit registers.
template <typename T>
inline constexpr bool kIsWord32 = std::is_integral_v<T> && sizeof(T) == 4;

// ---- 64-bit loads and stores -------------------------------------------------------------------------------
template <Scope S = Scope::kSystem>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t loadAcquire(const uint64_t* p) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint64_t v;
  if constexpr (S == Scope::kSystem) {
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  } else {
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  }
  return v;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_load(p, __ATOMIC_ACQUIRE,
                           S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

template <Scope S = Scope::kSystem>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t loadRelaxed(const uint64_t* p) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint64_t v;
  if constexpr (S == Scope::kSystem) {
    asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  } else {
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  }
  return v;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_load(p, __ATOMIC_RELAXED,
                           S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}

template <Scope S = Scope::kSystem>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void storeRelease(uint64_t* p, uint64_t v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  if constexpr (S == Scope::kSystem) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  } else {
    asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  }
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_store(p, v, __ATOMIC_RELEASE,
                     S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

template <Scope S = Scope::kSystem>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void storeRelaxed(uint64_t* p, uint64_t v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  if constexpr (S == Scope::kSystem) {
    asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  } else {
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  }
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_store(p, v, __ATOMIC_RELAXED,
                     S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// ---- 32-bit loads and stores -------------------------------------------------------------------------------
template <Scope S = Scope::kSystem, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE T loadAcquire(const T* p) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint32_t v;
  if constexpr (S == Scope::kSystem) {
    asm volatile("ld.acquire.sys.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  } else {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  }
  return static_cast<T>(v);
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_load(p, __ATOMIC_ACQUIRE,
                           S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

template <Scope S = Scope::kSystem, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE T loadRelaxed(const T* p) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint32_t v;
  if constexpr (S == Scope::kSystem) {
    asm volatile("ld.relaxed.sys.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  } else {
    asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  }
  return static_cast<T>(v);
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_load(p, __ATOMIC_RELAXED,
                           S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}

template <Scope S = Scope::kSystem, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void storeRelease(T* p, T v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  const uint32_t u = static_cast<uint32_t>(v);
  if constexpr (S == Scope::kSystem) {
    asm volatile("st.release.sys.global.b32 [%0], %1;" ::"l"(p), "r"(u) : "memory");
  } else {
    asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(p), "r"(u) : "memory");
  }
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_store(p, v, __ATOMIC_RELEASE,
                     S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

template <Scope S = Scope::kSystem, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void storeRelaxed(T* p, T v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  const uint32_t u = static_cast<uint32_t>(v);
  if constexpr (S == Scope::kSystem) {
    asm volatile("st.relaxed.sys.global.b32 [%0], %1;" ::"l"(p), "r"(u) : "memory");
  } else {
    asm volatile("st.relaxed.gpu.global.b32 [%0], %1;" ::"l"(p), "r"(u) : "memory");
  }
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_store(p, v, __ATOMIC_RELAXED,
                     S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// ---- read-modify-write ---------------------------------------------------------------------------------------
// Relaxed: callers that need ordering pair it with a fence or an acquire/release access.
template <Scope S = Scope::kDevice>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t fetchAddRelaxed(uint64_t* p, uint64_t v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint64_t old;
  if constexpr (S == Scope::kSystem) {
    asm volatile("atom.relaxed.sys.global.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  } else {
    asm volatile("atom.relaxed.gpu.global.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  }
  return old;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED,
                                S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

// *p += v without reading the old value back: on CUDA a reduction (`red`), which the issuing thread does not wait
// for, where fetchAddRelaxed (`atom`) waits for the reply (a round trip over NVLink for a peer's word). Signals use it.
template <Scope S = Scope::kDevice>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void addRelaxed(uint64_t* p, uint64_t v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  if constexpr (S == Scope::kSystem) {
    asm volatile("red.relaxed.sys.global.add.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  } else {
    asm volatile("red.relaxed.gpu.global.add.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  }
#else
  (void)fetchAddRelaxed<S>(p, v);
#endif
}

// Raises *p to at least v. Used for the producer-side cached copy of the consumer tail, which only grows.
template <Scope S = Scope::kDevice>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void fetchMaxRelaxed(uint64_t* p, uint64_t v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  unsigned long long old;
  if constexpr (S == Scope::kSystem) {
    asm volatile("atom.relaxed.sys.global.max.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  } else {
    asm volatile("atom.relaxed.gpu.global.max.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  }
  (void)old;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_fetch_max(p, v, __ATOMIC_RELAXED,
                         S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

// Stores `desired` if *p == expected; returns what *p held before (== expected when the exchange happened).
// Relaxed: a first-wins claim whose winner then publishes with a release store (see kernels/error_record.hpp).
template <Scope S = Scope::kDevice>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t compareExchangeRelaxed(uint64_t* p, uint64_t expected,
                                                                         uint64_t desired) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint64_t old;
  if constexpr (S == Scope::kSystem) {
    asm volatile("atom.relaxed.sys.global.cas.b64 %0, [%1], %2, %3;"
                 : "=l"(old)
                 : "l"(p), "l"(expected), "l"(desired)
                 : "memory");
  } else {
    asm volatile("atom.relaxed.gpu.global.cas.b64 %0, [%1], %2, %3;"
                 : "=l"(old)
                 : "l"(p), "l"(expected), "l"(desired)
                 : "memory");
  }
  return old;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_compare_exchange_strong(p, &expected, desired, __ATOMIC_RELAXED, __ATOMIC_RELAXED,
                                       S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
  return expected;  // updated to the value found when the exchange failed
#else
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
#endif
}

template <Scope S = Scope::kDevice, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE T fetchAddRelaxed(T* p, T v) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint32_t old;
  const uint32_t u = static_cast<uint32_t>(v);  // two's complement: one add serves both signednesses
  if constexpr (S == Scope::kSystem) {
    asm volatile("atom.relaxed.sys.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(u) : "memory");
  } else {
    asm volatile("atom.relaxed.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(u) : "memory");
  }
  return static_cast<T>(old);
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED,
                                S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

template <Scope S = Scope::kDevice, typename T, std::enable_if_t<kIsWord32<T>, int> = 0>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE T compareExchangeRelaxed(T* p, T expected, T desired) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint32_t old;
  const uint32_t e = static_cast<uint32_t>(expected), d = static_cast<uint32_t>(desired);
  if constexpr (S == Scope::kSystem) {
    asm volatile("atom.relaxed.sys.global.cas.b32 %0, [%1], %2, %3;" : "=r"(old) : "l"(p), "r"(e), "r"(d) : "memory");
  } else {
    asm volatile("atom.relaxed.gpu.global.cas.b32 %0, [%1], %2, %3;" : "=r"(old) : "l"(p), "r"(e), "r"(d) : "memory");
  }
  return static_cast<T>(old);
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  __hip_atomic_compare_exchange_strong(p, &expected, desired, __ATOMIC_RELAXED, __ATOMIC_RELAXED,
                                       S == Scope::kSystem ? __HIP_MEMORY_SCOPE_SYSTEM : __HIP_MEMORY_SCOPE_AGENT);
  return expected;
#else
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
#endif
}

// ---- fences ------------------------------------------------------------------------------------------------
template <Scope S = Scope::kSystem>
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void fenceAcqRel() {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  if constexpr (S == Scope::kSystem) {
    asm volatile("fence.acq_rel.sys;" ::: "memory");
  } else {
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
  }
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  // The scope argument must be a string literal, not a constant expression.
  if constexpr (S == Scope::kSystem) {
    __builtin_amdgcn_fence(__ATOMIC_ACQ_REL, "");
  } else {
    __builtin_amdgcn_fence(__ATOMIC_ACQ_REL, "agent");
  }
#else
  __atomic_thread_fence(__ATOMIC_ACQ_REL);
#endif
}

// ---- 128-bit accesses --------------------------------------------------------------------------------------
struct alignas(16) U128 {
  uint64_t lo;
  uint64_t hi;
};
static_assert(sizeof(U128) == 16 && alignof(U128) == 16, "U128 must be one aligned 16-byte word");

// One 16-byte store with release semantics at system scope: every earlier write of this thread (and, by
// cumulativity, every write it observed, e.g. through a block barrier) is visible before the 16 bytes are.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void store128Release(U128* p, uint64_t lo, uint64_t hi) {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  asm volatile("st.release.sys.global.v2.u64 [%0], {%1, %2};" ::"l"(p), "l"(lo), "l"(hi) : "memory");
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  // No release vector store on CDNA: a system release fence, then one dwordx4 store.
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "");
  using V4 = __attribute__((ext_vector_type(4))) unsigned int;
  V4 v = {static_cast<unsigned>(lo), static_cast<unsigned>(lo >> 32), static_cast<unsigned>(hi),
          static_cast<unsigned>(hi >> 32)};
  __builtin_nontemporal_store(v, reinterpret_cast<V4*>(p));
#elif defined(__SANITIZE_THREAD__)
  // ThreadSanitizer cannot see a vector store as atomic; a 16-byte __atomic store is what it understands.
  unsigned __int128 v = (static_cast<unsigned __int128>(hi) << 64) | lo;
  __atomic_store_n(reinterpret_cast<unsigned __int128*>(p), v, __ATOMIC_RELEASE);
#elif defined(__x86_64__)
  // x86 stores are ordered after earlier stores (TSO); the compiler barrier keeps the compiler honest.
  __atomic_signal_fence(__ATOMIC_RELEASE);
  _mm_store_si128(reinterpret_cast<__m128i*>(p), _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo)));
#elif defined(__aarch64__)
  __atomic_thread_fence(__ATOMIC_RELEASE);
  vst1q_u64(reinterpret_cast<uint64_t*>(p), vcombine_u64(vcreate_u64(lo), vcreate_u64(hi)));
#else
#error "no 128-bit single-copy atomic store for this architecture"
#endif
}

#if !UCCL_EP_DEVICE_PASS
// Host-side 16-byte load with acquire semantics: later reads see at least what the producer wrote before its
// release store of these 16 bytes.
inline U128 load128Acquire(const U128* p) {
  U128 r;
#if defined(__SANITIZE_THREAD__)
  unsigned __int128 v = __atomic_load_n(reinterpret_cast<const unsigned __int128*>(p), __ATOMIC_ACQUIRE);
  r.lo = static_cast<uint64_t>(v);
  r.hi = static_cast<uint64_t>(v >> 64);
#elif defined(__x86_64__)
  __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(p));
  r.lo = static_cast<uint64_t>(_mm_cvtsi128_si64(v));
  r.hi = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)));
  __atomic_signal_fence(__ATOMIC_ACQUIRE);
#elif defined(__aarch64__)
  uint64x2_t v = vld1q_u64(reinterpret_cast<const uint64_t*>(p));
  r.lo = vgetq_lane_u64(v, 0);
  r.hi = vgetq_lane_u64(v, 1);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
#else
#error "no 128-bit single-copy atomic load for this architecture"
#endif
  return r;
}
#endif

}  // namespace uccl::ep::platform
