// uccl.ep._C: the C++ runtime as Python sees it. No torch header, no libtorch, no libcuda: device pointers are ints,
// streams are cudaStream_t handles as ints, and every kernel argument crosses by name in an argument struct
// (bind_args.hpp) whose fields carry the Python argument names. The runtime owns the limits (kernels/limits.hpp),
// the layouts, the size hints, the value checks (runtime/call_checks.hpp) and the topology; Python reads them from
// here and checks only what is torch-specific.
//
// Always present (pure C++, no CUDA): the limits, the argument structs, Topology, layout queries, size hints, the
// value checks, has_cuda(). With UCCL_EP_HAVE_GPU (CUDA, or HIP: ROCm torch calls it cuda too): class Runtime over
// runtime::Buffer (bind_runtime.cpp).
//
// Exceptions: uccl::ep::Error -> _C.UcclError (a RuntimeError), uccl::ep::TimeoutError -> _C.TimeoutError (a
// builtins.TimeoutError), uccl::ep::InvalidArgument -> _C.ArgumentError (a ValueError), uccl::ep::Interrupted -> the
// KeyboardInterrupt Python's handler raised for the Ctrl-C that ended a native wait (bind_interrupt.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <string>

#include "kernels/ll_layout.hpp"
#include "python/bind.hpp"
#include "runtime/call_checks.hpp"
#include "runtime/ll_floor_plan.hpp"
#include "runtime/size_hints.hpp"
#include "runtime/topology.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::python {

namespace {
// Argument `name` of `call` as a T. A Python int outside T's range is ArgumentError naming the call, the argument and
// T's range: pybind11's own conversion would raise a TypeError that names neither (and a hint must never wrap). A
// value that is not an int (no __index__) is a TypeError naming the argument.
template <typename T>
T intArg(const char* call, const char* name, const py::object& v) {
  const py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
  if (!i) {
    PyErr_Clear();
    throw py::type_error(fmt::format("{}: {} must be an int, got {}", call, name, Py_TYPE(v.ptr())->tp_name));
  }
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) {
    UCCL_EP_THROW_ARG("{}: {} must be within [{}, {}], got {}", call, name, std::numeric_limits<T>::min(),
                      std::numeric_limits<T>::max(), py::str(i).cast<std::string>());
  }
  return static_cast<T>(x);
}
}  // namespace

void bindHostCalls(py::module_& m) {
  using py::arg;
  namespace rt = runtime;
  m.def("local_host_id", &rt::localHostId, "this process's host identity (host name and boot id)");
  m.def("timeout_secs", [] { return env().timeout_secs; }, "UCCL_EP_TIMEOUT_SECS as the runtime read it (seconds)");

  auto hint = [](size_t (*f)(const rt::SizeHintArgs&), const char* call, const char* recv_name) {
    return
        [f, call, recv_name](const py::object& num_sms, const py::object& recv_tokens, const py::object& hidden_bytes,
                             const py::object& num_ranks, const py::object& num_ranks_per_node) {
          return f(rt::SizeHintArgs{intArg<int>(call, "num_sms", num_sms), intArg<int>(call, recv_name, recv_tokens),
                                    intArg<long long>(call, "hidden_bytes", hidden_bytes),
                                    intArg<int>(call, "num_ranks", num_ranks),
                                    intArg<int>(call, "num_ranks_per_node", num_ranks_per_node)});
        };
  };
  m.def("get_nvl_buffer_size_hint",
        hint(&rt::nvlBufferSizeHint, "get_nvl_buffer_size_hint", "num_max_nvl_chunked_recv_tokens"), py::kw_only(),
        arg("num_sms"), arg("num_max_nvl_chunked_recv_tokens"), arg("hidden_bytes"), arg("num_ranks"),
        arg("num_ranks_per_node") = 0,
        "num_nvl_bytes a Config needs (runtime/size_hints.hpp); num_ranks_per_node 0: from the environment");
  m.def("get_rdma_buffer_size_hint",
        hint(&rt::rdmaBufferSizeHint, "get_rdma_buffer_size_hint", "num_max_rdma_chunked_recv_tokens"), py::kw_only(),
        arg("num_sms"), arg("num_max_rdma_chunked_recv_tokens"), arg("hidden_bytes"), arg("num_ranks"),
        arg("num_ranks_per_node") = 0,
        "num_rdma_bytes a Config needs in normal mode; 0 when the NVLink domain holds every rank");

  m.def(
      "get_low_latency_rdma_size_hint",
      [](const py::object& max_tokens, const py::object& hidden, const py::object& num_ranks,
         const py::object& num_experts) {
        constexpr const char* kCall = "get_low_latency_rdma_size_hint";
        return rt::lowLatencyRdmaSizeHint(
            intArg<int>(kCall, "num_max_dispatch_tokens_per_rank", max_tokens), intArg<int>(kCall, "hidden", hidden),
            intArg<int>(kCall, "num_ranks", num_ranks), intArg<int>(kCall, "num_experts", num_experts));
      },
      arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_ranks"), arg("num_experts"),
      "bytes of RDMA buffer low-latency mode needs (both halves), a multiple of 128; ArgumentError for sizes a "
      "low-latency call would reject");
  m.def(
      "low_latency_layout",
      [](int max_tokens, int hidden, int num_ranks, int num_experts) {
        return rt::lowLatencyLayout(max_tokens, hidden, num_ranks, num_experts);
      },
      arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_ranks"), arg("num_experts"),
      "the low-latency layout for these sizes, after checking them");
  m.def(
      "low_latency_floor_plan",
      [](const kernels::ll::Layout& layout, const std::string& call, int rank, std::vector<int32_t> counts,
         const std::vector<bool>& proxy_peers, int half, int num_rings, int num_threads) {
        rt::LowLatencyFloorArgs a;
        a.layout = layout;
        a.call = rt::lowLatencyCallOf(call);
        a.rank = rank;
        a.counts = std::move(counts);
        a.proxy_peer.assign(proxy_peers.begin(), proxy_peers.end());
        a.half = half;
        a.num_rings = num_rings;
        a.num_threads = num_threads;
        return rt::lowLatencyFloorPlan(a);
      },
      py::kw_only(), arg("layout"), arg("call"), arg("rank"), arg("counts"), arg("proxy_peers"), arg("half") = 0,
      arg("num_rings"), arg("num_threads"),
      "the transport-floor plan of one low-latency call ('dispatch' or 'combine') at `rank` "
      "(runtime/ll_floor_plan.hpp); counts[s * E + e] = tokens of rank s that picked expert e");
  m.def("check_low_latency_dispatch", &rt::checkLowLatencyDispatch, arg("layout"), arg("args"),
        "the per-call checks of low_latency_dispatch (the runtime runs them in every launch)");
  m.def("check_low_latency_combine", &rt::checkLowLatencyCombine, arg("layout"), arg("args"),
        "the per-call checks of low_latency_combine (the runtime runs them in every launch)");
  m.def("normal_layout_check", &rt::checkDispatchLayout, py::kw_only(), arg("num_ranks"), arg("args"),
        "the checks of get_dispatch_layout");
  m.def(
      "normal_dispatch_bytes",
      [](int num_ranks, const kernels::intranode::DispatchArgs& a, bool cached) {
        return rt::dispatchLayout(num_ranks, a, cached).dispatchBytes(a.num_tokens, a.num_tokens);
      },
      py::kw_only(), arg("num_ranks"), arg("args"), arg("cached"),
      "the checks of a dispatch, and the nvl-buffer bytes it needs on this rank");
  m.def(
      "normal_combine_bytes",
      [](int num_ranks, const kernels::intranode::CombineArgs& a) {
        return rt::combineLayout(num_ranks, a).combineBytes(a.num_recv_tokens);
      },
      py::kw_only(), arg("num_ranks"), arg("args"), "the checks of a combine, and the nvl-buffer bytes it needs");
}

}  // namespace uccl::ep::python

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  namespace k = uccl::ep::kernels;
  namespace python = uccl::ep::python;
  m.doc() = "uccl.ep C++ runtime bindings (pointers as ints, arguments by name; no torch)";

  // Translators: pybind11 tries the most recently registered first, so the derived errors come after Error.
  py::register_exception<uccl::ep::Error>(m, "UcclError", PyExc_RuntimeError);
  py::register_exception<uccl::ep::TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);
  py::register_exception<uccl::ep::InvalidArgument>(m, "ArgumentError", PyExc_ValueError);
  python::bindInterrupt(m);  // uccl::ep::Interrupted -> what the signal handler raised (KeyboardInterrupt)

#ifdef UCCL_EP_HAVE_GPU
  m.def("has_cuda", [] { return true; }, "built with a GPU runtime, CUDA or HIP (kernels and Runtime present)");
#else
  m.def("has_cuda", [] { return false; }, "built with a GPU runtime, CUDA or HIP (kernels and Runtime present)");
#endif

  m.attr("kMaxTopk") = k::kMaxTopk;
  m.attr("kChannelsPerScale") = k::kChannelsPerScale;
  m.attr("kUe8m0ChannelsPerInt") = k::kUe8m0ChannelsPerInt;
  m.attr("kRowAlign") = k::kRowAlign;
  m.attr("kBufferSizeUnit") = k::kBufferSizeUnit;
  m.attr("kMaxExpertsPerRank") = k::kMaxExpertsPerRank;
  m.attr("kMaxTokensPerRank") = k::kMaxTokensPerRank;
  m.attr("kMinHidden") = k::kMinHidden;
  m.attr("kMaxHidden") = k::kMaxHidden;
  m.attr("kMaxNormalExperts") = k::kMaxNormalExperts;
  m.attr("kMaxNvlRanks") = k::kMaxNvlRanks;
  m.attr("kHeaderBytes") = k::ll::kHeaderBytes;
  m.attr("kLogfmtGroupBytes") = k::ll::kLogfmtGroupBytes;

  python::bindStructs(m);
  python::bindHostCalls(m);
  python::bindHandleRules(m);
#ifdef UCCL_EP_HAVE_GPU
  python::bindRuntime(m);
#endif
}
