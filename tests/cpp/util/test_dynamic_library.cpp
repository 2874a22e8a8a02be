// DynamicLibrary: how the transports reach libfabric and libibverbs (dlopen, never linked).
#include <gtest/gtest.h>

#include <string>

#include "uccl_ep/util/dynamic_library.hpp"

namespace uccl::ep {
namespace {

TEST(DynamicLibrary, AMissingLibraryIsReportedNamingEverySonameTried) {
  DynamicLibrary lib({"libuccl_ep_no_such_library.so.7", "libuccl_ep_no_such_library.so"});
  EXPECT_FALSE(lib.loaded());
  EXPECT_EQ(lib.symbol("anything"), nullptr);
  const std::string why = lib.error();
  EXPECT_NE(why.find("could not load libuccl_ep_no_such_library.so.7"), std::string::npos) << why;
  EXPECT_NE(why.find("libuccl_ep_no_such_library.so:"), std::string::npos) << why;
}

TEST(DynamicLibrary, TheFirstSonameThatLoadsWinsAndItsSymbolsResolve) {
  DynamicLibrary lib({"libuccl_ep_no_such_library.so.7", "libm.so.6"});
  ASSERT_TRUE(lib.loaded()) << lib.error();
  EXPECT_EQ(lib.error(), "");
  auto* cosine = reinterpret_cast<double (*)(double)>(lib.symbol("cos"));
  ASSERT_NE(cosine, nullptr);
  EXPECT_DOUBLE_EQ(cosine(0.0), 1.0);
  EXPECT_EQ(lib.symbol("uccl_ep_no_such_symbol"), nullptr);
  EXPECT_NE(lib.error().find("no symbol uccl_ep_no_such_symbol"), std::string::npos) << lib.error();
}

}  // namespace
}  // namespace uccl::ep
