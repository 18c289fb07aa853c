"""The method registry (xai_torch/presets.py): one record per method, aliases and groups."""
import pytest
import torchvision

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.models import IMAGENET_NORMALIZE
from xai_torch.presets import ALIASES, FAMILIES, FULL_ONLY_FAMILIES, GROUPS, KINDS, METHODS, Calls, resolve


def test_method_names_aliases_and_groups():
    assert resolve("IG, gradcam++, Guided-Backprop, shap, ig") == [
        "integrated_gradients", "gradcam_pp", "guided_backprop", "kernel_shap"]
    assert resolve("all") == list(METHODS)
    assert resolve(["gradient", "sg"]) == ["gradient", "smoothgrad"]
    fast = resolve("fast")
    assert "gradcam" in fast and not any(METHODS[m].slow for m in fast)
    assert resolve("demo") == GROUPS["demo"] and "scorecam" not in GROUPS["demo"]
    assert all(ALIASES[a] in METHODS for a in ALIASES)
    with pytest.raises(XaiError, match=r"unknown method\(s\) \['gradcm'\].*Did you mean gradcam"):
        resolve("gradcm")


def test_every_method_builds_an_explainer(lite0):
    resnet = torchvision.models.resnet18(weights=None)
    for name, spec in METHODS.items():
        assert spec.name == name and spec.kind in KINDS and spec.family in FAMILIES + FULL_ONLY_FAMILIES, name
        assert spec.family in FAMILIES or spec.demo is None, name   # a --full family stays out of the demo
        assert isinstance(getattr(xt, spec.cls), type), name  # a public class
        assert isinstance(spec.build(lite0), xt.Explainer), name
        assert isinstance(spec.build(lite0, demo=True), xt.Explainer), name
        # another model: its CAM layer, its normalisation, other path steps
        e = spec.build(resnet, layer="layer4", normalize=IMAGENET_NORMALIZE, steps=7)
        assert isinstance(e, xt.Explainer), name
        if spec.layer:
            assert "layer4" in repr(e), name
        if spec.steps and spec.min_steps <= 7:
            assert e.steps == 7, name
        calls = spec.model_calls()
        assert isinstance(calls, Calls) and calls.forward + calls.gradient >= 1, name
    assert METHODS["ig_adaptive"].build(resnet, steps=7).steps == 32  # its least budget
    # options override the preset, and a keyword the class does not take is an XaiError naming the method
    assert METHODS["lime"].build(resnet, samples=50).samples == 50
    with pytest.raises(XaiError, match="'gradient'"):
        METHODS["gradient"].build(resnet, steps=3, bogus=1)


def test_model_calls_follow_the_keywords():
    assert METHODS["integrated_gradients"].model_calls(steps=10) == Calls(2, 10)
    assert METHODS["scorecam"].model_calls(channels=512) == Calls(513, 0)
    assert METHODS["occlusion"].model_calls() == Calls(1 + 13 * 13, 0)
    assert METHODS["occlusion"].model_calls(demo=True) == Calls(1 + 7 * 7, 0)
    assert METHODS["rise"].model_calls(demo=True).forward < METHODS["rise"].model_calls().forward
