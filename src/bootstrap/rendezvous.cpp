// TcpRendezvous: a star through rank 0. Rank 0 admits the other ranks (token-checked) during the first
// collective, then each collective is "every rank sends its blob, rank 0 answers with all of them".
#include "uccl_ep/bootstrap/rendezvous.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "bootstrap/socket.hpp"
#include "bootstrap/wire.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::bootstrap {

using detail::Clock;
using detail::Deadline;
using detail::IoResult;
using detail::IoStatus;
using detail::Socket;
using detail::Verdict;

namespace {

// Every connection must deliver its whole hello within this grace of its arrival. Handshakes are read concurrently
// (each as its bytes come, none waiting for another), so a silent or slow stranger costs the real ranks nothing but
// its slot, which it loses after the grace.
constexpr auto kHelloGrace = std::chrono::seconds(2);
// Handshakes in progress at once. A new connection beyond it evicts the oldest one in progress, which has had the
// longest to finish: a flood of idle connections cannot keep a real rank's handshake (sent as soon as it
// connects) from completing.
constexpr size_t kMaxPendingConnections = 64;

// One connection's handshake, read without blocking as its bytes arrive: the hello, then (after rank 0's challenge)
// the joining rank's proof.
struct Handshake {
  detail::Socket s;
  std::string who;
  Deadline until;
  std::vector<uint8_t> bytes;         // what came so far
  size_t need = detail::kHelloBytes;  // the hello; then the hello and the proof
  detail::Nonce root_nonce{};         // sent with the challenge
};

std::string rankList(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

}  // namespace

struct TcpRendezvous::Impl {
  RendezvousOptions opts;
  sockaddr_in root_addr{};
  std::string root_name;  // rank 0's "ip:port", for messages on every rank
  int port = 0;
  Socket listener;            // rank 0 only, until every rank has joined
  std::vector<Socket> peers;  // rank 0: index = rank (0 unused); other ranks: peers[0] is rank 0
  bool joined = false;
  uint64_t seq = 0;
  std::string failure;  // set once a collective failed: the peers' state is unknown from then on

  double timeoutMs() const { return static_cast<double>(opts.timeout_ns) / 1e6; }

  // ---- rank 0 ----
  std::vector<int> ranksWithout(const std::vector<bool>& have) const {
    std::vector<int> missing;
    for (int r = 1; r < opts.world; ++r) {
      if (!have[r]) missing.push_back(r);
    }
    return missing;
  }

  [[noreturn]] void throwRootTimeout(const std::vector<int>& missing, const char* what) const {
    throw TimeoutError(
        fmt::format("rendezvous at {} (rank 0 of {}): timed out after {:.0f} ms in collective #{} "
                    "waiting for rank(s) {} {}",
                    root_name, opts.world, timeoutMs(), seq, rankList(missing), what));
  }

  [[noreturn]] void throwPeerGone(int rank, const IoResult& r) const {
    UCCL_EP_THROW("rendezvous at {}: rank {} closed its connection during collective #{}{}{}", root_name, rank, seq,
                  r.err ? ": " : "", r.err ? std::strerror(r.err) : "");
  }

  // Reads what has arrived of a handshake without blocking. Returns true once `need` bytes are there (or the
  // connection is gone: then `h.s` is reset), false while more are due.
  bool readSome(Handshake& h) {
    while (h.bytes.size() < h.need) {
      const size_t have = h.bytes.size();
      h.bytes.resize(h.need);
      const ssize_t n = ::recv(h.s.fd(), h.bytes.data() + have, h.need - have, MSG_DONTWAIT);
      if (n > 0) {
        h.bytes.resize(have + static_cast<size_t>(n));
        continue;
      }
      h.bytes.resize(have);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
      log().warn("rendezvous at {}: dropped connection from {}: closed before a complete handshake", root_name, h.who);
      h.s.reset();
      return true;
    }
    return true;
  }

  void sendVerdict(Handshake& h, Verdict v, uint32_t rank, uint32_t world) {
    Blob verdict;
    detail::putU32(verdict, detail::kMagic);
    detail::putU32(verdict, static_cast<uint32_t>(v));
    // A few bytes into a connection's empty send buffer: this does not wait in practice; the grace bounds it.
    IoResult sent = detail::sendAll(h.s.fd(), verdict.data(), verdict.size(), h.until);
    if (v != Verdict::kAccepted) {
      log().warn("rendezvous at {}: refused connection from {} claiming rank {} of world {}: {}", root_name, h.who,
                 rank, world, detail::verdictText(v));
      return;
    }
    if (sent.status != IoStatus::kOk) {
      log().warn("rendezvous at {}: rank {} from {} left during its handshake", root_name, rank, h.who);
      return;
    }
    log().debug("rendezvous at {}: rank {} joined from {}", root_name, rank, h.who);
    peers[rank] = std::move(h.s);
  }

  // The next step of a handshake whose `need` bytes came. Returns true when it is over (joined or dropped).
  bool step(Handshake& h) {
    const uint8_t* hello = h.bytes.data();
    if (detail::getU32(hello) != detail::kMagic) {
      log().warn("rendezvous at {}: dropped connection from {}: not a uccl-ep rendezvous handshake", root_name, h.who);
      return true;
    }
    const uint32_t version = detail::getU32(hello + 4);
    const uint32_t rank = detail::getU32(hello + 8), world = detail::getU32(hello + 12);
    detail::Nonce rank_nonce;
    std::copy(hello + 16, hello + 16 + detail::kNonceBytes, rank_nonce.begin());
    if (h.need == detail::kHelloBytes) {  // the hello: answer with the challenge and this rank's proof
      if (version != detail::kProtocolVersion) {
        sendVerdict(h, Verdict::kBadVersion, rank, world);
        return true;
      }
      h.root_nonce = detail::randomNonce();
      const detail::Mac proof = detail::proofOf(opts.token, detail::kRootLabel, rank_nonce, h.root_nonce, rank, world);
      Blob challenge;
      detail::putU32(challenge, detail::kMagic);
      detail::putU32(challenge, static_cast<uint32_t>(Verdict::kAccepted));
      challenge.insert(challenge.end(), h.root_nonce.begin(), h.root_nonce.end());
      challenge.insert(challenge.end(), proof.begin(), proof.end());
      if (detail::sendAll(h.s.fd(), challenge.data(), challenge.size(), h.until).status != IoStatus::kOk) {
        log().warn("rendezvous at {}: dropped connection from {}: it left before the challenge", root_name, h.who);
        return true;
      }
      h.need += detail::kMacBytes;
      return false;
    }
    // The proof, checked before anything about the job is, so a stranger learns nothing about its shape.
    detail::Mac theirs;
    std::copy(hello + detail::kHelloBytes, hello + detail::kHelloBytes + detail::kMacBytes, theirs.begin());
    Verdict v = Verdict::kAccepted;
    if (!detail::macsEqual(theirs, detail::proofOf(opts.token, detail::kRankLabel, h.root_nonce, rank_nonce, rank,
                                                   world))) {
      v = Verdict::kBadToken;
    } else if (world != static_cast<uint32_t>(opts.world)) {
      v = Verdict::kBadWorld;
    } else if (rank == 0 || rank >= world) {
      v = Verdict::kBadRank;
    } else if (peers[rank].valid()) {
      v = Verdict::kDuplicateRank;
    }
    sendVerdict(h, v, rank, world);
    return true;
  }

  void acceptAll(Deadline deadline) {
    std::vector<Handshake> pending;
    auto joinedRanks = [&] {
      std::vector<bool> have(opts.world, false);
      for (int r = 1; r < opts.world; ++r) have[r] = peers[r].valid();
      return have;
    };
    while (!ranksWithout(joinedRanks()).empty()) {
      // Drop the handshakes whose grace has passed; wake for the next one to expire, or the job's deadline.
      const Deadline now = Clock::now();
      Deadline wake = deadline;
      std::vector<Handshake> live;
      for (auto& h : pending) {
        if (now >= h.until) {
          log().warn("rendezvous at {}: dropped connection from {}: no complete handshake within {} s", root_name,
                     h.who, std::chrono::duration_cast<std::chrono::seconds>(kHelloGrace).count());
          continue;
        }
        wake = std::min(wake, h.until);
        live.push_back(std::move(h));
      }
      pending = std::move(live);
      std::vector<pollfd> fds{{listener.fd(), POLLIN, 0}};
      for (const auto& h : pending) fds.push_back({h.s.fd(), POLLIN, 0});
      int n = ::poll(fds.data(), fds.size(), detail::remainingMs(wake));
      if (n < 0 && errno != EINTR) UCCL_EP_THROW("poll on the rendezvous listener failed: {}", std::strerror(errno));
      if (n <= 0) {
        if (Clock::now() >= deadline) throwRootTimeout(ranksWithout(joinedRanks()), "to join");
        continue;
      }
      std::vector<Handshake> still_pending;
      for (size_t i = 0; i < pending.size(); ++i) {
        Handshake& h = pending[i];
        if (fds[i + 1].revents != 0 && readSome(h) && (!h.s.valid() || step(h))) continue;
        still_pending.push_back(std::move(h));
      }
      pending = std::move(still_pending);
      if (fds[0].revents & POLLIN) {
        for (Socket s = detail::acceptOne(listener.fd()); s.valid(); s = detail::acceptOne(listener.fd())) {
          if (pending.size() >= kMaxPendingConnections) {
            log().warn("rendezvous at {}: dropped connection from {}: {} handshakes in progress, it was the oldest",
                       root_name, pending.front().who, kMaxPendingConnections);
            pending.erase(pending.begin());
          }
          Handshake h;
          h.who = detail::peerAddress(s.fd());
          h.s = std::move(s);
          h.until = std::min(deadline, Clock::now() + kHelloGrace);
          pending.push_back(std::move(h));
        }
      }
    }
    // The world is complete and ranks never reconnect: late connections now get a reset at once instead of
    // sitting in the backlog until their own timeout.
    listener.reset();
  }

  std::vector<Blob> gather(const Blob& mine, Deadline deadline) {
    if (!joined) {
      acceptAll(deadline);
      joined = true;
    }
    std::vector<Blob> all(opts.world);
    all[0] = mine;
    std::vector<bool> have(opts.world, false);
    // Blobs are read in arrival order, so a timeout names exactly the ranks that have not sent theirs.
    for (std::vector<int> missing = ranksWithout(have); !missing.empty(); missing = ranksWithout(have)) {
      std::vector<pollfd> fds;
      for (int r : missing) fds.push_back({peers[r].fd(), POLLIN, 0});
      int n = ::poll(fds.data(), fds.size(), detail::remainingMs(deadline));
      if (n < 0 && errno != EINTR) UCCL_EP_THROW("poll on rendezvous peers failed: {}", std::strerror(errno));
      if (n <= 0) {
        if (Clock::now() >= deadline) throwRootTimeout(missing, "to send their blobs");
        continue;
      }
      for (size_t i = 0; i < missing.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const int r = missing[i];
        uint8_t header[detail::kHeaderBytes];
        IoResult res = detail::recvAll(peers[r].fd(), header, sizeof(header), deadline);
        if (res.status == IoStatus::kClosed) throwPeerGone(r, res);
        if (res.status == IoStatus::kTimeout) throwRootTimeout({r}, "to finish sending their blobs");
        const uint64_t their_seq = detail::getU64(header), len = detail::getU64(header + 8);
        UCCL_EP_CHECK(their_seq == seq, "rendezvous at {}: rank {} is in collective #{}, rank 0 in #{}", root_name, r,
                      their_seq, seq);
        UCCL_EP_CHECK(len <= detail::kMaxBlobBytes, "rendezvous at {}: rank {} announced a {}-byte blob (max {})",
                      root_name, r, len, detail::kMaxBlobBytes);
        res = detail::recvBlob(peers[r].fd(), &all[r], len, deadline);
        if (res.status == IoStatus::kClosed) throwPeerGone(r, res);
        if (res.status == IoStatus::kTimeout) throwRootTimeout({r}, "to finish sending their blobs");
        have[r] = true;
      }
    }
    Blob reply;
    size_t total = detail::kHeaderBytes;
    for (const auto& b : all) total += 8 + b.size();
    reply.reserve(total);
    detail::putU64(reply, seq);
    detail::putU64(reply, static_cast<uint64_t>(opts.world));
    for (const auto& b : all) {
      detail::putU64(reply, b.size());
      reply.insert(reply.end(), b.begin(), b.end());
    }
    for (int r = 1; r < opts.world; ++r) {
      IoResult res = detail::sendAll(peers[r].fd(), reply.data(), reply.size(), deadline);
      if (res.status == IoStatus::kClosed) throwPeerGone(r, res);
      if (res.status == IoStatus::kTimeout) throwRootTimeout({r}, "to take the gathered blobs");
    }
    return all;
  }

  // ---- ranks other than 0 ----
  [[noreturn]] void throwLeafTimeout(const char* what) const {
    throw TimeoutError(
        fmt::format("rendezvous: rank {} of {} timed out after {:.0f} ms in collective #{} {} rank 0 "
                    "at {}",
                    opts.rank, opts.world, timeoutMs(), seq, what, root_name));
  }

  void check(const IoResult& r, const char* what) const {
    if (r.status == IoStatus::kTimeout) throwLeafTimeout(what);
    if (r.status == IoStatus::kClosed) {
      UCCL_EP_THROW("rendezvous: rank 0 at {} closed the connection of rank {} ({}) in collective #{}{}{}", root_name,
                    opts.rank, what, seq, r.err ? ": " : "", r.err ? std::strerror(r.err) : "");
    }
  }

  void join(Deadline deadline) {
    Socket s = detail::connectWithRetry(root_addr, deadline);
    if (!s.valid()) throwLeafTimeout("trying to connect to");
    const detail::Nonce mine = detail::randomNonce();
    const auto rank = static_cast<uint32_t>(opts.rank), world = static_cast<uint32_t>(opts.world);
    Blob hello;
    detail::putU32(hello, detail::kMagic);
    detail::putU32(hello, detail::kProtocolVersion);
    detail::putU32(hello, rank);
    detail::putU32(hello, world);
    hello.insert(hello.end(), mine.begin(), mine.end());
    check(detail::sendAll(s.fd(), hello.data(), hello.size(), deadline), "sending its handshake to");
    // Rank 0 answers only once it enters its first collective, so this wait may be long; it is bounded by the same
    // deadline. A reset here usually means the world was already complete (a duplicate rank).
    uint8_t challenge[detail::kChallengeBytes];
    check(detail::recvAll(s.fd(), challenge, detail::kVerdictBytes, deadline), "awaiting admission from");
    UCCL_EP_CHECK(detail::getU32(challenge) == detail::kMagic, "rendezvous: {} is not a uccl-ep rendezvous", root_name);
    auto v = static_cast<Verdict>(detail::getU32(challenge + 4));
    if (v != Verdict::kAccepted) {
      UCCL_EP_THROW("rendezvous: rank 0 at {} refused rank {} of world {}: {}", root_name, opts.rank, opts.world,
                    detail::verdictText(v));
    }
    check(detail::recvAll(s.fd(), challenge + detail::kVerdictBytes, sizeof(challenge) - detail::kVerdictBytes,
                          deadline),
          "awaiting admission from");
    detail::Nonce root_nonce;
    detail::Mac root_proof;
    std::copy(challenge + 8, challenge + 8 + detail::kNonceBytes, root_nonce.begin());
    std::copy(challenge + 8 + detail::kNonceBytes, challenge + sizeof(challenge), root_proof.begin());
    if (!detail::macsEqual(root_proof, detail::proofOf(opts.token, detail::kRootLabel, mine, root_nonce, rank, world))) {
      UCCL_EP_THROW("rendezvous: rank 0 at {} could not prove it holds this job's token: the ranks were given "
                    "different tokens, or {} is not this job's rank 0; rank {} sent it nothing it could use",
                    root_name, root_name, opts.rank);
    }
    const detail::Mac proof = detail::proofOf(opts.token, detail::kRankLabel, root_nonce, mine, rank, world);
    check(detail::sendAll(s.fd(), proof.data(), proof.size(), deadline), "proving the token to");
    uint8_t verdict[detail::kVerdictBytes];
    check(detail::recvAll(s.fd(), verdict, sizeof(verdict), deadline), "awaiting admission from");
    UCCL_EP_CHECK(detail::getU32(verdict) == detail::kMagic, "rendezvous: {} is not a uccl-ep rendezvous", root_name);
    v = static_cast<Verdict>(detail::getU32(verdict + 4));
    if (v != Verdict::kAccepted) {
      UCCL_EP_THROW("rendezvous: rank 0 at {} refused rank {} of world {}: {}", root_name, opts.rank, opts.world,
                    detail::verdictText(v));
    }
    peers.resize(1);
    peers[0] = std::move(s);
  }

  std::vector<Blob> exchange(const Blob& mine, Deadline deadline) {
    if (!joined) {
      join(deadline);
      joined = true;
    }
    const int fd = peers[0].fd();
    Blob header;
    detail::putU64(header, seq);
    detail::putU64(header, mine.size());
    check(detail::sendAll(fd, header.data(), header.size(), deadline), "sending its blob to");
    check(detail::sendAll(fd, mine.data(), mine.size(), deadline), "sending its blob to");
    uint8_t head[detail::kHeaderBytes];
    check(detail::recvAll(fd, head, sizeof(head), deadline), "waiting for the gathered blobs from");
    const uint64_t their_seq = detail::getU64(head), count = detail::getU64(head + 8);
    UCCL_EP_CHECK(their_seq == seq && count == static_cast<uint64_t>(opts.world),
                  "rendezvous: rank 0 at {} answered collective #{} with {} blobs; rank {} expected #{} with {}",
                  root_name, their_seq, count, opts.rank, seq, opts.world);
    std::vector<Blob> all(opts.world);
    for (auto& b : all) {
      uint8_t len_bytes[8];
      check(detail::recvAll(fd, len_bytes, sizeof(len_bytes), deadline), "waiting for the gathered blobs from");
      const uint64_t len = detail::getU64(len_bytes);
      UCCL_EP_CHECK(len <= detail::kMaxBlobBytes, "rendezvous: rank 0 at {} sent a {}-byte blob", root_name, len);
      check(detail::recvBlob(fd, &b, len, deadline), "waiting for the gathered blobs from");
    }
    return all;
  }
};

TcpRendezvous::TcpRendezvous(const RendezvousOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opts = options;
  if (options.token.empty()) {
    UCCL_EP_THROW("rendezvous token is empty: every rank must present the job's shared secret");
  }
  UCCL_EP_CHECK(options.token.size() <= detail::kMaxTokenBytes, "rendezvous token is {} bytes, max {}",
                options.token.size(), detail::kMaxTokenBytes);
  UCCL_EP_CHECK(options.world >= 1, "rendezvous world {} must be at least 1", options.world);
  UCCL_EP_CHECK(options.rank >= 0 && options.rank < options.world, "rendezvous rank {} out of range 0..{}",
                options.rank, options.world - 1);
  UCCL_EP_CHECK(options.timeout_ns > 0, "rendezvous timeout must be positive");
  std::string why;
  UCCL_EP_CHECK(detail::keyedHashAvailable(&why),
                "rendezvous: the handshake authenticates with HMAC-SHA256 from OpenSSL's libcrypto, which is not "
                "available ({}); install libcrypto (OpenSSL 1.1 or 3)",
                why);
  if (options.rank == 0) {
    const std::string bind_host = options.ifname.empty() ? options.host : interfaceAddress(options.ifname);
    sockaddr_in addr = detail::resolveIpv4(bind_host, options.port);
    // Backlog sized for the whole world plus some strays, so no real rank's SYN is dropped while rank 0 has
    // not yet entered its first collective.
    m.listener = detail::listenOn(addr, std::max(2 * options.world, 64), &m.port);
    addr.sin_port = htons(static_cast<uint16_t>(m.port));
    m.root_addr = addr;
    m.peers.resize(options.world);
  } else {
    UCCL_EP_CHECK(options.port > 0 && options.port <= 65535, "rank {} needs rank 0's port (got {})", options.rank,
                  options.port);
    m.root_addr = detail::resolveIpv4(options.host, options.port);
    m.port = options.port;
  }
  m.root_name = detail::formatAddress(m.root_addr);
}

TcpRendezvous::~TcpRendezvous() = default;

int TcpRendezvous::rank() const { return impl_->opts.rank; }
int TcpRendezvous::world() const { return impl_->opts.world; }
int TcpRendezvous::port() const { return impl_->port; }

std::vector<Blob> TcpRendezvous::allGather(const Blob& mine) {
  Impl& m = *impl_;
  if (!m.failure.empty()) UCCL_EP_THROW("rendezvous unusable after an earlier failure: {}", m.failure);
  ++m.seq;
  const Deadline deadline = Clock::now() + std::chrono::nanoseconds(m.opts.timeout_ns);
  try {
    return m.opts.rank == 0 ? m.gather(mine, deadline) : m.exchange(mine, deadline);
  } catch (...) {
    // After any failure (a peer's error, a timeout, an allocation that failed midway) the ranks may be in different
    // collectives; reusing the connections would mix rounds, so the object is poisoned.
    try {
      throw;
    } catch (const std::exception& e) {
      m.failure = e.what();
    } catch (...) {
      m.failure = "a non-standard exception";
    }
    m.peers.clear();
    m.listener.reset();
    throw;
  }
}

void TcpRendezvous::barrier() { allGather({}); }

}  // namespace uccl::ep::bootstrap
