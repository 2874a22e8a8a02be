// The argument structs of every kernel call, by name (bind_args.hpp), and the runtime's read-only answers: Topology
// and the low-latency layout. Field names are the Python argument names and the C++ field names. The classes
// LowLatencyDispatchCall / LowLatencyCombineCall parse the keywords of the runtime's low-latency calls (bind.hpp).
#include <pybind11/stl.h>

#include "kernels/intranode.hpp"
#include "kernels/low_latency.hpp"
#include "python/bind.hpp"
#include "runtime/topology.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"

namespace uccl::ep::python {

namespace ll = kernels::ll;
namespace in = kernels::intranode;

namespace {

const Fields<ll::DispatchArgs>& dispatchFields() {
  using D = ll::DispatchArgs;
  static const Fields<D>& f = leaked(
      Fields<D>("LowLatencyDispatchArgs")
          .pointer("x", &D::x).value("num_tokens", &D::num_tokens).pointer("topk_idx", &D::topk_idx)
          .value("num_topk", &D::num_topk).pointer("recv_x", &D::recv_x).pointer("recv_x_scales", &D::recv_x_scales)
          .pointer("recv_count", &D::recv_count).pointer("src_info", &D::src_info)
          .pointer("layout_range", &D::layout_range)
          .pointer("cumulative_local_expert_recv_stats", &D::cumulative_local_expert_recv_stats)
          .pointer("dispatch_wait_recv_cost_stats", &D::dispatch_wait_recv_cost_stats)
          .value("use_fp8", &D::use_fp8).value("round_scale", &D::round_scale).value("use_ue8m0", &D::use_ue8m0));
  return f;
}

const Fields<ll::CombineArgs>& combineFields() {
  using C = ll::CombineArgs;
  static const Fields<C>& f = leaked(
      Fields<C>("LowLatencyCombineArgs")
          .pointer("x", &C::x).pointer("topk_idx", &C::topk_idx).pointer("topk_weights", &C::topk_weights)
          .value("num_tokens", &C::num_tokens).value("num_topk", &C::num_topk).pointer("src_info", &C::src_info)
          .pointer("layout_range", &C::layout_range).pointer("combined_x", &C::combined_x)
          .pointer("combine_wait_recv_cost_stats", &C::combine_wait_recv_cost_stats)
          .value("use_logfmt", &C::use_logfmt).value("zero_copy", &C::zero_copy));
  return f;
}

// The call's own keywords after the argument struct's (bind.hpp LowLatencyCall); all of them required.
template <typename Args>
const Fields<LowLatencyCall<Args>>& callFields(const char* name, const Fields<Args>& args) {
  using C = LowLatencyCall<Args>;
  using S = runtime::LowLatencyShape;
  using St = runtime::LowLatencyStreams;
  Fields<S> shape("shape");
  shape.value("num_max_dispatch_tokens_per_rank", &S::num_max_dispatch_tokens_per_rank, true)
      .value("hidden", &S::hidden, true)
      .value("num_experts", &S::num_experts, true);
  Fields<St> streams("streams");
  streams.value("stream", &St::stream, true).value("caller_stream", &St::caller_stream, true)
      .value("caller_waits", &St::caller_waits, true);
  return leaked(Fields<C>(name)
                    .nested(&C::args, args)
                    .nested(&C::shape, shape)
                    .value("return_recv_hook", &C::return_recv_hook, true)
                    .nested(&C::streams, streams));
}

}  // namespace

const Fields<LowLatencyDispatchCall>& lowLatencyDispatchCallFields() {
  static const auto& f = callFields("LowLatencyDispatchCall", dispatchFields());
  return f;
}

const Fields<LowLatencyCombineCall>& lowLatencyCombineCallFields() {
  static const auto& f = callFields("LowLatencyCombineCall", combineFields());
  return f;
}

namespace {

void bindNormalArgs(py::module_& m) {
  using L = in::LayoutArgs;
  bindArgsClass(m, "kernels/intranode.hpp LayoutArgs (get_dispatch_layout)",
                leaked(Fields<L>("DispatchLayoutArgs")
                           .pointer("topk_idx", &L::topk_idx).value("num_tokens", &L::num_tokens)
                           .value("num_topk", &L::num_topk).value("num_experts", &L::num_experts)
                           .pointer("num_tokens_per_rank", &L::num_tokens_per_rank)
                           .pointer("num_tokens_per_rdma_rank", &L::num_tokens_per_rdma_rank)
                           .pointer("num_tokens_per_expert", &L::num_tokens_per_expert)
                           .pointer("is_token_in_rank", &L::is_token_in_rank)));
  using D = in::DispatchArgs;
  bindArgsClass(m, "kernels/intranode.hpp DispatchArgs (dispatch, send half)",
                leaked(Fields<D>("DispatchArgs")
                           .pointer("x", &D::x).value("x_row_stride", &D::x_row_stride)
                           .value("hidden_bytes", &D::hidden_bytes).pointer("x_scales", &D::x_scales)
                           .value("num_scales", &D::num_scales).value("x_scales_token_stride", &D::x_scales_token_stride)
                           .value("x_scales_col_stride", &D::x_scales_col_stride).pointer("topk_idx", &D::topk_idx)
                           .pointer("topk_weights", &D::topk_weights).value("num_topk", &D::num_topk)
                           .pointer("is_token_in_rank", &D::is_token_in_rank)
                           .pointer("num_tokens_per_expert", &D::num_tokens_per_expert)
                           .value("num_tokens", &D::num_tokens).value("num_experts", &D::num_experts)
                           .value("num_worst_tokens", &D::num_worst_tokens)
                           .pointer("rank_prefix_matrix", &D::rank_prefix_matrix).pointer("send_pos", &D::send_pos)
                           .pointer("recv_gbl_rank_prefix_sum", &D::recv_gbl_rank_prefix_sum)));
  using O = in::DispatchOutputs;
  bindArgsClass(m, "kernels/intranode.hpp DispatchOutputs (dispatch, receive half)",
                leaked(Fields<O>("DispatchOutputs")
                           .pointer("recv_x", &O::recv_x).pointer("recv_x_scales", &O::recv_x_scales)
                           .pointer("recv_topk_idx", &O::recv_topk_idx).pointer("recv_topk_weights", &O::recv_topk_weights)
                           .pointer("recv_src_idx", &O::recv_src_idx).value("num_recv_tokens", &O::num_recv_tokens)
                           .pointer("forward_positions", &O::forward_positions)
                           .pointer("forward_source_token", &O::forward_source_token)
                           .value("num_forward", &O::num_forward)));
  using C = in::CombineArgs;
  bindArgsClass(m, "kernels/intranode.hpp CombineArgs (combine)",
                leaked(Fields<C>("CombineArgs")
                           .pointer("x", &C::x).pointer("topk_weights", &C::topk_weights).pointer("bias_0", &C::bias_0)
                           .pointer("bias_1", &C::bias_1).pointer("send_pos", &C::send_pos)
                           .pointer("rank_prefix_matrix", &C::rank_prefix_matrix).value("num_tokens", &C::num_tokens)
                           .value("num_recv_tokens", &C::num_recv_tokens).value("hidden", &C::hidden)
                           .value("num_topk", &C::num_topk).pointer("combined_x", &C::combined_x)
                           .pointer("combined_topk_weights", &C::combined_topk_weights)
                           .pointer("is_token_in_rank", &C::is_token_in_rank)
                           .pointer("forward_positions", &C::forward_positions)
                           .pointer("forward_source_token", &C::forward_source_token)
                           .value("num_forward", &C::num_forward)));
}

void bindAnswers(py::module_& m) {
  using T = runtime::Topology;
  py::class_<T>(m, "Topology", "the runtime's topology decision (runtime/topology.hpp); read-only")
      .def_readonly("rank", &T::rank)
      .def_readonly("num_ranks", &T::num_ranks)
      .def_readonly("ranks_per_node", &T::ranks_per_node)
      .def_readonly("num_nodes", &T::num_nodes)
      .def_readonly("ranks_per_node_source", &T::ranks_per_node_source)
      .def_readonly("nvl_domain_spans_nodes", &T::nvl_domain_spans_nodes)
      .def_readonly("nvl_domain_source", &T::nvl_domain_source)
      .def_property_readonly("nvl_domain_size", &T::nvlDomainSize)
      .def("node_of", &T::nodeOf, py::arg("rank"))
      .def("describe", &T::describe)
      .def("__repr__", &T::describe);

  using L = ll::Layout;
  py::class_<L>(m, "LowLatencyLayout", "kernels/ll_layout.hpp Layout: offsets inside one half; read-only")
      .def_readonly("num_ranks", &L::num_ranks)
      .def_readonly("num_experts", &L::num_experts)
      .def_readonly("experts_per_rank", &L::experts_per_rank)
      .def_readonly("max_tokens", &L::max_tokens)
      .def_readonly("hidden", &L::hidden)
      .def_readonly("msg_bytes", &L::msg_bytes)
      .def_readonly("row_bytes", &L::row_bytes)
      .def_readonly("dispatch_recv_off", &L::dispatch_recv_off)
      .def_readonly("combine_recv_off", &L::combine_recv_off)
      .def_readonly("send_off", &L::send_off)
      .def_readonly("half_bytes", &L::half_bytes)
      .def_property_readonly("total_bytes", &L::totalBytes)
      .def_readonly("dispatch_count_index", &L::dispatch_count_index)
      .def_readonly("combine_flag_index", &L::combine_flag_index)
      .def_readonly("signals_per_half", &L::signals_per_half)
      .def_property_readonly("scratch_ints", [](const L& l) { return ll::scratchInts(l); });
}

void bindFloor(py::module_& m) {
  namespace px = proxy;
  py::class_<px::FloorOp>(m, "FloorOp", "uccl_ep/proxy/transport_floor.hpp FloorOp: one WRITE + SIGNAL pair; read-only")
      .def_readonly("peer", &px::FloorOp::peer)
      .def_readonly("lane", &px::FloorOp::lane)
      .def_readonly("src_offset", &px::FloorOp::src_offset)
      .def_readonly("dst_offset", &px::FloorOp::dst_offset)
      .def_readonly("bytes", &px::FloorOp::bytes)
      .def_readonly("signal_index", &px::FloorOp::signal_index)
      .def_readonly("signal_value", &px::FloorOp::signal_value);
  py::class_<px::FloorExpect>(m, "FloorExpect", "a counter that must reach `value`, sent by `peer`; read-only")
      .def_readonly("peer", &px::FloorExpect::peer)
      .def_readonly("signal_index", &px::FloorExpect::signal_index)
      .def_readonly("value", &px::FloorExpect::value);
  py::class_<px::FloorPlan>(m, "FloorPlan", "what one rank sends (ops) and receives (expect) in one call; read-only")
      .def_readonly("ops", &px::FloorPlan::ops)
      .def_readonly("expect", &px::FloorPlan::expect)
      .def_property_readonly("writes", &px::FloorPlan::writes)
      .def_property_readonly("bytes", &px::FloorPlan::bytes);
  py::class_<px::FloorResult>(m, "FloorResult", "one run of a plan through the transport floor; read-only")
      .def_readonly("seconds", &px::FloorResult::seconds, "until every expected signal was applied here")
      .def_readonly("sends_seconds", &px::FloorResult::sends_seconds, "until every op sent from here completed")
      .def_readonly("writes", &px::FloorResult::writes)
      .def_readonly("bytes", &px::FloorResult::bytes)
      .def_readonly("signals", &px::FloorResult::signals);
}

}  // namespace

void bindStructs(py::module_& m) {
  bindArgsClass(m, "kernels/low_latency.hpp DispatchArgs (low_latency_dispatch)", dispatchFields());
  bindArgsClass(m, "kernels/low_latency.hpp CombineArgs (low_latency_combine)", combineFields());
  bindArgsClass(m, "the keywords of Runtime.low_latency_dispatch: DispatchArgs, sizes, hook flag, streams",
                lowLatencyDispatchCallFields());
  bindArgsClass(m, "the keywords of Runtime.low_latency_combine: CombineArgs, sizes, hook flag, streams",
                lowLatencyCombineCallFields());
  bindNormalArgs(m);
  bindAnswers(m);
  bindFloor(m);
}

}  // namespace uccl::ep::python
