"""Layer-wise relevance propagation, :class:`LRP`, with rules applied per call.

The gradient engine of :mod:`xai_torch.gradient` with the forward pass inside an
:class:`~xai_torch.relevance.lrp_mode.LRPMode`: each convolution / linear call runs its
composite's rule in the backward pass, eval-mode BatchNorm is merged into the layer before it
per call (no copy of the model, nothing changed on it), average pooling and residual
additions split relevance in proportion (zennit's ``Norm``), rectifiers pass it. See
:mod:`xai_torch.relevance.composites` for the composites and
:mod:`xai_torch.relevance.lrp_rules` for the rules.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, XaiWarning
from ..explainer import Explanation
from ..gradient import InputGradientExplainer
from ..hooks import HookSession
from ..modelio import Packed
from ..rules import check_interceptable
from ..space import check_space, value_range
from ..targets import Target
from .composites import Composite, make_composite
from .lrp_mode import LRPMode
from .lrp_rules import Rule, ZBox

__all__ = ["LRP", "LRPExplanation"]


@dataclass
class LRPExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus LRP's bookkeeping.

    Attributes:
        relevance_sum: the relevance summed per image (per image and target for ``(B, K)``
            targets), at the input or the ``layer=``; a dict per layer for a list of layers.
        conservation_error: ``scores - relevance_sum``: what the biases, stabilizers and
            gradient-only operations (max pooling, products, activations without a rule) lost
            or added. None when a rule that absorbs relevance by design was applied
            (epsilon > 1e-6).
        rules: the rule per convolution / linear call of one forward pass, ``{name: rule}``
            (a reused layer once per call: ``"fc#2"``).
        no_rule: activation calls without a rule, e.g. ``{"silu": 49}`` (their gradient is used).
        merged_batchnorms: BatchNorm calls merged into the layer before them.
    """

    relevance_sum: Any = None
    conservation_error: Any = None
    rules: dict[str, str] = field(default_factory=dict)
    no_rule: dict[str, int] = field(default_factory=dict)
    merged_batchnorms: int = 0


class LRP(InputGradientExplainer):
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) with zennit's
    composites, the rules applied per *call*: reused modules, functional calls
    (``F.conv2d(x, w)``), residual additions and torchvision's ResNet / DenseNet / VGG /
    MobileNet / EfficientNet need no canonizer and no change to the model.

    The relevance starts as the target score (the logit: ``R_out = one_hot * output``, zennit's
    common ``attr_output``), so for conserving rules on a bias-free ReLU network the input
    relevance sums to the score.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        composite: ``"epsilon_plus_flat"`` (default), ``"epsilon_plus"``, ``"epsilon_gamma_box"``,
            ``"epsilon_alpha2_beta1"``, ``"epsilon_alpha2_beta1_flat"``, or a mapping
            ``{layer name or nn.Module type: rule}`` (rules: ``"lrp0"``, ``"epsilon"``,
            ``"gamma"``, ``"zplus"``, ``"alpha1_beta0"``, ``"alpha2_beta1"``, ``"flat"``,
            ``"wsquare"``, ``"zbox"``, or objects of :mod:`xai_torch.relevance`). A mapping must
            cover every convolution / linear call (by name or type).
        rules: a mapping as above that takes precedence over ``composite``
            (``rules={"fc": "lrp0"}``).
        epsilon, gamma, stabilizer: the parameters of the named rules (zennit's defaults);
            ``stabilizer`` also for pooling, additions and BatchNorm not merged (0: none).
        low, high: z-box bounds (scalars or per channel). Default: from ``normalize=(mean, std)``
            the model-space values of black and white pixels; without it each image's min and max.
        normalize: the model's input normalisation, for the z-box defaults.
        layer, layer_input, call: relevance at a layer instead of the input, shaped like it
            (see :mod:`xai_torch.gradient`).

    ``x`` may be a tuple of tensors (an image and metadata...; not with ``layer=``, nor with a
    z-box rule without ``low=`` / ``high=``): the relevance is then a tuple, one per member.

    Returns:
        ``(B, C, H, W)`` relevance (``(B, K, C, H, W)`` for ``(B, K)`` targets); ``explain``
        adds ``relevance_sum``, ``conservation_error``, ``rules``, ``no_rule``.

    Raises:
        XaiError: unknown composite, rule or layer name; a mapping without a rule for a layer;
        a model with no convolution / linear call; a TorchScript, compiled or DataParallel
        model. Activations without a rule (GELU, SiLU...) keep their gradient and warn.

    Cost:
        One forward and one backward per sample; z+ / alpha-beta / gamma / z-box layers add
        one to four convolutions with modified weights in the backward (as zennit).

    Example:
        >>> lrp = xt.LRP(model, composite="epsilon_gamma_box", normalize=(MEAN, STD))
        >>> res = lrp.explain(x, target=[3, 7])
        >>> res.attributions.shape, res.relevance_sum      # (2, 3, 224, 224), ~ res.scores
    """

    def __init__(self, model: Any, composite: Any = "epsilon_plus_flat", *, rules: Optional[Mapping[Any, Any]] = None,
                 epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6, low: Any = None,
                 high: Any = None, normalize: Any = None, layer: Any = None, layer_input: bool = False,
                 call: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, layer=layer, layer_input=layer_input, call=call, batch_size=batch_size,
                         progress=progress)
        self.normalize, _ = check_space(normalize, None)
        self.stabilizer = float(stabilizer)
        self.composite_spec = composite
        self.composite: Composite = make_composite(model, composite, rules, epsilon=epsilon, gamma=gamma,
                                                   stabilizer=stabilizer, low=low, high=high)
        self.needs_bounds = any(isinstance(r, ZBox) and r.low is None for r in self.composite.rules)

    tuple_inputs = True  # x may be (image, metadata...): the relevance at each member

    def _packed(self, x: Any) -> Packed:
        if self.needs_bounds:  # per-image bounds would mix the members' values
            raise XaiError("LRP: a z-box rule takes its bounds from the image; for a tuple x give low= and high=.")
        return super()._packed(x)

    def _config(self) -> dict[str, Any]:
        spec = self.composite_spec if isinstance(self.composite_spec, str) else "custom"
        return {"composite": spec, **({"normalize": self.normalize} if self.normalize is not None else {}),
                **super()._config()}

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> Explanation:
        check_interceptable(self.model, consequence="the LRP rules would silently not apply (plain gradients)")
        return super()._explain(x, target, session, details=details, **kwargs)

    def _owners(self) -> dict[int, tuple[str, nn.Module]]:
        owners: dict[int, tuple[str, nn.Module]] = {}
        if isinstance(self.model, nn.Module):
            for name, module in self.model.named_modules():
                w = getattr(module, "weight", None)
                if isinstance(w, torch.Tensor):
                    owners.setdefault(id(w), (name, module))
        return owners

    def _bounds(self, z: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        if not self.needs_bounds:
            return None
        if z.ndim == 4:
            return value_range(z, self.normalize)
        flat = z.detach().flatten(1)
        shape = (-1,) + (1,) * (z.ndim - 1)
        return flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape)

    def _forward(self, x: torch.Tensor, state: dict[str, Any]) -> Any:
        if "owners" not in state:
            state["owners"] = self._owners()
        owners: dict[int, tuple[str, nn.Module]] = state["owners"]
        seen: dict[str, int] = {}

        def pick(kind: str, weight: torch.Tensor, first: bool) -> tuple[Rule, str]:
            hit = owners.get(id(weight))
            name, module = hit if hit is not None else (None, None)
            rule = self.composite.rule(kind, name, module, first)
            label = name if name is not None else f"<{kind}>"
            seen[label] = seen.get(label, 0) + 1
            return rule, label if seen[label] == 1 else f"{label}#{seen[label]}"

        mode = LRPMode(pick, self._bounds(x), self.stabilizer)
        with mode:
            out = self.model(x)
        if not mode.layers:
            raise XaiError("LRP found no convolution or linear call in the model's forward pass: there is no "
                           "layer to apply a rule to.")
        if "rules" not in state:
            state["rules"] = {n: repr(r) for n, r in mode.layers}
            state["conserving"] = all(r.conserving for _, r in mode.layers)
            state["no_rule"] = dict(mode.unruled)
            state["merged"] = mode.merged
            if mode.unruled:
                names = ", ".join(f"{k} x{v}" for k, v in mode.unruled.items())
                warnings.warn(f"LRP: activations with no rule ({names}) pass relevance by their gradient; "
                              "rectifiers pass it unchanged.", XaiWarning, stacklevel=2)
        return out

    def _make_result(self, attributions: Any, targets: Optional[torch.Tensor], scores: torch.Tensor,
                     state: dict[str, Any]) -> LRPExplanation:
        # the backward started from 1 at the target; every rule is linear in the relevance, so the
        # relevance for R_out = score is the score times it
        def scaled(a: torch.Tensor) -> torch.Tensor:
            return a * scores.to(a.dtype).reshape(*scores.shape, *([1] * (a.ndim - scores.ndim)))

        def total(a: torch.Tensor) -> torch.Tensor:
            return a.flatten(scores.ndim).sum(-1)

        conserving = bool(state.get("conserving", False))
        if isinstance(attributions, dict):
            attributions = {k: scaled(v) for k, v in attributions.items()}
            sums: Any = {k: total(v) for k, v in attributions.items()}
            error: Any = {k: scores.to(v.dtype) - v for k, v in sums.items()} if conserving else None
        else:
            attributions = scaled(attributions)
            sums = total(attributions)
            error = scores.to(sums.dtype) - sums if conserving else None
        return LRPExplanation(attributions, targets, scores, sums, error, state.get("rules", {}),
                              state.get("no_rule", {}), state.get("merged", 0))
