# gpu_ring_bench: the descriptor ring and the proxy seen from a kernel (needs a CUDA GPU to run). The measuring
# half goes through nvcc; the command line (CLI11, JSON) through the host compiler.
if(UCCL_EP_HAVE_CUDA)
  add_executable(gpu_ring_bench ${CMAKE_CURRENT_LIST_DIR}/gpu_ring_bench.cu ${CMAKE_CURRENT_LIST_DIR}/gpu_ring_bench_main.cpp)
  target_link_libraries(gpu_ring_bench PRIVATE uccl_ep_core uccl_ep_bench_support CUDA::cudart)
  target_include_directories(gpu_ring_bench PRIVATE ${PROJECT_SOURCE_DIR}/include)
  set_target_properties(gpu_ring_bench PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  # --help and a bad flag need no GPU: the options are parsed before the first CUDA call.
  if(UCCL_EP_BUILD_TESTS)
    add_test(NAME GpuRingBenchHelpListsItsOptions COMMAND gpu_ring_bench --help)
    set_tests_properties(GpuRingBenchHelpListsItsOptions PROPERTIES
                         PASS_REGULAR_EXPRESSION "--rings.*--op.*--json" LABELS bench)
    add_test(NAME GpuRingBenchNamesTheUnknownFlag COMMAND gpu_ring_bench --ring 4)
    set_tests_properties(GpuRingBenchNamesTheUnknownFlag PROPERTIES
                         PASS_REGULAR_EXPRESSION "not expected:.*--ring" LABELS bench)
    add_test(NAME GpuRingBenchRejectsAnUnknownFlag COMMAND gpu_ring_bench --ring 4)
    set_tests_properties(GpuRingBenchRejectsAnUnknownFlag PROPERTIES WILL_FAIL ON LABELS bench)
    add_test(NAME GpuRingBenchRejectsTooFewIterations COMMAND gpu_ring_bench --iters 100)
    set_tests_properties(GpuRingBenchRejectsTooFewIterations PROPERTIES WILL_FAIL ON LABELS bench)
  endif()
endif()
