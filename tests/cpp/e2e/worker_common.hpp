// What the e2e workers (e2e_worker, floor_worker) share: the flags every one takes, its rendezvous and proxy
// configuration from them, how it ends with a message, and the 'stop' fault.
#pragma once

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "uccl_ep/bootstrap/rendezvous.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/util/env.hpp"

namespace uccl::ep::e2e {

// --rank --world --port --token --host --transport --signal --threads --shrink --fault; `all` holds every flag given.
struct WorkerFlags {
  int rank = 0, world = 2, port = 0, threads = 2, shrink = 0;
  std::string host = "127.0.0.1", token, transport = "tcp", signal = "auto", fault = "none";
  std::map<std::string, std::string> all;

  static WorkerFlags parse(int argc, char** argv) {
    WorkerFlags f;
    for (int i = 1; i + 1 < argc; i += 2) f.all[argv[i]] = argv[i + 1];
    f.number("--rank", f.rank), f.number("--world", f.world), f.number("--port", f.port);
    f.number("--threads", f.threads), f.number("--shrink", f.shrink);
    f.text("--host", f.host), f.text("--token", f.token), f.text("--transport", f.transport);
    f.text("--signal", f.signal), f.text("--fault", f.fault);
    return f;
  }
  template <typename T>
  void number(const char* flag, T& field) const {
    if (all.count(flag)) field = static_cast<T>(std::stoll(all.at(flag)));
  }
  void text(const char* flag, std::string& field) const {
    if (all.count(flag)) field = all.at(flag);
  }

  bootstrap::RendezvousOptions rendezvous() const {
    bootstrap::RendezvousOptions ro;
    ro.host = host;
    ro.port = port;
    ro.rank = rank;
    ro.world = world;
    ro.token = token;
    ro.ifname = env().socket_ifname;
    ro.timeout_ns = env().timeoutNs();
    return ro;
  }
  // Every rank on this host; --threads endpoints; --signal atomic | imm | auto.
  proxy::ProxyConfig proxyConfig() const {
    proxy::ProxyConfig pc = proxy::ProxyConfig::fromEnv(rank, world);
    pc.num_threads = threads;
    pc.transport = transport;
    pc.all_peers_local = true;
    pc.enable_shrink = shrink != 0;
    pc.signal_path = signal == "atomic" ? proxy::SignalPath::kAtomic
                     : signal == "imm"  ? proxy::SignalPath::kImmediate
                                        : proxy::SignalPath::kAuto;
    return pc;
  }
};

[[noreturn]] inline void die(const char* who, int code, const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", who, msg.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

// The 'stop' fault: freezes this process (SIGSTOP) like a debugged or swapped-out one, alive and holding its
// connections but answering nothing; a watchdog child ends it once the others had time to give up, so a test need
// not wait for the launcher's deadline.
inline void freezeWithWatchdog() {
  const pid_t self = getpid();
  if (fork() == 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(3 * env().timeout_secs + 5));
    kill(self, SIGKILL);
    std::_Exit(0);
  }
  raise(SIGSTOP);
}

}  // namespace uccl::ep::e2e
