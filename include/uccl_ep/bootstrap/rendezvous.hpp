// TCP rendezvous for C++ tools and tests: rank 0 listens, every rank sends its blob, everyone gets all.
//
// The Python layer does the same exchange through the user's process group and hands the gathered blobs to
// ProxyGroup::connect directly; this class is for processes that have no process group.
//
// Only ranks that present the job's token are accepted: a connection with a wrong token, a duplicate rank or
// a rank out of range is refused (logged and dropped), and rank 0 keeps waiting for the real one until the
// timeout, which raises uccl::ep::TimeoutError naming the ranks still missing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "uccl_ep/util/blob.hpp"

namespace uccl::ep::bootstrap {

struct RendezvousOptions {
  std::string host = "127.0.0.1";  // rank 0's address, as the other ranks reach it
  int port = 0;                    // rank 0's port; 0 on rank 0 picks a free one (see port())
  int rank = 0;
  int world = 1;
  std::string token;               // shared secret of the job; must be non-empty
  std::string ifname;              // UCCL_SOCKET_IFNAME: rank 0 binds to this interface's address
  uint64_t timeout_ns = 100ull * 1000 * 1000 * 1000;
};

class TcpRendezvous {
 public:
  // Rank 0 binds and listens here (returns at once); other ranks connect lazily in the first collective.
  explicit TcpRendezvous(const RendezvousOptions& options);
  ~TcpRendezvous();
  TcpRendezvous(const TcpRendezvous&) = delete;
  TcpRendezvous& operator=(const TcpRendezvous&) = delete;

  int rank() const;
  int world() const;
  int port() const;  // the port rank 0 listens on

  // Every rank's blob, index = rank. Collective.
  std::vector<Blob> allGather(const Blob& mine);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The IPv4 address of a network interface ("eth0"), or an error naming the interface.
std::string interfaceAddress(const std::string& ifname);

}  // namespace uccl::ep::bootstrap
