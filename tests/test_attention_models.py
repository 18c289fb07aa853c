"""LeGrad against torch-cam 0.5, the attention methods on timm and Hugging Face ViTs, and a
localisation check on a ViT trained here on a task with known object masks (issue 17 item 2)."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import xai_torch as xt

from attention_helpers import images, tiny_timm, tiny_vit
from conftest import assert_no_trace, snapshot

METHODS = [xt.AttentionRollout, xt.AttentionGradRollout, xt.TransformerAttribution, xt.LeGrad]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parity
@pytest.mark.parametrize("blocks", [None, [-2, -1]])
def test_legrad_equals_torchcam_on_torchvision_vit(blocks):
    from torchcam.methods import LeGrad as TorchCamLeGrad

    model, x = tiny_vit(layers=3), images(3)
    layers = list(model.encoder.layers)[slice(None) if blocks is None else slice(-2, None)]
    classes = [1, 3, 0]
    with TorchCamLeGrad(model, layers) as extractor:
        expect = extractor(classes, model(x), normalized=False)[0]       # (B, h, w), one class per image
    got = xt.LeGrad(model, blocks=blocks).explain(x, target=classes)
    torch.testing.assert_close(got.tokens.reshape(3, 4, 4), expect, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(xt.LeGrad(model, blocks=blocks, upsample=False)(x, target=classes)[:, 0], expect,
                               rtol=1e-5, atol=1e-8)


def test_legrad_bad_blocks_and_unknown_heads_raise():
    model = tiny_vit()
    with pytest.raises(xt.XaiError, match=r"blocks \[4\] that do not exist: the model has 2 blocks"):
        xt.LeGrad(model, blocks=[0, 4])
    cnn, x = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), images(1)   # built (as the registry does), refused
    with pytest.raises(xt.XaiError, match="head="):
        xt.LeGrad(cnn, blocks="0")(x)
    with pytest.raises(xt.XaiError, match="no transformer blocks"):
        xt.LeGrad(cnn)(x)


@pytest.mark.parametrize("cls", METHODS)
def test_timm_vit_fused_attention_explained_without_trace(cls):
    model, x = tiny_timm(), images(2)
    before = snapshot(model, x)
    res = cls(model).explain(x, target=[[1, 2], [3, 4]])
    assert res.attributions.shape == (2, 2, 1, 32, 32) and res.prefix_tokens == 1 and res.grid == (4, 4)
    assert bool(torch.isfinite(res.attributions).all()) and float(res.attributions.abs().sum()) > 0
    assert_no_trace(before, snapshot(model, x))
    for blk in model.blocks:   # the explicit softmax path gives the same maps
        blk.attn.fused_attn = False
    torch.testing.assert_close(cls(model)(x, target=[[1, 2], [3, 4]]), res.attributions, rtol=1e-4, atol=1e-6)


def test_hugging_face_vit_sdpa_and_eager_give_the_same_maps():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                       intermediate_size=32, num_labels=5)
    model = ViTForImageClassification(config).eval()   # its output is an object with .logits
    x = images(2)
    results = {}
    for impl in ("sdpa", "eager"):
        model.config._attn_implementation = impl
        with xt.capture_attention(model) as att:
            model(x)
        assert [c.kind for c in att.calls] == (["sdpa"] * 2 if impl == "sdpa" else ["softmax"] * 2)
        results[impl] = [cls(model).explain(x, target=[1, 3]) for cls in METHODS]
    for a, b in zip(results["sdpa"], results["eager"]):
        torch.testing.assert_close(a.attributions, b.attributions, rtol=1e-4, atol=1e-6)
        assert a.prefix_tokens == 1 and a.grid == (4, 4)


# --- localisation ----------------------------------------------------------------------------
def squares(n: int, g: torch.Generator):
    """16 x 16 images of faint noise with one 8 x 8 square (2 x 2 of the 4 x 4 patches) in the
    channel of its class: (x, class, (n, 16) mask of the object's patches)."""
    cls = torch.randint(0, 3, (n,), generator=g)
    r, c = (torch.randint(0, 3, (n, 1, 1), generator=g) for _ in range(2))
    rows, cols = torch.arange(4)[None, :, None], torch.arange(4)[None, None, :]
    mask = ((rows >= r) & (rows <= r + 1) & (cols >= c) & (cols <= c + 1)).float()
    obj = mask[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3 + 0.8 * obj * F.one_hot(cls, 3).float()[:, :, None, None]
    return x, cls, mask.reshape(n, 16)


def test_a_vit_trained_to_find_squares_puts_most_rollout_and_chefer_mass_on_them():
    """About 2 s: 40 Adam steps of 32 images. The object covers a quarter of the patches."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        x, y, _ = squares(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, mask = squares(32, torch.Generator().manual_seed(100))
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all())   # it learned the task
    for cls in (xt.AttentionRollout, xt.TransformerAttribution):
        tokens = cls(model).explain(x, target=y).tokens
        on_object = (tokens * mask).sum(1) / tokens.sum(1)
        assert float(on_object.mean()) > 0.5, (cls.__name__, on_object)   # chance: 0.25
