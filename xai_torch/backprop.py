"""Modified-backprop explainers: :class:`GuidedBackprop`, :class:`Deconvnet` and
:class:`GuidedGradCAM`.

The gradient engine of :mod:`xai_torch.gradient` with one override: the forward pass runs
inside a :class:`~xai_torch.rules.RectifierMode`, which applies the method's rule at every
rectifier call (modules, reused modules, functional and in-place forms). See
:mod:`xai_torch.rules` for what counts as a rectifier. Guided Grad-CAM is Grad-CAM's engine
(:mod:`xai_torch.cam`) with the same interception.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from .cam.base import CAMExplanation, CAMState
from .cam.gradcam import GradCAM
from .errors import XaiError, XaiWarning
from .explainer import Explanation
from .gradient import InputGradientExplainer
from .hooks import HookSession
from .imageops import upsample_to
from .rules import DECONV, GUIDED, PLAIN, RectifierMode, RectifierRule, check_interceptable
from .targets import Target

__all__ = ["BackpropExplanation", "Deconvnet", "GuidedBackprop", "GuidedGradCAM", "RectifierRuleExplainer"]


@dataclass
class BackpropExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus what the rule touched.

    Attributes:
        rectifier_calls: rectifier calls the rule was applied to in one forward pass
            (resnet18: 17, from 9 ReLU modules).
        no_rule: activation calls per forward pass that have no rule, e.g. ``{"gelu": 12}``.
    """

    rectifier_calls: int = 0
    no_rule: dict[str, int] = field(default_factory=dict)


def _ruled_forward(model: Callable[[torch.Tensor], Any], x: torch.Tensor, rule: RectifierRule, name: str,
                   instead: str = "Use Gradient or IntegratedGradients") -> tuple[Any, RectifierMode]:
    """Run ``model(x)`` with ``rule`` on every rectifier call; raise when there is none."""
    mode = RectifierMode(rule)
    with mode:
        out = model(x)
    if mode.calls == 0:
        seen = ", ".join(f"{k} x{v}" for k, v in mode.unruled.items()) or "none"
        raise XaiError(
            f"{name} found no ReLU/ReLU6 call in the model's forward pass (activations seen: "
            f"{seen}), so the {rule.name} rule has nothing to act on. {instead} for this model."
        )
    return out, mode


class RectifierRuleExplainer(InputGradientExplainer):
    """Gradient with a rectifier rule. A variant sets ``rule`` and nothing else."""

    rule: ClassVar[RectifierRule]
    tuple_inputs = True  # x may be a tuple of tensors (see xai_torch.gradient)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, details: bool = True,
                 **kwargs: Any) -> Explanation:
        check_interceptable(self.model)
        return super()._explain(x, target, session, details=details, **kwargs)

    def _forward(self, x: torch.Tensor, state: dict[str, Any]) -> Any:
        name = type(self).__name__
        out, mode = _ruled_forward(self.model, x, self.rule, name)
        state.setdefault("calls", mode.calls)
        state.setdefault("no_rule", dict(mode.unruled))
        if mode.unruled and not state.get("warned"):
            state["warned"] = True
            names = ", ".join(f"{k} x{v}" for k, v in Counter(mode.unruled).items())
            warnings.warn(
                f"{name}: activations with no {self.rule.name} rule ({names}) pass gradients "
                f"unchanged; the rule was applied to the {mode.calls} rectifier calls only.",
                XaiWarning,
                stacklevel=2,
            )
        return out

    def _make_result(self, attributions: torch.Tensor, targets: Optional[torch.Tensor], scores: torch.Tensor,
                     state: dict[str, Any]) -> BackpropExplanation:
        return BackpropExplanation(attributions, targets, scores, state.get("calls", 0), state.get("no_rule", {}))


class GuidedBackprop(RectifierRuleExplainer):
    """Guided backpropagation (Springenberg et al. 2015), signed, per channel.

    At every rectifier call ``y = relu(z)`` (or ``relu6``) the backward pass becomes
    ``R_in = 1[z > 0] * max(R_out, 0)``. Unlike Captum, which hooks ``nn.ReLU`` modules only,
    the rule reaches functional and in-place calls (torchvision's Inception v3 and DenseNet)
    and reused modules; unlike pytorch-grad-cam, no module of the model is swapped.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.

    Returns:
        ``(B, C, H, W)``; ``explain`` adds ``rectifier_calls`` and ``no_rule``.

    Raises:
        XaiError: for a model with no rectifier call, or a scripted / compiled model whose
        calls cannot be intercepted. Activations without a rule (GELU, SiLU...) warn.

    Example:
        >>> with xt.GuidedBackprop(model) as gbp:
        ...     attr = gbp(x, target=[3, 7])
    """

    rule = GUIDED


class Deconvnet(RectifierRuleExplainer):
    """DeconvNet (Zeiler & Fergus 2014): at every rectifier call ``R_in = max(R_out, 0)``, with
    no forward mask. Same arguments and results as :class:`GuidedBackprop`.

    Example:
        >>> attr = xt.Deconvnet(model)(x)
    """

    rule = DECONV


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the raw Grad-CAM
    map, upsampled bilinearly and broadcast over channels: ``(B, C, H, W)``, signed.

    One forward pass serves both: the rectifier calls are recorded with a switchable rule, the
    plain backward to the layer gives Grad-CAM, the guided backward to the input gives GBP.
    ``explain`` also returns the Grad-CAM maps (``layer_maps``). Arguments as
    :class:`~xai_torch.cam.GradCAM`; it has no attached mode (``from_output``), since the
    guided backward needs a forward of its own under the rule.

    Example:
        >>> attr = xt.GuidedGradCAM(model, layer="layer4")(x, target=[3, 7])   # (2, 3, H, W)
    """

    attachable: ClassVar[bool] = False

    def __init__(self, model: nn.Module, layer: Any, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if not self.upsample:
            raise XaiError("GuidedGradCAM multiplies pixel attributions: it needs upsample=True.")

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, details: bool = True,
                 **kwargs: Any) -> CAMExplanation:
        check_interceptable(self.model)
        return super()._explain(x, target, session, details=details, **kwargs)

    def _forward(self, x: torch.Tensor, state: CAMState) -> Any:
        out, state.mode = _ruled_forward(lambda z: state.run.forward(z, grad=True), x, PLAIN, type(self).__name__,
                                         "Use GradCAM")
        return out

    def _gradients(self, scores: torch.Tensor, acts: list[torch.Tensor], x: Optional[torch.Tensor],
                   state: CAMState) -> Sequence[torch.Tensor]:
        assert state.mode is not None and x is not None
        state.mode.rule = PLAIN
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=True, allow_unused=True)
        if any(g is None for g in grads):
            raise XaiError("the target score does not depend on the chosen layer.")
        state.mode.rule = GUIDED
        (state.guided,) = torch.autograd.grad(scores.sum(), x)
        return grads

    def _pixels(self, x: Optional[torch.Tensor], maps: list[torch.Tensor], state: CAMState) -> torch.Tensor:
        assert x is not None and state.guided is not None
        guided, state.guided = state.guided.detach(), None
        return guided * upsample_to(maps[0], x.shape[-2:])
