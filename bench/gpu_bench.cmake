# gpu_ring_bench: the descriptor ring and the proxy seen from a kernel (needs a CUDA GPU to run).
if(UCCL_EP_HAVE_CUDA)
  add_executable(gpu_ring_bench ${CMAKE_CURRENT_LIST_DIR}/gpu_ring_bench.cu)
  target_link_libraries(gpu_ring_bench PRIVATE uccl_ep_core CUDA::cudart)
  target_include_directories(gpu_ring_bench PRIVATE ${PROJECT_SOURCE_DIR}/include)
  set_target_properties(gpu_ring_bench PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
endif()
