"""The contract every explainer and metric keeps (DESIGN.md), checked on all of them.

First a few cross-method checks found by review (inputs never written, inference mode,
training-mode buffers, wrapped explainers keep their scoring, per-image arguments); then the
contract parametrized over every public explainer and metric, from one table of recipes: no
trace after success / an exception / a KeyboardInterrupt inside the forward, bad input ->
``xt.XaiError`` with nothing changed, same seed -> same bits, ``batch_size`` and the other
images of the batch change nothing."""
import copy
import dataclasses
import inspect
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import xai_torch as xt
import xai_torch.metrics as xm

from attention_helpers import TinyViTNet
from conftest import SmallNet, assert_no_trace, snapshot


@pytest.fixture
def inplace_first():
    """A model whose first op writes into its input."""
    torch.manual_seed(0)
    return nn.Sequential(nn.ReLU(inplace=True), SmallNet()).eval()


def grid_labels(size=16, cells=2):
    idx = torch.arange(size) * cells // size
    return (idx[:, None] * cells + idx[None, :]).expand(2, size, size)


def test_forward_only_methods_never_hand_the_users_input_to_the_model(inplace_first):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    seg = grid_labels()
    for explainer, kwargs in ((xt.Occlusion(inplace_first, window=4), {}),
                              (xt.RISE(inplace_first, masks=8, cell=4, seed=0), {}),
                              (xt.LIME(inplace_first, samples=8, seed=0), {"segments": seg}),
                              (xt.KernelSHAP(inplace_first, samples=8, seed=0), {"segments": seg})):
        explainer(x, target=1, **kwargs)
        assert torch.equal(x, x0), type(explainer).__name__


def test_path_methods_work_under_inference_mode(small, small_x):
    expect = xt.IntegratedGradients(small, steps=4)(small_x, target=1)
    with torch.inference_mode():
        got = xt.IntegratedGradients(small, steps=4)(small_x, target=1)
    torch.testing.assert_close(got, expect)


def test_smoothgrad_restores_buffers_of_a_model_in_training_mode(small, small_x):
    small.train()
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.warns(xt.XaiWarning):
        xt.SmoothGrad(xt.Gradient(small), samples=2).explain(small_x)
    for k, v in small.state_dict().items():
        assert torch.equal(v, before[k]), k
    small.eval()


def test_smoothgrad_keeps_the_wrapped_explainers_scoring(small, small_x):
    rise = xt.RISE(small, masks=16, cell=4, seed=0)
    smooth = xt.SmoothGrad(rise, samples=1, noise=0.0)(small_x, target=1)
    torch.testing.assert_close(smooth, rise(small_x, target=1))  # softmax, as RISE scores
    seg = grid_labels(12, 3)[:1].expand(3, 12, 12)
    lime = xt.LIME(small, samples=12, seed=0)
    smooth = xt.SmoothGrad(lime, samples=1, noise=0.0)(small_x, target=1, segments=seg)
    torch.testing.assert_close(smooth, lime(small_x, target=1, segments=seg))
    one = xt.SmoothGrad(lime, samples=2, noise=0.0)(small_x[:1], target=1, segments=seg[:1])
    assert one.shape == (1, 1, 12, 12)


def test_xrai_fast_without_a_pixel_floor_has_no_nan(small, small_x):
    masks = torch.zeros(4, 12, 12, dtype=torch.bool)
    masks[0, :6], masks[1, :6], masks[2, 6:], masks[3] = True, True, True, True
    res = xt.XRAI(small, algorithm="fast", min_pixel_diff=0).explain(small_x[:1], segments=[masks],
                                                                     base_attribution=torch.randn(1, 3, 12, 12))
    assert all(bool(torch.isfinite(g).all()) for g in res.gains)
    assert xt.XRAI(small, steps=2)(small_x[0], segments=[masks], base_attribution=torch.randn(3, 12, 12)).shape \
        == (1, 1, 12, 12)


def test_relative_delta_of_a_path_of_length_zero(small):
    res = xt.IntegratedGradients(small, steps=4).explain(torch.full((1, 3, 12, 12), 0.5))
    assert float(res.relative_delta) == 0.0 and float(res.delta) == 0.0


# ============================================================================================
# The contract, parametrized over every public explainer and metric (issue 14, item 6).
#
# Explainers are found by introspection (every ``xt.Explainer`` subclass in ``xt.__all__``),
# metrics as every function in ``xt.metrics.__all__``; each needs one recipe below, and
# ``test_every_public_explainer_and_metric_has_a_recipe`` names the ones without. A new public
# explainer or metric is therefore in the contract as soon as it is exported.
H = W = 10        # tiny images: every check runs in milliseconds
CLASSES = 5       # SmallNet's outputs; target CLASSES is out of range


class Faulty(nn.Module):
    """SmallNet behind a wrapper that counts forwards, records the exceptions they raise, and
    on call ``fail_at`` raises ``error`` inside the inner forward (after conv1, bn and the
    reused ReLU ran, before conv2): the failure happens mid-work, with hooks live."""

    def __init__(self, net: Callable[..., nn.Module] = SmallNet) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = net(classes=CLASSES)
        self.calls, self.fail_at, self.raised = 0, 0, []
        self.error: BaseException = RuntimeError("injected failure")

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            self.net.fail_with = self.error
        try:
            return self.net(x)
        except BaseException as err:
            self.raised.append(err)
            raise
        finally:
            self.net.fail_with = None


pytestmark = pytest.mark.usefixtures("one_thread")


def user_model(name: str = "") -> Faulty:
    """A model as a user hands it over: eval mode, one frozen parameter, one parameter with a
    ``.grad`` from their own training step (a method must neither zero nor accumulate it).
    SmallNet inside, or the net of the recipe of explainer ``name`` (transformers)."""
    model = Faulty(net_of(name)).eval()
    model.net.conv1.bias.requires_grad_(False)
    model.net.fc.weight.grad = torch.full_like(model.net.fc.weight, 0.5)
    return model


def images(b: int = 2, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, H, W, generator=torch.Generator().manual_seed(seed))


def grid(x: torch.Tensor, cells: int = 2) -> torch.Tensor:
    """(B, H, W) integer segments: a cells x cells grid."""
    h, w = x.shape[-2:]
    rows, cols = torch.arange(h) * cells // h, torch.arange(w) * cells // w
    return (rows[:, None] * cells + cols[None, :]).expand(x.shape[0] if x.ndim == 4 else 1, h, w).clone()


def region_masks(x: torch.Tensor) -> list:
    """XRAI's per-image candidate masks: the grid cells, as (n, H, W) bool."""
    seg = grid(x)
    return [torch.stack([s == v for v in s.unique()]) for s in seg]


def attribution_of(x: torch.Tensor) -> torch.Tensor:
    """A fixed, tie-free attribution of the shape of ``x`` as a batch (``(C, H, W)`` is B = 1),
    each image's from that image alone."""
    x = x if x.ndim != 3 else x[None]
    return (x * torch.linspace(-1.0, 1.0, x[0].numel()).reshape(x.shape[1:])).detach()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build and call one explainer on the tiny model.

    build: (model, x, **options) -> explainer; options hold ``batch_size`` (and the wrapped
        explainer's for SmoothGrad); ``x`` only gives shapes (ExpectedGradients' background).
    call: x -> the per-call keywords (``segments=``, ``base_attribution=``...).
    """

    build: Callable[..., Any]
    call: Callable[[torch.Tensor], dict] = lambda x: {}
    #: the net inside the Faulty wrapper, ``net(classes=...)`` (default SmallNet): the attention
    #: methods need a transformer (TinyViTNet: SmallNet's layer names around attention blocks)
    net: Callable[..., nn.Module] = SmallNet


def _cam(cls, **kw):
    return Recipe(lambda m, x, **o: cls(m, layer="net.conv2", **kw, **o))


def _vit(cls, **kw):
    return Recipe(lambda m, x, **o: cls(m, **kw, **o), net=TinyViTNet)


def net_of(name: str) -> Callable[..., nn.Module]:
    recipe = EXPLAINER_RECIPES.get(name)
    return SmallNet if recipe is None else recipe.net


def _background(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(4, *x.shape[-3:], generator=torch.Generator().manual_seed(9))


EXPLAINER_RECIPES: dict[str, Recipe] = {
    "Gradient": Recipe(lambda m, x, **o: xt.Gradient(m, **o)),
    "InputXGradient": Recipe(lambda m, x, **o: xt.InputXGradient(m, **o)),
    "GuidedBackprop": Recipe(lambda m, x, **o: xt.GuidedBackprop(m, **o)),
    "Deconvnet": Recipe(lambda m, x, **o: xt.Deconvnet(m, **o)),
    "CAM": _cam(xt.CAM),
    "GradCAM": _cam(xt.GradCAM),
    "GradCAMPlusPlus": _cam(xt.GradCAMPlusPlus),
    "HiResCAM": _cam(xt.HiResCAM),
    "XGradCAM": _cam(xt.XGradCAM),
    "LayerCAM": _cam(xt.LayerCAM),
    "ScoreCAM": _cam(xt.ScoreCAM),
    "GuidedGradCAM": _cam(xt.GuidedGradCAM),
    "EigenCAM": _cam(xt.EigenCAM),
    "EigenGradCAM": _cam(xt.EigenGradCAM),
    "AblationCAM": _cam(xt.AblationCAM),
    "FullGrad": Recipe(lambda m, x, **o: xt.FullGrad(m, **o)),
    "IntegratedGradients": Recipe(lambda m, x, **o: xt.IntegratedGradients(m, steps=4, **o)),
    "BlurIG": Recipe(lambda m, x, **o: xt.BlurIG(m, steps=4, max_sigma=2.0, **o)),
    "GuidedIG": Recipe(lambda m, x, **o: xt.GuidedIG(m, steps=4, **o)),
    "ExpectedGradients": Recipe(lambda m, x, **o: xt.ExpectedGradients(m, _background(x), samples=4, seed=0, **o)),
    "DeepLift": Recipe(lambda m, x, **o: xt.DeepLift(m, **o)),
    "DeepLiftShap": Recipe(lambda m, x, **o: xt.DeepLiftShap(m, _background(x), **o)),
    "LRP": Recipe(lambda m, x, **o: xt.LRP(m, "epsilon_gamma_box", **o)),
    "LayerConductance": Recipe(lambda m, x, **o: xt.LayerConductance(m, "net.conv2", steps=3, **o)),
    "XRAI": Recipe(lambda m, x, **o: xt.XRAI(m, steps=4, min_pixel_diff=0, **o),
                   lambda x: {"segments": region_masks(x)}),
    "LIME": Recipe(lambda m, x, **o: xt.LIME(m, samples=8, seed=0, **o), lambda x: {"segments": grid(x)}),
    "KernelSHAP": Recipe(lambda m, x, **o: xt.KernelSHAP(m, samples=8, seed=0, **o), lambda x: {"segments": grid(x)}),
    "PartitionSHAP": Recipe(lambda m, x, **o: xt.PartitionSHAP(m, masker="blur(3,3)", max_evals=16, seed=0, **o)),
    "Occlusion": Recipe(lambda m, x, **o: xt.Occlusion(m, window=5, **o)),
    "RISE": Recipe(lambda m, x, **o: xt.RISE(m, masks=8, cell=5, seed=0, **o)),
    "SmoothGrad": Recipe(lambda m, x, **o: xt.SmoothGrad(xt.Gradient(m, **o), samples=3, seed=0)),
    "AttentionRollout": _vit(xt.AttentionRollout, discard_ratio=0.2),
    "AttentionGradRollout": _vit(xt.AttentionGradRollout),
    "TransformerAttribution": _vit(xt.TransformerAttribution),
    "LeGrad": Recipe(lambda m, x, **o: xt.LeGrad(m, head=lambda t: m.net.head(t), **o), net=TinyViTNet),
}


@dataclasses.dataclass(frozen=True)
class ModelMetric:
    """A metric that runs the model: ``run(model, x, target, batch_size) -> result``."""

    run: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class PureMetric:
    """A model-free function: ``args()`` / ``bad()`` give ``(args, kwargs)`` of a valid call
    and of a call that must raise ``xt.XaiError``."""

    args: Callable[[], tuple]
    bad: Callable[[], tuple]


def _maps(b: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.rand(b, H, W, generator=torch.Generator().manual_seed(seed))


def _boxes(b: int = 2) -> torch.Tensor:
    m = torch.zeros(b, H, W, dtype=torch.bool)
    m[:, 2:6, 3:8] = True
    return m


def _road_mask() -> torch.Tensor:
    m = torch.zeros(1, H, W, dtype=torch.bool)
    m[0, 3:6, 4:7] = True
    return m


def _pic_results() -> list:
    x = images()
    return [xm.pic(Faulty().eval(), x, attribution_of(x), input_range=(0.0, 1.0), min_pred_value=0.0, workers=1)]

def _sign_flipped(model: nn.Module) -> nn.Module:
    """A copy of the user's model with its last layer negated (data_randomization's second model)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.net.fc.weight.neg_()
    return twin


METRIC_RECIPES: dict[str, Any] = {
    "deletion": ModelMetric(lambda m, x, t=None, bs=None: xm.deletion(m, x, attribution_of(x), t, step=20,
                                                                       batch_size=bs)),
    "insertion": ModelMetric(lambda m, x, t=None, bs=None: xm.insertion(m, x, attribution_of(x), t, step=20,
                                                                         batch_size=bs)),
    "completeness": ModelMetric(lambda m, x, t=None, bs=None: xm.completeness(m, x, attribution_of(x), t,
                                                                               batch_size=bs)),
    "pic": ModelMetric(lambda m, x, t=None, bs=None: xm.pic(m, x, attribution_of(x), t, input_range=(0.0, 1.0),
                                                             thresholds=(0.1, 0.5), min_pred_value=0.0,
                                                             workers=1, batch_size=bs)),
    "road": ModelMetric(lambda m, x, t=None, bs=None: xm.road(m, x, attribution_of(x), t, fractions=(0.2, 0.6),
                                                               batch_size=bs)),
    "infidelity": ModelMetric(lambda m, x, t=None, bs=None: xm.infidelity(m, x, attribution_of(x), t, samples=4,
                                                                           batch_size=bs)),
    "sensitivity_n": ModelMetric(lambda m, x, t=None, bs=None: xm.sensitivity_n(m, x, attribution_of(x), t, n=5,
                                                                                 subsets=4, batch_size=bs)),
    "max_sensitivity": ModelMetric(lambda m, x, t=None, bs=None: xm.max_sensitivity(
        xt.Gradient(m, batch_size=bs), x, t, samples=3, batch_size=bs)),
    "model_randomization": ModelMetric(lambda m, x, t=None, bs=None: xm.model_randomization(
        m, xt.Gradient(m, batch_size=bs), x, t, similarity=("spearman",), batch_size=bs)),
    "input_invariance": ModelMetric(lambda m, x, t=None, bs=None: xm.input_invariance(
        m, xt.InputXGradient(m, batch_size=bs), x, t, batch_size=bs)),
    "fragility": ModelMetric(lambda m, x, t=None, bs=None: xm.fragility(
        m, xt.Gradient(m, batch_size=bs), x, t, steps=2, k=10, batch_size=bs)),
    "data_randomization": ModelMetric(lambda m, x, t=None, bs=None: xm.data_randomization(
        m, _sign_flipped(m), lambda mm: xt.Gradient(mm, batch_size=bs), x, t, batch_size=bs)),
    "confidence_change": ModelMetric(lambda m, x, t=None, bs=None: xm.confidence_change(m, x, attribution_of(x), t,
                                                                                         batch_size=bs)),
    "average_drop": ModelMetric(lambda m, x, t=None, bs=None: xm.average_drop(m, x, attribution_of(x), t,
                                                                               batch_size=bs)),
    "increase_in_confidence": ModelMetric(lambda m, x, t=None, bs=None: xm.increase_in_confidence(
        m, x, attribution_of(x), t, batch_size=bs)),
    "arcc": ModelMetric(lambda m, x, t=None, bs=None: xm.arcc(m, x, xt.GradCAM(m, layer="net.conv2", batch_size=bs),
                                                               t, fractions=(0.2, 0.6), batch_size=bs)),
    "faithfulness_correlation": ModelMetric(lambda m, x, t=None, bs=None: xm.faithfulness_correlation(
        m, x, attribution_of(x), t, runs=4, subset_size=20, batch_size=bs)),
    "monotonicity_nguyen": ModelMetric(lambda m, x, t=None, bs=None: xm.monotonicity_nguyen(
        m, x, attribution_of(x), t, samples=2, features_in_step=50, batch_size=bs)),
    "monotonicity_arya": ModelMetric(lambda m, x, t=None, bs=None: xm.monotonicity_arya(
        m, x, attribution_of(x), t, features_in_step=50, batch_size=bs)),
    "pixel_flipping": ModelMetric(lambda m, x, t=None, bs=None: xm.pixel_flipping(
        m, x, attribution_of(x), t, features_in_step=50, batch_size=bs)),
    "region_perturbation": ModelMetric(lambda m, x, t=None, bs=None: xm.region_perturbation(
        m, x, attribution_of(x), t, patch_size=5, batch_size=bs)),
    "irof": ModelMetric(lambda m, x, t=None, bs=None: xm.irof(m, x, attribution_of(x), t, segments=grid(x, 3),
                                                               batch_size=bs)),
    "sufficiency": ModelMetric(lambda m, x, t=None, bs=None: xm.sufficiency(m, x, attribution_of(x), t,
                                                                             batch_size=bs)),
    "stability": ModelMetric(lambda m, x, t=None, bs=None: xm.stability(
        xt.SmoothGrad(xt.Gradient(m, batch_size=bs), samples=2, seed=0), x, t, seeds=2, copies=1, bootstrap=20)),
    "samples_needed": ModelMetric(lambda m, x, t=None, bs=None: xm.samples_needed(
        xt.RISE(m, masks=4, cell=5, seed=0, batch_size=bs), x, t, threshold=-1.0)),
    # model-free functions
    "pointing_game": PureMetric(lambda: ((_maps(), _boxes()), {}), lambda: ((_maps(), _boxes(3)), {})),
    "relevance_mass": PureMetric(lambda: ((_maps(), _boxes()), {}), lambda: ((_maps(), _boxes(3)), {})),
    "relevance_rank": PureMetric(lambda: ((_maps(), _boxes()), {}), lambda: ((_maps(), _boxes(3)), {})),
    "causal_auc": PureMetric(lambda: ((torch.rand(2, 6, generator=torch.Generator().manual_seed(1)),), {}),
                             lambda: ((torch.rand(2, 1),), {})),
    "pearson": PureMetric(lambda: ((_maps(), _maps(seed=4)), {}), lambda: ((_maps(), _maps(3)), {})),
    "spearman": PureMetric(lambda: ((_maps(), _maps(seed=4)), {}), lambda: ((_maps(), _maps(3)), {})),
    "ssim": PureMetric(lambda: ((_maps(), _maps(seed=4)), {}), lambda: ((_maps(), _maps(3)), {})),
    "hog_similarity": PureMetric(lambda: ((_maps(), _maps(seed=4)), {"pixels_per_cell": (4, 4),
                                                                     "cells_per_block": (1, 1)}),
                                 lambda: ((_maps(), _maps(3)), {})),
    "coerce_attribution": PureMetric(lambda: ((attribution_of(images()), images()), {}),
                                     lambda: ((torch.rand(2, 3, 4, 4), images()), {})),
    "descending_order": PureMetric(lambda: ((_maps(),), {}), lambda: ((torch.rand(3),), {})),
    "reduce_channels": PureMetric(lambda: ((images(),), {}), lambda: ((images(),), {"how": "nope"})),
    "rise_blur": PureMetric(lambda: ((images(),), {}), lambda: ((images(),), {"size": 0})),
    "generate_random_mask": PureMetric(lambda: ((H, W), {"fraction": 0.2, "batch": 2, "seed": 0}),
                                       lambda: ((H, W), {"fraction": 2.0})),
    "noisy_linear_impute": PureMetric(lambda: ((images(1), _road_mask()),
                                               {"generator": torch.Generator().manual_seed(0)}),
                                      lambda: ((images(1), _road_mask()[:, :5]), {})),
    "aggregate": PureMetric(lambda: ((_pic_results(),), {}), lambda: ((_pic_results(),), {"method": "nope"})),
    "krippendorff_alpha": PureMetric(lambda: (([[1, 2, 3], [1, 3, 2]],), {}), lambda: (([[1, 2, 3]],), {})),
    "cronbach_alpha": PureMetric(lambda: ((_maps(1)[0],), {}), lambda: ((_maps(1)[0, :1],), {})),
    "reliability": PureMetric(lambda: (({"m": {"a": _maps(1)[0, 0, :3], "b": _maps(1)[0, 1, :3]}},),
                                       {"bootstrap_resamples": 20}),
                              lambda: (({"m": {"a": [0.1, 0.2], "b": [0.2, 0.1]}},), {})),
    "sparseness": PureMetric(lambda: ((_maps(),), {}), lambda: ((_maps(),), {"offset": -1.0})),
    "complexity": PureMetric(lambda: ((_maps(),), {}), lambda: ((torch.rand(2, 3, 4, 4, 1),), {})),
    "effective_complexity": PureMetric(lambda: ((_maps(),), {"eps": 0.5}), lambda: ((_maps(),), {"eps": -1.0})),
    "top_k_intersection": PureMetric(lambda: ((_maps(), _boxes()), {"k": 10}),
                                     lambda: ((_maps(), _boxes()), {"k": H * W + 1})),
    "auc": PureMetric(lambda: ((_maps(), _boxes()), {}),
                      lambda: ((_maps(), torch.zeros(2, H, W, dtype=torch.bool)), {})),
    "focus": PureMetric(lambda: ((_maps(), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])), {}),
                        lambda: ((_maps(), torch.tensor([[1, 0, 0]])), {})),
    "make_mosaics": PureMetric(lambda: ((images(4), torch.tensor([0, 0, 1, 1])), {"seed": 0}),
                               lambda: ((images(4), torch.tensor([0, 1, 1, 1])), {})),
    "local_lipschitz_estimate": ModelMetric(lambda m, x, t=None, bs=None: xm.local_lipschitz_estimate(
        xt.Gradient(m, batch_size=bs), x, t, samples=3, batch_size=bs)),
    "relative_input_stability": ModelMetric(lambda m, x, t=None, bs=None: xm.relative_input_stability(
        xt.Gradient(m, batch_size=bs), x, t, samples=3, batch_size=bs)),
    "relative_output_stability": ModelMetric(lambda m, x, t=None, bs=None: xm.relative_output_stability(
        xt.Gradient(m, batch_size=bs), x, t, samples=3, batch_size=bs)),
    "relative_representation_stability": ModelMetric(lambda m, x, t=None, bs=None: (
        xm.relative_representation_stability(xt.Gradient(m, batch_size=bs), x, t, samples=3, batch_size=bs))),
    "random_logit": ModelMetric(lambda m, x, t=None, bs=None: xm.random_logit(xt.Gradient(m, batch_size=bs), x, t,
                                                                               batch_size=bs)),
}


def _is_explainer(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, xt.Explainer) and obj is not xt.Explainer


PUBLIC_EXPLAINERS = sorted(n for n in xt.__all__ if _is_explainer(getattr(xt, n, None)))
PUBLIC_METRICS = sorted(n for n in xm.__all__ if inspect.isfunction(getattr(xm, n, None)))
EXPLAINERS = [n for n in PUBLIC_EXPLAINERS if n in EXPLAINER_RECIPES]
MODEL_METRICS = [n for n in PUBLIC_METRICS if isinstance(METRIC_RECIPES.get(n), ModelMetric)]
PURE_METRICS = [n for n in PUBLIC_METRICS if isinstance(METRIC_RECIPES.get(n), PureMetric)]

# (name, check) -> (the defect that makes the check fail today, the exception it fails with); the
# case is xfail(strict=True, raises=...), so it fails again (and must leave this table) once fixed.
# Empty now: the five defects this test found (issue 19 item 3, SmoothGrad's and sensitivity_n's
# batch-dependent draws, descending_order's and rise_blur's raw errors) are fixed. A new entry is
# for a defect found and named, never to hide a check that fails for an unknown reason.
KNOWN_DEFECTS: dict[tuple[str, str], tuple[str, type]] = {
}


def cases(names: list, check: str) -> list:
    out = []
    for n in names:
        if (n, check) in KNOWN_DEFECTS:
            reason, raises = KNOWN_DEFECTS[(n, check)]
            n = pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=raises, reason=reason))
        out.append(n)
    return out


def test_every_public_explainer_and_metric_has_a_recipe():
    missing = sorted(set(PUBLIC_EXPLAINERS) - set(EXPLAINER_RECIPES)) + \
        sorted(set(PUBLIC_METRICS) - set(METRIC_RECIPES))
    assert not missing, f"add a recipe to tests/test_contract.py for: {', '.join(missing)}"
    stale = sorted(set(EXPLAINER_RECIPES) - set(PUBLIC_EXPLAINERS)) + \
        sorted(set(METRIC_RECIPES) - set(PUBLIC_METRICS))
    assert not stale, f"recipes for names that are no longer public: {', '.join(stale)}"
    assert {n for n, _ in KNOWN_DEFECTS} <= set(EXPLAINER_RECIPES) | set(METRIC_RECIPES)


# --- comparing results ----------------------------------------------------------------------
def leaves(obj, path: str = "result") -> dict:
    """Every tensor / number / string in a result (dataclass, dict, list, tuple), by path."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(leaves(getattr(obj, f.name), f"{path}.{f.name}"))
        return out
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(leaves(v, f"{path}[{k!r}]"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(leaves(v, f"{path}[{i}]"))
        return out
    if isinstance(obj, torch.Tensor):
        return {path: obj.detach().cpu()}
    assert obj is None or isinstance(obj, (bool, int, float, str)), f"{path}: unexpected {type(obj).__name__}"
    return {path: obj}


def assert_same(a, b, tolerance: bool = False) -> None:
    """Bit for bit (NaN == NaN), or, with ``tolerance``, to float32 rounding (see
    ``test_*_batch_size_does_not_change_the_result``)."""
    la, lb = leaves(a), leaves(b)
    assert la.keys() == lb.keys()
    for k, u in la.items():
        v = lb[k]
        if isinstance(u, torch.Tensor):
            assert isinstance(v, torch.Tensor) and u.shape == v.shape and u.dtype == v.dtype, k
            if tolerance and u.is_floating_point():
                scale = float(u.abs().nan_to_num().max()) if u.numel() else 0.0
                torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-5 * scale + 1e-7, equal_nan=True, msg=k)
            else:
                torch.testing.assert_close(v, u, rtol=0, atol=0, equal_nan=True, msg=k)
        elif isinstance(u, float) and tolerance:
            assert v == pytest.approx(u, rel=1e-4, abs=1e-7, nan_ok=True), k
        else:
            assert u == v or (u != u and v != v), k


def chain(err: BaseException, explicit: bool = False) -> list:
    """``err`` and the exceptions it was raised from (``raise ... from``; with ``explicit=False``
    also those it was raised while handling), as ``(type, args)``: a model that a metric
    deep-copies raises a copy of the injected error."""
    out, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append((type(err), err.args))
        err = err.__cause__ if explicit else (err.__cause__ or err.__context__)
    return out


def key(err: BaseException) -> tuple:
    return type(err), err.args


# --- running a recipe -----------------------------------------------------------------------
def explain(name: str, model, x, target=None, build_x=None, call_x=None, **options):
    recipe = EXPLAINER_RECIPES[name]
    explainer = recipe.build(model, x if build_x is None else build_x, **options)
    return explainer.explain(x, target, **recipe.call(x if call_x is None else call_x))


def measure(name: str, model, x, target=None, build_x=None, call_x=None, batch_size=None):
    """Run explainer or metric ``name``."""
    if name in EXPLAINER_RECIPES:
        return explain(name, model, x, target, build_x, call_x, batch_size=batch_size)
    return METRIC_RECIPES[name].run(model, x, target, batch_size)


WITH_MODEL = EXPLAINERS + MODEL_METRICS
CHECKED = {n: cases(WITH_MODEL, n) for n in ("success", "grad_input", "training", "exception", "interrupt", "rank",
                                            "channels", "dtype", "target", "seed", "batch_size")}


# --- no trace -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKED["success"])
def test_no_trace_after_success(name):
    model, x = user_model(name), images()
    before = snapshot(model, x)
    measure(name, model, x)
    assert_no_trace(before, snapshot(model, x))
    if name in EXPLAINER_RECIPES:   # and after a `with` block around two calls
        recipe = EXPLAINER_RECIPES[name]
        with recipe.build(model, x) as explainer:
            explainer(x, **recipe.call(x))
            explainer.explain(x, 1, **recipe.call(x))
        assert_no_trace(before, snapshot(model, x))


@pytest.mark.parametrize("name", CHECKED["grad_input"])
def test_no_trace_on_an_input_that_requires_grad(name):
    model, x = user_model(name), images().requires_grad_()
    before = snapshot(model, x)
    measure(name, model, x)
    assert_no_trace(before, snapshot(model, x))
    assert x.grad is None


@pytest.mark.parametrize("name", CHECKED["training"])
def test_no_trace_on_a_model_in_training_mode(name):
    """BatchNorm's running statistics (buffers) and every ``training`` flag come back."""
    model, x = user_model(name).train(), images()
    before = snapshot(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xt.XaiWarning)   # "the model is in training mode"
        measure(name, model, x)
    assert_no_trace(before, snapshot(model, x))


def _fail(name: str, error: BaseException) -> None:
    model, x = user_model(name), images()
    reference = measure(name, model, x, batch_size=2)   # count the forwards (chunks of 2) of a success
    work, model.raised = model.calls, []
    if name in EXPLAINER_RECIPES:   # forward counts of a `with` block may differ: counted there
        assert work > 0, f"{name} never called the model"
    model.calls, model.fail_at, model.error = 0, max(work // 2 + 1, 1), error
    before = snapshot(model, x)
    with pytest.raises(BaseException) as info:
        measure(name, model, x, batch_size=2)
    assert key(error) in chain(info.value), f"{name} raised {info.value!r} instead of the model's {error!r}"
    if isinstance(error, KeyboardInterrupt):
        assert type(info.value) is KeyboardInterrupt, f"{name} turned a KeyboardInterrupt into {info.value!r}"
    assert_no_trace(before, snapshot(model, x))
    if name in EXPLAINER_RECIPES:   # the same inside a `with` block, then the explainer still works
        recipe = EXPLAINER_RECIPES[name]
        model.calls = 0
        explainer = recipe.build(model, x, batch_size=2)
        with pytest.raises(BaseException) as info:
            with explainer:
                explainer.explain(x, **recipe.call(x))
        assert key(error) in chain(info.value)
        assert_no_trace(before, snapshot(model, x))
        model.fail_at = 0
        assert_same(reference, explainer.explain(x, **recipe.call(x)))


@pytest.mark.parametrize("name", CHECKED["exception"])
def test_no_trace_after_an_exception_inside_the_forward(name):
    _fail(name, RuntimeError("injected failure"))


@pytest.mark.parametrize("name", CHECKED["interrupt"])
def test_no_trace_after_a_keyboard_interrupt_inside_the_forward(name):
    _fail(name, KeyboardInterrupt())


# --- bad input ------------------------------------------------------------------------------
def _bad(name: str, x, target=None, build_x=None, call_x=None) -> xt.XaiError:
    model = user_model(name)
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError) as info:
        measure(name, model, x, target, build_x, call_x)
    assert_no_trace(before, snapshot(model, x))
    for raised in model.raised:   # a model error comes back chained
        assert key(raised) in chain(info.value, explicit=True), f"{name}: the model's {raised!r} is not chained"
    return info.value


@pytest.mark.parametrize("name", CHECKED["rank"])
def test_wrong_rank_input_raises_xai_error(name):
    good = images(1)
    _bad(name, good[0, 0], build_x=good, call_x=good)


@pytest.mark.parametrize("name", CHECKED["channels"])
def test_wrong_channel_count_raises_xai_error_naming_the_shape(name):
    """A model error comes back as XaiError naming the input shape, chained to the original
    (checked in ``_bad``); a method that refuses the input before the model names the channels."""
    err = _bad(name, images(1, c=4)[0])
    named = (f"(4, {H}, {W})", f"(1, 4, {H}, {W})", "4 channels")   # not torch's "input[1, 4, 10, 10]"
    assert any(n in str(err) for n in named), f"{name}: the message names no shape: {err}"


@pytest.mark.parametrize("name", CHECKED["dtype"])
@pytest.mark.parametrize("model_dtype, x_dtype", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)])
def test_dtype_mismatch_raises_xai_error_naming_both_dtypes(name, model_dtype, x_dtype):
    """Nothing is cast for the user (issue 19 item 4): a float64 x for a float32 model, or a
    float32 x for a bfloat16 one (float16 convolutions need CUDA), raises XaiError naming both
    dtypes, the model's error chained, nothing changed; x in the model's dtype then works."""
    model, x = user_model(name).to(model_dtype), images().to(x_dtype)
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError) as info:
        measure(name, model, x)
    assert str(x_dtype) in str(info.value) and str(model_dtype) in str(info.value), info.value
    assert_no_trace(before, snapshot(model, x))
    for raised in model.raised:
        assert key(raised) in chain(info.value, explicit=True), f"{name}: the model's {raised!r} is not chained"
    result = leaves(measure(name, model, x.to(model_dtype)))   # results: float32 (metrics: float64)
    if name in EXPLAINER_RECIPES:
        assert result["result.attributions"].dtype == torch.float32, name


@pytest.mark.parametrize("name", CHECKED["dtype"])
def test_channel_mismatch_names_both_channel_counts(name):
    """A 4-channel x for the 3-channel model: the XaiError names both counts (issue 19 item 4).
    One image: the shape probe's own error (on one image) then reads as the model's, chained."""
    err = _bad(name, images(1, c=4))
    named = ("3 channels" in str(err) and "x has 4" in str(err)) or "x has 4 channels" in str(err)  # PIC: RGB only
    assert named, f"{name}: {err}"


@pytest.mark.parametrize("name", CHECKED["target"])
def test_out_of_range_target_raises_xai_error(name):
    err = _bad(name, images(), target=CLASSES)
    assert "target" in str(err).lower(), err


# --- reproducibility ------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKED["seed"])
def test_same_seed_gives_the_same_bits(name):
    """Recipes seed every stochastic method (seed=0, or the metric's default seed): two fresh
    runs give the same bits, and so does a second call of the same explainer."""
    model, x = user_model(name), images()
    first = measure(name, model, x)
    assert_same(first, measure(name, model, x))
    if name in EXPLAINER_RECIPES:
        recipe = EXPLAINER_RECIPES[name]
        explainer = recipe.build(model, x)
        assert_same(first, explainer.explain(x, **recipe.call(x)))
        assert_same(first, explainer.explain(x, **recipe.call(x)))


@pytest.mark.parametrize("name", CHECKED["batch_size"])
def test_batch_size_does_not_change_the_result(name):
    """One sample per model call against the automatic chunk (all samples in one call).

    Tolerance: float32 to rtol 1e-4 and atol 1e-5 of the result's largest magnitude, not bit
    equality: CPU convolution and matmul kernels choose their blocking by batch size, so a
    sample's logits differ in the last bits between a batch of 1 and a batch of 20, and the
    methods' sums over steps / draws / perturbations then add the chunks in another order."""
    model, x = user_model(name), images()
    assert_same(measure(name, model, x, batch_size=None), measure(name, model, x, batch_size=1), tolerance=True)


# metrics that compare the images of a batch with each other: an image alone has no result
BATCH_LEVEL = {"sufficiency"}


@pytest.mark.parametrize("name", cases([n for n in WITH_MODEL if n not in BATCH_LEVEL], "alone"))
def test_an_image_alone_gets_its_result_from_the_batch(name):
    """The draws of an image do not depend on the images after it (issue 19: draws per image;
    tolerance as for ``batch_size``, for the same reason). Seeds may depend on an image's
    position in the batch, so the image keeps position 0. Every per-image field of the result
    (first dim B) is compared; batch aggregates are not."""
    model, x = user_model(name), images(3)
    batch, alone = leaves(measure(name, model, x)), leaves(measure(name, model, x[:1]))
    per_image = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim and len(v) == 3}
    assert "result.attributions" in per_image or name not in EXPLAINER_RECIPES
    assert per_image, f"{name}: no per-image field in the result"
    assert_same(per_image, {k: alone[k] for k in per_image}, tolerance=True)


# --- model-free metric functions ------------------------------------------------------------
@pytest.mark.parametrize("name", cases(PURE_METRICS, "pure"))
def test_model_free_metric_is_deterministic_and_leaves_its_inputs(name):
    fn, recipe = getattr(xm, name), METRIC_RECIPES[name]
    args, kwargs = recipe.args()
    tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
    saved = [(t.clone(), t._version) for t in tensors]
    first = fn(*args, **kwargs)
    for t, (value, version) in zip(tensors, saved):
        assert torch.equal(t, value) and t._version == version, f"{name} wrote into its input"
    again_args, again_kwargs = recipe.args()   # fresh arguments: a generator is consumed
    assert_same(first, fn(*again_args, **again_kwargs))
    args, kwargs = recipe.bad()
    with pytest.raises(xt.XaiError):
        fn(*args, **kwargs)


# --- threads, wrappers, small holes (issue 19, items 1, 5, 6) --------------------------------
class Checkpointed(Faulty):
    """Faulty with conv1 -> bn -> ReLU under ``torch.utils.checkpoint(use_reentrant=True)``, which
    supports ``.backward()`` only: same weights, same outputs as ``Faulty()``."""

    def forward(self, x):
        n = self.net
        h = checkpoint(lambda z: n.relu(n.bn(n.conv1(z))), x, use_reentrant=True)
        if isinstance(n, TinyViTNet):
            return n.after_stem(h)
        return n.fc(n.relu(n.conv2(h)).mean((2, 3)))


@pytest.mark.parametrize("name", cases(WITH_MODEL, "threads"))
def test_threads_on_one_model_get_the_serial_result(name):
    """The explainer or metric in two threads, beside a thread of per-call CAM hooks (GradCAM) and one of
    the rectifier mode (GuidedBackprop), on one model, threads switching every microsecond: each
    of its calls gives the serial result, bit for bit (one intra-op thread: same kernels), and
    nothing stays on the model. More pairs and calls: tests/test_threads.py."""
    model, x = user_model(name), images()
    expect = {n: measure(n, model, x) for n in {name, "GradCAM", "GuidedBackprop"}}
    before = snapshot(model, x)
    got: dict[str, list] = {n: [] for n in expect}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(n: str) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                got[n].append(measure(n, model, x))
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in (name, name, "GradCAM", "GuidedBackprop")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]
    for n, results in got.items():
        assert results, n
        for result in results:
            assert_same(expect[n], result)
    assert_no_trace(before, snapshot(model, x))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
@pytest.mark.parametrize("name", cases(EXPLAINERS, "checkpoint"))
def test_reentrant_checkpoint_gives_the_plain_result_or_says_use_reentrant_false(name):
    """Methods that need no input gradient work through the checkpoint, with the plain model's
    result; the others raise XaiError naming ``use_reentrant=False``, the original chained."""
    model, x = Checkpointed(net_of(name)).eval(), images()
    before = snapshot(model, x)
    try:
        got = explain(name, model, x)
    except xt.XaiError as err:
        assert "use_reentrant=False" in str(err), f"{name}: {err}"
        assert isinstance(err.__cause__, RuntimeError) or "has no gradient" in str(err), name
    else:
        assert_same(explain(name, Faulty(net_of(name)).eval(), x), got)
    assert_no_trace(before, snapshot(model, x))


@pytest.mark.parametrize("name", cases(EXPLAINERS, "traced"))
def test_traced_model_gives_the_eager_result_or_says_torchscript(name):
    """A ``torch.jit.trace``d model: methods that only call it (and take its input gradient) give
    the eager result; methods that hook or intercept its layers say it is TorchScript, at
    construction or call, instead of "layer was not called" or PyTorch's hook error."""
    eager, x = Faulty(net_of(name)).eval(), images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit.trace is deprecated; Faulty's counter is traced away
        traced = torch.jit.trace(eager, x)
    try:
        got = explain(name, traced, x)
    except xt.XaiError as err:
        assert "TorchScript" in str(err), f"{name}: {err}"
    else:
        assert_same(explain(name, eager, x), got, tolerance=True)


@pytest.mark.parametrize("name", cases(EXPLAINERS, "empty_target"))
def test_an_empty_target_per_image_says_at_least_one(name):
    for empty in ([[], []], torch.zeros(2, 0, dtype=torch.long)):
        err = _bad(name, images(), target=empty)
        assert "at least one target per image" in str(err), f"{name}: {err}"


@pytest.mark.parametrize("noise", [float("inf"), float("nan"), -0.1, True, "0.1"])
def test_smoothgrad_refuses_a_noise_that_is_not_a_finite_fraction(noise):
    """At construction, not later with a message about NaN inputs."""
    with pytest.raises(xt.XaiError, match="noise must be a finite number >= 0"):
        xt.SmoothGrad(xt.Gradient(user_model()), noise=noise)


# --- precision= (mixed precision) -----------------------------------------------------------
@pytest.mark.parametrize("name", EXPLAINERS)
def test_bfloat16_precision_runs_or_says_use_float32_and_leaves_no_trace(name):
    model, x = user_model(name), images()
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError, match="precision must be one of"):
        EXPLAINER_RECIPES[name].build(model, x, precision="fp16")
    try:
        res = explain(name, model, x, precision="bfloat16")
    except xt.XaiError as err:  # a method whose own rules clash with autocast says so
        assert "precision='float32'" in str(err)
    else:
        attr = res.attributions
        for a in attr.values() if isinstance(attr, dict) else attr if isinstance(attr, tuple) else [attr]:
            assert a.dtype == torch.float32 and bool(torch.isfinite(a).all()), name
    assert_no_trace(before, snapshot(model, x))
