"""LRP composites: which rule each convolution / linear call gets.

The named composites are zennit's (``zennit.composites``), with its defaults
(``epsilon = stabilizer = 1e-6``, ``gamma = 0.25``):

=============================  ===================  =====================  ===================
composite                      first layer          other convolutions     linear layers
=============================  ===================  =====================  ===================
``epsilon_plus``               (as the others)      z+                     epsilon
``epsilon_plus_flat``          flat (conv/linear)   z+                     epsilon
``epsilon_gamma_box``          z-box (conv only)    gamma                  epsilon
``epsilon_alpha2_beta1``       (as the others)      alpha2-beta1           epsilon
``epsilon_alpha2_beta1_flat``  flat (conv/linear)   alpha2-beta1           epsilon
=============================  ===================  =====================  ===================

"First layer" is the first convolution / linear call of the forward pass. A custom
composite is a mapping ``{layer name or module type: rule}`` (rules as objects or names); a
name may be a container (``"layer1"``: every layer inside it; the longest name wins). Names
win over the first-layer rule, which wins over types.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from ..errors import XaiError, describe
from .lrp_rules import RULE_NAMES, AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus, as_rule

__all__ = ["COMPOSITES", "Composite", "make_composite"]

COMPOSITES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1",
              "epsilon_alpha2_beta1_flat")

_CONV_KINDS = ("conv1d", "conv2d", "conv3d")
_ALL_KINDS = (*_CONV_KINDS, "linear")
#: the module class a functional call of each kind stands for (for calls with foreign weights)
KIND_CLASS: dict[str, type[nn.Module]] = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d,
                                          "linear": nn.Linear}


@dataclass(frozen=True)
class Composite:
    """Rules by layer name, by first call and by module type.

    Attributes:
        name: the composite's name (``"custom"`` for a mapping).
        names: ``{module name: rule}``; a container's name covers the layers inside it.
        first: the first-layer rule and the call kinds it applies to, or None.
        types: ``((module type, rule), ...)``, the first match wins.
    """

    name: str
    names: dict[str, Rule] = field(default_factory=dict)
    first: Optional[tuple[Rule, tuple[str, ...]]] = None
    types: tuple[tuple[type, Rule], ...] = ()

    def rule(self, kind: str, name: Optional[str], module: Optional[nn.Module], first: bool) -> Rule:
        """The rule for a call of ``kind`` on ``module`` called ``name`` (None for a weight that
        belongs to no module of the model)."""
        if name is not None and self.names:
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                hit = self.names.get(".".join(parts[:i]))
                if hit is not None:
                    return hit
        if first and self.first is not None and kind in self.first[1]:
            return self.first[0]
        for typ, rule in self.types:
            if isinstance(module, typ) if module is not None else issubclass(KIND_CLASS[kind], typ):
                return rule
        what = f"layer {name!r} ({type(module).__name__})" if module is not None \
            else f"a functional {kind} call with weights that belong to no module"
        raise XaiError(
            f"the {self.name} composite has no rule for {what}. Add one to the mapping, by name or by type "
            f"(e.g. {{nn.{KIND_CLASS[kind].__name__}: 'epsilon'}}), or use a named composite ({', '.join(COMPOSITES)})."
        )

    @property
    def rules(self) -> list[Rule]:
        out = list(self.names.values()) + [r for _, r in self.types]
        return out + ([self.first[0]] if self.first is not None else [])


def _check_names(model: Any, names: list[str]) -> None:
    if not names:
        return
    if not isinstance(model, nn.Module):
        raise XaiError(f"LRP rules by layer name need an nn.Module; got {type(model).__name__}.")
    known = {n for n, _ in model.named_modules() if n}
    for n in names:
        if n not in known:
            close = sorted(k for k in known if k.count(".") <= 1)[:20]
            raise XaiError(f"LRP: the model has no layer {n!r}; layers include {', '.join(close)}"
                           f"{'...' if len(known) > 20 else ''}.")


def _split(mapping: Mapping[Any, Any], epsilon: float, gamma: float, stabilizer: float
           ) -> tuple[dict[str, Rule], list[tuple[type, Rule]]]:
    names: dict[str, Rule] = {}
    types: list[tuple[type, Rule]] = []
    for key, spec in mapping.items():
        rule = as_rule(spec, epsilon, gamma, stabilizer)
        if isinstance(key, str):
            names[key] = rule
        elif isinstance(key, type) and issubclass(key, nn.Module):
            types.append((key, rule))
        else:
            raise XaiError(f"LRP rule keys are layer names or nn.Module types; got {describe(key)}.")
    return names, types


def make_composite(model: Any, composite: Any, rules: Optional[Mapping[Any, Any]] = None, *,
                   epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6,
                   low: Any = None, high: Any = None) -> Composite:
    """The :class:`Composite` for a name or a mapping, with ``rules`` (a mapping like a custom
    composite's) taking precedence over it."""
    if rules is not None and not isinstance(rules, Mapping):
        raise XaiError(f"rules must be a mapping {{layer name or type: rule}}; got {describe(rules)}.")
    extra_names, extra_types = _split(rules or {}, epsilon, gamma, stabilizer)
    if isinstance(composite, Mapping):
        names, types = _split(composite, epsilon, gamma, stabilizer)
        _check_names(model, [*names, *extra_names])
        return Composite("custom", {**names, **extra_names}, None, (*extra_types, *types))
    if not isinstance(composite, str) or composite not in COMPOSITES:
        raise XaiError(f"unknown LRP composite {composite!r}; choose one of {', '.join(COMPOSITES)}, or pass a "
                       f"mapping {{layer name or type: rule}} with rules from {sorted(RULE_NAMES)}.")
    _check_names(model, list(extra_names))
    eps = Epsilon(epsilon)
    conv: Rule
    first: Optional[tuple[Rule, tuple[str, ...]]] = None
    if composite in ("epsilon_plus", "epsilon_plus_flat"):
        conv = ZPlus(stabilizer)
    elif composite == "epsilon_gamma_box":
        conv = Gamma(gamma, stabilizer)
        first = (ZBox(low, high, stabilizer), _CONV_KINDS)
    else:
        conv = AlphaBeta(2.0, 1.0, stabilizer)
    if composite.endswith("_flat"):
        first = (Flat(stabilizer), _ALL_KINDS)
    layer_types = (*extra_types, (nn.modules.conv._ConvNd, conv), (nn.Linear, eps))
    return Composite(composite, extra_names, first, layer_types)
