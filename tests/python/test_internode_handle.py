"""The handle of a normal dispatch across nodes (9 elements, src/kernels/internode.hpp): what the Python layer checks
before a cached dispatch or a combine hands it to the runtime, and where callers find DeepEP's fields in it."""
import pytest
import torch

from uccl.ep import _validate as V

R, T, P = 4, 6, 2  # 4 ranks as 2 nodes of 2


def handle(rows=5, forward=3, worst=0, **over):
    parts = dict(prefix=torch.zeros(R, R, dtype=torch.int32), send_pos=torch.full((T, R), -1, dtype=torch.int32),
                 rows=rows, src=torch.zeros(rows, dtype=torch.int32), in_rank=torch.zeros(T, R, dtype=torch.bool),
                 gbl=torch.zeros(R, dtype=torch.int32), fwd_pos=torch.full((forward, P + 1), -1, dtype=torch.int32),
                 fwd_src=torch.zeros(forward, dtype=torch.int32), worst=worst)
    parts.update(over)
    return tuple(parts.values())


def test_a_handle_across_nodes_keeps_deep_eps_prefix_sum_fourth_from_the_end():
    h = handle()
    assert h[-4] is h[5]  # recv_gbl_rank_prefix_sum, where DeepEP callers index it
    n = V.check_normal_handle("combine", h, R)
    assert n.internode and n.num_forward == 3 and n.num_worst_tokens == 0 and n.num_tokens == T
    assert n.recv_gbl_rank_prefix_sum is h[5] and n.forward_positions is h[6] and n.forward_source_token is h[7]
    assert n.rank_prefix_matrix is h[0] and n.send_pos is h[1] and n.num_recv_rows == 5


def test_a_handle_within_one_node_has_no_forward_map():
    n = V.check_normal_handle("combine", handle()[:5] + (0,), R)
    assert not n.internode and n.num_forward == 0 and n.recv_gbl_rank_prefix_sum is None


@pytest.mark.parametrize("length", [5, 7, 8, 10])
def test_other_lengths_are_rejected_naming_both_forms(length):
    h = (handle() * 2)[:length]
    with pytest.raises(TypeError) as e:
        V.check_normal_handle("combine", h, R)
    assert "6-tuple" in str(e.value) and "9-tuple" in str(e.value), str(e.value)


@pytest.mark.parametrize("over, words", [
    (dict(gbl=torch.zeros(R + 1, dtype=torch.int32)), ["handle[5] (recv_gbl_rank_prefix_sum)", f"[{R}]"]),
    (dict(gbl=torch.zeros(R, dtype=torch.int64)), ["handle[5] (recv_gbl_rank_prefix_sum)", "torch.int32"]),
    (dict(fwd_pos=torch.zeros(3, dtype=torch.int32)), ["handle[6] (forward_positions)"]),
    (dict(fwd_pos=torch.zeros(3, 1, dtype=torch.int32)), ["handle[6] (forward_positions)", "columns"]),
    (dict(fwd_src=torch.zeros(4, dtype=torch.int32)), ["handle[7] (forward_source_token)", "[3]"]),
    (dict(worst=3), ["handle[8] (num_worst_tokens=3)", "handle[2]"]),
])
def test_bad_fields_are_rejected_naming_their_position(over, words):
    with pytest.raises(ValueError) as e:
        V.check_normal_handle("combine", handle(**over), R)
    msg = str(e.value)
    assert msg.startswith("combine:"), msg
    for w in words:
        assert w in msg, (w, msg)


def test_a_buffer_takes_only_handles_of_its_own_form():
    V.check_normal_handle("combine", handle(), R, ranks_per_node=P)
    V.check_normal_handle("dispatch", handle()[:5] + (0,), R, ranks_per_node=0)
    for h, rpn, words in ((handle(), 0, ["9 elements", "across NVLink domain", "is one NVLink domain"]),
                          (handle()[:5] + (0,), P, ["6 elements", "within one NVLink domain", "spans nodes"]),
                          (handle(), P + 1, ["handle[6] (forward_positions) has 3 columns, expected 4"])):
        with pytest.raises(ValueError) as e:
            V.check_normal_handle("combine", h, R, ranks_per_node=rpn)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
