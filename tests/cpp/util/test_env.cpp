// One way to read the environment: flags, log levels, LOCAL_WORLD_SIZE, the MNNVL pair and the timeout bound.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../runtime/message_of.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep {
namespace {

using runtime::mentions;
using runtime::messageOf;

// Sets (or, for a null value, unsets) variables for one test and restores what was there before, so tests neither
// leak into each other nor depend on what the shell running them exported.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = ::getenv(name);
      saved_.push_back({name, old != nullptr, old ? old : ""});
      if (value != nullptr) {
        ::setenv(name, value, 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  ~ScopedEnv() {
    for (const Saved& s : saved_) {
      if (s.was_set) {
        ::setenv(s.name, s.value.c_str(), 1);
      } else {
        ::unsetenv(s.name);
      }
    }
  }

 private:
  struct Saved {
    const char* name;
    bool was_set;
    std::string value;
  };
  std::vector<Saved> saved_;
};

TEST(EnvFlag, EverySpellingParsesInAnyCaseWithSurroundingWhitespace) {
  for (const char* v : {"1", "true", "TRUE", "True", "on", "ON", "On", "yes", "YES", "Yes", " 1", "true ", "\tyEs\n"}) {
    EXPECT_TRUE(parseFlag("X", v)) << "'" << v << "'";
  }
  for (const char* v : {"0", "false", "FALSE", "False", "off", "OFF", "Off", "no", "NO", "No", " 0 ", " fAlSe\t"}) {
    EXPECT_FALSE(parseFlag("X", v)) << "'" << v << "'";
  }
}

TEST(EnvFlag, AnythingElseIsAnErrorNamingTheVariableTheValueAndTheSpellings) {
  for (const char* v : {"2", "maybe", "y", "n", "enable", "tru e", "", "  ", "-1"}) {
    const std::string msg = messageOf([&] { parseFlag("UCCL_EP_NORMAL_MNNVL", v); });
    EXPECT_TRUE(mentions(msg, {"UCCL_EP_NORMAL_MNNVL", "'" + std::string(v) + "'", "true", "yes", "off"})) << v;
  }
}

TEST(EnvFlag, ReadsTheVariableAndFallsBackWhenUnsetOrEmpty) {
  ScopedEnv clean({{"UCCL_TEST_FLAG", nullptr}});
  {
    ScopedEnv e({{"UCCL_TEST_FLAG", " Yes "}});
    EXPECT_TRUE(envFlag("UCCL_TEST_FLAG", false));
  }
  EXPECT_TRUE(envFlag("UCCL_TEST_FLAG", true));
  EXPECT_FALSE(envFlag("UCCL_TEST_FLAG", false));
  {
    ScopedEnv e({{"UCCL_TEST_FLAG", ""}});
    EXPECT_TRUE(envFlag("UCCL_TEST_FLAG", true));
  }
  ScopedEnv e({{"UCCL_TEST_FLAG", "nope"}});
  EXPECT_TRUE(mentions(messageOf([] { envFlag("UCCL_TEST_FLAG", false); }), {"UCCL_TEST_FLAG", "'nope'"}));
}

TEST(EnvMnnvl, EitherVariableMakesTheDomainSpanNodesAndIsNamed) {
  ScopedEnv clean({{"UCCL_EP_NORMAL_MNNVL", nullptr}, {"DEEP_EP_NORMAL_MNNVL", nullptr}});
  EXPECT_FALSE(readEnv().normal_mnnvl);
  {
    ScopedEnv e({{"UCCL_EP_NORMAL_MNNVL", "0"}, {"DEEP_EP_NORMAL_MNNVL", "on"}});
    const Env env = readEnv();
    EXPECT_TRUE(env.normal_mnnvl);  // one false variable does not veto the other
    EXPECT_EQ(env.normal_mnnvl_source, "DEEP_EP_NORMAL_MNNVL");
  }
  {
    ScopedEnv e({{"UCCL_EP_NORMAL_MNNVL", "True"}});
    EXPECT_EQ(readEnv().normal_mnnvl_source, "UCCL_EP_NORMAL_MNNVL");
  }
  {
    ScopedEnv e({{"UCCL_EP_NORMAL_MNNVL", "off"}, {"DEEP_EP_NORMAL_MNNVL", "NO"}});
    EXPECT_FALSE(readEnv().normal_mnnvl);
    EXPECT_EQ(readEnv().normal_mnnvl_source, "");
  }
}

TEST(EnvMnnvl, ATypoInEitherVariableIsReportedEvenWhenTheOtherIsSet) {
  ScopedEnv e({{"UCCL_EP_NORMAL_MNNVL", "1"}, {"DEEP_EP_NORMAL_MNNVL", "ture"}});
  EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {"DEEP_EP_NORMAL_MNNVL", "'ture'"}));
}

TEST(EnvLogLevel, EveryLevelParsesInAnyCaseToItsCanonicalName) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"trace", "trace"},       {"DEBUG", "debug"},  {"Info", "info"},      {"warn", "warn"},
      {"Warning", "warn"},      {"WARNING", "warn"}, {"error", "error"},    {"ERR", "error"},
      {"critical", "critical"}, {"Off", "off"},      {"  debug\n", "debug"}};
  for (const auto& [in, out] : cases) EXPECT_EQ(parseLogLevel("UCCL_LOG_LEVEL", in), out) << in;
}

TEST(EnvLogLevel, ReadEnvStoresTheCanonicalNameAndDefaultsToInfo) {
  {
    ScopedEnv clean({{"UCCL_LOG_LEVEL", nullptr}});
    EXPECT_EQ(readEnv().log_level, "info");
  }
  ScopedEnv e({{"UCCL_LOG_LEVEL", "DEBUG"}});
  EXPECT_EQ(readEnv().log_level, "debug");
}

TEST(EnvLogLevel, AnUnknownLevelIsAnErrorNamingTheVariableAndTheLevels) {
  ScopedEnv e({{"UCCL_LOG_LEVEL", "verbose"}});
  EXPECT_TRUE(mentions(messageOf([] { readEnv(); }),
                       {"UCCL_LOG_LEVEL", "'verbose'", "trace", "debug", "info", "warn", "error", "critical", "off"}));
}

// The logger is a process-wide singleton, so each case runs in a child process (gtest death-test fork).
TEST(EnvLogLevel, LoggerFollowsAnUpperCaseLevel) {
  EXPECT_EXIT(
      {
        ::setenv("UCCL_LOG_LEVEL", "DEBUG", 1);
        std::exit(log().level() == spdlog::level::debug ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(EnvLogLevel, ABadLevelLogsAtInfoAndSaysSoOnStderr) {
  EXPECT_EXIT(
      {
        ::setenv("UCCL_LOG_LEVEL", "loud", 1);
        std::exit(log().level() == spdlog::level::info ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "UCCL_LOG_LEVEL='loud' is not a log level.*logging at info");
}

TEST(EnvLocalWorldSize, IsZeroWhenUnsetAndReadWhenPositive) {
  {
    ScopedEnv clean({{"LOCAL_WORLD_SIZE", nullptr}});
    EXPECT_EQ(readEnv().local_world_size, 0);
  }
  ScopedEnv e({{"LOCAL_WORLD_SIZE", "8"}});
  EXPECT_EQ(readEnv().local_world_size, 8);
}

TEST(EnvLocalWorldSize, ANonPositiveOrNonIntegerValueIsAnErrorNamingIt) {
  for (const char* v : {"0", "-4", "four", "4.5", "4x", "99999999999"}) {
    ScopedEnv e({{"LOCAL_WORLD_SIZE", v}});
    EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {"LOCAL_WORLD_SIZE", "'" + std::string(v) + "'", "positive"}))
        << v;
  }
}

TEST(EnvTimeout, AcceptsPositiveSecondsUpToTheBound) {
  {
    ScopedEnv clean({{"UCCL_EP_TIMEOUT_SECS", nullptr}});
    EXPECT_EQ(readEnv().timeout_secs, 100.0);
  }
  for (const char* v : {"0.5", "30", "1e6"}) {
    ScopedEnv e({{"UCCL_EP_TIMEOUT_SECS", v}});
    EXPECT_EQ(readEnv().timeout_secs, std::stod(v));
  }
  Env e;
  e.timeout_secs = 2.5;
  EXPECT_EQ(e.timeoutNs(), 2'500'000'000ull);
  e.timeout_secs = kMaxTimeoutSecs;
  EXPECT_EQ(e.timeoutNs(), 1'000'000'000'000'000ull);
}

TEST(EnvTimeout, RejectsValuesThatAreNotFinitePositiveOrWithinTheBound) {
  for (const char* v : {"1e10", "1000001", "inf", "-inf", "nan", "0", "-1", "ten", "5s"}) {
    ScopedEnv e({{"UCCL_EP_TIMEOUT_SECS", v}});
    EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {"UCCL_EP_TIMEOUT_SECS", "'" + std::string(v) + "'", "1e+06"}))
        << v;
  }
}

TEST(EnvTimeout, ANanosecondCountIsNeverAnUncheckedCastOfAHandSetValue) {
  Env e;
  e.timeout_secs = 1e300;
  EXPECT_EQ(e.timeoutNs(), 1'000'000'000'000'000ull);
  e.timeout_secs = INFINITY;
  EXPECT_EQ(e.timeoutNs(), 1'000'000'000'000'000ull);
  e.timeout_secs = NAN;
  EXPECT_EQ(e.timeoutNs(), 0u);
  e.timeout_secs = -3;
  EXPECT_EQ(e.timeoutNs(), 0u);
}

TEST(EnvFields, RanksPerNodeIsZeroWhenUnsetAndMustNotBeNegative) {
  {
    ScopedEnv clean({{"UCCL_EP_RANKS_PER_NODE", nullptr}});
    EXPECT_EQ(readEnv().ranks_per_node, 0);
  }
  {
    ScopedEnv e({{"UCCL_EP_RANKS_PER_NODE", "4"}});
    EXPECT_EQ(readEnv().ranks_per_node, 4);
  }
  ScopedEnv e({{"UCCL_EP_RANKS_PER_NODE", "-2"}});
  EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {"UCCL_EP_RANKS_PER_NODE"}));
}

// Every integer variable has a documented range (README): its ends are accepted, one past either end is an error
// naming the variable and the range, and so are values that overflow 64 bits.
TEST(EnvFields, IntegerVariablesAcceptTheirRangeAndNameAnythingOutside) {
  struct Case {
    const char* name;
    const char* lo;
    const char* hi;
    const char* below;
    const char* above;
  };
  for (const Case& c :
       {Case{"UCCL_IB_GID_INDEX", "-1", "255", "-2", "256"}, Case{"UCCL_IB_SL", "0", "15", "-1", "16"},
        Case{"UCCL_IB_TC", "0", "255", "-1", "256"}, Case{"UCCL_EP_NUM_PROXY_THREADS", "1", "64", "0", "65"},
        Case{"UCCL_IB_MAX_INFLIGHT_NORMAL", "0", "4294967295", "-1", "4294967296"},
        Case{"UCCL_IB_MAX_INFLIGHT_LOW_LATENCY", "0", "4294967295", "-1", "4294967296"},
        Case{"UCCL_EP_RANKS_PER_NODE", "0", "2147483647", "-1", "2147483648"},
        Case{"LOCAL_WORLD_SIZE", "1", "2147483647", "0", "2147483648"},
        Case{"UCCL_IB_MAX_INFLIGHT_BYTES", "0", "9223372036854775807", "-1", "99999999999999999999"}}) {
    for (const char* ok : {c.lo, c.hi}) {
      ScopedEnv e({{c.name, ok}});
      EXPECT_NO_THROW(readEnv()) << c.name << "=" << ok;
    }
    for (const char* bad : {c.below, c.above}) {
      ScopedEnv e({{c.name, bad}});
      EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {c.name})) << c.name << "=" << bad;
    }
  }
}

// Every numeric variable (README's table) refuses what is not a number in its range, whatever strtod would make of
// it: infinities, NaN, fractions, exponents, a number with a suffix, blanks. The error names the variable and the
// value.
TEST(EnvFields, NumericVariablesRefuseInfinityNanAndNonIntegersNamingTheVariable) {
  for (const char* name : {"UCCL_IB_GID_INDEX", "UCCL_IB_SL", "UCCL_IB_TC", "UCCL_IB_MAX_INFLIGHT_BYTES",
                           "UCCL_IB_MAX_INFLIGHT_NORMAL", "UCCL_IB_MAX_INFLIGHT_LOW_LATENCY",
                           "UCCL_EP_NUM_PROXY_THREADS", "UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE"}) {
    for (const char* bad : {"inf", "-inf", "infinity", "nan", "NaN", "1.5", "1e3", "4x", " ", "0x"}) {
      ScopedEnv e({{name, bad}});
      EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {name, "'" + std::string(bad) + "'"})) << name << "=" << bad;
    }
  }
  for (const char* bad : {"inf", "-inf", "infinity", "nan", "NaN", "-nan", " ", "0x"}) {
    ScopedEnv e({{"UCCL_EP_TIMEOUT_SECS", bad}});
    EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {"UCCL_EP_TIMEOUT_SECS", "'" + std::string(bad) + "'"})) << bad;
  }
}

// The variables that take one of a few words: the default when unset, each word accepted, anything else named.
TEST(EnvChoices, DefaultWhenUnsetEachWordAcceptedAnythingElseNamed) {
  struct Choice {
    const char* name;
    std::string Env::*field;
    const char* fallback;
    std::vector<const char*> words;
    const char* listed;  // the accepted words as the message lists them
  };
  const std::vector<Choice> choices = {
      {"UCCL_EP_NORMAL_PATH", &Env::normal_path, "auto", {"auto", "pipelined", "staged"}, "auto, pipelined, staged"},
      {"UCCL_EP_FABRIC_HMEM", &Env::fabric_hmem, "auto", {"auto", "on", "off"}, "auto, on, off"},
      {"UCCL_EP_TRANSPORT", &Env::transport, "auto", {"verbs", "efa", "tcp", "shm", "auto"},
       "verbs, efa, tcp, shm, auto"},
  };
  for (const Choice& c : choices) {
    {
      ScopedEnv e({{c.name, nullptr}});
      EXPECT_EQ(readEnv().*c.field, c.fallback) << c.name;
    }
    for (const char* v : c.words) {
      ScopedEnv e({{c.name, v}});
      EXPECT_EQ(readEnv().*c.field, v) << c.name;
    }
    ScopedEnv e({{c.name, "fast"}});
    EXPECT_TRUE(mentions(messageOf([] { readEnv(); }), {c.name, "'fast'", c.listed})) << c.name;
  }
}

}  // namespace
}  // namespace uccl::ep
