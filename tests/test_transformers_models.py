"""The CAM family and the gradient / perturbation methods on the transformer models users load:
torchvision ViT / Swin (v1, v2) / MaxViT, timm ViT / DeiT (distillation token) / Swin / ConvNeXt and
Hugging Face ViT, all tiny and at 32 px. CAM's token reshape is chosen automatically and gives the
maps the explicit ``reshape=`` gives."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Optional

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.layers import AutoReshape, auto_reshape, patch_grid, prefix_tokens

tvm = pytest.importorskip("torchvision.models")  # timm and transformers: skipped per test without them

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _tv_vit() -> nn.Module:
    vit = tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                num_classes=10)
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero: no gradient at all
    return vit


def _tv_swin(v2: bool = False) -> nn.Module:
    from torchvision.models import swin_transformer as sw

    extra = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} if v2 else {}
    return sw.SwinTransformer(patch_size=[4, 4], embed_dim=12, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
                              num_classes=10, **extra)


def _tv_maxvit() -> nn.Module:
    return tvm.maxvit.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[12, 16],
                             block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=10)


def _timm(name: str, **kw: Any) -> nn.Module:
    return pytest.importorskip("timm").create_model(name, pretrained=False, num_classes=10, **kw)


VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}


def hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    return xt.adapt(transformers.ViTForImageClassification(cfg), input_name="pixel_values")


#: name -> (model factory, a CAM layer whose map is not empty, the explicit reshape of today)
MODELS: dict[str, tuple[Callable[[], nn.Module], str, Optional[Callable[[torch.Tensor], torch.Tensor]]]] = {
    "tv_vit": (_tv_vit, "encoder.layers.encoder_layer_1.ln_1", xt.vit_reshape()),
    "tv_swin": (_tv_swin, "features.1", xt.swin_reshape()),
    "tv_swin_v2": (lambda: _tv_swin(v2=True), "features.3", xt.swin_reshape()),
    "tv_maxvit": (_tv_maxvit, "blocks.0", None),
    "timm_vit": (lambda: _timm("vit_tiny_patch16_224", **VIT), "blocks.1.norm1", xt.vit_reshape()),
    "timm_deit": (lambda: _timm("deit_tiny_distilled_patch16_224", **VIT), "blocks.0", xt.vit_reshape(prefix_tokens=2)),
    "timm_swin": (lambda: _timm("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, embed_dim=12, depths=(1, 1),
                                num_heads=(1, 1), window_size=2), "layers.1", xt.swin_reshape()),
    "timm_convnext": (lambda: _timm("convnext_atto", dims=(8, 12, 16, 20), depths=(1, 1, 1, 1)), "stages.1", None),
    "hf_vit": (hf_vit, "vit.layers.1.layernorm_before", xt.vit_reshape()),
}
_BUILT: dict[str, nn.Module] = {}


def model(name: str) -> nn.Module:
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = MODELS[name][0]().eval()
    return _BUILT[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_gradcam_chooses_the_reshape_and_equals_the_explicit_one(name: str) -> None:
    m, (_, layer, explicit) = model(name), MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", xt.XaiWarning)  # a reachable layer: no warning
        auto = xt.GradCAM(m, layer=layer)(X, target=1)
    same = xt.GradCAM(m, layer=layer, reshape=explicit or (lambda t: t))(X, target=1)
    assert auto.shape == (2, 1, 32, 32) and torch.isfinite(auto).all() and auto.abs().sum() > 0
    torch.testing.assert_close(auto, same, rtol=0, atol=0)


@pytest.mark.parametrize("cls", ["GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM", "ScoreCAM"])
@pytest.mark.parametrize("name", ["tv_vit", "tv_swin"])
def test_the_cam_family_chooses_the_reshape(cls: str, name: str) -> None:
    m, (_, layer, explicit) = model(name), MODELS[name]
    auto = getattr(xt, cls)(m, layer=layer)(X, target=2)
    assert auto.shape == (2, 1, 32, 32) and torch.isfinite(auto).all()
    torch.testing.assert_close(auto, getattr(xt, cls)(m, layer=layer, reshape=explicit)(X, target=2), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_ig_occlusion_on_each_model(name: str) -> None:
    m = model(name)
    target = 3
    with torch.no_grad():
        f = m(X)[:, target]
        occluded = X.clone()
        occluded[:, :, :16, :16] = 0
        f_occ = m(occluded)[:, target]
    grad = xt.Gradient(m)(X, target=target)
    xg = X.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(m(xg)[:, target].sum(), xg)
    torch.testing.assert_close(grad, ref.abs().amax(1, keepdim=True) if grad.shape[1] == 1 else ref)
    ig = xt.IntegratedGradients(m, steps=2, method="riemann_middle")(X, target=target, baseline=torch.zeros_like(X))
    path = torch.cat([X / 4, 3 * X / 4]).requires_grad_(True)  # the midpoints of 2 steps from the zero baseline
    (g,) = torch.autograd.grad(m(path)[:, target].sum(), path)
    torch.testing.assert_close(ig, X * (g[:2] + g[2:]) / 2, rtol=1e-4, atol=1e-6)
    occ = xt.Occlusion(m, window=(3, 16, 16), stride=(3, 16, 16)).explain(X, target=target)
    torch.testing.assert_close(occ.drops.flatten(1)[:, 0], f - f_occ, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,layer", [("tv_vit", "encoder.layers.encoder_layer_1"), ("timm_vit", "blocks.1"),
                                        ("hf_vit", "vit.layers.1"), ("tv_vit", "encoder.ln")])
def test_the_last_vit_block_warns(name: str, layer: str) -> None:
    with pytest.warns(xt.XaiWarning, match=f"spatial tokens of layer '{layer}' do not reach the output"):
        maps = xt.GradCAM(model(name), layer=layer)(X, target=1)
    assert not maps.any()


def test_prefix_tokens_and_grid_from_the_model() -> None:
    names = ("tv_vit", "timm_vit", "timm_deit", "hf_vit", "tv_swin")
    assert [prefix_tokens(model(n)) for n in names] == [1, 1, 2, 1, 0]
    assert [patch_grid(model(n)) for n in ("tv_vit", "timm_deit", "hf_vit", "tv_maxvit")] == [(4, 4)] * 3 + [None]
    reg = _timm("vit_tiny_patch16_224", reg_tokens=3, **VIT)
    assert prefix_tokens(reg) == 4
    grid = auto_reshape(reg, [("blocks.0", reg.blocks[0])])(torch.arange(2 * 20 * 5.0).reshape(2, 20, 5))
    torch.testing.assert_close(grid, xt.vit_reshape(prefix_tokens=4)(torch.arange(2 * 20 * 5.0).reshape(2, 20, 5)))
    # the patch embedding's tokens have no prefix: they fit with none
    vit = model("tv_vit")
    tokens = torch.randn(1, 16, 16)
    torch.testing.assert_close(AutoReshape(vit, [])(tokens), xt.vit_reshape(prefix_tokens=0)(tokens))


def test_channels_last_when_the_shape_cannot_tell() -> None:
    """(B, 8, 8, 8): Swin's patch embedding is channels-last, MaxViT's blocks channels-first."""
    from torchvision.models import swin_transformer as sw

    swin = sw.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                              window_size=[2, 2]).eval()
    t = torch.randn(1, 8, 8, 8)
    assert AutoReshape(swin, [("features.0", swin.features[0])])(t).equal(t.permute(0, 3, 1, 2))
    maxvit = model("tv_maxvit")
    assert AutoReshape(maxvit, [("blocks.0", maxvit.blocks[0])])(t) is t
    auto = xt.GradCAM(swin, layer="features.0")(X, target=0)
    torch.testing.assert_close(auto, xt.GradCAM(swin, layer="features.0", reshape=xt.swin_reshape())(X, target=0),
                               rtol=0, atol=0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.LazyLinear(2))  # no attention: as is
    assert AutoReshape(cnn, [("0", cnn[0])])(torch.zeros(1, 8, 8, 3)).shape == (1, 8, 8, 3)


class _Tokens(nn.Module):
    """Patch tokens plus 2 extra tokens the model does not declare: 18 tokens fit no grid."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 8, stride=8)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.mix(torch.cat([t, t[:, :2]], 1))
        return self.head(t.mean(1))


def test_tokens_that_fit_no_grid_and_pooled_layers_are_refused() -> None:
    with pytest.raises(xt.XaiError, match=r"has 18 tokens; with 0 prefix token\(s\).*18 are left.*nor a square.*"
                                          r"vit_reshape\(prefix_tokens="):
        xt.GradCAM(_Tokens(), layer="mix")(X)
    vit = model("tv_vit")
    with pytest.raises(xt.XaiError, match=r"19 tokens; with 1 prefix.*18 are left.*4 x 4 patch grid"):
        AutoReshape(vit, [("encoder.layers.encoder_layer_0", vit.encoder.layers[0])])(torch.zeros(1, 19, 16))
    with pytest.raises(xt.XaiError, match=r"'heads.head' is a .*choose a layer before the pooling"):
        xt.GradCAM(vit, layer="heads.head")(X)
    m = _Tokens()
    fixed = xt.GradCAM(m, layer="mix", reshape=lambda t: t[:, :16].transpose(1, 2).reshape(-1, 4, 4, 4))(X)
    assert fixed.shape == (2, 1, 32, 32)  # the explicit reshape= still overrides


def test_hugging_face_output_objects_need_no_adapter() -> None:
    """ViTForImageClassification takes pixel_values first and returns an ImageClassifierOutput: its
    ``logits`` are explained, as through ``xt.adapt``."""
    adapter = model("hf_vit")
    raw = adapter.wrapped
    assert not isinstance(raw(X), torch.Tensor)
    layer = "vit.layers.1.layernorm_before"
    for build in (lambda m: xt.GradCAM(m, layer=layer), xt.Gradient,
                  lambda m: xt.Occlusion(m, window=(3, 16, 16), stride=(3, 16, 16))):
        torch.testing.assert_close(build(raw)(X, target=4), build(adapter)(X, target=4), rtol=0, atol=0)
    picked = xt.GradCAM(raw, layer=layer, select_output=lambda out: out.logits)(X, target=4)  # a user selector
    torch.testing.assert_close(picked, xt.GradCAM(adapter, layer=layer)(X, target=4), rtol=0, atol=0)
