// The NVLink write floor of the low-latency dispatch send (bench/RESULTS.md, issue 11): B blocks x 512 threads
// store N bytes (16 bytes a lane, warp-contiguous, as the send's warps store) into the peer GPU's memory, then a
// system fence; GPU 0 alone, then both GPUs at once (as two ranks dispatch to each other), and the same bytes to
// local memory for scale. Event-timed, median of 50 after 10. A fixed sweep: 1.9, 3.8 (one dispatch send's NVLink
// part at 128 tokens x 7168, top-8 of 288, 2 ranks) and 7.6 MB; 64-528 blocks. Needs two GPUs with peer access.
// Not part of the build (no options, nothing to link):
//     nvcc -O2 -arch=sm_90 bench/nvlink_write_floor.cu -o nvlink_write_floor && ./nvlink_write_floor
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#include <algorithm>
#define CK(x)                                                    \
  do {                                                           \
    cudaError_t e = (x);                                         \
    if (e != cudaSuccess) {                                      \
      std::printf("%s: %s\n", #x, cudaGetErrorString(e));        \
      return 1;                                                  \
    }                                                            \
  } while (0)

__global__ void writer(int4* dst, const int4* src, size_t n16, int fence) {
  const size_t per = (n16 + gridDim.x - 1) / gridDim.x;
  const size_t b = per * blockIdx.x, e = min(n16, b + per);
  for (size_t i = b + threadIdx.x; i < e; i += blockDim.x) dst[i] = src[i];
  __syncthreads();
  if (fence && threadIdx.x == 0) __threadfence_system();
}

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "%s takes no options (a fixed sweep; see the header comment), got '%s'\n", argv[0], argv[1]);
    return 2;
  }
  int n = 0; CK(cudaGetDeviceCount(&n)); if (n < 2) { printf("need 2 GPUs\n"); return 1; }
  const size_t maxBytes = 16u << 20;
  int4 *src[2], *dst[2];
  for (int d = 0; d < 2; ++d) {
    CK(cudaSetDevice(d)); CK(cudaDeviceEnablePeerAccess(1 - d, 0));
    CK(cudaMalloc(&src[d], maxBytes)); CK(cudaMalloc(&dst[d], maxBytes)); CK(cudaMemset(src[d], 1, maxBytes));
  }
  cudaStream_t s[2];
  cudaEvent_t a[2], z[2];
  for (int d = 0; d < 2; ++d) {
    CK(cudaSetDevice(d));
    CK(cudaStreamCreate(&s[d]));
    CK(cudaEventCreate(&a[d]));
    CK(cudaEventCreate(&z[d]));
  }
  const size_t sizes[] = {1900000, 3800000, 7600000};
  const int blocks[] = {64, 128, 132, 256, 264, 528};
  for (int both = 0; both < 2; ++both)
    for (int remote = 0; remote < 2; ++remote)
      for (size_t bytes : sizes)
        for (int B : blocks) {
          std::vector<float> t;
          for (int it = 0; it < 60; ++it) {
            for (int d = 0; d <= both; ++d) {
              CK(cudaSetDevice(d));
              CK(cudaEventRecord(a[d], s[d]));
              writer<<<B, 512, 0, s[d]>>>(remote ? dst[1 - d] : dst[d], src[d], bytes / 16, 1);
              CK(cudaEventRecord(z[d], s[d]));
            }
            for (int d = 0; d <= both; ++d) { CK(cudaSetDevice(d)); CK(cudaEventSynchronize(z[d])); }
            float ms; CK(cudaEventElapsedTime(&ms, a[0], z[0]));
            if (it >= 10) t.push_back(ms * 1000);
          }
          std::sort(t.begin(), t.end());
          printf("%s %s bytes %zu blocks %d: median %.2f us min %.2f us -> %.0f GB/s\n", both ? "both" : "one ",
                 remote ? "peer " : "local", bytes, B, t[t.size() / 2], t[0], bytes / (t[t.size() / 2] * 1e3));
        }
  return 0;
}
