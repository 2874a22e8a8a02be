"""`Buffer`: DeepEP's `deep_ep.Buffer` over the uccl-ep runtime (uccl.ep._C.Runtime).

The runtime owns the limits, layouts, value checks, the topology and the low-latency buffer halves; this file
checks what only torch can see (_validate.py), allocates every output tensor, picks streams, builds each call's
argument struct by name (`_C.DispatchArgs(x=..., ...)`; a low-latency call passes the same fields as keywords of
its one runtime call: the Python argument names all the way down) and wraps device memory into tensors. A value the
runtime rejects raises `uccl.ep.ArgumentError` (a ValueError) before any kernel runs. The low-latency calls live in
_low_latency.py (`LowLatencyCalls`, a base class of Buffer).

Streams: a call runs on the buffer's comm stream after that stream waits for the current one (for the low-latency
calls the runtime makes both waits, with an event of its own). With async_finish the call returns an EventOverlap
recorded on the comm stream that keeps inputs and outputs alive; without it the current stream waits for the comm
stream before the call returns, so a low-latency call without async_finish runs on the current stream itself: the
same order, without the four event calls (a few us of host time per call). With return_recv_hook only the send phase
runs now; hook() runs the receive phase on the stream current at hook time.

Low-latency halves: the RDMA buffer has two halves; the runtime picks the half of each dispatch and combine and
flips it, so two calls may be outstanding.

Threads: a Buffer serves one thread at a time. A call that starts while another thread is inside a call on the same
Buffer raises RuntimeError instead of racing it (the two would interleave their launches and the halves they use).
"""
import contextlib
import functools
import threading
import warnings
from typing import Optional, Tuple, Union

import torch

from . import ArgumentError
from . import _validate as V
from ._native import native
from ._low_latency import LowLatencyCalls
from ._support import as_bool, as_int, one_thread, ptr_of, wait_until, wrap_device_memory
from .config import Config, default_combine_config, default_dispatch_config
from .utils import EventHandle, EventOverlap



_CTOR_ARGS = ("group", "num_nvl_bytes", "num_rdma_bytes", "low_latency_mode", "num_qps_per_rank",
              "allow_nvlink_for_low_latency_mode", "allow_mnnvl", "use_fabric", "explicitly_destroy",
              "enable_shrink", "comm")

def internode_node_size(topology) -> int:
    """Normal mode across nodes (src/kernels/internode.hpp), where some rank is outside this rank's NVLink domain: the
    node size; 0 within one NVLink domain."""
    spans = topology.num_nodes > 1 and not topology.nvl_domain_spans_nodes
    return topology.ranks_per_node if spans else 0


class Buffer(LowLatencyCalls):
    """Communication buffers for expert-parallel dispatch and combine (DeepEP's `Buffer`, same signature)."""

    num_sms: int = 20
    _call_lock: Optional[threading.Lock] = None  # set first thing in __init__
    # Expert ids outside [-1, num_experts) are found on the GPU: get_dispatch_layout's kernel and the low-latency
    # kernels skip such an entry and record it, and the next call (or the receive hook) raises ArgumentError naming
    # the entry, the id and the rank; no call reads device memory from the host for it. True adds a host check
    # before each normal-mode call that takes topk_idx (raising before anything is launched, at the cost of a
    # device-to-host read that waits for the work queued before it); it is skipped inside CUDA-graph capture.
    validate_expert_ids: bool = False

    def __init__(self, group=None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0, low_latency_mode: bool = False,
                 num_qps_per_rank: int = 24, allow_nvlink_for_low_latency_mode: bool = True,
                 allow_mnnvl: bool = False, use_fabric: bool = False, explicitly_destroy: bool = False,
                 enable_shrink: bool = False, comm=None, **unknown):
        self._runtime = None
        self._internode_node_size = 0  # normal mode across nodes: the node size (internode_node_size)
        self._call_lock = threading.Lock()
        # ---- the type checks come before anything touches CUDA or the group; the values are the runtime's ----
        if unknown:
            raise TypeError(f"Buffer() got unexpected keyword argument(s) {sorted(unknown)}; accepted: "
                            f"{', '.join(_CTOR_ARGS)}")
        if (group is None) == (comm is None):
            raise TypeError("Buffer: pass exactly one of group (a torch.distributed process group) and comm "
                            "(an mpi4py communicator)")
        self.num_nvl_bytes = as_int("num_nvl_bytes", num_nvl_bytes)
        self.num_rdma_bytes = as_int("num_rdma_bytes", num_rdma_bytes)
        self.low_latency_mode = as_bool("low_latency_mode", low_latency_mode)
        # A hint DeepEP's signature carries; the runtime sizes its queue pairs itself, so nothing keeps it.
        if isinstance(num_qps_per_rank, bool) or not isinstance(num_qps_per_rank, int) or num_qps_per_rank <= 0:
            raise ValueError(f"Buffer: num_qps_per_rank must be a positive int (a hint), got {num_qps_per_rank!r}")
        flags = dict(allow_nvlink_for_low_latency_mode=allow_nvlink_for_low_latency_mode, allow_mnnvl=allow_mnnvl,
                     use_fabric=use_fabric, enable_shrink=enable_shrink)
        for name, value in flags.items():
            as_bool(name, value)
        self.explicitly_destroy = as_bool("explicitly_destroy", explicitly_destroy)
        self.group, self.comm = group, comm
        if enable_shrink and not self.low_latency_mode:
            # The proxies drop a dead peer either way; only the low-latency calls mask it (README: Security and faults).
            warnings.warn("Buffer(enable_shrink=True, low_latency_mode=False): normal-mode dispatch and combine do "
                          "not mask ranks yet; a rank that dies or does not join makes them raise uccl.ep.TimeoutError "
                          "naming it. enable_shrink masks ranks in the low-latency calls", UserWarning, stacklevel=2)

        # ---- the native module and a device ----------------------------------------------------------------
        _C = native()
        if not _C.has_cuda() or not hasattr(_C, "Runtime"):
            raise RuntimeError("Buffer: uccl.ep._C was built without CUDA; rebuild with the CUDA toolkit present")
        if not torch.cuda.is_available():
            raise RuntimeError("Buffer: no CUDA device is available to this process")
        self.device = torch.device("cuda", torch.cuda.current_device())

        # ---- group: the runtime decides the topology from every rank's host identity ------------------------
        if group is not None:
            self.rank, self.group_size = int(group.rank()), int(group.size())
        else:
            self.rank, self.group_size = int(comm.Get_rank()), int(comm.Get_size())
        host_ids = [str(h) for h in self._all_gather(_C.local_host_id())]
        self._runtime = _C.Runtime(rank=self.rank, num_ranks=self.group_size, device=self.device.index,
                                   host_ids=host_ids, num_nvl_bytes=self.num_nvl_bytes,
                                   num_rdma_bytes=self.num_rdma_bytes, low_latency_mode=self.low_latency_mode,
                                   **flags)
        infos = self._all_gather(bytes(self._runtime.local_info()))
        self._runtime.connect(infos=[bytes(i) for i in infos])
        self._comm_stream = torch.cuda.Stream(device=self.device)
        self._internode_node_size = internode_node_size(self._runtime.topology())
        # Every rank's memory is zeroed and mapped before any rank's first kernel can write to it.
        torch.cuda.synchronize(self.device)
        self._barrier("Buffer()")

    # ---- life cycle -------------------------------------------------------------------------------------------
    def _all_gather(self, obj) -> list:
        if self.group is not None:
            import torch.distributed as dist
            out = [None] * self.group_size
            dist.all_gather_object(out, obj, group=self.group)
            return out
        return list(self.comm.allgather(obj))

    def _barrier(self, call: str) -> None:
        """Every rank of the group gets here. Ctrl-C ends the wait within a second (KeyboardInterrupt), and it gives
        up after UCCL_EP_TIMEOUT_SECS (TimeoutError)."""
        if self.group is not None:
            import torch.distributed as dist
            work = dist.barrier(group=self.group, async_op=True)
            done, finish = work.is_completed, work.wait
        else:
            request = self.comm.Ibarrier()
            done, finish = request.Test, request.Wait
        what = (f"{call} (rank {self.rank} of {self.group_size}): the barrier every rank must reach; a rank that died "
                f"or never made this call holds it (a barrier cannot tell which)")
        wait_until(done, native().timeout_secs(), what)
        finish()

    def _rt(self, call: str):
        """The runtime, after raising any failure a kernel or proxy recorded since the last call."""
        if self._runtime is None:
            raise RuntimeError(f"{call}: the buffer was destroyed")
        self._runtime.check_errors()
        return self._runtime

    @one_thread
    def destroy(self) -> None:
        """Frees the buffer. Required (and only allowed) with explicitly_destroy=True.

        Collective while no failure is recorded: this rank waits for its device, then for every rank at a barrier (no
        peer may still be writing into its memory), then frees. Local once a kernel or proxy recorded a failure (a
        peer died or stalled: a call raised uccl.ep's TimeoutError or UcclError): no barrier, which a lost peer would
        never join; this rank's memory is freed after its own device work, and a new Buffer (over a group without the
        lost rank) can be built in this process. Ctrl-C ends any of these waits within a second (KeyboardInterrupt);
        the buffer is then left as it was, and destroy() may be called again."""
        if not self.explicitly_destroy:
            raise RuntimeError("Buffer.destroy: the buffer was built with explicitly_destroy=False; it is freed "
                               "when garbage-collected")
        runtime = self._runtime
        if runtime is None:
            return
        if self._recorded_failure() is None:
            runtime.synchronize()
            self._barrier("Buffer.destroy")  # no peer may still be writing into this rank's memory
        runtime.destroy()
        self._runtime = None

    def _recorded_failure(self) -> Optional[Exception]:
        """The failure a kernel or proxy of this buffer recorded (it stays until the buffer is freed), as the
        exception the next call would raise; None when there is none or the buffer is freed. A rejected argument
        (ArgumentError) is not a failure: it is raised once, and the buffer stays usable."""
        if self._runtime is None:
            return None
        try:
            self._runtime.check_errors()
        except ArgumentError:
            return None
        except (RuntimeError, TimeoutError) as e:  # _C.UcclError, _C.TimeoutError
            return e
        return None

    def __del__(self):
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            try:
                runtime.destroy()
            except Exception:
                pass

    @property
    def topology(self):
        """The runtime's `_C.Topology`: node size and count, the NVLink domain, and where each came from."""
        return self._rt("topology").topology()

    @property
    def normal_path(self) -> str:
        """Which normal-mode kernels run and why: 'pipelined (one GPU per rank)', or 'staged (...)' where ranks
        share a GPU or UCCL_EP_NORMAL_PATH=staged (src/kernels/intranode.hpp)."""
        return self._rt("normal_path").normal_path()

    # ---- static helpers ---------------------------------------------------------------------------------------
    @classmethod
    def set_num_sms(cls, new_num_sms: int) -> None:
        if isinstance(new_num_sms, bool) or not isinstance(new_num_sms, int) or new_num_sms <= 0 or new_num_sms % 2:
            raise ValueError(f"Buffer.set_num_sms: expected a positive even number of SMs, got {new_num_sms!r}")
        cls.num_sms = new_num_sms

    @staticmethod
    def capture() -> EventOverlap:
        """An EventOverlap of an event recorded on the current stream now."""
        return EventOverlap(EventHandle())

    @staticmethod
    def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int,
                                       num_experts: int) -> int:
        """Bytes of RDMA buffer low-latency mode needs for these sizes (both halves; a multiple of 128). Raises
        ArgumentError (a ValueError) naming the argument for sizes low_latency_dispatch would reject."""
        return int(native().get_low_latency_rdma_size_hint(
            num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank, hidden=hidden, num_ranks=num_ranks,
            num_experts=num_experts))

    @staticmethod
    def get_dispatch_config(num_ranks: int) -> Config:
        return default_dispatch_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def get_combine_config(num_ranks: int) -> Config:
        return default_combine_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def is_sm90_compiled() -> bool:
        try:
            return bool(native().has_cuda())
        except ImportError:
            return False

    def get_comm_stream(self) -> torch.cuda.Stream:
        return self._comm_stream

    @one_thread
    def get_local_buffer_tensor(self, dtype: torch.dtype, size: Optional[Union[torch.Size, tuple]] = None,
                                offset: int = 0, use_rdma_buffer: bool = False) -> torch.Tensor:
        """This rank's NVLink buffer (or RDMA buffer) from byte `offset` as a tensor of `dtype` and `size`
        (1-D to the end of the buffer when None). The tensor aliases the buffer; it does not own it.

        `offset` must be a multiple of dtype's element size (the buffers start 128-byte aligned, so the tensor is
        then aligned to its elements; torch needs no more). An offset that is negative, misaligned or past the end,
        a negative dimension, or a size that does not fit from `offset` raises ArgumentError (a ValueError) naming
        the argument, before the buffer is touched."""
        call = "get_local_buffer_tensor"
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{call}: dtype must be a torch.dtype, got {type(dtype).__name__}")
        which = "RDMA" if use_rdma_buffer else "NVLink"
        total = self.num_rdma_bytes if use_rdma_buffer else self.num_nvl_bytes
        elem = torch.empty(0, dtype=dtype).element_size()
        V.check_int(call, "offset", offset)
        if offset < 0 or offset > total:
            raise ArgumentError(f"{call}: offset {offset} is outside the {which} buffer of {total} bytes "
                                f"(expected 0 <= offset <= {total})")
        if offset % elem:
            raise ArgumentError(f"{call}: offset {offset} is not a multiple of the {elem}-byte element size of "
                                f"{dtype}: the tensor would be misaligned")
        if size is None:
            size = ((total - offset) // elem,)
        if isinstance(size, int) or not isinstance(size, (tuple, list, torch.Size)):
            raise TypeError(f"{call}: size must be a tuple of ints (or None), got {type(size).__name__}")
        for i, n in enumerate(size):
            V.check_int(call, f"size[{i}]", n)
            if n < 0:
                raise ArgumentError(f"{call}: size[{i}] must be >= 0, got {n} (size {tuple(size)})")
        size = torch.Size(size)
        nbytes = size.numel() * elem
        if nbytes > total - offset:
            raise ArgumentError(f"{call}: size {tuple(size)} of {dtype} ({nbytes} bytes) at offset {offset} exceeds "
                                f"the {which} buffer of {total} bytes ({total - offset} bytes from the offset)")
        rt = self._rt(call)
        base = rt.rdma_buffer_ptr() if use_rdma_buffer else rt.nvl_buffer_ptr()
        raw = wrap_device_memory(base + offset, nbytes, rt, self.device)
        return raw.view(dtype).view(size)

    def _check_expert_ids(self, call: str, topk_idx: torch.Tensor, num_experts: int) -> None:
        # Normal mode only: the low-latency kernels check the ids on the GPU (no host read on their call path).
        # A device-to-host read: skipped while a CUDA graph is being captured, and when the caller turned it off.
        if self.validate_expert_ids and not torch.cuda.is_current_stream_capturing():
            V.check_expert_ids(call, "topk_idx", topk_idx, num_experts)

    def _check_devices(self, call: str, **tensors) -> None:
        for name, t in tensors.items():
            if t is not None:
                V.check_device(call, name, t, self.device)

    # ---- normal mode (training, prefill) ---------------------------------------------------------------------
    def _normal_streams(self, previous_event) -> tuple:
        """(current, comm): the comm stream ordered after previous_event, else after the current stream."""
        current = torch.cuda.current_stream(self.device)
        comm = self._comm_stream
        event = V.event_of(previous_event)
        if event is not None:
            comm.wait_event(event)
        else:
            comm.wait_stream(current)
        return current, comm

    @staticmethod
    def _allocating_on(comm, allocate_on_comm_stream: bool):
        """Where outputs are allocated: on the comm stream when asked (the caller then owns them via the event)."""
        return torch.cuda.stream(comm) if allocate_on_comm_stream else contextlib.nullcontext()

    def _normal_finish(self, current, comm, async_finish: bool, allocate_on_comm_stream: bool, outputs: tuple,
                       inputs: tuple) -> EventOverlap:
        if allocate_on_comm_stream:
            # Outputs belong to the comm stream's pool; the caller uses (and frees) them on its own stream.
            for t in outputs:
                if t is not None and t.is_cuda:
                    t.record_stream(current)
        if async_finish:
            keep = tuple(t for t in inputs + outputs if t is not None)
            return EventOverlap(EventHandle(comm), extra_tensors=keep)
        current.wait_stream(comm)
        return EventOverlap(None)

    @one_thread
    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int,
                            previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                            allocate_on_comm_stream: bool = False):
        """Per rank, per node and per expert token counts and the [T, R] token-to-rank map for topk_idx.

        Returns (num_tokens_per_rank [R] int32, num_tokens_per_rdma_rank [nodes] int32 or None when every rank is
        an NVLink peer, num_tokens_per_expert [E] int32, is_token_in_rank [T, R] bool, event)."""
        call = "get_dispatch_layout"
        R = self.group_size
        num_tokens, num_topk = V.check_dispatch_layout(topk_idx, num_experts, previous_event, async_finish,
                                                       allocate_on_comm_stream, call=call)
        V.check_on_device(call, "topk_idx", topk_idx, self.device)
        rt = self._rt(call)
        _C = native()
        args = _C.DispatchLayoutArgs(topk_idx=topk_idx.data_ptr(), num_tokens=num_tokens, num_topk=num_topk,
                                     num_experts=num_experts)
        # The runtime's check, before num_experts sizes an allocation (the launch does not repeat it).
        rt.check_dispatch_layout(args=args)
        self._check_expert_ids(call, topk_idx, num_experts)
        topology = rt.topology()

        current, comm = self._normal_streams(previous_event)
        dev = self.device
        with self._allocating_on(comm, allocate_on_comm_stream):
            per_rank = torch.empty((R,), dtype=torch.int32, device=dev)
            per_node = None
            if topology.nvl_domain_size < R:  # ranks outside the NVLink domain: counts per node too
                per_node = torch.empty((topology.num_nodes,), dtype=torch.int32, device=dev)
            per_expert = torch.empty((num_experts,), dtype=torch.int32, device=dev)
            in_rank = torch.empty((num_tokens, R), dtype=torch.bool, device=dev)
        args.num_tokens_per_rank = per_rank.data_ptr()
        args.num_tokens_per_rdma_rank = ptr_of(per_node)
        args.num_tokens_per_expert = per_expert.data_ptr()
        args.is_token_in_rank = in_rank.data_ptr()
        rt.get_dispatch_layout(args=args, stream=comm.cuda_stream)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (per_rank, per_node, per_expert, in_rank), (topk_idx,))
        return per_rank, per_node, per_expert, in_rank, event

    @one_thread
    def dispatch(self, x: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]], handle: Optional[tuple] = None,
                 num_tokens_per_rank: Optional[torch.Tensor] = None,
                 num_tokens_per_rdma_rank: Optional[torch.Tensor] = None,
                 is_token_in_rank: Optional[torch.Tensor] = None, num_tokens_per_expert: Optional[torch.Tensor] = None,
                 topk_idx: Optional[torch.Tensor] = None, topk_weights: Optional[torch.Tensor] = None,
                 expert_alignment: int = 1, num_worst_tokens: int = 0, config: Optional[Config] = None,
                 previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                 allocate_on_comm_stream: bool = False):
        """Sends each token to every rank in its is_token_in_rank row (training, prefill). See api.md.

        Returns (recv_x or (recv_x, recv_scales), recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list,
        handle, event); a cached dispatch (handle given) returns (recv_x, None, None, None, None, event).
        handle = (rank_prefix_matrix [R, R] int32, send_pos [T, R] int32, receive rows, recv_src_idx int32,
        is_token_in_rank [T, R] bool, num_worst_tokens); across nodes (ranks outside this rank's NVLink domain)
        recv_gbl_rank_prefix_sum [R] int32 (column `rank` of the matrix), forward_positions [F, ranks per node + 1] int32
        and forward_source_token [F] int32 (the records this rank forwarded for other nodes) come before
        num_worst_tokens, so that the prefix sum is the fourth element from the end, as in DeepEP. A cached dispatch's kernels check the handle's matrix
        against is_token_in_rank and the rows as they read it (no host read): a bad entry voids the call, and the next
        call raises ArgumentError naming the entry, its value and the rank; the Buffer stays usable."""
        call = "dispatch"
        R = self.group_size
        a = V.check_normal_dispatch(x, handle, num_tokens_per_rank, num_tokens_per_rdma_rank, is_token_in_rank,
                                    num_tokens_per_expert, topk_idx, topk_weights, expert_alignment,
                                    num_worst_tokens, config, previous_event, async_finish, allocate_on_comm_stream,
                                    num_ranks=R, call=call, ranks_per_node=self._internode_node_size)
        xs = a.x
        tensors = dict(x=xs.data, scales=xs.scales, topk_idx=topk_idx, topk_weights=topk_weights,
                       num_tokens_per_rank=num_tokens_per_rank, is_token_in_rank=a.is_token_in_rank,
                       num_tokens_per_expert=num_tokens_per_expert)
        if a.cached:
            tensors.update(rank_prefix_matrix=a.handle.rank_prefix_matrix)
        for name, t in tensors.items():
            V.check_on_device(call, name, t, self.device)
        rt = self._rt(call)
        _C = native()
        config = self.get_dispatch_config(R) if config is None else config
        K, E = a.num_topk, a.num_experts  # a cached dispatch counts no experts: E = 0
        if topk_idx is not None:
            self._check_expert_ids(call, topk_idx, E)

        current, comm = self._normal_streams(previous_event)
        alloc = functools.partial(self._allocating_on, comm, allocate_on_comm_stream)
        dev, stream = self.device, comm.cuda_stream
        P = self._internode_node_size
        gbl_prefix = None
        if a.cached:
            h = a.handle
            prefix, send_pos, rows = h.rank_prefix_matrix, None, h.num_recv_rows
            if P:  # every record carries its positions: the plan writes them again
                with alloc():
                    send_pos = torch.empty((xs.num_tokens, R), dtype=torch.int32, device=dev)
        else:
            with alloc():
                prefix = torch.empty((R, R), dtype=torch.int32, device=dev)
                send_pos = torch.empty((xs.num_tokens, R), dtype=torch.int32, device=dev)
                if P:
                    gbl_prefix = torch.empty((R,), dtype=torch.int32, device=dev)
        worst = a.num_worst_tokens
        args = _C.DispatchArgs(
            x=xs.data.data_ptr(), x_row_stride=xs.row_stride_bytes, hidden_bytes=xs.hidden_bytes,
            x_scales=ptr_of(xs.scales), num_scales=xs.num_scales, x_scales_token_stride=xs.scale_strides[0],
            x_scales_col_stride=xs.scale_strides[1], topk_idx=ptr_of(topk_idx), topk_weights=ptr_of(topk_weights),
            num_topk=K, is_token_in_rank=a.is_token_in_rank.data_ptr(),
            num_tokens_per_expert=ptr_of(None if a.cached else num_tokens_per_expert), num_tokens=xs.num_tokens,
            num_experts=E, num_worst_tokens=worst, rank_prefix_matrix=prefix.data_ptr(), send_pos=ptr_of(send_pos),
            recv_gbl_rank_prefix_sum=ptr_of(gbl_prefix))
        # Checks the sizes and that the call fits num_nvl_bytes (ArgumentError) before its send half launches.
        rt.dispatch_send(args=args, cached=a.cached, num_sms=config.num_sms, stream=stream,
                         num_max_rdma_chunked_send_tokens=config.num_max_rdma_chunked_send_tokens,
                         num_max_rdma_chunked_recv_tokens=config.num_max_rdma_chunked_recv_tokens)
        per_expert_list = None if a.cached else []
        if not a.cached and worst == 0:  # the output size is the receive count: wait for it on the host
            num_recv, per_expert = rt.dispatch_wait_counts()
            rows = int(num_recv)
            per_expert_list = V.align_counts(per_expert, expert_alignment)
            forward = int(rt.dispatch_forward_count()) if P else 0
        elif not a.cached:
            rows = worst
            forward = P * worst  # a forwarded record lands as a row at one of the node's P ranks at least
        else:
            forward = a.handle.num_forward
        with alloc():
            recv_x = torch.empty((rows, xs.hidden), dtype=xs.data.dtype, device=dev)
            recv_scales = None if xs.scales is None else torch.empty((rows, xs.num_scales), dtype=xs.scales.dtype,
                                                                     device=dev)
            recv_topk_idx = None if topk_idx is None else torch.empty((rows, K), dtype=torch.int64, device=dev)
            recv_topk_weights = None if topk_idx is None else torch.empty((rows, K), dtype=torch.float32, device=dev)
            # A cached dispatch returns no source indices (the handle has them).
            recv_src_idx = None if a.cached else torch.empty((rows,), dtype=torch.int32, device=dev)
            fwd_pos = fwd_src = None
            if P:  # a cached dispatch forwards the same records again; the handle keeps the first map
                if worst:  # rows past the records forwarded must name no node (combine finds a node's rows by it)
                    fwd_pos = torch.full((forward, P + 1), R // P, dtype=torch.int32, device=dev)
                else:
                    fwd_pos = torch.empty((forward, P + 1), dtype=torch.int32, device=dev)
                fwd_src = torch.empty((forward,), dtype=torch.int32, device=dev)
        outputs = _C.DispatchOutputs(recv_x=recv_x.data_ptr(), recv_x_scales=ptr_of(recv_scales),
                                     recv_topk_idx=ptr_of(recv_topk_idx), recv_topk_weights=ptr_of(recv_topk_weights),
                                     recv_src_idx=ptr_of(recv_src_idx), num_recv_tokens=rows,
                                     forward_positions=ptr_of(fwd_pos), forward_source_token=ptr_of(fwd_src),
                                     num_forward=forward if P else 0)
        rt.dispatch_recv(outputs=outputs, num_sms=config.num_sms,
                         num_max_nvl_chunked_send_tokens=config.num_max_nvl_chunked_send_tokens, stream=stream)
        produced = (recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx, fwd_pos, fwd_src)
        produced += (send_pos,) if a.cached else (prefix, send_pos, gbl_prefix)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream, produced,
                                    tuple(tensors.values()))
        recv = recv_x if recv_scales is None else (recv_x, recv_scales)
        if a.cached:
            return recv, None, None, None, None, event
        if P:
            handle = (prefix, send_pos, rows, recv_src_idx, a.is_token_in_rank, gbl_prefix, fwd_pos, fwd_src, worst)
        else:
            handle = (prefix, send_pos, rows, recv_src_idx, a.is_token_in_rank, worst)
        return recv, recv_topk_idx, recv_topk_weights, per_expert_list, handle, event

    @one_thread
    def combine(self, x: torch.Tensor, handle: tuple, topk_weights: Optional[torch.Tensor] = None,
                bias: Union[torch.Tensor, Tuple[Optional[torch.Tensor], Optional[torch.Tensor]], None] = None,
                config: Optional[Config] = None, previous_event: Optional[EventOverlap] = None,
                async_finish: bool = False, allocate_on_comm_stream: bool = False):
        """Sends the dispatched rows back and sums, per token, the copies from every rank it went to (no
        weights), plus up to two BF16 biases. Returns (combined_x [T, hidden] BF16, combined_topk_weights [T, K]
        float32 or None, event). The kernels check the handle's rank_prefix_matrix and send_pos entries as they read
        them (no host read): a bad one is skipped (send_pos) or voids the call (the matrix), and the next call raises
        ArgumentError naming the entry, its value and the rank; the Buffer stays usable."""
        call = "combine"
        R = self.group_size
        h, hidden, K, bias0, bias1 = V.check_normal_combine(x, handle, topk_weights, bias, config, previous_event,
                                                            async_finish, allocate_on_comm_stream, num_ranks=R,
                                                            call=call, ranks_per_node=self._internode_node_size)
        P = self._internode_node_size
        inputs = dict(x=x, topk_weights=topk_weights, bias0=bias0, bias1=bias1, send_pos=h.send_pos,
                      rank_prefix_matrix=h.rank_prefix_matrix)
        if P:
            inputs.update(is_token_in_rank=h.is_token_in_rank, forward_positions=h.forward_positions,
                          forward_source_token=h.forward_source_token)
        for name, t in inputs.items():
            V.check_on_device(call, name, t, self.device)
        rt = self._rt(call)
        _C = native()
        config = self.get_combine_config(R) if config is None else config
        rows, T = x.size(0), h.num_tokens

        current, comm = self._normal_streams(previous_event)
        with self._allocating_on(comm, allocate_on_comm_stream):
            combined = torch.empty((T, hidden), dtype=torch.bfloat16, device=self.device)
            combined_weights = None
            if topk_weights is not None:
                combined_weights = torch.empty((T, K), dtype=torch.float32, device=self.device)
        args = _C.CombineArgs(x=x.data_ptr(), topk_weights=ptr_of(topk_weights), bias_0=ptr_of(bias0), bias_1=ptr_of(bias1),
                              send_pos=h.send_pos.data_ptr(), rank_prefix_matrix=h.rank_prefix_matrix.data_ptr(),
                              num_tokens=T, num_recv_tokens=rows, hidden=hidden, num_topk=K,
                              combined_x=combined.data_ptr(), combined_topk_weights=ptr_of(combined_weights),
                              is_token_in_rank=ptr_of(h.is_token_in_rank if P else None),
                              forward_positions=ptr_of(h.forward_positions), forward_source_token=ptr_of(h.forward_source_token),
                              num_forward=h.num_forward)
        # Checks the sizes and that the rows fit num_nvl_bytes (ArgumentError) before anything launches.
        rt.combine(args=args, num_sms=config.num_sms,
                   num_max_nvl_chunked_send_tokens=config.num_max_nvl_chunked_send_tokens, stream=comm.cuda_stream,
                   num_max_rdma_chunked_send_tokens=config.num_max_rdma_chunked_send_tokens,
                   num_max_rdma_chunked_recv_tokens=config.num_max_rdma_chunked_recv_tokens)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (combined, combined_weights), tuple(inputs.values()))
        return combined, combined_weights, event

def initialize_uccl(scratch, num_rdma_bytes: int, rank: int, num_ranks: int, group=None, num_experts: int = 0):
    """Compatibility with code written against the UCCL-EP README: `Buffer` creates and connects the proxies
    itself, so this only checks its arguments and returns empty (proxies, workers) lists for destroy_uccl."""
    V.check_int("initialize_uccl", "num_rdma_bytes", num_rdma_bytes, 0)
    V.check_int("initialize_uccl", "num_ranks", num_ranks, 1)
    V.check_int("initialize_uccl", "rank", rank, 0, num_ranks - 1)
    V.check_int("initialize_uccl", "num_experts", num_experts, 0)
    if scratch is not None and not isinstance(scratch, torch.Tensor):
        raise TypeError(f"initialize_uccl: scratch must be a torch.Tensor or None, got {type(scratch).__name__}")
    return [], []


def destroy_uccl(proxies, workers) -> None:
    """Counterpart of initialize_uccl; the Buffer stops its proxies in destroy() / when collected."""
    if not isinstance(proxies, (list, tuple)) or not isinstance(workers, (list, tuple)):
        raise TypeError("destroy_uccl: expected the (proxies, workers) lists returned by initialize_uccl")
