#include <sstream>

#include "proxy/dead_peers.hpp"
#include "proxy/proxy_thread.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"
#include "uccl_ep/platform/clock.hpp"

namespace uccl::ep::proxy {

ProxyConfig ProxyConfig::fromEnv(int rank, int world) {
  const Env& e = env();
  ProxyConfig c;
  c.rank = rank;
  c.world = world;
  c.num_threads = e.num_proxy_threads;
  c.transport = e.transport;
  c.fabric_hmem = e.fabric_hmem;
  c.ifname = e.socket_ifname;
  c.max_inflight_bytes = e.max_inflight_bytes;
  c.max_inflight_normal = e.max_inflight_normal;
  c.max_inflight_low_latency = e.max_inflight_low_latency;
  c.timeout_ns = e.timeoutNs();
  return c;
}

transport::TransportOptions ProxyConfig::transportOptions(int thread_index) const {
  transport::TransportOptions o;
  o.kind = transport;
  o.fabric_hmem = fabric_hmem;
  o.rank = rank;
  o.world = world;
  o.thread_index = thread_index;
  o.ifname = ifname;
  o.gpu_device = gpu_device;
  o.timeout_ns = timeout_ns;
  o.all_peers_local = all_peers_local;
  return o;
}

std::unique_ptr<transport::Transport> ProxyConfig::openTransport(int thread_index) const {
  const transport::TransportOptions o = transportOptions(thread_index);
  return transport_factory ? transport_factory(o) : transport::createTransport(o);
}

ProxyGroup::ProxyGroup(const ProxyConfig& config) : config_(config) {
  if (config_.numa_node < 0 && !config_.gpu_pci_bus_id.empty()) {
    config_.numa_node = numaNodeOfPciDevice(config_.gpu_pci_bus_id);
  }
  UCCL_EP_CHECK(config.world >= 1 && config.world <= static_cast<int>(ring::kMaxRanks),
                "world size {} must be between 1 and {}", config.world, ring::kMaxRanks);
  UCCL_EP_CHECK(config.rank >= 0 && config.rank < config.world, "rank {} is not in [0, {})", config.rank,
                config.world);
  UCCL_EP_CHECK(config.num_threads >= 1, "proxy threads: {} (expected at least 1)", config.num_threads);
  UCCL_EP_CHECK(config.max_batch >= 1, "max_batch must be at least 1");
  board_ = std::make_unique<StallBoard>();
  dead_ = std::make_unique<DeadPeers>(config.world);
  for (int t = 0; t < config.num_threads; ++t) {
    threads_.push_back(std::make_unique<ProxyThread>(t, config_, &error_, board_.get(), dead_.get()));
  }
}

ProxyGroup::~ProxyGroup() { stop(); }

void ProxyGroup::addRegion(uint32_t index, void* base, size_t size, transport::MemoryKind kind) {
  UCCL_EP_CHECK(!started_, "addRegion after start");
  UCCL_EP_CHECK(index < ring::kMaxRegions, "region index {} is not below {}", index, ring::kMaxRegions);
  UCCL_EP_CHECK(size <= ring::kMaxRegionBytes, "region {} of {} bytes exceeds the {} bytes a descriptor can address",
                index, size, ring::kMaxRegionBytes);
  UCCL_EP_CHECK(reinterpret_cast<uintptr_t>(base) % ring::kOffsetUnit == 0, "region {} base {} is not {}-byte aligned",
                index, base, ring::kOffsetUnit);
  for (auto& t : threads_) t->addRegion(index, base, size, kind);
}

void ProxyGroup::setSignalRegion(int64_t* counters, size_t count) {
  UCCL_EP_CHECK(!started_, "setSignalRegion after start");
  UCCL_EP_CHECK(counters != nullptr && count > 0, "signal region needs at least one counter");
  for (auto& t : threads_) t->setSignalRegion(counters, count);
}

void ProxyGroup::addRing(const ring::RingView& view, RingKind kind) {
  UCCL_EP_CHECK(!started_, "addRing after start");
  UCCL_EP_CHECK(view.control->magic == ring::kRingMagic && view.control->layout_version == ring::kRingLayoutVersion,
                "ring {} is not initialised (magic {:#x}, layout version {}; expected {:#x}, {})", view.ring_id,
                view.control->magic, view.control->layout_version, ring::kRingMagic, ring::kRingLayoutVersion);
  threads_[threadOfRing(view.ring_id, numThreads())]->addRing(view, kind);
}

transport::Blob ProxyGroup::localInfo() const {
  transport::Blob out;
  transport::appendU64(out, threads_.size());
  for (const auto& t : threads_) transport::appendBlob(out, t->localInfo());
  return out;
}

void ProxyGroup::connect(const std::vector<transport::Blob>& infos) {
  UCCL_EP_CHECK(infos.size() == static_cast<size_t>(config_.world), "connect got {} blobs for a world of {}",
                infos.size(), config_.world);
  std::vector<std::vector<transport::Blob>> per_thread(threads_.size(), std::vector<transport::Blob>(infos.size()));
  for (size_t rank = 0; rank < infos.size(); ++rank) {
    size_t off = 0;
    const uint64_t n = transport::readU64(infos[rank], &off);
    UCCL_EP_CHECK(n == threads_.size(),
                  "rank {} runs {} proxy threads, this rank {}: set UCCL_EP_NUM_PROXY_THREADS alike on every rank",
                  rank, n, threads_.size());
    for (auto& blobs : per_thread) blobs[rank] = transport::readBlob(infos[rank], &off);
  }
  for (size_t t = 0; t < threads_.size(); ++t) threads_[t]->connect(per_thread[t]);
}

void ProxyGroup::start() {
  UCCL_EP_CHECK(!started_, "ProxyGroup started twice");
  started_ = true;
  for (auto& t : threads_) t->start();
}

void ProxyGroup::stop() {
  for (auto& t : threads_) t->stop();
}

bool ProxyGroup::hasError() const {
  if (error_.set.load(std::memory_order_acquire)) return true;
  noticeBlockedPost();
  return error_.set.load(std::memory_order_acquire);
}

void ProxyGroup::noticeBlockedPost() const {
  if (!started_) return;
  const uint64_t now = platform::nowNs();
  const StallBoard::Blocked b = board_->oldestPost(now, config_.timeout_ns);
  if (b.entry == nullptr) return;
  bool expected = false;
  if (error_.publishing.compare_exchange_strong(expected, true)) {
    error_.message = fmt::format(
        "rank {}: {} has been inside a post to rank {} for {:.1f} s, longer than UCCL_EP_TIMEOUT_SECS ({:.1f} s): the "
        "transport does not return; is rank {} alive?{}",
        config_.rank, b.entry->label, b.peer, b.age_ns / 1e9, config_.timeout_ns / 1e9, b.peer,
        board_->describeOthers(b.entry, now, config_.timeout_ns / 2));
    error_.set.store(true, std::memory_order_release);
    log().error("{}", error_.message);
  }
  for (const auto& t : threads_) t->publishErrorToRings(1);  // the rings' waiters stop waiting
}

std::string ProxyGroup::firstError() const { return hasError() ? error_.message : std::string(); }

void ProxyGroup::checkError() const {
  if (hasError()) throw Error(error_.message);
}

transport::Transport& ProxyGroup::transport(int thread) { return threads_.at(thread)->transport(); }

SignalPath ProxyGroup::signalPath() const { return threads_.front()->signalPath(); }

ThreadStats ProxyGroup::stats(int thread) const { return threads_.at(thread)->stats(); }

std::vector<int> ProxyGroup::deadPeers() const { return dead_->list(); }

std::string ProxyGroup::dumpState() const {
  std::string out;
  for (const auto& t : threads_) out += t->dumpState();
  return out;
}

}  // namespace uccl::ep::proxy
