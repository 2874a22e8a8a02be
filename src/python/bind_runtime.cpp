// class Runtime: runtime::Buffer for Python. Every method takes keyword arguments; kernel arguments come as the
// argument structs of bind_structs.cpp. Calls that wait or launch release the GIL.
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "python/bind.hpp"
#include "runtime/buffer.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::python {

namespace ll = kernels::ll;
namespace in = kernels::intranode;
using runtime::LowLatencyShape;
using runtime::NormalConfig;

namespace {

class Runtime {
 public:
  explicit Runtime(const runtime::BufferConfig& c) {
    py::gil_scoped_release nogil;
    buffer_ = std::make_unique<runtime::Buffer>(c);
  }

  runtime::Buffer& b() const {
    if (!buffer_) throw Error("uccl.ep runtime: the buffer was destroyed; build a new Buffer");
    return *buffer_;
  }

  void destroy() {
    if (!buffer_) return;
    py::gil_scoped_release nogil;
    buffer_->destroy();
  }

 private:
  std::unique_ptr<runtime::Buffer> buffer_;
};

// Runs `f(buffer)` without the GIL.
template <typename F>
auto nogil(const Runtime& r, F&& f) {
  runtime::Buffer& buf = r.b();
  py::gil_scoped_release release;
  return f(buf);
}

// The receive half of a low-latency call made with return_recv_hook: hook(stream) runs it once on `stream` (the same
// buffer half as the send). Holds the Runtime object alive. A class rather than a function object made per call:
// building a pybind11 function costs more than the rest of the call.
class LowLatencyReceive {
 public:
  LowLatencyReceive(py::object runtime, runtime::LowLatencyPending pending)
      : runtime_(std::move(runtime)), pending_(std::move(pending)) {}

  void operator()(uintptr_t stream) const {
    nogil(runtime_.cast<const Runtime&>(), [&](runtime::Buffer& b) { b.lowLatencyReceive(pending_, stream); });
  }

 private:
  py::object runtime_;
  runtime::LowLatencyPending pending_;
};

// low_latency_dispatch / low_latency_combine: the send half (and the receive half unless return_recv_hook), then
// None or the receive hook.
template <typename Args>
auto lowLatencyCall(const char* name, const Fields<LowLatencyCall<Args>>& fields,
                    runtime::LowLatencyPending (runtime::Buffer::*send)(const LowLatencyShape&, const Args&, bool,
                                                                         const runtime::LowLatencyStreams&)) {
  const auto* f = &fields;
  const std::string caller = std::string("Runtime.") + name + "()";
  return [f, send, caller](py::object self, const py::args& args, const py::kwargs& kw) -> py::object {
    const LowLatencyCall<Args> c = f->makeFrom(args, kw, caller);
    auto p = nogil(self.cast<const Runtime&>(), [&](runtime::Buffer& b) {
      return (b.*send)(c.shape, c.args, c.return_recv_hook, c.streams);
    });
    if (!c.return_recv_hook) return py::none();
    return py::cast(LowLatencyReceive(std::move(self), std::move(p)));
  };
}

void bindLowLatency(py::module_& m, py::class_<Runtime>& c) {
  using py::arg;
  py::class_<LowLatencyReceive>(m, "LowLatencyReceive", "the receive half of a low-latency call (return_recv_hook)")
      .def("__call__", &LowLatencyReceive::operator(), arg("stream"),
           "runs the receive half on `stream` (the same buffer half as the send); raises what the send recorded");
  const auto& dispatch = lowLatencyDispatchCallFields();
  const auto& combine = lowLatencyCombineCallFields();
  c.def(
       "low_latency_layout",
       [](const Runtime& r, int m, int hidden, int e) { return r.b().lowLatencyLayout(LowLatencyShape{m, hidden, e}); },
       py::kw_only(), arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_experts"),
       "the layout for these sizes, checked against the limits and num_rdma_bytes (kept per size triple)")
      .def("low_latency_dispatch", lowLatencyCall("low_latency_dispatch", dispatch, &runtime::Buffer::lowLatencyDispatch),
           ("keywords (or all by position, in this order): " + dispatch.joined() +
            ". Runs on `stream` after `caller_stream`'s work; with caller_waits, "
            "caller_stream waits for it. Returns None, or a LowLatencyReceive when return_recv_hook").c_str())
      .def("low_latency_combine", lowLatencyCall("low_latency_combine", combine, &runtime::Buffer::lowLatencyCombine),
           ("keywords (or all by position, in this order): " + combine.joined() +
            ". Streams and result as low_latency_dispatch").c_str())
      .def(
          "get_next_low_latency_combine_buffer",
          [](const Runtime& r, int m, int hidden, int e) {
            return r.b().nextLowLatencyCombineBuffer(LowLatencyShape{m, hidden, e});
          },
          py::kw_only(), arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_experts"))
      .def(
          "clean_low_latency_buffer",
          [](const Runtime& r, int m, int hidden, int e, uintptr_t stream) {
            nogil(r, [&](runtime::Buffer& b) { b.cleanLowLatencyBuffer(LowLatencyShape{m, hidden, e}, stream); });
          },
          py::kw_only(), arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_experts"), arg("stream"))
      .def(
          "low_latency_update_mask_buffer",
          [](const Runtime& r, int rank, bool mask, uintptr_t stream) {
            r.b().lowLatencyUpdateMaskBuffer(rank, mask, stream);
          },
          py::kw_only(), arg("rank_to_mask"), arg("mask"), arg("stream"))
      .def(
          "low_latency_query_mask_buffer",
          [](const Runtime& r, uintptr_t out, uintptr_t stream) { r.b().lowLatencyQueryMaskBuffer(out, stream); },
          py::kw_only(), arg("mask_status"), arg("stream"))
      .def(
          "low_latency_clean_mask_buffer",
          [](const Runtime& r, uintptr_t stream) { r.b().lowLatencyCleanMaskBuffer(stream); }, py::kw_only(),
          arg("stream"));
}

void bindFloor(py::class_<Runtime>& c) {
  using py::arg;
  c.def(
       "low_latency_floor_plan",
       [](const Runtime& r, int m, int hidden, int e, const std::string& call, const std::vector<int32_t>& counts) {
         return r.b().lowLatencyFloorPlan(LowLatencyShape{m, hidden, e}, runtime::lowLatencyCallOf(call), counts);
       },
       py::kw_only(), arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_experts"), arg("call"),
       arg("counts"),
       "this rank's proxy work in one call ('dispatch' or 'combine') as a FloorPlan; counts[s * E + e] = tokens of "
       "rank s that picked expert e")
      .def(
          "internode_floor_plan",
          [](const Runtime& r, const std::string& call, size_t hidden_bytes, int num_scales, int num_topk, int num_sms,
             int rdma_send, int rdma_recv, const std::vector<int32_t>& sent, const std::vector<int32_t>& received) {
            if (call != "dispatch" && call != "combine") {
              throw InvalidArgument("internode_floor_plan: call '" + call + "': expected 'dispatch' or 'combine'");
            }
            return r.b().internodeFloorPlan(call == "dispatch", hidden_bytes, num_scales, num_topk,
                                            NormalConfig{num_sms, 0, rdma_send, rdma_recv}, sent, received);
          },
          py::kw_only(), arg("call"), arg("hidden_bytes"), arg("num_scales"), arg("num_topk"), arg("num_sms"),
          arg("num_max_rdma_chunked_send_tokens"), arg("num_max_rdma_chunked_recv_tokens"), arg("sent"),
          arg("received"),
          "this rank's proxy work in one internode call ('dispatch' or 'combine') as a FloorPlan: rows of "
          "hidden_bytes (a combine's in BF16), sent[c * N + b] / received[c * N + a] records per (channel, node) "
          "stream")
      .def(
          "transport_floor_info",
          [](const Runtime& r) {
            return py::bytes(nogil(r, [](runtime::Buffer& b) { return b.transportFloorInfo(); }));
          },
          "opens the transport floor (own endpoints, the proxies' configuration, the same RDMA buffer); this rank's "
          "bytes for transport_floor_connect on every rank")
      .def(
          "transport_floor_connect",
          [](const Runtime& r, const std::vector<std::string>& infos) {
            nogil(r, [&](runtime::Buffer& b) { b.transportFloorConnect(infos); });
          },
          arg("infos"))
      .def(
          "transport_floor_run",
          [](const Runtime& r, const proxy::FloorPlan& plan) {
            return nogil(r, [&](runtime::Buffer& b) { return b.transportFloorRun(plan); });
          },
          arg("plan"), "one run of the plan, every rank together, no call in flight; a FloorResult")
      .def(
          "transport_floor_close",
          [](const Runtime& r) { nogil(r, [](runtime::Buffer& b) { b.transportFloorClose(); }); },
          "after a barrier that follows every rank's last run")
      .def(
          "transport_name", [](const Runtime& r) { return r.b().transportName(); },
          "the proxies' transport, e.g. 'fabric/shm:shm'; empty when no peer is reached through the proxies");
}

void bindNormal(py::class_<Runtime>& c) {
  using py::arg;
  c.def(
       "check_dispatch_layout", [](const Runtime& r, const in::LayoutArgs& a) { r.b().checkDispatchLayout(a); },
       arg("args"), "the checks of get_dispatch_layout, before the outputs are sized (the launch then skips them)")
      .def(
       "get_dispatch_layout",
       [](const Runtime& r, const in::LayoutArgs& a, uintptr_t stream) {
         nogil(r, [&](runtime::Buffer& b) { b.getDispatchLayout(a, stream); });
       },
       arg("args"), py::kw_only(), arg("stream"))
      .def(
          "dispatch_send",
          [](const Runtime& r, const in::DispatchArgs& a, bool cached, int num_sms, uintptr_t stream, int rdma_send,
             int rdma_recv) {
            nogil(r, [&](runtime::Buffer& b) {
              b.dispatchSend(a, cached, NormalConfig{num_sms, 0, rdma_send, rdma_recv}, stream);
            });
          },
          arg("args"), py::kw_only(), arg("cached"), arg("num_sms"), arg("stream"),
          arg("num_max_rdma_chunked_send_tokens") = 0, arg("num_max_rdma_chunked_recv_tokens") = 0,
          "checks, then the send half; keeps the call's layout for dispatch_recv")
      .def(
          "dispatch_wait_counts",
          [](const Runtime& r) { return nogil(r, [&](runtime::Buffer& b) { return b.dispatchWaitCounts(); }); },
          "CPU wait of a non-cached dispatch: (num_recv_tokens, per-local-expert counts)")
      .def(
          "dispatch_forward_count",
          [](const Runtime& r) { return nogil(r, [&](runtime::Buffer& b) { return b.dispatchForwardCount(); }); },
          "after dispatch_wait_counts, across nodes: the records this rank forwards (rows of the forward map)")
      .def(
          "dispatch_recv",
          [](const Runtime& r, const in::DispatchOutputs& o, int num_sms, int send_tokens, uintptr_t stream) {
            nogil(r, [&](runtime::Buffer& b) { b.dispatchRecv(o, NormalConfig{num_sms, send_tokens}, stream); });
          },
          arg("outputs"), py::kw_only(), arg("num_sms"), arg("num_max_nvl_chunked_send_tokens"), arg("stream"))
      .def(
          "combine",
          [](const Runtime& r, const in::CombineArgs& a, int num_sms, int send_tokens, uintptr_t stream, int rdma_send,
             int rdma_recv) {
            nogil(r, [&](runtime::Buffer& b) {
              b.combine(a, NormalConfig{num_sms, send_tokens, rdma_send, rdma_recv}, stream);
            });
          },
          arg("args"), py::kw_only(), arg("num_sms"), arg("num_max_nvl_chunked_send_tokens"), arg("stream"),
          arg("num_max_rdma_chunked_send_tokens") = 0, arg("num_max_rdma_chunked_recv_tokens") = 0);
}

}  // namespace

void bindRuntime(py::module_& m) {
  using py::arg;
  py::class_<Runtime> c(m, "Runtime",
                        "runtime::Buffer: topology, allocations, peers, proxies, checks and kernel launches. "
                        "Pointers are ints, streams are cudaStream_t handles as ints; every argument by keyword.");
  c.def(py::init([](int rank, int num_ranks, int device, std::vector<std::string> host_ids, int64_t num_nvl_bytes,
                    int64_t num_rdma_bytes, bool low_latency_mode, bool allow_nvlink_for_low_latency_mode,
                    bool allow_mnnvl, bool use_fabric, bool enable_shrink) {
          runtime::BufferConfig cfg;
          cfg.rank = rank;
          cfg.num_ranks = num_ranks;
          cfg.device = device;
          cfg.host_ids = std::move(host_ids);
          cfg.num_nvl_bytes = num_nvl_bytes;
          cfg.num_rdma_bytes = num_rdma_bytes;
          cfg.low_latency_mode = low_latency_mode;
          cfg.allow_nvlink_for_low_latency_mode = allow_nvlink_for_low_latency_mode;
          cfg.allow_mnnvl = allow_mnnvl;
          cfg.use_fabric = use_fabric;
          cfg.enable_shrink = enable_shrink;
          return std::make_unique<Runtime>(cfg);
        }),
        py::kw_only(), arg("rank"), arg("num_ranks"), arg("device"), arg("host_ids"), arg("num_nvl_bytes"),
        arg("num_rdma_bytes"), arg("low_latency_mode"), arg("allow_nvlink_for_low_latency_mode"), arg("allow_mnnvl"),
        arg("use_fabric"), arg("enable_shrink"))
      .def("local_info", [](const Runtime& r) { return py::bytes(r.b().localInfo()); },
           "this rank's bytes for connect() on every rank")
      .def(
          "connect",
          [](const Runtime& r, const std::vector<std::string>& infos) {
            nogil(r, [&](runtime::Buffer& b) { b.connect(infos); });
          },
          arg("infos"), "infos[r] = rank r's local_info(); blocks until connected")
      .def("destroy", &Runtime::destroy,
           "idempotent and local: frees this rank's memory after the device's work (no peer is waited for); Ctrl-C "
           "interrupts the wait (KeyboardInterrupt, nothing freed)")
      .def(
          "synchronize", [](const Runtime& r) { nogil(r, [](runtime::Buffer& b) { b.synchronize(); }); },
          "waits for the device's work; Ctrl-C interrupts it (KeyboardInterrupt)")
      .def("topology", [](const Runtime& r) { return r.b().topology(); }, "the runtime's topology (a copy)")
      .def("normal_path", [](const Runtime& r) { return r.b().normalPath(); },
           "the normal-mode path after connect() and why, e.g. 'pipelined (one GPU per rank)'")
      .def("rdma_buffer_ptr", [](const Runtime& r) { return r.b().rdmaBufferPtr(); })
      .def("nvl_buffer_ptr", [](const Runtime& r) { return r.b().nvlBufferPtr(); })
      .def("check_errors", [](const Runtime& r) { r.b().checkErrors(); },
           "raises the first failure a kernel or a proxy recorded");
  bindLowLatency(m, c);
  bindFloor(c);
  bindNormal(c);
}

}  // namespace uccl::ep::python
