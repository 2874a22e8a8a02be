// The pieces of uccl.ep._C, one function per concern (bindings.cpp assembles the module).
#pragma once

#include <pybind11/pybind11.h>

#include "kernels/low_latency.hpp"
#include "python/bind_args.hpp"
#include "runtime/buffer.hpp"

namespace uccl::ep::python {

namespace py = pybind11;

// One low-latency call as it crosses the binding: the kernel's argument struct, the sizes, the hook flag and the
// streams, every field a keyword of the one call Runtime.low_latency_dispatch / low_latency_combine (no second
// crossing to build an argument object). The classes LowLatencyDispatchCall / LowLatencyCombineCall parse the same
// keywords in every build, so CPU tests hold the Python layer to the runtime's names.
template <typename Args>
struct LowLatencyCall {
  Args args;
  runtime::LowLatencyShape shape;
  bool return_recv_hook = false;
  runtime::LowLatencyStreams streams;
};
using LowLatencyDispatchCall = LowLatencyCall<kernels::ll::DispatchArgs>;
using LowLatencyCombineCall = LowLatencyCall<kernels::ll::CombineArgs>;
const Fields<LowLatencyDispatchCall>& lowLatencyDispatchCallFields();  // bind_structs.cpp
const Fields<LowLatencyCombineCall>& lowLatencyCombineCallFields();

// Argument structs, Topology and LowLatencyLayout (bind_structs.cpp). Present in every build.
void bindStructs(py::module_& m);
// Layout queries, size hints and the value checks the runtime makes (bindings.cpp). Present in every build.
void bindHostCalls(py::module_& m);
// bind_handle.cpp: the normal-mode handle rules and the words of a kernel error record, for the CPU stand-in.
void bindHandleRules(py::module_& m);
// Ctrl-C in the native waits: the check, the KeyboardInterrupt translator, wait_interruptibly (bind_interrupt.cpp).
// After the other exception translators: it must be tried before Error's.
void bindInterrupt(py::module_& m);
#ifdef UCCL_EP_HAVE_GPU
// class Runtime over runtime::Buffer (bind_runtime.cpp).
void bindRuntime(py::module_& m);
#endif

}  // namespace uccl::ep::python
