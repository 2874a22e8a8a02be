"""bench/soak.py over the CPU stand-ins: its low-latency and normal-mode rounds through the real uccl.ep.Buffer
(ll_stand_in.py; test_intranode_fake.py's FakeNormalRuntime on one rank), a clean run passing with the memory
figures printed, and a result that changes in one round and a leak each caught with a message naming them.

The low-latency stand-in here writes results (the shared one launches nothing): every local expert receives this
rank's tokens routed to it, and combine sums the weighted expert rows back. Rows past a count hold a value that
changes every round, as a real buffer's leftovers may: the soak must not compare them.
"""
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import soak  # noqa: E402
from ll_stand_in import FakeLowLatencyRuntime, make_ll_buffer  # noqa: E402
from test_intranode_fake import FakeNormalRuntime, install_fake_cuda, make_buffer, memory  # noqa: E402

M, H, K, E = 8, 128, 2, 8  # low-latency: rank 0 of 2, experts 0-3 local
LEAK = 1 << 18  # float32 elements per leaked round: 1 MiB


class Faults:
    """What a stand-in does wrong: flips one bit of a result in round `change_at`, keeps `leak` elements per round."""

    def __init__(self, change_at=None, leak=0):
        self.change_at, self.leak, self.round, self.kept = change_at, leak, 0, []

    def next_round(self) -> bool:
        """Counts a round; True when this is the one to change."""
        self.round += 1
        if self.leak:
            self.kept.append(torch.ones(self.leak))  # written, so resident
        return self.round == self.change_at


def flip_bit(t: torch.Tensor) -> None:
    b = t.reshape(-1).view(torch.uint8)
    b[0] ^= 1


class ResultsLowLatencyRuntime(FakeLowLatencyRuntime):
    def __init__(self, native, faults: Faults):
        super().__init__(native, 2, log=False)
        self.faults = faults

    def low_latency_dispatch(self, *fields, **kw):
        hook = super().low_latency_dispatch(*fields, **kw)
        c = self.native.LowLatencyDispatchCall(*fields, **kw)
        change = self.faults.next_round()
        E_local, rows = c.num_experts // self.R, self.R * c.num_max_dispatch_tokens_per_rank
        x = memory(c.x, torch.bfloat16, (c.num_tokens, c.hidden))
        idx = memory(c.topk_idx, torch.int64, (c.num_tokens, c.num_topk))
        recv_x = memory(c.recv_x, torch.bfloat16, (E_local, rows, c.hidden))
        count = memory(c.recv_count, torch.int32, (E_local,))
        src_info = memory(c.src_info, torch.int32, (E_local, rows))
        layout = memory(c.layout_range, torch.int64, (E_local, self.R))
        recv_x.fill_(float(self.faults.round))  # leftovers past the counts differ every round
        src_info.fill_(-self.faults.round)
        layout.zero_()
        for e in range(E_local):
            tokens = [t for t in range(c.num_tokens) if e in idx[t].tolist()]
            count[e] = len(tokens)
            layout[e, 0] = len(tokens)
            for i, t in enumerate(tokens):
                recv_x[e, i] = x[t]
                src_info[e, i] = t
        if change:  # the first received row
            flip_bit(recv_x[next(e for e in range(E_local) if count[e] > 0), 0])
        return hook

    def low_latency_combine(self, *fields, **kw):
        hook = super().low_latency_combine(*fields, **kw)
        c = self.native.LowLatencyCombineCall(*fields, **kw)
        E_local, rows = c.num_experts // self.R, self.R * c.num_max_dispatch_tokens_per_rank
        y = memory(c.x, torch.bfloat16, (E_local, rows, c.hidden))
        idx = memory(c.topk_idx, torch.int64, (c.num_tokens, c.num_topk))
        w = memory(c.topk_weights, torch.float32, (c.num_tokens, c.num_topk))
        out = memory(c.combined_x, torch.bfloat16, (c.num_tokens, c.hidden))
        acc = torch.zeros(c.num_tokens, c.hidden)
        for e in range(E_local):
            tokens = [t for t in range(c.num_tokens) if e in idx[t].tolist()]
            for i, t in enumerate(tokens):
                k = idx[t].tolist().index(e)
                acc[t] += float(w[t, k]) * y[e, i].float()
        out.copy_(acc.to(torch.bfloat16))
        return hook


def ll_step(native, monkeypatch, faults: Faults):
    buf, _ = make_ll_buffer(native, monkeypatch.setattr)
    buf._runtime = ResultsLowLatencyRuntime(native, faults)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(M, H, generator=gen).to(torch.bfloat16)
    idx = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(M)])
    w = torch.rand(M, K, generator=gen)
    y = buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)[0].clone()  # the expert output: what dispatch received
    faults.round = 0
    out = torch.empty(M, H, dtype=torch.bfloat16)
    return soak.low_latency_step(buf, x, idx, w, y, out, M, E, use_fp8=False)


class ResultsNormalRuntime(FakeNormalRuntime):
    def __init__(self, faults: Faults):
        super().__init__(0, 1)
        self.faults = faults

    def combine(self, *, args, **kw):
        super().combine(args=args, **kw)
        if self.faults.next_round():
            flip_bit(memory(args.combined_x, torch.bfloat16, (args.num_tokens, args.hidden)))


def normal_step(native, monkeypatch, faults: Faults):
    install_fake_cuda(monkeypatch.setattr)
    buf = make_buffer(ResultsNormalRuntime(faults))
    gen = torch.Generator().manual_seed(5)
    T, hidden, experts = 12, 256, 4
    x = torch.randn(T, hidden, generator=gen).to(torch.bfloat16)
    idx = torch.stack([torch.randperm(experts, generator=gen)[:2] for _ in range(T)])
    idx[0, 1] = -1
    w = torch.rand(T, 2, generator=gen)
    return soak.normal_step(buf, x, idx, w, experts)


def run(step, rounds, every=50, rss_growth=64 * soak.MiB):
    lines = []
    watch = soak.MemoryWatch("run", lambda: soak.sample_memory(torch.device("cpu")), 16 * soak.MiB, rss_growth,
                             out=lines.append)
    soak.soak("run", rounds, step, every, 5, watch)
    return lines


STEPS = {"low-latency": ll_step, "normal": normal_step}


@pytest.mark.parametrize("mode", STEPS)
def test_clean_rounds_pass_and_print_memory(native, monkeypatch, mode):
    lines = run(STEPS[mode](native, monkeypatch, Faults()), 120)
    assert [line.split(":")[0] for line in lines] == [f"[soak] run round {r}/120" for r in (50, 100, 120)]
    assert "GPU allocated 0.0 MiB (+0.0), reserved 0.0 MiB (+0.0), host RSS" in lines[-1]


def test_rows_past_the_counts_change_every_round_and_are_not_compared(native, monkeypatch):
    """What makes the masking matter: unmasked, the low-latency stand-in's results differ from round to round."""
    faults = Faults()
    buf, _ = make_ll_buffer(native, monkeypatch.setattr)
    buf._runtime = ResultsLowLatencyRuntime(native, faults)
    x, idx = torch.ones(M, H, dtype=torch.bfloat16), torch.tensor([[t % E, (t + 1) % E] for t in range(M)])
    first = buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)[0].clone()
    second = buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)[0]
    assert soak.first_difference("recv_x", first, second) is not None
    run(ll_step(native, monkeypatch, Faults()), 20)  # masked: equal


@pytest.mark.parametrize("mode,tensor", [("low-latency", "recv_x[0, 0]"), ("normal", "combined_x[0, 0]")])
def test_a_result_that_changes_in_one_round_is_caught(native, monkeypatch, mode, tensor):
    with pytest.raises(soak.SoakFailure) as e:
        run(STEPS[mode](native, monkeypatch, Faults(change_at=37)), 120)
    assert f"run round 37: {tensor}: " in str(e.value), str(e.value)
    assert "the first round gave" in str(e.value)


@pytest.mark.parametrize("mode", STEPS)
def test_a_leak_is_caught(native, monkeypatch, mode):
    with pytest.raises(soak.SoakFailure) as e:
        run(STEPS[mode](native, monkeypatch, Faults(leak=LEAK)), 120, rss_growth=16 * soak.MiB)
    # Caught at a check (every 50 rounds) once 16 MiB more are resident: 45 MiB leaked by round 50, but what earlier
    # tests in this process free meanwhile can offset the first check's reading, never the second's (95 MiB leaked).
    assert "run round 50: rss grew" in str(e.value) or "run round 100: rss grew" in str(e.value), str(e.value)
    assert "tolerance 16.0 MiB" in str(e.value)


def test_gpu_memory_growth_is_caught():
    figures = dict(allocated=100 * soak.MiB, reserved=200 * soak.MiB, rss=0)
    lines = []
    watch = soak.MemoryWatch("low-latency", lambda: dict(figures), 16 * soak.MiB, 64 * soak.MiB, out=lines.append)
    watch.baseline()
    figures["reserved"] += 16 * soak.MiB  # at the tolerance: still fine
    watch.report(1000, 10000)
    figures["allocated"] += 17 * soak.MiB
    with pytest.raises(soak.SoakFailure, match=r"low-latency round 2000: allocated grew 17\.0 MiB since the warm-up "
                                               r"\(tolerance 16\.0 MiB\)"):
        watch.report(2000, 10000)
    assert lines[0] == ("[soak] low-latency round 1000/10000: GPU allocated 100.0 MiB (+0.0), reserved 216.0 MiB "
                        "(+16.0), host RSS 0.0 MiB (+0.0)")


def test_comparison_is_bitwise():
    nan = torch.tensor([float("nan"), 1.0])
    assert soak.first_difference("t", nan, nan.clone()) is None  # the same NaN bits are equal
    zero = torch.tensor([[0.0, 1.0]])
    why = soak.first_difference("t", zero, torch.tensor([[-0.0, 1.0]]))  # equal as numbers, not as bits
    assert why is not None and why.startswith("t[0, 0]: -0.0, the first round gave 0.0"), why
    assert "int64 (2,)" in soak.first_difference("t", torch.zeros(2), torch.zeros(2, dtype=torch.int64))


def test_defaults_are_the_soak_the_issue_asks_for():
    a, rest = soak.parse_args(["--num-tokens", "64"])
    assert (a.ll_rounds, a.normal_rounds, a.every) == (10000, 1000, 1000)
    assert rest == ["--num-tokens", "64"]
