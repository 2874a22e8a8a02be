// uccl.ep._C: the C++ runtime as Python sees it. Integers only (device pointers as uintptr, streams as handles,
// booleans for dtype choices); no torch header, no libtorch, no libcuda. Output tensors are allocated by the
// Python layer (python/uccl/ep/buffer.py), which also validates every argument before calling in here.
//
// Always present (pure C++, no CUDA): the low-latency layout and size hint, the limits, has_cuda().
// With UCCL_EP_HAVE_CUDA: class Runtime over runtime::Buffer.
//
// Exceptions: uccl::ep::TimeoutError -> _C.TimeoutError (a builtins.TimeoutError), uccl::ep::Error ->
// _C.UcclError (a RuntimeError), std::invalid_argument -> ValueError (pybind11's own translation).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ll_layout.hpp"
#include "uccl_ep/util/error.hpp"

#ifdef UCCL_EP_HAVE_CUDA
#include <memory>
#include <stdexcept>

#include "kernels/low_latency.hpp"
#include "runtime/buffer.hpp"
#endif

namespace py = pybind11;

namespace uccl::ep::python {
namespace {

namespace ll = kernels::ll;
#ifdef UCCL_EP_HAVE_CUDA
namespace in = kernels::intranode;
#endif

py::dict layoutDict(int max_tokens, int hidden, int num_ranks, int num_experts) {
  const ll::Layout l = ll::makeLayout(max_tokens, hidden, num_ranks, num_experts);
  py::dict d;
  d["num_ranks"] = l.num_ranks;
  d["num_experts"] = l.num_experts;
  d["experts_per_rank"] = l.experts_per_rank;
  d["max_tokens"] = l.max_tokens;
  d["hidden"] = l.hidden;
  d["msg_bytes"] = l.msg_bytes;
  d["row_bytes"] = l.row_bytes;
  d["dispatch_recv_off"] = l.dispatch_recv_off;
  d["combine_recv_off"] = l.combine_recv_off;
  d["send_off"] = l.send_off;
  d["half_bytes"] = l.half_bytes;
  d["total_bytes"] = l.totalBytes();
  d["dispatch_count_index"] = l.dispatch_count_index;
  d["combine_flag_index"] = l.combine_flag_index;
  d["signals_per_half"] = l.signals_per_half;
  return d;
}

void checkSizes(int max_tokens, int hidden, int num_ranks, int num_experts) {
  // The layout arithmetic itself is defined for any positive sizes; reject what would make it meaningless.
  if (max_tokens <= 0 || hidden <= 0 || num_ranks <= 0 || num_experts <= 0) {
    throw std::invalid_argument("low-latency sizes must be positive: num_max_dispatch_tokens_per_rank=" +
                                std::to_string(max_tokens) + ", hidden=" + std::to_string(hidden) +
                                ", num_ranks=" + std::to_string(num_ranks) +
                                ", num_experts=" + std::to_string(num_experts));
  }
}

#ifdef UCCL_EP_HAVE_CUDA
ll::Phase toPhase(int phase) {
  if (phase < static_cast<int>(ll::Phase::kSend) || phase > static_cast<int>(ll::Phase::kBoth)) {
    throw std::invalid_argument("phase must be 1 (send), 2 (recv) or 3 (both), got " + std::to_string(phase));
  }
  return static_cast<ll::Phase>(phase);
}

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

class Runtime {
 public:
  Runtime(int rank, int world, int ranks_per_node, int device, int64_t num_nvl_bytes, int64_t num_rdma_bytes,
          bool low_latency_mode, bool allow_nvlink_for_low_latency, bool enable_shrink) {
    runtime::BufferConfig c;
    c.rank = rank;
    c.world = world;
    c.ranks_per_node = ranks_per_node;
    c.device = device;
    c.num_nvl_bytes = num_nvl_bytes;
    c.num_rdma_bytes = num_rdma_bytes;
    c.low_latency_mode = low_latency_mode;
    c.allow_nvlink_for_low_latency = allow_nvlink_for_low_latency;
    c.enable_shrink = enable_shrink;
    py::gil_scoped_release nogil;
    buffer_ = std::make_unique<runtime::Buffer>(c);
  }

  runtime::Buffer& b() const {
    if (!buffer_) throw Error("uccl.ep runtime: the buffer was destroyed; build a new Buffer");
    return *buffer_;
  }

  py::bytes localInfo() const { return py::bytes(b().localInfo()); }

  void connect(const std::vector<std::string>& infos) {
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.connect(infos);
  }

  void destroy() {
    if (!buffer_) return;
    py::gil_scoped_release nogil;
    buffer_->destroy();
  }

  void llDispatch(int half, int max_tokens, int hidden, int num_experts, int phase, uintptr_t stream, uintptr_t x,
                  int num_tokens, uintptr_t topk, int num_topk, uintptr_t recv_x, uintptr_t recv_scales,
                  uintptr_t recv_count, uintptr_t src_info, uintptr_t layout_range, uintptr_t cum_stats,
                  uintptr_t wait_stats, bool use_fp8, bool round_scale, bool use_ue8m0) {
    ll::DispatchArgs a;
    a.x = ptr<const void>(x);
    a.num_tokens = num_tokens;
    a.topk_idx = ptr<const int64_t>(topk);
    a.num_topk = num_topk;
    a.recv_x = ptr<void>(recv_x);
    a.recv_scales = ptr<void>(recv_scales);
    a.recv_count = ptr<int32_t>(recv_count);
    a.src_info = ptr<int32_t>(src_info);
    a.layout_range = ptr<int64_t>(layout_range);
    a.cumulative_recv_stats = ptr<int32_t>(cum_stats);
    a.wait_recv_cost_stats = ptr<int64_t>(wait_stats);
    a.use_fp8 = use_fp8;
    a.round_scale = round_scale;
    a.use_ue8m0 = use_ue8m0;
    const ll::Phase p = toPhase(phase);
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.lowLatencyDispatch(half, max_tokens, hidden, num_experts, a, p, stream);
  }

  void llCombine(int half, int max_tokens, int hidden, int num_experts, int phase, uintptr_t stream, uintptr_t x,
                 uintptr_t topk, uintptr_t weights, int num_tokens, int num_topk, uintptr_t src_info,
                 uintptr_t layout_range, uintptr_t out, uintptr_t wait_stats, bool use_logfmt, bool zero_copy) {
    ll::CombineArgs a;
    a.x = ptr<const void>(x);
    a.topk_idx = ptr<const int64_t>(topk);
    a.topk_weights = ptr<const float>(weights);
    a.num_tokens = num_tokens;
    a.num_topk = num_topk;
    a.src_info = ptr<const int32_t>(src_info);
    a.layout_range = ptr<const int64_t>(layout_range);
    a.out = ptr<void>(out);
    a.wait_recv_cost_stats = ptr<int64_t>(wait_stats);
    a.use_logfmt = use_logfmt;
    a.zero_copy = zero_copy;
    const ll::Phase p = toPhase(phase);
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.lowLatencyCombine(half, max_tokens, hidden, num_experts, a, p, stream);
  }

  // ---- normal mode (argument order as python/uccl/ep/buffer.py calls them) ---------------------------------
  void normalLayout(uintptr_t topk, int num_tokens, int num_topk, int num_experts, uintptr_t per_rank,
                    uintptr_t per_node, uintptr_t per_expert, uintptr_t in_rank, uintptr_t stream) {
    in::LayoutArgs a;
    a.topk_idx = ptr<const int64_t>(topk);
    a.num_tokens = num_tokens;
    a.num_topk = num_topk;
    a.num_experts = num_experts;
    a.tokens_per_rank = ptr<int32_t>(per_rank);
    a.tokens_per_node = ptr<int32_t>(per_node);
    a.tokens_per_expert = ptr<int32_t>(per_expert);
    a.is_token_in_rank = ptr<bool>(in_rank);
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.normalLayout(a, stream);
  }

  void normalDispatchSend(uintptr_t x, int64_t x_row_stride, uintptr_t scales, int num_scales,
                          int64_t scale_token_stride, int64_t scale_col_stride, uintptr_t topk, uintptr_t weights,
                          uintptr_t in_rank, uintptr_t per_expert, int num_tokens, int64_t hidden_bytes, int num_topk,
                          int num_experts, uintptr_t prefix, uintptr_t send_pos, bool cached, bool report_to_host,
                          int num_sms, uintptr_t stream) {
    in::DispatchArgs a;
    a.x = ptr<const void>(x);
    a.x_row_stride = static_cast<size_t>(x_row_stride);
    a.scales = ptr<const void>(scales);
    a.num_scales = num_scales;
    a.scale_token_stride = scale_token_stride;
    a.scale_col_stride = scale_col_stride;
    a.topk_idx = ptr<const int64_t>(topk);
    a.topk_weights = ptr<const float>(weights);
    a.is_token_in_rank = ptr<const bool>(in_rank);
    a.tokens_per_expert = ptr<const int32_t>(per_expert);
    a.num_tokens = num_tokens;
    a.num_experts = num_experts;
    a.layout.hidden_bytes = static_cast<size_t>(hidden_bytes);
    a.layout.scale_bytes = static_cast<size_t>(num_scales) * 4;
    a.layout.num_topk = num_topk;
    a.report_to_host = report_to_host;
    a.rank_prefix_matrix = ptr<int32_t>(prefix);
    a.send_pos = ptr<int32_t>(send_pos);
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.normalDispatchSend(a, cached, num_sms, stream);
  }

  py::tuple normalDispatchWait(int num_experts) {
    runtime::Buffer& buf = b();
    std::pair<int, std::vector<int>> r;
    {
      py::gil_scoped_release nogil;
      r = buf.normalDispatchWait(num_experts);
    }
    return py::make_tuple(r.first, py::cast(r.second));
  }

  void normalDispatchRecv(int64_t hidden_bytes, int num_scales, int num_topk, int num_experts, uintptr_t prefix,
                          uintptr_t recv_x, uintptr_t recv_scales, uintptr_t recv_topk, uintptr_t recv_weights,
                          uintptr_t recv_src_idx, int num_out_rows, bool worst, int num_sms, int send_tokens,
                          uintptr_t stream) {
    in::DispatchArgs a;
    a.num_scales = num_scales;
    a.num_experts = num_experts;
    a.layout.hidden_bytes = static_cast<size_t>(hidden_bytes);
    a.layout.scale_bytes = static_cast<size_t>(num_scales) * 4;
    a.layout.num_topk = num_topk;
    a.rank_prefix_matrix = ptr<int32_t>(prefix);
    a.recv_x = ptr<void>(recv_x);
    a.recv_scales_f = ptr<float>(recv_scales);
    a.recv_topk_idx = ptr<int64_t>(recv_topk);
    a.recv_topk_weights = ptr<float>(recv_weights);
    a.recv_src_idx = ptr<int32_t>(recv_src_idx);
    a.num_out_rows = num_out_rows;
    a.worst = worst;
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.normalDispatchRecv(a, num_sms, send_tokens, stream);
  }

  void normalCombine(uintptr_t x, uintptr_t weights, uintptr_t bias0, uintptr_t bias1, uintptr_t send_pos,
                     uintptr_t prefix, int num_tokens, int num_recv_rows, int hidden, int num_topk, int num_experts,
                     uintptr_t out, uintptr_t out_weights, int num_sms, int send_tokens, uintptr_t stream) {
    in::CombineArgs a;
    a.x = ptr<const void>(x);
    a.topk_weights = ptr<const float>(weights);
    a.bias0 = ptr<const void>(bias0);
    a.bias1 = ptr<const void>(bias1);
    a.send_pos = ptr<const int32_t>(send_pos);
    a.rank_prefix_matrix = ptr<const int32_t>(prefix);
    a.num_tokens = num_tokens;
    a.num_recv_rows = num_recv_rows;
    a.hidden = hidden;
    a.num_topk = num_topk;
    a.layout.num_experts = num_experts;
    a.out = ptr<void>(out);
    a.out_weights = ptr<float>(out_weights);
    runtime::Buffer& buf = b();
    py::gil_scoped_release nogil;
    buf.normalCombine(a, num_sms, send_tokens, stream);
  }

 private:
  std::unique_ptr<runtime::Buffer> buffer_;
};

void bindRuntime(py::module_& m) {
  using py::arg;
  py::class_<Runtime>(m, "Runtime",
                      "runtime::Buffer: allocations, peers, proxies, kernel launches. Pointers are ints, "
                      "streams are cudaStream_t handles as ints.")
      .def(py::init<int, int, int, int, int64_t, int64_t, bool, bool, bool>(), arg("rank"), arg("world"),
           arg("ranks_per_node"), arg("device"), arg("num_nvl_bytes"), arg("num_rdma_bytes"),
           arg("low_latency_mode"), arg("allow_nvlink_for_low_latency"), arg("enable_shrink"))
      .def("local_info", &Runtime::localInfo, "this rank's bytes for connect() on every rank")
      .def("connect", &Runtime::connect, arg("infos"), "infos[r] = rank r's local_info(); blocks until connected")
      .def("destroy", &Runtime::destroy, "idempotent")
      .def("is_connected", [](const Runtime& r) { return r.b().connected(); })
      .def("uses_proxy", [](const Runtime& r) { return r.b().usesProxy(); })
      .def("transport_name", [](const Runtime& r) { return r.b().transportName(); })
      .def("rdma_buffer_ptr", [](const Runtime& r) { return r.b().rdmaBufferPtr(); })
      .def("nvl_buffer_ptr", [](const Runtime& r) { return r.b().nvlBufferPtr(); })
      .def("is_low_latency_nvl_peer", [](const Runtime& r, int peer) { return r.b().isLowLatencyNvlPeer(peer); },
           arg("peer"))
      .def("num_nodes", [](const Runtime& r) { return r.b().numNodes(); })
      .def("check_errors", [](const Runtime& r) { r.b().checkErrors(); },
           "raises the first failure a kernel or a proxy recorded")
      .def("ll_combine_send_ptr",
           [](const Runtime& r, int half, int max_tokens, int hidden, int num_experts) {
             return r.b().lowLatencyCombineSendPtr(half, max_tokens, hidden, num_experts);
           },
           arg("half"), arg("max_tokens"), arg("hidden"), arg("num_experts"))
      .def("normal_single_domain", [](const Runtime& r) { return r.b().normalSingleDomain(); },
           "every rank is an NVLink peer (one node, or UCCL_EP_NORMAL_MNNVL=1)")
      .def("normal_dispatch_bytes",
           [](const Runtime& r, int num_tokens, int64_t hidden_bytes, int64_t scale_bytes, int num_topk,
              int num_experts) {
             return r.b().normalDispatchBytes(num_tokens, static_cast<size_t>(hidden_bytes),
                                              static_cast<size_t>(scale_bytes), num_topk, num_experts);
           },
           arg("num_tokens"), arg("hidden_bytes"), arg("scale_bytes"), arg("num_topk"), arg("num_experts"))
      .def("normal_combine_bytes",
           [](const Runtime& r, int rows, int hidden, int num_topk, int num_experts) {
             return r.b().normalCombineBytes(rows, hidden, num_topk, num_experts);
           },
           arg("num_recv_rows"), arg("hidden"), arg("num_topk"), arg("num_experts"))
      .def("normal_layout", &Runtime::normalLayout, arg("topk_idx"), arg("num_tokens"), arg("num_topk"),
           arg("num_experts"), arg("tokens_per_rank"), arg("tokens_per_node"), arg("tokens_per_expert"),
           arg("is_token_in_rank"), arg("stream"))
      .def("normal_dispatch_send", &Runtime::normalDispatchSend, arg("x"), arg("x_row_stride"), arg("scales"),
           arg("num_scales"), arg("scale_token_stride"), arg("scale_col_stride"), arg("topk_idx"),
           arg("topk_weights"), arg("is_token_in_rank"), arg("tokens_per_expert"), arg("num_tokens"),
           arg("hidden_bytes"), arg("num_topk"), arg("num_experts"), arg("rank_prefix_matrix"), arg("send_pos"),
           arg("cached"), arg("report_to_host"), arg("num_sms"), arg("stream"))
      .def("normal_dispatch_wait", &Runtime::normalDispatchWait, arg("num_experts"),
           "CPU wait for a non-cached dispatch: (num_recv_tokens, per-local-expert counts)")
      .def("normal_dispatch_recv", &Runtime::normalDispatchRecv, arg("hidden_bytes"), arg("num_scales"),
           arg("num_topk"), arg("num_experts"), arg("rank_prefix_matrix"), arg("recv_x"), arg("recv_scales"),
           arg("recv_topk_idx"), arg("recv_topk_weights"), arg("recv_src_idx"), arg("num_out_rows"), arg("worst"),
           arg("num_sms"), arg("send_tokens"), arg("stream"))
      .def("normal_combine", &Runtime::normalCombine, arg("x"), arg("topk_weights"), arg("bias0"), arg("bias1"),
           arg("send_pos"), arg("rank_prefix_matrix"), arg("num_tokens"), arg("num_recv_rows"), arg("hidden"),
           arg("num_topk"), arg("num_experts"), arg("out"), arg("out_weights"), arg("num_sms"), arg("send_tokens"),
           arg("stream"))
      .def("ll_dispatch", &Runtime::llDispatch, arg("half"), arg("max_tokens"), arg("hidden"), arg("num_experts"),
           arg("phase"), arg("stream"), arg("x_ptr"), arg("num_tokens"), arg("topk_ptr"), arg("num_topk"),
           arg("recv_x_ptr"), arg("recv_scales_ptr"), arg("recv_count_ptr"), arg("src_info_ptr"),
           arg("layout_range_ptr"), arg("cum_stats_ptr"), arg("wait_stats_ptr"), arg("use_fp8"),
           arg("round_scale"), arg("use_ue8m0"))
      .def("ll_combine", &Runtime::llCombine, arg("half"), arg("max_tokens"), arg("hidden"), arg("num_experts"),
           arg("phase"), arg("stream"), arg("x_ptr"), arg("topk_ptr"), arg("weights_ptr"), arg("num_tokens"),
           arg("num_topk"), arg("src_info_ptr"), arg("layout_range_ptr"), arg("out_ptr"), arg("wait_stats_ptr"),
           arg("use_logfmt"), arg("zero_copy"))
      .def("clean_low_latency_buffer", [](Runtime& r, uintptr_t stream) { r.b().cleanLowLatencyBuffer(stream); },
           arg("stream"))
      .def("update_mask", [](Runtime& r, int rank, bool masked, uintptr_t stream) { r.b().updateMask(rank, masked, stream); },
           arg("rank"), arg("masked"), arg("stream"))
      .def("query_mask", [](const Runtime& r, uintptr_t out, uintptr_t stream) { r.b().queryMask(out, stream); },
           arg("ptr"), arg("stream"))
      .def("clean_mask", [](Runtime& r, uintptr_t stream) { r.b().cleanMask(stream); }, arg("stream"));
}
#endif  // UCCL_EP_HAVE_CUDA

}  // namespace
}  // namespace uccl::ep::python

PYBIND11_MODULE(_C, m) {
  namespace ll = uccl::ep::kernels::ll;
  using py::arg;
  m.doc() = "uccl.ep C++ runtime bindings (integers in, integers out; no torch)";

  // Translators: pybind11 tries the most recently registered first, so the derived TimeoutError comes last.
  py::register_exception<uccl::ep::Error>(m, "UcclError", PyExc_RuntimeError);
  py::register_exception<uccl::ep::TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);

#ifdef UCCL_EP_HAVE_CUDA
  m.def("has_cuda", [] { return true; }, "built with the CUDA runtime (kernels and Runtime present)");
  uccl::ep::python::bindRuntime(m);
#else
  m.def("has_cuda", [] { return false; }, "built with the CUDA runtime (kernels and Runtime present)");
#endif

  m.attr("kMaxTopk") = ll::kMaxTopk;
  m.attr("kMaxExpertsPerRank") = ll::kMaxExpertsPerRank;
  m.attr("kMaxTokensPerRank") = ll::kMaxTokensPerRank;
  m.attr("kMinHidden") = ll::kMinHidden;
  m.attr("kMaxHidden") = ll::kMaxHidden;
  m.attr("kHeaderBytes") = ll::kHeaderBytes;
  m.attr("kChannelsPerScale") = ll::kChannelsPerScale;
  m.attr("kLogfmtGroupBytes") = ll::kLogfmtGroupBytes;

  m.def(
      "get_low_latency_rdma_size_hint",
      [](int max_tokens, int hidden, int num_ranks, int num_experts) {
        uccl::ep::python::checkSizes(max_tokens, hidden, num_ranks, num_experts);
        return ll::rdmaSizeHint(max_tokens, hidden, num_ranks, num_experts);
      },
      arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_ranks"), arg("num_experts"),
      "bytes of RDMA buffer low-latency mode needs (both halves), a multiple of 128");
  m.def(
      "ll_layout",
      [](int max_tokens, int hidden, int num_ranks, int num_experts) {
        uccl::ep::python::checkSizes(max_tokens, hidden, num_ranks, num_experts);
        return uccl::ep::python::layoutDict(max_tokens, hidden, num_ranks, num_experts);
      },
      arg("num_max_dispatch_tokens_per_rank"), arg("hidden"), arg("num_ranks"), arg("num_experts"),
      "the low-latency layout of ll_layout.hpp as a dict (offsets inside one half, msg/row bytes)");
}
