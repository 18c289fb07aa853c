"""The method registry: one record per method the command line, the report and dataset runs know.

A method is one :class:`MethodSpec` in :data:`METHODS`: the public explainer class it builds,
its preset keywords (the paper's configuration, as the full demo runs it), how its attributions
are pictured, whether it takes the model's CAM layer, input normalisation or path steps, whether
it is slow on a CPU, its CPU budget for the default demo (and one line saying that budget),
its model calls per image (for the run-time estimate) and its other names.

Example:
    >>> from xai_torch.presets import METHODS, resolve
    >>> resolve("ig,gradcam++")
    ['integrated_gradients', 'gradcam_pp']
    >>> ig = METHODS["integrated_gradients"].build(model, steps=16)     # an xt.IntegratedGradients
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from .errors import XaiError, closest_names

if TYPE_CHECKING:
    import torch

    from .explainer import Explainer

#: the packaged model's last feature map (1280 x 7 x 7), where its CAMs are taken
CAM_LAYER = "_conv_head"
#: how attributions are pictured: PAIR greyscale, signed green/red, min-max heat map
KINDS = ("grayscale", "diverging", "map")
#: the families the default demo must show, each by at least one method
FAMILIES = ("gradient", "backprop", "cam", "path", "smoothgrad", "region", "perturbation", "relevance")
#: families whose methods need a model the packaged CNN is not (a transformer): never in the demo (it skips
#: them, saying so); ``xai-torch explain`` runs them on transformer models
FULL_ONLY_FAMILIES = ("attention",)


def explainer_classes() -> dict[str, type[Explainer]]:
    """The explainer classes by name (``"GradCAM"``, ``"IntegratedGradients"``...): those each
    method family exports in its ``__all__``, less the shared bases (named ``...Base`` or
    ``...Explainer`` by convention)."""
    from . import attention, backprop, cam, gradient, path, perturbation, region, relevance, smoothgrad
    from .explainer import Explainer

    found: dict[str, type[Explainer]] = {}
    for module in (gradient, backprop, cam, path, perturbation, smoothgrad, region, relevance, attention):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Explainer) and not name.endswith(("Base", "Explainer")):
                found[name] = obj
    return found


class Calls(NamedTuple):
    """Model calls one image costs: forward-only ones and forward + backward ones."""

    forward: int
    gradient: int


def _grads(n: int = 1, forward: int = 0) -> Callable[[Mapping[str, Any], int], Calls]:
    return lambda kw, channels: Calls(forward, n)


@dataclass(frozen=True)
class MethodSpec:
    """One method of the command line.

    Attributes:
        name: the canonical name (``"integrated_gradients"``).
        cls: the public explainer class it builds, by its name in ``xai_torch`` (``"GradCAM"``).
        family: one of :data:`FAMILIES` or :data:`FULL_ONLY_FAMILIES`.
        kind: how it is pictured, one of :data:`KINDS`.
        keywords: the preset constructor keywords (the paper's configuration).
        layer: takes the model's CAM layer (``layer=``).
        steps: takes path steps (``steps=``; ``--steps`` sets them), at least ``min_steps``.
        normalize: takes the model's input normalisation (``normalize=``: its black baseline).
        wraps: the class it wraps (SmoothGrad of ``"Gradient"``), or None.
        slow: takes minutes on a CPU with its preset (thousands of model calls, or sequential steps).
        demo: keywords that replace the preset's in the default CPU demo; None leaves the method
            out of the default demo (it runs in ``--full``).
        budget: the demo's budget in words, for the report (``"16 steps (full: 64)"``).
        calls: ``(keywords, channels) -> Calls`` per image, ``channels`` those of the CAM layer.
        aliases: other accepted names (matched ignoring case, ``-``, ``_`` and spaces).
    """

    name: str
    cls: str
    family: str
    kind: str
    keywords: Mapping[str, Any] = field(default_factory=dict)
    layer: bool = False
    steps: bool = False
    min_steps: int = 1
    normalize: bool = False
    wraps: Optional[str] = None
    slow: bool = False
    demo: Optional[Mapping[str, Any]] = field(default_factory=dict)
    budget: str = "as in the full run"
    calls: Callable[[Mapping[str, Any], int], Calls] = field(default=_grads(), repr=False)
    aliases: tuple[str, ...] = ()

    def options(self, *, layer: Optional[str] = None, normalize: Any = None, steps: Optional[int] = None,
                demo: bool = False, **overrides: Any) -> dict[str, Any]:
        """The constructor keywords :meth:`build` passes (see there)."""
        kw = dict(self.keywords)
        if demo and self.demo:
            kw.update(self.demo)
        if self.layer:
            kw["layer"] = layer or CAM_LAYER
        if self.normalize:
            if normalize is None:
                from .zoo import NORMALIZE

                normalize = NORMALIZE
            kw["normalize"] = normalize
        if self.steps and steps is not None:
            kw["steps"] = max(int(steps), self.min_steps)
        kw.update(overrides)
        return kw

    def build(self, model: torch.nn.Module, *, layer: Optional[str] = None, normalize: Any = None,
              steps: Optional[int] = None, demo: bool = False, **overrides: Any) -> Explainer:
        """The explainer.

        Args:
            model: the model to explain.
            layer: its CAM layer (default :data:`CAM_LAYER`, the packaged model's); used when
                the method takes one.
            normalize: its input normalisation ``(mean, std)`` (default ``zoo.NORMALIZE``);
                used when the method takes one.
            steps: path steps (at least ``min_steps``); used when the method takes them.
            demo: apply the default demo's CPU budget (:attr:`demo`).
            **overrides: constructor keywords that replace any of the above.

        Returns:
            An :class:`~xai_torch.explainer.Explainer`.

        Raises:
            XaiError: keywords the class does not take (naming the method).

        Example:
            >>> METHODS["gradcam"].build(torchvision.models.resnet18(), layer="layer4")
        """
        kw = self.options(layer=layer, normalize=normalize, steps=steps, demo=demo, **overrides)
        classes = explainer_classes()
        cls = classes[self.cls]
        try:
            if self.wraps is not None:
                inner = classes[self.wraps]
                return cls(inner(model), **kw)
            return cls(model, **kw)
        except TypeError as err:
            raise XaiError(f"method {self.name!r} ({self.cls}) does not take these options {sorted(kw)}: {err}.") \
                from None

    def model_calls(self, *, steps: Optional[int] = None, demo: bool = False, channels: int = 1280) -> Calls:
        """Model calls per image with these settings (``channels``: the CAM layer's, for Score-CAM)."""
        return self.calls(self.options(steps=steps, demo=demo), channels)


def _occlusion_calls(kw: Mapping[str, Any], channels: int, size: int = 224) -> Calls:
    window, stride = kw["window"], kw.get("stride") or kw["window"]
    per_axis = [max((n - w) // s + 1, 1) for n, w, s in zip((3, size, size), window, stride)]
    return Calls(1 + per_axis[0] * per_axis[1] * per_axis[2], 0)


def _shap_calls(kw: Mapping[str, Any], channels: int, segments: int = 60) -> Calls:
    # "auto": shap's 2 M + 2048 coalitions, M the superpixels (about 60 for quickshift on 224 x 224)
    samples = kw.get("samples", "auto")
    return Calls(2 + (2 * segments + 2048 if samples == "auto" else int(samples)), 0)


_SPECS = (
    MethodSpec("gradient", "Gradient", "gradient", "grayscale",
               aliases=("saliency", "vanilla_gradient", "grad")),
    MethodSpec("input_x_gradient", "InputXGradient", "gradient", "diverging",
               aliases=("ixg", "gradient_x_input")),
    MethodSpec("guided_backprop", "GuidedBackprop", "backprop", "grayscale", aliases=("gbp", "guided_bp")),
    MethodSpec("deconvnet", "Deconvnet", "backprop", "grayscale", aliases=("deconv",)),
    MethodSpec("gradcam", "GradCAM", "cam", "map", layer=True, aliases=("grad_cam",)),
    MethodSpec("gradcam_pp", "GradCAMPlusPlus", "cam", "map", layer=True,
               aliases=("gradcam++", "grad_cam++", "gradcamplusplus")),
    MethodSpec("xgradcam", "XGradCAM", "cam", "map", layer=True, aliases=("xgrad_cam",)),
    MethodSpec("hirescam", "HiResCAM", "cam", "map", layer=True, aliases=("hires_cam",)),
    MethodSpec("layercam", "LayerCAM", "cam", "map", layer=True, aliases=("layer_cam",)),
    MethodSpec("guided_gradcam", "GuidedGradCAM", "cam", "grayscale", layer=True, calls=_grads(2),
               aliases=("ggcam", "guided_grad_cam")),
    # one forward per channel of the layer: 1280 per image on Lite0
    MethodSpec("scorecam", "ScoreCAM", "cam", "map", layer=True, slow=True, demo=None,
               budget="not in the default demo (one forward per channel: 1280 per image); --full runs it",
               calls=lambda kw, channels: Calls(1 + channels, 0), aliases=("score_cam",)),
    MethodSpec("eigencam", "EigenCAM", "cam", "map", layer=True, calls=lambda kw, channels: Calls(1, 0),
               aliases=("eigen_cam",)),
    MethodSpec("eigengradcam", "EigenGradCAM", "cam", "map", layer=True, demo=None, aliases=("eigen_grad_cam",),
               budget="not in the default demo (Grad-CAM's cost; EigenCAM shows the eigen maps there); --full runs it"),
    # every Conv2d / BatchNorm2d with a bias (about 5x Grad-CAM's time on Lite0): --full runs it
    MethodSpec("fullgrad", "FullGrad", "cam", "map", demo=None,
               budget="not in the default demo (bias gradients of every conv / batch norm); --full runs it",
               aliases=("full_grad",)),
    # one forward per channel of the layer, as Score-CAM
    MethodSpec("ablationcam", "AblationCAM", "cam", "map", layer=True, slow=True, demo=None,
               budget="not in the default demo (one forward per channel: 1280 per image); --full runs it",
               calls=lambda kw, channels: Calls(1 + channels, 0), aliases=("ablation_cam",)),
    MethodSpec("integrated_gradients", "IntegratedGradients", "path", "grayscale", {"steps": 64},
               steps=True, normalize=True, demo={"steps": 16}, budget="16 steps (full: 64)",
               calls=lambda kw, channels: Calls(2, int(kw["steps"])), aliases=("ig", "integrated_gradient")),
    # adaptive quadrature needs a budget of at least 32 evaluations (2 per Gauss-Kronrod group)
    MethodSpec("ig_adaptive", "IntegratedGradients", "path", "grayscale", {"steps": 128, "method": "adaptive"},
               steps=True, min_steps=32, normalize=True, slow=True, demo={"steps": 32},
               budget="32 evaluations (full: 128)", calls=lambda kw, channels: Calls(2, int(kw["steps"])),
               aliases=("adaptive_ig",)),
    MethodSpec("ig_luminosity", "IntegratedGradients", "path", "grayscale", {"steps": 64, "path": "luminosity"},
               steps=True, normalize=True, demo=None, budget="not in the default demo; --full runs it",
               calls=lambda kw, channels: Calls(2, int(kw["steps"]))),
    MethodSpec("ig_saturation", "IntegratedGradients", "path", "grayscale", {"steps": 64, "path": "saturation"},
               steps=True, normalize=True, demo=None, budget="not in the default demo; --full runs it",
               calls=lambda kw, channels: Calls(2, int(kw["steps"]))),
    MethodSpec("smoothgrad", "SmoothGrad", "smoothgrad", "grayscale", {"samples": 25, "noise": 0.15, "seed": 0},
               wraps="Gradient", demo={"samples": 10}, budget="10 noisy samples (full: 25)",
               calls=lambda kw, channels: Calls(0, int(kw["samples"])), aliases=("sg",)),
    MethodSpec("blur_ig", "BlurIG", "path", "grayscale", {"steps": 50}, steps=True, demo={"steps": 16},
               budget="16 steps (full: 50)", calls=lambda kw, channels: Calls(1, int(kw["steps"])),
               aliases=("blurig",)),
    # sequential: one step after the other
    MethodSpec("guided_ig", "GuidedIG", "path", "grayscale", {"steps": 100}, steps=True, normalize=True,
               slow=True, demo={"steps": 20}, budget="20 sequential steps (full: 100)",
               calls=lambda kw, channels: Calls(1, int(kw["steps"])), aliases=("guidedig",)),
    MethodSpec("xrai", "XRAI", "region", "map", {"steps": 50}, steps=True, slow=True, demo={"steps": 12},
               budget="12 IG steps per baseline, black and white (full: 50)",
               calls=lambda kw, channels: Calls(4, 2 * int(kw["steps"]))),
    MethodSpec("lime", "LIME", "region", "diverging", {"samples": 1000, "seed": 0}, slow=True,
               demo={"samples": 100}, budget="100 perturbed samples (full: 1000)",
               calls=lambda kw, channels: Calls(int(kw["samples"]), 0)),
    MethodSpec("kernel_shap", "KernelSHAP", "region", "diverging", {"seed": 0}, slow=True,
               demo={"samples": 100}, budget="100 coalitions (full: auto, 2 M + 2048 for M superpixels)",
               calls=_shap_calls, aliases=("shap", "kernelshap")),
    MethodSpec("partition_shap", "PartitionSHAP", "region", "diverging",
               {"masker": "inpaint_telea", "max_evals": 500, "seed": 0}, normalize=True, slow=True, demo=None,
               budget="not in the default demo (500 evaluations and as many OpenCV inpaintings per image)",
               calls=lambda kw, channels: Calls(int(kw["max_evals"]), 0), aliases=("partition", "owen")),
    MethodSpec("occlusion", "Occlusion", "perturbation", "diverging",
               {"window": (3, 32, 32), "stride": (3, 16, 16)}, slow=True, demo={"stride": (3, 32, 32)},
               budget="32 x 32 window at stride 32: 49 windows (full: stride 16, 169)", calls=_occlusion_calls),
    MethodSpec("rise", "RISE", "perturbation", "map", {"masks": 2000, "seed": 0}, slow=True,
               demo={"masks": 150}, budget="150 masks (full: 2000)",
               calls=lambda kw, channels: Calls(int(kw["masks"]), 0)),
    # DeepLiftShap is not here: it needs a background the command line cannot give
    MethodSpec("deeplift", "DeepLift", "relevance", "diverging", calls=_grads(2), aliases=("deep_lift",)),
    MethodSpec("lrp", "LRP", "relevance", "diverging", {"composite": "epsilon_plus_flat"},
               aliases=("lrp_epsilon_plus_flat", "layerwise_relevance_propagation")),
    # transformers only (the attention the packaged CNN does not have): not in the default demo
    MethodSpec("attention_rollout", "AttentionRollout", "attention", "map", demo=None,
               budget="not in the default demo (a transformer method; the packaged model is a CNN)",
               calls=lambda kw, channels: Calls(1, 0), aliases=("rollout",)),
    MethodSpec("attention_grad_rollout", "AttentionGradRollout", "attention", "map", demo=None,
               budget="not in the default demo (a transformer method; the packaged model is a CNN)",
               aliases=("grad_rollout",)),
    MethodSpec("transformer_attribution", "TransformerAttribution", "attention", "map", demo=None,
               budget="not in the default demo (a transformer method; the packaged model is a CNN)",
               aliases=("chefer", "generic_attention")),
    MethodSpec("legrad", "LeGrad", "attention", "map", demo=None,
               budget="not in the default demo (a transformer method; the packaged model is a CNN)"),
)

#: method name -> its record, in the order the report shows them
METHODS: dict[str, MethodSpec] = {s.name: s for s in _SPECS}
#: other names accepted for the methods
ALIASES: dict[str, str] = {a: s.name for s in _SPECS for a in s.aliases}
#: ``all``: every method; ``fast``: those that take seconds on a CPU; ``demo``: the default demo's
GROUPS: dict[str, list[str]] = {
    "all": list(METHODS),
    "fast": [n for n, s in METHODS.items() if not s.slow],
    "demo": [n for n, s in METHODS.items() if s.demo is not None],
}


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def resolve_names(text: Union[str, Iterable[str]], known: Iterable[str], what: str,
                  aliases: Optional[Mapping[str, str]] = None,
                  groups: Optional[Mapping[str, list[str]]] = None) -> list[str]:
    """Resolve a comma list of names (aliases and groups included) to known names, in order, once each.

    Raises:
        XaiError: an unknown name or an empty list; the message names the choices and the
        closest known names.
    """
    known = list(known)
    if not isinstance(text, str):
        text = ",".join(text)
    lookup = {_squash(k): k for k in known}
    lookup.update({_squash(a): k for a, k in (aliases or {}).items()})
    names: list[str] = []
    unknown: list[str] = []
    for raw in text.split(","):
        n = raw.strip()
        if not n:
            continue
        if groups and n.lower() in groups:
            names += groups[n.lower()]
        elif _squash(n) in lookup:
            names.append(lookup[_squash(n)])
        else:
            unknown.append(n)
    if unknown or not names:
        extra = []
        if groups:
            extra.append(f"or a group: {', '.join(groups)}")
        if aliases:
            extra.append(f"aliases: {', '.join(aliases)}")
        close = [c for u in unknown for c in closest_names(u, known, n=2)]
        hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        raise XaiError(f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}"
                       f"{' (' + '; '.join(extra) + ')' if extra else ''}.{hint}")
    return list(dict.fromkeys(names))


def resolve(names: Union[str, Iterable[str]]) -> list[str]:
    """Method names, aliases and groups (``all``, ``fast``, ``demo``) -> canonical names, in order, once each.

    Example:
        >>> resolve("IG, gradcam++, shap")
        ['integrated_gradients', 'gradcam_pp', 'kernel_shap']
    """
    return resolve_names(names, METHODS, "method(s)", ALIASES, GROUPS)
