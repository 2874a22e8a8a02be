add_executable(proxy_bench ${CMAKE_CURRENT_LIST_DIR}/proxy_bench.cpp)
target_link_libraries(proxy_bench PRIVATE uccl_ep_core uccl_ep_bench_support)
# Its options: --help answers, an unknown flag fails naming it (CLI11), a bad value fails naming the option.
if(UCCL_EP_BUILD_TESTS)
  add_test(NAME ProxyBenchHelpListsItsOptions COMMAND proxy_bench --help)
  set_tests_properties(ProxyBenchHelpListsItsOptions PROPERTIES
                       PASS_REGULAR_EXPRESSION "--transport.*--skip-bw.*--json" LABELS bench)
  add_test(NAME ProxyBenchRejectsAnUnknownFlag COMMAND proxy_bench --skip-bandwith)
  set_tests_properties(ProxyBenchRejectsAnUnknownFlag PROPERTIES WILL_FAIL ON LABELS bench)
  add_test(NAME ProxyBenchNamesTheUnknownFlag COMMAND proxy_bench --skip-bandwith)
  set_tests_properties(ProxyBenchNamesTheUnknownFlag PROPERTIES
                       PASS_REGULAR_EXPRESSION "not expected:.*--skip-bandwith" LABELS bench)
  add_test(NAME ProxyBenchRejectsATransportItDoesNotKnow COMMAND proxy_bench --transport efa)
  set_tests_properties(ProxyBenchRejectsATransportItDoesNotKnow PROPERTIES WILL_FAIL ON LABELS bench)
endif()
