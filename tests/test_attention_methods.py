"""Attention rollout, gradient rollout and Chefer's relevance (issue 17 item 2) against
independent recomputations written here: the ViT's forward from its own weights (attention from
each block's ``in_proj``), the papers' equations per image and head; batching, targets, prefix
tokens, grids and bad input."""
import math

import pytest
import torch
import torchvision
from torch import nn

import xai_torch as xt
from xai_torch.attention import patch_layout

from attention_helpers import images, tiny_timm, tiny_vit
from conftest import assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_forward(model, x):
    """torchvision's ViT written out from its weights: logits and each block's attention
    probabilities, ``softmax(q k^T / sqrt(d))`` from ``in_proj_weight`` (kept in this graph)."""
    n = x.shape[0]
    h = model.conv_proj(x).flatten(2).transpose(1, 2)
    h = torch.cat([model.class_token.expand(n, -1, -1), h], dim=1) + model.encoder.pos_embedding
    attentions = []
    for blk in model.encoder.layers:
        mha = blk.self_attention
        heads, dim = mha.num_heads, mha.embed_dim // mha.num_heads
        y = blk.ln_1(h)
        q, k, v = (y @ mha.in_proj_weight.T + mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, -1, heads, dim).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim), dim=-1)
        attentions.append(a)
        o = (a @ v).transpose(1, 2).reshape(n, -1, mha.embed_dim)
        h = h + mha.out_proj(o)
        h = h + blk.mlp(blk.ln_2(h))
    return model.heads(model.encoder.ln(h)[:, 0]), attentions


def vit_explain_rollout(attentions, discard_ratio, head_fusion="mean"):
    """jacobgil/vit-explain's ``rollout``, one image at a time (its discard acts on image 0 only)."""
    out = []
    for i in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        result = torch.eye(tokens)
        for a in attentions:
            fused = {"mean": a[i].mean(0), "max": a[i].max(0).values, "min": a[i].min(0).values}[head_fusion].clone()
            flat = fused.view(1, -1)
            _, idx = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            idx = idx[idx != 0]
            flat[0, idx] = 0
            a_hat = (fused + torch.eye(tokens)) / 2
            a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
            result = a_hat @ result
        out.append(result[0, 1:])
    return torch.stack(out)


def chefer_paper(attentions, grads):
    """Chefer et al. ICCV 2021, eqs. (5)-(6) for self-attention, image by image and head by head:
    Ā = E_h[(∇A_h ⊙ A_h)^+], R ← R + Ā·R, starting from R = I; the CLS row over the patches."""
    out = []
    for i in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        r = torch.eye(tokens)
        for a, g in zip(attentions, grads):
            heads = a.shape[1]
            a_bar = sum(torch.clamp(g[i, hh] * a[i, hh], min=0) for hh in range(heads)) / heads
            r = r + a_bar @ r
        out.append(r[0, 1:])
    return torch.stack(out)


@pytest.mark.parity
@pytest.mark.parametrize("fusion, ratio", [("mean", 0.0), ("max", 0.5), ("min", 0.9)])
def test_rollout_equals_a_recomputation_from_the_in_proj_weights(fusion, ratio):
    model, x = tiny_vit(layers=3), images(3)
    with torch.no_grad():
        logits, attentions = reference_forward(model, x)
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)   # the reference is the model
    expect = vit_explain_rollout(attentions, ratio, fusion)
    res = xt.AttentionRollout(model, head_fusion=fusion, discard_ratio=ratio).explain(x)
    torch.testing.assert_close(res.tokens, expect, rtol=1e-4, atol=1e-6)
    assert res.prefix_tokens == 1 and res.grid == (4, 4) and res.attention_calls == 3
    assert res.attributions.shape == (3, 1, 32, 32)
    small = xt.AttentionRollout(model, head_fusion=fusion, discard_ratio=ratio, upsample=False)(x)
    torch.testing.assert_close(small, expect.reshape(3, 1, 4, 4), rtol=1e-4, atol=1e-6)


def test_chefer_relevance_equals_the_papers_equations_on_a_two_block_vit():
    model, x = tiny_vit(layers=2), images(3)
    target = torch.tensor([[1, 3], [0, 4], [2, 2]])
    got = xt.TransformerAttribution(model).explain(x, target=target)
    assert got.attributions.shape == (3, 2, 1, 32, 32) and got.tokens.shape == (3, 2, 16)
    for j in range(2):
        logits, attentions = reference_forward(model, x)
        score = logits.gather(1, target[:, j:j + 1]).sum()
        grads = torch.autograd.grad(score, attentions)
        expect = chefer_paper([a.detach() for a in attentions], grads)
        torch.testing.assert_close(got.tokens[:, j], expect, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got.scores[:, j], logits.detach().gather(1, target[:, j:j + 1])[:, 0])
    assert torch.equal(got.targets, target)


def test_gradient_rollout_equals_vit_explain_grad_rollout():
    model, x = tiny_vit(layers=2), images(2)
    logits, attentions = reference_forward(model, x)
    grads = torch.autograd.grad(logits[:, 2].sum(), attentions)
    fused = [(a.detach() * g).mean(1, keepdim=True).clamp(min=0) for a, g in zip(attentions, grads)]
    expect = vit_explain_rollout(fused, 0.3)
    got = xt.AttentionGradRollout(model, discard_ratio=0.3).explain(x, target=2)
    torch.testing.assert_close(got.tokens, expect, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [xt.AttentionRollout, xt.AttentionGradRollout, xt.TransformerAttribution])
def test_batch_size_and_k_targets_give_each_rows_own_result(cls):
    model, x = tiny_vit(), images(3)
    target = torch.tensor([[1, 3], [0, 4], [2, 2]])
    full = cls(model).explain(x, target=target)
    one = cls(model, batch_size=1).explain(x, target=target)
    torch.testing.assert_close(one.attributions, full.attributions, rtol=1e-4, atol=1e-6)
    for j in range(2):
        alone = cls(model)(x[1:2], target=int(target[1, j]))
        torch.testing.assert_close(alone, full.attributions[1:2, j], rtol=1e-4, atol=1e-6)
    assert full.scores.shape == (3, 2)


def test_a_model_without_prefix_tokens_uses_the_mean_over_rows():
    model = tiny_timm(class_token=False, global_pool="avg")
    x = images(2)
    with xt.capture_attention(model) as att:
        model(x)
    res = xt.AttentionRollout(model).explain(x)
    assert res.prefix_tokens == 0 and res.grid == (4, 4)
    expect = xt.attention.rollout([a.mean(1) for a in att.maps]).mean(dim=1)
    torch.testing.assert_close(res.tokens, expect.detach(), rtol=1e-5, atol=1e-7)


def test_non_square_grids_and_register_tokens_are_detected_or_given():
    wide = tiny_timm(img_size=(16, 32))
    res = xt.TransformerAttribution(wide).explain(images(2, (16, 32)))
    assert res.grid == (2, 4) and res.prefix_tokens == 1 and res.attributions.shape == (2, 1, 16, 32)
    regs = tiny_timm(reg_tokens=4)
    res = xt.AttentionRollout(regs, upsample=False).explain(images(2))
    assert res.prefix_tokens == 5 and res.attributions.shape == (2, 1, 4, 4)
    given = xt.AttentionRollout(regs, prefix_tokens=5, grid=(4, 4), upsample=False)(images(2))
    torch.testing.assert_close(given, res.attributions)


def test_patch_layout():
    assert patch_layout(197, (224, 224)) == (1, (14, 14))
    assert patch_layout(198, (224, 224)) == (2, (14, 14))      # DeiT distilled
    assert patch_layout(201, (224, 224)) == (5, (14, 14))      # CLS + 4 registers
    assert patch_layout(196, (224, 224)) == (0, (14, 14))
    assert patch_layout(9, (16, 32)) == (1, (2, 4))
    assert patch_layout(9, (16, 32), grid=(2, 4)) == (1, (2, 4))
    assert patch_layout(17, (32, 32), prefix_tokens=1) == (1, (4, 4))


def test_blocks_choose_attention_calls_by_index_or_module():
    model, x = tiny_vit(layers=3), images(2)
    with torch.no_grad():
        _, attentions = reference_forward(model, x)
    last = xt.AttentionRollout(model, blocks=[-1]).explain(x)
    torch.testing.assert_close(last.tokens, vit_explain_rollout(attentions[-1:], 0.0), rtol=1e-4, atol=1e-6)
    named = xt.AttentionRollout(model, blocks=["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_2"])
    torch.testing.assert_close(named(x), xt.AttentionRollout(model, blocks=[1, 2])(x))


class NoAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.mark.parametrize("cls", [xt.AttentionRollout, xt.TransformerAttribution])
def test_bad_input_raises_xai_error_and_changes_nothing(cls):
    model, x = tiny_vit(), images(2)
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError, match="scaled_dot_product_attention.*MultiheadAttention"):
        cls(NoAttention())(x)
    with pytest.raises(xt.XaiError, match=r"blocks=\[0, 5\].*\[5\].*2 attention calls"):
        cls(model, blocks=[0, 5])(x)
    with pytest.raises(xt.XaiError, match="17 tokens for a 32x32 input.*prefix_tokens=3"):
        cls(model, prefix_tokens=3)(x)
    with pytest.raises(xt.XaiError, match=r"17 tokens.*grid=\(5, 4\)"):
        cls(model, grid=(5, 4))(x)
    with pytest.raises(xt.XaiError, match="closest|encoder"):
        cls(model, blocks="encoder.nope")
    for bad in ({"grid": (4,)}, {"prefix_tokens": -1}, {"upsample": "yes"}):
        with pytest.raises(xt.XaiError):
            cls(model, **bad)
    with pytest.raises(xt.XaiError, match="target"):
        cls(model)(x, target=5)
    assert_no_trace(before, snapshot(model, x))
    with pytest.raises(xt.XaiError, match="head_fusion"):
        xt.AttentionRollout(model, head_fusion="median")
    with pytest.raises(xt.XaiError, match="discard_ratio"):
        xt.AttentionRollout(model, discard_ratio=1.0)


def test_windowed_attention_is_refused_with_the_shapes():
    """torchvision Swin and MaxViT: the softmax of each window is caught, but there is no map over the image."""
    torch.manual_seed(0)
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                              window_size=[2, 2], num_classes=5).eval()
    x = images(1, (16, 16))
    with xt.capture_attention(swin) as att:
        swin(x)
    assert [c.kind for c in att.calls] == ["softmax", "softmax"]
    assert [tuple(c.probs.shape) for c in att.calls] == [(4, 1, 4, 4), (1, 1, 4, 4)]
    with pytest.raises(xt.XaiError, match=r"one T, for the 1 images.*softmax\(4, 1, 4, 4\).*Windowed"):
        xt.AttentionRollout(swin)(x)
    maxvit = torchvision.models.MaxVit(input_size=(16, 16), stem_channels=8, partition_size=2, block_channels=[8],
                                       block_layers=[1], head_dim=4, stochastic_depth_prob=0.0, num_classes=5).eval()
    expect = maxvit(x)
    with xt.capture_attention(maxvit) as att:
        torch.testing.assert_close(maxvit(x), expect)
    assert [(c.kind, c.module.rsplit(".", 3)[-3]) for c in att.calls] == [("softmax", "window_attention"),
                                                                         ("softmax", "grid_attention")]
    assert [tuple(c.probs.shape) for c in att.calls] == [(4, 2, 4, 4), (4, 2, 4, 4)]   # 4 windows, 2 heads


def test_gradient_methods_work_under_the_users_no_grad_and_inference_mode():
    model, x = tiny_vit(), images(2)
    for cls in (xt.TransformerAttribution, xt.LeGrad):
        expect = cls(model)(x, target=1)
        with torch.inference_mode():
            torch.testing.assert_close(cls(model)(x, target=1), expect)
        with torch.no_grad():
            torch.testing.assert_close(cls(model)(x, target=1), expect)
