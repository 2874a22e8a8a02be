// Ctrl-C in native waits (uccl_ep/util/interrupt.hpp): a SIGINT handler sets a flag (the signal-safe hook a C++
// program would install); a polled spin wait and a blocking call run through runInterruptibly both end with
// Interrupted within a second of the signal, and nothing is asked when no check is installed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "uccl_ep/util/interrupt.hpp"

namespace uccl::ep {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_sigint{false};
std::atomic<int> g_asked{0};

void onSigint(int) { g_sigint.store(true); }

bool pendingSigint() {
  g_asked.fetch_add(1);
  return g_sigint.exchange(false);
}

// Installs the handler and the check for one test; sends SIGINT to this process after `after`.
class SigintFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    g_sigint = false;
    g_asked = 0;
    struct sigaction sa {};
    sa.sa_handler = onSigint;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGINT, &sa, &old_), 0);
    previous_ = setInterruptCheck(&pendingSigint);
  }
  void TearDown() override {
    if (sender_.joinable()) sender_.join();
    setInterruptCheck(previous_);
    sigaction(SIGINT, &old_, nullptr);
  }
  void sigintAfter(std::chrono::milliseconds after) {
    sender_ = std::thread([this, after] {
      std::this_thread::sleep_for(after);
      sent_ = Clock::now();
      kill(getpid(), SIGINT);
    });
  }
  double secondsSinceSignal() const { return std::chrono::duration<double>(Clock::now() - sent_.load()).count(); }

  std::thread sender_;
  std::atomic<Clock::time_point> sent_{Clock::time_point::max()};
  struct sigaction old_ {};
  InterruptCheck previous_ = nullptr;
};

TEST_F(SigintFixture, ASpinWaitEndsWithinASecondOfCtrlC) {
  sigintAfter(std::chrono::milliseconds(200));
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  InterruptPoll poll("the test's spin wait");
  try {
    while (Clock::now() < give_up) poll.poll();
    FAIL() << "the wait ran to its end: Ctrl-C was not seen";
  } catch (const Interrupted& e) {
    EXPECT_LT(secondsSinceSignal(), 1.0);
    EXPECT_NE(std::string(e.what()).find("the test's spin wait was interrupted (Ctrl-C)"), std::string::npos)
        << e.what();
  }
}

TEST_F(SigintFixture, ASpinWaitAsksAboutEveryHundredMilliseconds) {
  InterruptPoll poll("a short wait");
  const auto end = Clock::now() + std::chrono::milliseconds(450);
  while (Clock::now() < end) poll.poll();
  EXPECT_GE(g_asked.load(), 3);
  EXPECT_LE(g_asked.load(), 5);  // millions of polls, four questions
}

TEST_F(SigintFixture, ABlockingCallEndsWithinASecondOfCtrlCAndItsHelperFinishesAlone) {
  auto finished = std::make_shared<std::atomic<bool>>(false);
  sigintAfter(std::chrono::milliseconds(200));
  EXPECT_THROW(runInterruptibly("a device synchronize",
                                [finished] {
                                  std::this_thread::sleep_for(std::chrono::seconds(2));
                                  finished->store(true);
                                }),
               Interrupted);
  EXPECT_LT(secondsSinceSignal(), 1.0);
  EXPECT_FALSE(finished->load());
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  while (!finished->load() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(finished->load());
}

TEST_F(SigintFixture, ABlockingCallsResultAndErrorComeBackWhenNotInterrupted) {
  int value = 0;
  runInterruptibly("a quick call", [&] { value = 7; });
  EXPECT_EQ(value, 7);
  EXPECT_THROW(runInterruptibly("a failing call", [] { throw std::runtime_error("device lost"); }), std::runtime_error);
  EXPECT_EQ(g_asked.load(), 0);  // done before the first question was due
}

TEST(Interrupt, WithNoCheckInstalledNothingIsAskedAndCallsRunInline) {
  const InterruptCheck before = setInterruptCheck(nullptr);
  EXPECT_NO_THROW(checkInterrupt("anything"));
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  runInterruptibly("inline", [&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller);
  setInterruptCheck(before);
}

}  // namespace
}  // namespace uccl::ep
