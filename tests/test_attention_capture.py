"""Attention capture (issue 17 item 1): every attention call recomputed explicitly inside a scoped
torch function mode, same outputs, probabilities in the graph; nothing left outside the block."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import xai_torch as xt

from attention_helpers import images, tiny_timm, tiny_vit
from conftest import assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


class AtenOps(TorchDispatchMode):
    """Records the aten ops a forward runs (which kernel: fused or not)."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_torchvision_vit_probabilities_equal_need_weights_and_outputs_are_unchanged():
    model, x = tiny_vit(), images()
    inputs = []
    hooks = [blk.self_attention.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
             for blk in model.encoder.layers]
    try:
        expect = model(x)
        with xt.capture_attention(model) as att:
            got = model(x)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    assert [c.kind for c in att.calls] == ["mha", "mha"]
    assert att.calls[1].module == "encoder.layers.encoder_layer_1.self_attention"
    for blk, h, probs in zip(model.encoder.layers, inputs[:2], att.maps):
        _, weights = blk.self_attention(h, h, h, need_weights=True, average_attn_weights=False)
        assert probs.shape == (2, 2, 17, 17)
        torch.testing.assert_close(probs, weights, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(got[:, 3].sum(), att.maps)   # in the graph: gradients exist
    assert all(g.shape == (2, 2, 17, 17) and float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("options", [
    dict(bias=True, add_bias_kv=True, add_zero_attn=True, kdim=6, vdim=5),
    dict(bias=False, batch_first=True),
    dict(bias=True),
])
def test_multihead_attention_options_give_the_same_output_and_weights(options):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **options).eval()
    bf = options.get("batch_first", False)
    kdim, vdim = options.get("kdim", 8), options.get("vdim", 8)
    q = torch.randn(3, 4, 8) if bf else torch.randn(4, 3, 8)
    k = torch.randn(3, 7, kdim) if bf else torch.randn(7, 3, kdim)
    v = torch.randn(3, 7, vdim) if bf else torch.randn(7, 3, vdim)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    for kwargs in ({}, {"key_padding_mask": pad}, {"attn_mask": torch.rand(4, 7) > 0.8},
                   {"attn_mask": torch.randn(4, 7), "need_weights": False}):
        ref = mha(q, k, v, average_attn_weights=False, **kwargs)
        with xt.capture_attention(mha) as att:
            out = mha(q, k, v, average_attn_weights=False, **kwargs)
        torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
        if kwargs.get("need_weights", True):
            torch.testing.assert_close(out[1], ref[1])
            torch.testing.assert_close(att.maps[0], ref[1])
        else:
            assert out[1] is None
    unbatched = mha(q[0], k[0], v[0])   # (L, E) input, averaged weights
    with xt.capture_attention(mha) as att:
        got = mha(q[0], k[0], v[0])
    torch.testing.assert_close(got[0], unbatched[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], unbatched[1])


def test_dropout_in_training_mode_draws_what_need_weights_draws():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).train()
    x = torch.randn(2, 5, 8)
    torch.manual_seed(3)
    ref = mha(x, x, x, average_attn_weights=False)
    torch.manual_seed(3)
    with xt.capture_attention(mha) as att:
        out = mha(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1], ref[1])
    torch.testing.assert_close(att.maps[0].sum(-1), torch.ones(2, 2, 5))   # before dropout: rows sum to 1


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.3},
                                    {"attn_mask": "bool"}, {"attn_mask": "float"}, {"enable_gqa": True}])
def test_sdpa_is_recomputed_to_float_tolerance(kwargs):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    v = torch.randn(2, 4, 6, 3, generator=g)
    if kwargs.get("enable_gqa"):
        k, v = k[:, :2], v[:, :2]
    if kwargs.get("attn_mask") == "bool":
        mask = torch.rand(5, 6, generator=g) > 0.4
        mask[:, 0] = True
        kwargs = {"attn_mask": mask}
    elif kwargs.get("attn_mask") == "float":
        kwargs = {"attn_mask": torch.randn(5, 6, generator=g)}
    expect = F.scaled_dot_product_attention(q, k, v, **kwargs)
    with xt.capture_attention(lambda z: z) as att:
        got = F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    (probs,) = att.maps
    assert probs.shape == (2, 4, 5, 6)
    torch.testing.assert_close(probs @ (v if not kwargs.get("enable_gqa") else v.repeat_interleave(2, 1)), expect,
                               rtol=1e-5, atol=1e-6)


def test_timm_fused_and_explicit_softmax_attention_are_both_caught_with_the_same_maps():
    model = tiny_timm()
    x = images()
    expect = model(x)
    with xt.capture_attention(model) as fused:
        out = model(x)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
    assert [c.kind for c in fused.calls] == ["sdpa", "sdpa"] and fused.calls[0].module == "blocks.0.attn"
    for blk in model.blocks:
        blk.attn.fused_attn = False
    try:
        with xt.capture_attention(model) as explicit:
            model(x)
        with xt.capture_attention(model, softmax=False) as off:
            model(x)
    finally:
        for blk in model.blocks:
            blk.attn.fused_attn = True
    assert [c.kind for c in explicit.calls] == ["softmax", "softmax"] and len(off) == 0
    for a, b in zip(fused.maps, explicit.maps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_softmax_outside_attention_modules_is_not_recorded():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Unflatten(1, (4, 4)), nn.Softmax(dim=-1))
    with xt.capture_attention(model) as att:
        model(torch.randn(2, 3, 2, 2))
    assert len(att) == 0


def test_no_trace_sdpa_runs_fused_and_mha_takes_its_fast_path_outside_the_block():
    timm_model = tiny_timm(depth=1)
    tv, x = tiny_vit(), images()
    before = snapshot(tv, x), snapshot(timm_model, x)
    modes = torch._C._len_torch_function_stack()
    with torch.no_grad():
        with AtenOps() as plain:
            timm_model(x), tv(x)
        with xt.capture_attention(tv) as att, AtenOps() as inside:
            timm_model(x), tv(x)
        with AtenOps() as after:
            timm_model(x), tv(x)
    fused = {o for o in plain.ops if "scaled_dot_product" in o or "native_multi_head" in o}
    assert len(fused) == 2, plain.ops                     # SDPA kernel and MHA's fast path
    assert not fused & inside.ops and fused <= after.ops
    assert len(att) == 3
    assert torch._C._len_torch_function_stack() == modes
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    assert_no_trace(before[0], snapshot(tv, x))
    assert_no_trace(before[1], snapshot(timm_model, x))


def test_the_block_cleans_up_when_the_forward_raises():
    model, x = tiny_vit(), images()
    before = snapshot(model, x)
    with pytest.raises(RuntimeError, match="boom"):
        with xt.capture_attention(model):
            model(x)
            raise RuntimeError("boom")
    assert_no_trace(before, snapshot(model, x))


def test_scripted_model_is_refused():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(xt.XaiError, match="TorchScript"):
        with xt.capture_attention(scripted):
            pass


def test_sdpa_on_3d_inputs_records_one_head_in_the_graph():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 5, 8, generator=g), torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 3, generator=g)
    q.requires_grad_()
    with xt.capture_attention(lambda z: z) as att:
        out = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    (probs,) = att.maps
    assert probs.shape == (2, 1, 5, 6)
    (grad,) = torch.autograd.grad((out * v.sum(1, keepdim=True)).sum(), att.maps)   # in the graph
    torch.testing.assert_close(grad, (v.sum(1, keepdim=True) @ v.transpose(1, 2)).unsqueeze(1).expand(2, 1, 5, 6))
