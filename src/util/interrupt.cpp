#include "uccl_ep/util/interrupt.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace uccl::ep {

namespace {
std::atomic<InterruptCheck> g_check{nullptr};

int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

InterruptCheck setInterruptCheck(InterruptCheck check) { return g_check.exchange(check); }

void checkInterrupt(const char* what) {
  const InterruptCheck check = g_check.load(std::memory_order_acquire);
  if (check != nullptr && check()) {
    throw Interrupted(fmt::format("{} was interrupted (Ctrl-C); nothing was freed or cancelled by it", what));
  }
}

InterruptPoll::InterruptPoll(const char* what) : what_(what), next_ns_(nowNs() + kInterruptPollMs * 1000000) {}

void InterruptPoll::poll() {
  const int64_t now = nowNs();
  if (now < next_ns_) return;
  next_ns_ = now + kInterruptPollMs * 1000000;
  checkInterrupt(what_);
}

void runInterruptibly(const char* what, std::function<void()> blocking) {
  if (g_check.load(std::memory_order_acquire) == nullptr) {  // nothing can interrupt it: no helper thread
    blocking();
    return;
  }
  // Shared with the helper, which may outlive this call when the wait is interrupted.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;
  };
  auto st = std::make_shared<State>();
  std::thread([st, f = std::move(blocking)] {
    std::exception_ptr error;
    try {
      f();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(st->mu);
    st->error = error;
    st->done = true;
    st->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(st->mu);
  while (!st->cv.wait_for(lock, std::chrono::milliseconds(kInterruptPollMs), [&] { return st->done; })) {
    lock.unlock();
    checkInterrupt(what);
    lock.lock();
  }
  if (st->error) std::rethrow_exception(st->error);
}

}  // namespace uccl::ep
