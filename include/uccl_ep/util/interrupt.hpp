// Ctrl-C in native waits. A host wait that can last longer than a moment (a peer's fd, the dispatch counts, the
// device going idle, a floor run) asks, about every kInterruptPollMs, whether the user interrupted; if so it throws
// Interrupted, and Python raises the KeyboardInterrupt its signal handler made. Whoever embeds the library installs
// the question: the Python module asks Python (the GIL taken briefly, PyErr_CheckSignals); a C++ program may install
// a flag its SIGINT handler sets. With none installed, nothing is asked and the waits end only by their timeouts.
#pragma once

#include <cstdint>
#include <functional>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep {

// A wait given up because the user interrupted it (Ctrl-C). Python sees KeyboardInterrupt.
class Interrupted : public Error {
 public:
  using Error::Error;
};

constexpr int64_t kInterruptPollMs = 100;

// True when a signal is pending that should end the wait. Called from the waiting thread, never from a handler.
using InterruptCheck = bool (*)();

// Installs `check` for every later wait in the process (nullptr: none). Returns the one it replaces.
InterruptCheck setInterruptCheck(InterruptCheck check);

// Throws Interrupted("<what> was interrupted ...") when the installed check reports a signal.
void checkInterrupt(const char* what);

// For a spin loop: poll() is cheap and asks the installed check at most once per kInterruptPollMs.
class InterruptPoll {
 public:
  explicit InterruptPoll(const char* what);
  void poll();

 private:
  const char* what_;
  int64_t next_ns_;
};

// Runs `blocking` (a call that cannot be polled, e.g. a device synchronize) on a helper thread and waits for it,
// asking the installed check every kInterruptPollMs. On Ctrl-C it throws Interrupted at once and leaves the helper
// to finish alone; `blocking` must then own everything it touches. Its exception, if any, is rethrown here.
void runInterruptibly(const char* what, std::function<void()> blocking);

}  // namespace uccl::ep
