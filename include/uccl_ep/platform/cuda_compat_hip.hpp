// The CUDA runtime names the host-side runtime (src/runtime) uses, mapped to their HIP equivalents. Included only
// through gpu_runtime.hpp, and only in a HIP build, so that the runtime has one source for both platforms.
//
// Only names with a HIP equivalent of the same meaning belong here. The CUDA driver API (cuMem* virtual memory,
// POSIX-fd and fabric handles, cudaGetDriverEntryPoint) has none that we use: shared_memory.cpp compiles it out for
// HIP and raises an error when such handles are requested. A name missing here fails the HIP build loudly.
#pragma once

#if !defined(UCCL_EP_HIP)
#error "cuda_compat_hip.hpp is for HIP builds only (include uccl_ep/platform/gpu_runtime.hpp)"
#endif

#include <hip/hip_runtime.h>

// Types and enumerators.
#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaStream_t hipStream_t
#define cudaEvent_t hipEvent_t
#define cudaIpcMemHandle_t hipIpcMemHandle_t
#define cudaStreamCaptureStatus hipStreamCaptureStatus
#define cudaStreamCaptureStatusNone hipStreamCaptureStatusNone
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaEventDisableTiming hipEventDisableTiming
#define cudaHostAllocMapped hipHostMallocMapped
#define cudaIpcMemLazyEnablePeerAccess hipIpcMemLazyEnablePeerAccess
#define cudaDevAttrMultiProcessorCount hipDeviceAttributeMultiprocessorCount

// Errors.
#define cudaGetErrorName hipGetErrorName
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError

// Devices.
#define cudaGetDevice hipGetDevice
#define cudaSetDevice hipSetDevice
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaDeviceGetAttribute hipDeviceGetAttribute
#define cudaDeviceGetPCIBusId hipDeviceGetPCIBusId
#define cudaDeviceSynchronize hipDeviceSynchronize

// Memory.
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaHostAlloc hipHostMalloc
#define cudaFreeHost hipHostFree
#define cudaHostGetDevicePointer hipHostGetDevicePointer
#define cudaMemset hipMemset
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpy hipMemcpy
#define cudaMemcpyAsync hipMemcpyAsync

// IPC handles (within one host).
#define cudaIpcGetMemHandle hipIpcGetMemHandle
#define cudaIpcOpenMemHandle hipIpcOpenMemHandle
#define cudaIpcCloseMemHandle hipIpcCloseMemHandle

// Streams and events.
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamWaitEvent hipStreamWaitEvent
#define cudaStreamIsCapturing hipStreamIsCapturing
#define cudaEventCreateWithFlags hipEventCreateWithFlags
#define cudaEventRecord hipEventRecord
#define cudaEventDestroy hipEventDestroy
