"""Modified-backprop explainers: :class:`GuidedBackprop` and :class:`Deconvnet`.

The gradient engine of :mod:`xai_torch.gradient` with one override: the forward pass runs
inside a :class:`~xai_torch.rules.RectifierMode`, which applies the method's rule at every
rectifier call (modules, reused modules, functional and in-place forms). See
:mod:`xai_torch.rules` for what counts as a rectifier.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

from .errors import XaiError, XaiWarning
from .explainer import Explanation
from .gradient import InputGradientExplainer
from .rules import DECONV, GUIDED, RectifierMode, RectifierRule, check_interceptable


@dataclass
class BackpropExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus what the rule touched.

    Attributes:
        rectifier_calls: rectifier calls the rule was applied to in one forward pass
            (resnet18: 17, from 9 ReLU modules).
        no_rule: activation calls per forward pass that have no rule, e.g. ``{"gelu": 12}``.
    """

    rectifier_calls: int = 0
    no_rule: dict = field(default_factory=dict)


class RectifierRuleExplainer(InputGradientExplainer):
    """Gradient with a rectifier rule. A variant sets ``rule`` and nothing else."""

    rule: RectifierRule

    def _explain(self, x, target, session):
        check_interceptable(self.model)
        return super()._explain(x, target, session)

    def _forward(self, x, state):
        mode = RectifierMode(self.rule)
        with mode:
            out = self.model(x)
        name = type(self).__name__
        if mode.calls == 0:
            seen = ", ".join(f"{k} x{v}" for k, v in mode.unruled.items()) or "none"
            raise XaiError(
                f"{name} found no ReLU/ReLU6 call in the model's forward pass (activations seen: "
                f"{seen}), so the {self.rule.name} rule has nothing to act on. Use Gradient or "
                "IntegratedGradients for this model."
            )
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

    def _make_result(self, attributions, targets, scores, state):
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
