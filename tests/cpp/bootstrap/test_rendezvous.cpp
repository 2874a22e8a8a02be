// TcpRendezvous: ranks as threads (and once as processes) on loopback, including the ways a job goes wrong:
// strangers, duplicates, missing ranks and ranks that leave mid-collective.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <new>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bootstrap/keyed_hash.hpp"
#include "bootstrap/wire.hpp"
#include "uccl_ep/bootstrap/rendezvous.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::bootstrap {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kToken[] = "job-4f1c-secret";
constexpr uint64_t kMs = 1000ull * 1000;

RendezvousOptions options(int rank, int world, int port, uint64_t timeout_ms = 10000, std::string token = kToken) {
  RendezvousOptions o;
  o.rank = rank;
  o.world = world;
  o.port = port;
  o.token = std::move(token);
  o.timeout_ns = timeout_ms * kMs;
  return o;
}

Blob pattern(int rank, int round, size_t n) {
  Blob b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(rank * 131 + round * 17 + i * 7 + (i >> 9));
  return b;
}

// Sizes per round and rank: empty, tiny and distinct, a mix of 0 B and 1 MiB, page-ish multiples.
size_t blobSize(int round, int rank) {
  switch (round % 4) {
    case 0:
      return 0;
    case 1:
      return 1 + rank;
    case 2:
      return rank % 2 == 0 ? 0 : (1u << 20);
    default:
      return 4096 * rank + 3;
  }
}

// Runs `rounds` allGathers (each followed by a barrier) and checks every byte; failures become exceptions
// so the same body serves threads and forked children.
void runRounds(TcpRendezvous& rv, int rounds) {
  for (int round = 0; round < rounds; ++round) {
    auto all = rv.allGather(pattern(rv.rank(), round, blobSize(round, rv.rank())));
    if (static_cast<int>(all.size()) != rv.world()) UCCL_EP_THROW("got {} blobs, world {}", all.size(), rv.world());
    for (int r = 0; r < rv.world(); ++r) {
      if (all[r] != pattern(r, round, blobSize(round, r))) {
        UCCL_EP_THROW("rank {} round {}: blob of rank {} differs ({} bytes)", rv.rank(), round, r, all[r].size());
      }
    }
    rv.barrier();
  }
}

// A port that was free a moment ago, for tests where rank 0 starts after the others.
int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One thread per body; returns each body's exception (null when it succeeded).
struct Threads {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors;
  explicit Threads(size_t n) : errors(n) {}
  void start(size_t i, std::function<void()> body) {
    threads.emplace_back([this, i, body = std::move(body)] {
      try {
        body();
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  void join() {
    for (auto& t : threads) t.join();
    threads.clear();
  }
};

std::string messageOf(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return "";
}

void expectNoErrors(const Threads& t) {
  for (size_t i = 0; i < t.errors.size(); ++i)
    EXPECT_FALSE(t.errors[i]) << "rank " << i << ": " << messageOf(t.errors[i]);
}

class AllGatherTest : public ::testing::TestWithParam<int> {};

TEST_P(AllGatherTest, RoundsOfAllGatherAndBarrier) {
  const int world = GetParam();
  TcpRendezvous root(options(0, world, 0));
  EXPECT_NE(root.port(), 0);
  Threads t(world);
  t.start(0, [&] { runRounds(root, 8); });
  for (int r = 1; r < world; ++r) {
    t.start(r, [&, r] {
      TcpRendezvous rv(options(r, world, root.port()));
      runRounds(rv, 8);
    });
  }
  t.join();
  expectNoErrors(t);
}

INSTANTIATE_TEST_SUITE_P(Worlds, AllGatherTest, ::testing::Values(1, 2, 4, 8));

TEST(Rendezvous, RankZeroStartsLastAndOthersRetry) {
  const int world = 4, port = freePort();
  std::vector<int> order{1, 2, 3};
  std::shuffle(order.begin(), order.end(), std::mt19937(std::random_device{}()));
  Threads t(world);
  for (int r : order) {
    t.start(r, [&, r] {
      TcpRendezvous rv(options(r, world, port));
      runRounds(rv, 2);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  t.start(0, [&] {
    TcpRendezvous rv(options(0, world, port));
    runRounds(rv, 2);
  });
  t.join();
  expectNoErrors(t);
}

TEST(Rendezvous, BindsToNamedInterface) {
  auto o = options(0, 2, 0);
  o.host = "host.that.is.ignored.invalid";  // ifname wins on rank 0
  o.ifname = "lo";
  TcpRendezvous root(o);
  Threads t(2);
  t.start(0, [&] { runRounds(root, 1); });
  t.start(1, [&] {
    TcpRendezvous rv(options(1, 2, root.port()));
    runRounds(rv, 1);
  });
  t.join();
  expectNoErrors(t);
}

// Raw connections that are not rendezvous clients at all.
int rawConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

TEST(Rendezvous, IntrudersAreRefusedWhileRealRanksComplete) {
  const int world = 3;
  TcpRendezvous root(options(0, world, 0));
  Threads t(world + 1);
  t.start(0, [&] { runRounds(root, 2); });
  // A silent connection and a garbage one must not stall admission of the real ranks.
  int silent = rawConnect(root.port());
  int garbage = rawConnect(root.port());
  std::string junk(64, 'x');
  ASSERT_EQ(send(garbage, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  // Rank 0 is waiting for ranks, so the intruder gets an explicit refusal before the real ranks start.
  t.start(world, [&] {
    TcpRendezvous rv(options(1, world, root.port(), 5000, "wrong-token"));
    rv.barrier();
  });
  t.threads.back().join();
  t.threads.pop_back();
  ASSERT_TRUE(t.errors[world]);
  EXPECT_NE(messageOf(t.errors[world]).find("could not prove it holds this job's token"), std::string::npos)
      << messageOf(t.errors[world]);
  for (int r = 1; r < world; ++r) {
    t.start(r, [&, r] {
      TcpRendezvous rv(options(r, world, root.port()));
      runRounds(rv, 2);
    });
  }
  t.join();
  close(silent);
  close(garbage);
  for (int r = 0; r < world; ++r) EXPECT_FALSE(t.errors[r]) << "rank " << r << ": " << messageOf(t.errors[r]);
}

// Seconds a world of 2 takes to complete its first barrier while `strangers` connections to rank 0 are open,
// each having sent `bytes_each` bytes of a handshake (0: idle) and then nothing more.
double joinSecondsWithStrangers(int strangers, int bytes_each) {
  TcpRendezvous root(options(0, 2, 0, 20000));
  Threads t(2);
  t.start(0, [&] { root.barrier(); });  // accepting while the strangers connect (the backlog is bounded)
  std::vector<int> fds;
  for (int i = 0; i < strangers; ++i) {
    fds.push_back(rawConnect(root.port()));
    if (bytes_each > 0) {
      const std::string partial(static_cast<size_t>(bytes_each), '\x55');
      EXPECT_EQ(send(fds.back(), partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  t.start(1, [&] {
    TcpRendezvous rv(options(1, 2, root.port(), 20000));
    rv.barrier();
  });
  t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int fd : fds) close(fd);
  for (int r = 0; r < 2; ++r) EXPECT_FALSE(t.errors[r]) << "rank " << r << ": " << messageOf(t.errors[r]);
  return secs;
}

// Handshakes are read concurrently: 20 strangers that each send one byte and stall (formerly 2 s apiece, one after
// the other) do not delay the real rank.
TEST(Rendezvous, SlowSendersDoNotDelayTheRealRanks) {
  const double secs = joinSecondsWithStrangers(20, 1);
  EXPECT_LT(secs, 1.0) << "the real rank joined after " << secs << " s";
}

// More idle connections than rank 0 keeps handshakes for (they arrive first, and stay open): the real rank's
// handshake still completes, the oldest strangers being evicted to make room; formerly it was refused at once.
TEST(Rendezvous, AnIdleFloodCannotLockOutTheRealRanks) {
  const double secs = joinSecondsWithStrangers(200, 0);
  EXPECT_LT(secs, 3.0) << "the real rank joined after " << secs << " s";
}

// Resident set size of this process, from /proc/self/statm.
size_t residentBytes() {
  long pages_total = 0, pages_resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const int got = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  return got == 2 ? static_cast<size_t>(pages_resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

void putLe(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// The joining side of the handshake by hand (wire.hpp): hello, challenge, proof (computed with `token`, or random
// bytes when `token` is empty), verdict. Returns the verdict; 99 when rank 0's own proof did not check out.
uint32_t rawHandshake(int fd, const std::string& token, uint32_t rank, uint32_t world) {
  namespace d = detail;
  const d::Nonce mine = d::randomNonce();
  std::vector<uint8_t> hello;
  putLe(hello, d::kMagic, 4);
  putLe(hello, d::kProtocolVersion, 4);
  putLe(hello, rank, 4);
  putLe(hello, world, 4);
  hello.insert(hello.end(), mine.begin(), mine.end());
  EXPECT_EQ(send(fd, hello.data(), hello.size(), 0), static_cast<ssize_t>(hello.size()));
  uint8_t challenge[d::kChallengeBytes];
  EXPECT_EQ(recv(fd, challenge, sizeof(challenge), MSG_WAITALL), static_cast<ssize_t>(sizeof(challenge)));
  d::Nonce root_nonce;
  d::Mac root_proof;
  std::copy(challenge + 8, challenge + 8 + d::kNonceBytes, root_nonce.begin());
  std::copy(challenge + 8 + d::kNonceBytes, challenge + sizeof(challenge), root_proof.begin());
  if (!token.empty() && !d::macsEqual(root_proof, d::proofOf(token, d::kRootLabel, mine, root_nonce, rank, world))) {
    return 99;
  }
  const d::Mac proof = token.empty() ? d::Mac{} : d::proofOf(token, d::kRankLabel, root_nonce, mine, rank, world);
  EXPECT_EQ(send(fd, proof.data(), proof.size(), 0), static_cast<ssize_t>(proof.size()));
  uint8_t verdict[d::kVerdictBytes];
  EXPECT_EQ(recv(fd, verdict, sizeof(verdict), MSG_WAITALL), static_cast<ssize_t>(sizeof(verdict)));
  return d::getU32(verdict + 4);
}

// HMAC-SHA256 as RFC 4231 defines it (its test case 2), through libcrypto opened at run time.
TEST(KeyedHash, MatchesTheRfc4231Vector) {
  const std::string data = "what do ya want for nothing?";
  const detail::Mac mac = detail::keyedHash("Jefe", std::vector<uint8_t>(data.begin(), data.end()));
  std::string hex;
  for (uint8_t b : mac) hex += fmt::format("{:02x}", b);
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_TRUE(detail::macsEqual(mac, mac));
  detail::Mac other = mac;
  other[31] ^= 1;
  EXPECT_FALSE(detail::macsEqual(mac, other));
  EXPECT_NE(detail::randomNonce(), detail::randomNonce());
}

// A stranger without the token gets through the hello and the challenge but its proof is refused, and it learned
// nothing it could replay: rank 0's proof is over the stranger's own nonce.
TEST(Rendezvous, AProofWithoutTheTokenIsRefused) {
  TcpRendezvous root(options(0, 2, 0, 5000));
  Threads t(2);
  t.start(0, [&] { root.barrier(); });
  const int stranger = rawConnect(root.port());
  EXPECT_EQ(rawHandshake(stranger, "", 1, 2), static_cast<uint32_t>(detail::Verdict::kBadToken));
  close(stranger);
  t.start(1, [&] {
    TcpRendezvous rv(options(1, 2, root.port(), 5000));
    rv.barrier();
  });
  t.join();
  for (int r = 0; r < 2; ++r) EXPECT_FALSE(t.errors[r]) << "rank " << r << ": " << messageOf(t.errors[r]);
}

// A process that listens on rank 0's port first (rank 0 impersonated) never learns the token: the joining rank
// sends it only a nonce, finds that the impostor cannot prove the token, and raises naming the address.
TEST(Rendezvous, AnImpersonatedRankZeroIsDetectedAndLearnsNoToken) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int port = ntohs(a.sin_port);
  std::string heard;
  std::thread impostor([&] {
    const int fd = accept(listener, nullptr, nullptr);
    std::vector<uint8_t> hello(detail::kHelloBytes);
    if (recv(fd, hello.data(), hello.size(), MSG_WAITALL) == static_cast<ssize_t>(hello.size())) {
      heard.assign(hello.begin(), hello.end());
      std::vector<uint8_t> challenge;
      putLe(challenge, detail::kMagic, 4);
      putLe(challenge, 0, 4);
      challenge.resize(detail::kChallengeBytes, 0x42);  // a nonce and a proof made up without the token
      send(fd, challenge.data(), challenge.size(), MSG_NOSIGNAL);
      char more[256];
      ssize_t n;
      while ((n = recv(fd, more, sizeof(more), 0)) > 0) heard.append(more, static_cast<size_t>(n));
    }
    close(fd);
  });
  const auto start = std::chrono::steady_clock::now();
  std::string msg;
  try {
    TcpRendezvous rv(options(1, 2, port, 5000));
    rv.barrier();
  } catch (const std::exception& e) {
    msg = e.what();
  }
  impostor.join();
  close(listener);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 3.0);
  EXPECT_NE(msg.find("could not prove it holds this job's token"), std::string::npos) << msg;
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << msg;
  EXPECT_EQ(heard.find(kToken), std::string::npos) << "the impostor received the token";
  EXPECT_EQ(heard.size(), detail::kHelloBytes) << "the joining rank sent more than its hello";
}

// A rank that knows the token announces the largest blob allowed and sends 10 bytes of it: rank 0 must hold only
// what arrived (not zero-fill the announced length), and name the rank when it leaves. A length above the bound
// is refused outright.
TEST(Rendezvous, AHugeAnnouncedBlobCostsOnlyTheBytesThatCame) {
  for (const bool over_bound : {false, true}) {
    TcpRendezvous root(options(0, 2, 0, 20000));
    std::exception_ptr error;
    std::thread rank0([&] {
      try {
        root.allGather(Blob{1, 2, 3});
      } catch (...) {
        error = std::current_exception();
      }
    });
    const int fd = rawConnect(root.port());
    ASSERT_EQ(rawHandshake(fd, kToken, 1, 2), 0u) << "the handshake was refused";
    const size_t before = residentBytes();
    std::vector<uint8_t> header;
    putLe(header, 1, 8);                                                       // the first collective, #1
    putLe(header, (uint64_t{64} << 20) + (over_bound ? 1 : 0), 8);             // the bound, or one byte above it
    header.insert(header.end(), 10, 0xab);
    ASSERT_EQ(send(fd, header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 0 reads what came and waits for more
    const size_t grew = residentBytes() - std::min(before, residentBytes());
    EXPECT_LT(grew, size_t{32} << 20) << "rank 0 allocated the announced length up front";
    close(fd);
    rank0.join();
    ASSERT_TRUE(error);
    const std::string msg = messageOf(error);
    if (over_bound) {
      EXPECT_NE(msg.find("announced a 67108865-byte blob"), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("rank 1 closed"), std::string::npos) << msg;
    }
  }
}

TEST(Rendezvous, DuplicateRankIsRefused) {
  const int world = 3;
  TcpRendezvous root(options(0, world, 0));
  Threads t(4);  // 0, 1, 2, and the second rank 1 at index 3
  t.start(0, [&] { runRounds(root, 2); });
  auto rank1 = [&] {
    TcpRendezvous rv(options(1, world, root.port(), 5000));
    runRounds(rv, 2);
  };
  t.start(1, rank1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  t.start(3, rank1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  t.start(2, [&] {
    TcpRendezvous rv(options(2, world, root.port()));
    runRounds(rv, 2);
  });
  t.join();
  EXPECT_FALSE(t.errors[0]) << messageOf(t.errors[0]);
  EXPECT_FALSE(t.errors[2]) << messageOf(t.errors[2]);
  // Whichever rank 1 came second is turned away; the other completes.
  ASSERT_NE(!t.errors[1], !t.errors[3]) << messageOf(t.errors[1]) << " / " << messageOf(t.errors[3]);
  std::string msg = messageOf(t.errors[1] ? t.errors[1] : t.errors[3]);
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
}

TEST(Rendezvous, MissingRankTimesOutNamingIt) {
  const int world = 3;
  TcpRendezvous root(options(0, world, 0, 1000));
  Threads t(2);
  auto start = Clock::now();
  t.start(0, [&] { root.barrier(); });
  t.start(1, [&] {
    TcpRendezvous rv(options(1, world, root.port(), 1000));
    rv.barrier();
  });
  t.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(secs, 3.0);
  ASSERT_TRUE(t.errors[0]);
  try {
    std::rethrow_exception(t.errors[0]);
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("rank(s) 2 "), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected TimeoutError, got: " << e.what();
  }
  EXPECT_TRUE(t.errors[1]);             // rank 1 times out too, or sees rank 0 give up first
  EXPECT_THROW(root.barrier(), Error);  // a failed rendezvous stays failed
}

TEST(Rendezvous, AbsentRankZeroTimesOutNamingItsAddress) {
  const int port = freePort();
  TcpRendezvous rv(options(1, 2, port, 500));
  auto start = Clock::now();
  try {
    rv.barrier();
    ADD_FAILURE() << "barrier without rank 0 returned";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 2.0);
}

TEST(Rendezvous, PeerClosingMidCollectiveIsNamed) {
  const int world = 3;
  TcpRendezvous root(options(0, world, 0));
  Threads t(world);
  t.start(0, [&] {
    runRounds(root, 1);
    root.barrier();  // rank 2 is gone by now
  });
  t.start(1, [&] {
    TcpRendezvous rv(options(1, world, root.port()));
    runRounds(rv, 1);
    rv.barrier();
  });
  t.start(2, [&] {
    TcpRendezvous rv(options(2, world, root.port()));
    runRounds(rv, 1);
  });  // destroyed here, closing its connection
  t.join();
  ASSERT_TRUE(t.errors[0]);
  std::string msg = messageOf(t.errors[0]);
  EXPECT_NE(msg.find("rank 2 closed"), std::string::npos) << msg;
  ASSERT_TRUE(t.errors[1]);  // rank 0 gave up, so rank 1's collective cannot finish either
  EXPECT_FALSE(t.errors[2]) << messageOf(t.errors[2]);
}

TEST(Rendezvous, RanksAsProcesses) {
  const int world = 4;
  TcpRendezvous root(options(0, world, 0));
  std::vector<pid_t> children;
  for (int r = 1; r < world; ++r) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        TcpRendezvous rv(options(r, world, root.port()));
        runRounds(rv, 4);
      } catch (const std::exception& e) {
        fprintf(stderr, "child rank %d: %s\n", r, e.what());
        code = 1;
      }
      _exit(code);  // the inherited copy of `root` must not be destroyed (or tested) in the child
    }
    children.push_back(pid);
  }
  EXPECT_NO_THROW(runRounds(root, 4));
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
}

// Virtual memory of this process, from /proc/self/statm.
size_t virtualBytes() {
  long pages_total = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const int got = std::fscanf(f, "%ld", &pages_total);
  std::fclose(f);
  return got == 1 ? static_cast<size_t>(pages_total) * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// An allocation that fails inside a collective (rank 0 runs out of memory receiving a rank's 64 MiB blob, its
// address space capped just above what it holds) poisons the rendezvous: the collective raises, and the next one
// raises at once naming the earlier failure instead of reusing connections in an unknown state. Rank 0 runs in a
// child process, so the cap stays there.
TEST(Rendezvous, AnAllocationFailureInACollectivePoisonsIt) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "a sanitizer's shadow memory cannot live under an address-space cap";
#else
  TcpRendezvous root(options(0, 2, 0, 20000));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // rank 0, capped
    rlimit cap{};
    cap.rlim_cur = cap.rlim_max = virtualBytes() + (size_t{24} << 20);
    setrlimit(RLIMIT_AS, &cap);
    int code = 3;
    try {
      root.allGather(Blob{1});
      code = 1;  // the collective should have failed
    } catch (const std::bad_alloc&) {
      code = 2;  // out of memory as planned: now the object must be poisoned
    } catch (const std::exception& e) {
      fprintf(stderr, "rank 0: unexpected failure: %s\n", e.what());
    }
    if (code == 2) {
      try {
        root.barrier();
        code = 4;
      } catch (const Error& e) {
        code = std::string(e.what()).find("unusable after an earlier failure") != std::string::npos ? 0 : 5;
        if (code != 0) fprintf(stderr, "rank 0: %s\n", e.what());
      }
    }
    _exit(code);
  }
  const int fd = rawConnect(root.port());
  ASSERT_EQ(rawHandshake(fd, kToken, 1, 2), 0u) << "the handshake was refused";
  std::vector<uint8_t> header;
  putLe(header, 1, 8);               // the first collective, #1
  putLe(header, uint64_t{64} << 20, 8);  // the largest blob allowed, more than rank 0 can hold under its cap
  send(fd, header.data(), header.size(), MSG_NOSIGNAL);
  const std::vector<uint8_t> chunk(1 << 20, 0xcd);
  for (int i = 0; i < 64; ++i) {
    if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;  // rank 0 gave up and closed
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(fd);
  ASSERT_TRUE(WIFEXITED(status)) << "rank 0 did not exit normally (status " << status << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no failure, 2-3: not bad_alloc or not poisoned, 4: reused after it, "
                                       "5: poisoned with another message";
#endif
}

TEST(Rendezvous, RejectsBadOptions) {
  EXPECT_THROW(TcpRendezvous(options(0, 2, 0, 1000, "")), Error);
  EXPECT_THROW(TcpRendezvous(options(2, 2, 0)), Error);
  EXPECT_THROW(TcpRendezvous(options(1, 2, 0)), Error);  // rank 1 needs rank 0's port
}

TEST(Rendezvous, InterfaceAddress) {
  EXPECT_EQ(interfaceAddress("lo"), "127.0.0.1");
  try {
    interfaceAddress("no-such-if0");
    ADD_FAILURE() << "unknown interface accepted";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("no-such-if0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lo"), std::string::npos) << msg;  // the available interfaces are listed
  }
}

}  // namespace
}  // namespace uccl::ep::bootstrap
