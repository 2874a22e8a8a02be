// The ring protocol with host threads as producers: the same push code the GPU runs (platform.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "uccl_ep/ring/host_ring.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::ring {
namespace {

constexpr uint64_t kSecond = 1000ull * 1000 * 1000;

// Producer p's i-th descriptor: rank field = producer, source offset = sequence number.
Descriptor tagged(uint32_t producer, uint64_t seq) {
  return makeWrite(producer, 1, seq * kOffsetUnit, 2, 0, 64);
}

uint64_t envCount(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// Drains until `total` descriptors were seen; checks each producer's sequence is exactly 0, 1, 2, ...
// Publishes the tail every `publish_every` pops, as a proxy batches its tail updates.
void consumeAndCheck(const RingView& view, uint32_t producers, uint64_t per_producer, int publish_every) {
  RingConsumer c(view);
  std::vector<uint64_t> next(producers, 0);
  const uint64_t total = producers * per_producer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  uint64_t seen = 0;
  int since_publish = 0;
  Descriptor d;
  uint32_t spins = 0;
  while (seen < total) {
    if (!c.peek(&d)) {
      c.publishTail();
      since_publish = 0;
      platform::spinRelax(spins);
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "stalled after " << seen << " descriptors";
      continue;
    }
    spins = 0;
    const Decoded x = decode(d);
    ASSERT_EQ(x.version, kDescriptorVersion);
    ASSERT_EQ(x.opcode, Opcode::kWrite);
    ASSERT_LT(x.dst_rank, producers);
    ASSERT_EQ(x.src_offset / kOffsetUnit, next[x.dst_rank]) << "producer " << x.dst_rank << " out of order";
    ++next[x.dst_rank];
    c.advance();
    ++seen;
    if (++since_publish == publish_every) {
      c.publishTail();
      since_publish = 0;
    }
  }
  c.publishTail();
  for (uint32_t p = 0; p < producers; ++p) EXPECT_EQ(next[p], per_producer) << "producer " << p;
  Descriptor extra;
  EXPECT_FALSE(c.peek(&extra)) << "a descriptor appeared that nobody pushed";
}

TEST(Ring, WrapsAroundManyLaps) {
  HostRing ring(3, 0);  // 8 slots
  const uint64_t n = 8 * 20000;
  std::thread consumer([&] { consumeAndCheck(ring.view(), 1, n, 1); });
  for (uint64_t i = 0; i < n; ++i) {
    const PushResult r = push(ring.view(), tagged(0, i), 60 * kSecond);
    ASSERT_EQ(r.status, Status::kOk);
    ASSERT_EQ(r.ticket, i);
  }
  consumer.join();
}

TEST(Ring, EightProducersEachSeenOnceInOrder) {
  const uint32_t producers = 8;
  const uint64_t per = envCount("UCCL_EP_TEST_RING_PER_PRODUCER", 1000000);
  HostRing ring(10, 1);  // 1024 slots
  std::thread consumer([&] { consumeAndCheck(ring.view(), producers, per, 32); });
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (uint32_t p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t i = 0; i < per; ++i) {
        if (push(ring.view(), tagged(p, i), 120 * kSecond).status != Status::kOk) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  consumer.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ring.view().producer->head, producers * per);
}

TEST(Ring, FullRingBackpressuresWithoutLoss) {
  HostRing ring(4, 2);  // 16 slots
  const uint32_t producers = 4;
  const uint64_t per = 64;
  std::atomic<uint64_t> pushed{0};
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t i = 0; i < per; ++i) {
        ASSERT_EQ(push(ring.view(), tagged(p, i), 60 * kSecond).status, Status::kOk);
        pushed.fetch_add(1);
      }
    });
  }
  // With no consumer, exactly a ring's worth of pushes complete; the rest wait for room.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pushed.load() < 16 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(pushed.load(), 16u) << "producers overran a full ring";
  consumeAndCheck(ring.view(), producers, per, 1);
  for (auto& t : threads) t.join();
  EXPECT_EQ(pushed.load(), producers * per);
}

TEST(Ring, PushIntoFullRingTimesOut) {
  HostRing ring(2, 3);  // 4 slots, nobody consuming
  for (int i = 0; i < 4; ++i) ASSERT_EQ(push(ring.view(), makeNop(), kSecond).status, Status::kOk);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(push(ring.view(), makeNop(), 50 * 1000 * 1000).status, Status::kTimeout);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(50));
  EXPECT_LT(waited, std::chrono::seconds(5));
}

TEST(Ring, ConsumerErrorReleasesWaitingProducers) {
  HostRing ring(1, 4);  // 2 slots
  ASSERT_EQ(push(ring.view(), makeNop(), kSecond).status, Status::kOk);
  ASSERT_EQ(push(ring.view(), makeNop(), kSecond).status, Status::kOk);
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    RingConsumer(ring.view()).publishError(42);
  });
  EXPECT_EQ(push(ring.view(), makeNop(), 60 * kSecond).status, Status::kConsumerError);
  EXPECT_EQ(waitCompleted(ring.view(), 0, 60 * kSecond), Status::kConsumerError);
  t.join();
}

TEST(Ring, WaitCompletedIsAFence) {
  HostRing ring(4, 5);
  std::atomic<uint64_t> processed{0};
  std::thread consumer([&] {
    RingConsumer c(ring.view());
    Descriptor d;
    uint32_t spins = 0;
    for (uint64_t n = 0; n < 10;) {
      if (!c.peek(&d)) {
        platform::spinRelax(spins);
        continue;
      }
      c.advance();
      c.publishTail();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      processed.store(++n);
      c.publishCompleted(n);
    }
  });
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) last = push(ring.view(), makeNop(), kSecond).ticket;
  ASSERT_EQ(waitCompleted(ring.view(), last, 10 * kSecond), Status::kOk);
  EXPECT_EQ(processed.load(), 10u) << "the fence returned before every earlier descriptor completed";
  consumer.join();
}

}  // namespace
}  // namespace uccl::ep::ring
