// The pieces of uccl.ep._C, one function per concern (bindings.cpp assembles the module).
#pragma once

#include <pybind11/pybind11.h>

namespace uccl::ep::python {

namespace py = pybind11;

// Argument structs, Topology and LowLatencyLayout (bind_structs.cpp). Present in every build.
void bindStructs(py::module_& m);
// Layout queries, size hints and the value checks the runtime makes (bindings.cpp). Present in every build.
void bindHostCalls(py::module_& m);
#ifdef UCCL_EP_HAVE_CUDA
// class Runtime over runtime::Buffer (bind_runtime.cpp).
void bindRuntime(py::module_& m);
#endif

}  // namespace uccl::ep::python
