// The ring across PCIe: GPU warps produce (ring_kernels.cu), a host thread consumes with ring::RingConsumer.
// What the CPU ring tests cannot show: the 128-bit commit store and its parity seen through a real PCIe write,
// the GPU-cached tail, and GPU waits that give up on consumer errors and timeouts instead of hanging a kernel.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/gpu_ring.hpp"
#include "ring_kernels.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::test {
namespace {

namespace pf = platform;
using ring::Status;
using runtime::GpuRing;
using runtime::Mapped;

// Fails (never skips) without a GPU: the binary is labelled `gpu`, so CI leaves it out, and on a device
// machine a missing GPU is an error worth seeing.
inline std::string gpuMissingReason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e);
  if (n == 0) return "no CUDA device visible";
  return "";
}


constexpr uint64_t kSecond = 1000ull * 1000 * 1000;

struct ConsumerOptions {
  uint32_t producers = 0;
  uint32_t per_producer = 0;
  std::chrono::microseconds delay_per_batch{0};  // > 0: a deliberately slow consumer
  uint32_t batch = 32;                           // positions taken before publishing tail
  uint64_t* processed = nullptr;                 // host view; marked per position before completed moves
  std::chrono::seconds deadline{60};
};

struct ConsumerReport {
  std::string error;  // first problem seen; empty when all is well
  uint64_t consumed = 0;
  uint64_t full_observed = 0;  // rounds in which the ring was found full (backpressure really happened)
};

// Drains until every expected descriptor arrived; checks each arrives once and in its producer's order.
ConsumerReport consume(const ring::RingView& view, const ConsumerOptions& o) {
  ConsumerReport rep;
  ring::RingConsumer c(view);
  std::vector<uint32_t> next(o.producers, 0);
  const uint64_t total = uint64_t{o.producers} * o.per_producer;
  const uint64_t capacity = uint64_t{1} << view.capacity_log2;
  const auto deadline = std::chrono::steady_clock::now() + o.deadline;
  while (c.position() < total) {
    if (o.delay_per_batch.count() > 0) {
      std::this_thread::sleep_for(o.delay_per_batch);
      // The last slot before our position committed for this lap means producers have filled the ring.
      const uint64_t last = c.position() + capacity - 1;
      const pf::U128 v = pf::load128Acquire(reinterpret_cast<const pf::U128*>(&view.slots[last & (capacity - 1)]));
      if ((v.hi & ring::bits::kParityMask) == ring::parityFor(last, view.capacity_log2)) ++rep.full_observed;
    }
    uint32_t taken = 0;
    ring::Descriptor d;
    while (taken < o.batch && c.peek(&d)) {
      const ring::Decoded x = ring::decode(d);
      const uint64_t producer = x.dst_offset / ring::kOffsetUnit;
      const uint64_t seq = x.src_offset / ring::kOffsetUnit;
      if (x.opcode != ring::Opcode::kWrite || producer >= o.producers || seq != x.length) {
        rep.error = "corrupt descriptor at position " + std::to_string(c.position());
        return rep;
      }
      if (seq != next[producer]) {
        rep.error = "producer " + std::to_string(producer) + ": expected seq " + std::to_string(next[producer]) +
                    ", got " + std::to_string(seq) + " at position " + std::to_string(c.position());
        return rep;
      }
      ++next[producer];
      if (o.processed != nullptr) pf::storeRelease(&o.processed[c.position()], 1);
      c.advance();
      ++taken;
    }
    if (taken > 0) {
      c.publishTail();
      c.publishCompleted(c.position());
    } else if (std::chrono::steady_clock::now() > deadline) {
      rep.error =
          "consumer deadline passed at position " + std::to_string(c.position()) + " of " + std::to_string(total);
      return rep;
    }
  }
  rep.consumed = c.position();
  for (uint32_t p = 0; p < o.producers; ++p) {
    if (next[p] != o.per_producer) {
      rep.error = "producer " + std::to_string(p) + " delivered " + std::to_string(next[p]);
      return rep;
    }
  }
  return rep;
}

class RingGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = gpuMissingReason();
    ASSERT_TRUE(why.empty()) << "test_ring_gpu needs a CUDA GPU (" << why
                             << "); it is labelled `gpu` so CI runs exclude it";
    UCCL_EP_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Launches `blocks` x `warps_per_block` producers, runs `consumer` on a host thread meanwhile, and returns
  // the producers' results.
  using Launch = std::function<cudaError_t(ProducerResult* d_out)>;
  std::vector<ProducerResult> runProducers(uint32_t producers, const Launch& launch,
                                           const std::function<void()>& consumer) {
    ProducerResult* d_out = nullptr;
    UCCL_EP_CUDA_CHECK(cudaMalloc(&d_out, sizeof(ProducerResult) * producers));
    UCCL_EP_CUDA_CHECK(cudaMemset(d_out, 0xff, sizeof(ProducerResult) * producers));
    std::thread t;
    if (consumer) t = std::thread(consumer);
    const cudaError_t launched = launch(d_out);
    const cudaError_t synced = cudaStreamSynchronize(stream_);
    if (t.joinable()) t.join();
    UCCL_EP_CUDA_CHECK(launched);
    UCCL_EP_CUDA_CHECK(synced);
    std::vector<ProducerResult> out(producers);
    UCCL_EP_CUDA_CHECK(cudaMemcpy(out.data(), d_out, sizeof(ProducerResult) * producers, cudaMemcpyDeviceToHost));
    UCCL_EP_CUDA_CHECK(cudaFree(d_out));
    return out;
  }

  // Many warps, many laps of a small ring, a consumer as fast as it can be, or a slow one (backpressure).
  void runExactlyOnce(uint32_t capacity_log2, uint32_t blocks, uint32_t per_producer, std::chrono::microseconds delay) {
    constexpr uint32_t kWarpsPerBlock = 4;
    GpuRing ring(capacity_log2, 0);
    ConsumerOptions o;
    o.producers = blocks * kWarpsPerBlock;
    o.per_producer = per_producer;
    o.delay_per_batch = delay;
    ConsumerReport rep;
    auto out = runProducers(
        o.producers,
        [&](ProducerResult* d_out) {
          return launchPushSequence(ring.deviceView(), blocks, kWarpsPerBlock, per_producer, 30 * kSecond, true, d_out,
                                    stream_);
        },
        [&] { rep = consume(ring.hostView(), o); });
    EXPECT_EQ(rep.error, "");
    EXPECT_EQ(rep.consumed, uint64_t{o.producers} * per_producer);
    for (uint32_t p = 0; p < o.producers; ++p) {
      ASSERT_EQ(out[p].status, static_cast<uint32_t>(Status::kOk)) << "producer " << p;
      ASSERT_EQ(out[p].pushed, per_producer) << "producer " << p;
    }
    // Nothing beyond what was pushed: the next slot still holds its previous lap.
    ring::RingConsumer after(ring.hostView());
    for (uint64_t i = 0; i < rep.consumed; ++i) after.advance();
    ring::Descriptor d;
    EXPECT_FALSE(after.peek(&d));
    EXPECT_EQ(ring.control()->error, 0u);
    if (delay.count() > 0) {
      EXPECT_GT(rep.full_observed, 0u) << "the slow consumer never saw a full ring";
    }
  }

  cudaStream_t stream_ = nullptr;
};

// (a) 132 blocks x 4 warps, one lane per warp, ~500 laps of a 1024-slot ring.
TEST_F(RingGpuTest, ManyWarpsExactlyOnceInProducerOrder) {
  runExactlyOnce(/*capacity_log2=*/10, /*blocks=*/132, /*per_producer=*/1000, std::chrono::microseconds(0));
}

// (b) A 64-slot ring and a consumer that sleeps between batches: producers wait for room, nothing is lost
// or overwritten.
TEST_F(RingGpuTest, BackpressureLosesNothing) {
  runExactlyOnce(/*capacity_log2=*/6, /*blocks=*/16, /*per_producer=*/100, std::chrono::microseconds(200));
}

// (c) waitCompleted returns only after the consumer processed the position and published completed.
TEST_F(RingGpuTest, WaitCompletedIsAFence) {
  constexpr uint32_t kBlocks = 16, kWarpsPerBlock = 4, kPerProducer = 16;
  const uint32_t producers = kBlocks * kWarpsPerBlock;
  GpuRing ring(/*capacity_log2=*/6, 0);
  Mapped<uint64_t> processed(size_t{producers} * kPerProducer);
  ConsumerOptions o;
  o.producers = producers;
  o.per_producer = kPerProducer;
  o.delay_per_batch = std::chrono::microseconds(100);  // "processing" takes a while
  o.batch = 8;
  o.processed = processed.host();
  ConsumerReport rep;
  auto out = runProducers(
      producers,
      [&](ProducerResult* d_out) {
        return launchPushAndFence(ring.deviceView(), kBlocks, kWarpsPerBlock, kPerProducer, 30 * kSecond,
                                  processed.device(), d_out, stream_);
      },
      [&] { rep = consume(ring.hostView(), o); });
  EXPECT_EQ(rep.error, "");
  for (uint32_t p = 0; p < producers; ++p) {
    ASSERT_EQ(out[p].status, static_cast<uint32_t>(Status::kOk)) << "producer " << p;
    ASSERT_EQ(out[p].pushed, kPerProducer) << "producer " << p;
    ASSERT_EQ(out[p].violations, 0u) << "producer " << p << " returned from waitCompleted before completion";
  }
}

// (d) The consumer fails: producers blocked on a full ring, or on a ticket that never completes, return
// kConsumerError promptly instead of hanging until their timeout.
TEST_F(RingGpuTest, ConsumerErrorReleasesBlockedProducers) {
  constexpr uint32_t kBlocks = 8, kWarpsPerBlock = 4;
  GpuRing ring(/*capacity_log2=*/6, 0);
  ring::RingConsumer c(ring.hostView());
  auto out = runProducers(
      kBlocks * kWarpsPerBlock,
      [&](ProducerResult* d_out) {
        return launchPushSequence(ring.deviceView(), kBlocks, kWarpsPerBlock, /*per_producer=*/64, 60 * kSecond, true,
                                  d_out, stream_);
      },
      [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let producers fill the ring and block
        c.publishError(1);
      });
  uint32_t pushed = 0;
  for (uint32_t p = 0; p < out.size(); ++p) {
    pushed += out[p].pushed;
    EXPECT_EQ(out[p].status, static_cast<uint32_t>(Status::kConsumerError)) << "producer " << p;
    EXPECT_LT(out[p].elapsed_ns, 10 * kSecond) << "producer " << p << " waited far past the error";
  }
  EXPECT_EQ(pushed, 64u) << "exactly the ring's capacity fits without a consumer";
}

// (e) No consumer at all: the push that finds the ring full gives up after its timeout.
TEST_F(RingGpuTest, FullRingTimesOut) {
  constexpr uint64_t kTimeoutNs = 20ull * 1000 * 1000;
  GpuRing ring(/*capacity_log2=*/6, 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto out = runProducers(
      1,
      [&](ProducerResult* d_out) {
        return launchPushSequence(ring.deviceView(), 1, 1, /*per_producer=*/65, kTimeoutNs, false, d_out, stream_);
      },
      nullptr);
  const auto wall = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(out[0].status, static_cast<uint32_t>(Status::kTimeout));
  EXPECT_EQ(out[0].pushed, 64u);
  EXPECT_GE(out[0].elapsed_ns, kTimeoutNs);
  EXPECT_LT(out[0].elapsed_ns, kTimeoutNs + kSecond);
  EXPECT_LT(wall, std::chrono::seconds(5));
}

}  // namespace
}  // namespace uccl::ep::test
