// Whether a process of this host still runs, for telling a dead peer from a slow one.
#pragma once

#include <string>

namespace uccl::ep {

// Names this host and pid namespace: the kernel's boot id plus the pid namespace. Two processes whose spaces are
// equal can judge each other's pids; empty when unknown.
std::string processSpace();

// True when process `pid` no longer runs: no such process, or a zombie (ended, its parent has not reaped it yet).
// False when it runs or cannot be told (another user's process). Only for a pid of this processSpace().
bool processGone(int pid);

}  // namespace uccl::ep
