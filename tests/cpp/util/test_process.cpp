// processGone and processSpace: how a proxy under enable_shrink tells a dead same-host peer from a slow one.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "uccl_ep/util/process.hpp"

namespace uccl::ep {
namespace {

TEST(Process, AnEndedProcessIsGoneZombieOrReaped) {
  EXPECT_FALSE(processGone(::getpid()));
  EXPECT_FALSE(processGone(0)) << "no pid: not known to be gone";
  const pid_t child = ::fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!processGone(child) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(processGone(child)) << "an ended, unreaped child (a zombie) is gone";
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(processGone(child)) << "a reaped child is gone";
}

TEST(Process, ARunningChildIsNotGone) {
  const pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  EXPECT_FALSE(processGone(child));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST(Process, TheSpaceNamesTheBootAndThePidNamespace) {
  const std::string s = processSpace();
  ASSERT_FALSE(s.empty());
  EXPECT_NE(s.find("pid:["), std::string::npos) << s;
  EXPECT_EQ(s, processSpace());
}

}  // namespace
}  // namespace uccl::ep
