"""Layer conductance (Dhamdhere et al. 2018, "How important is a neuron?") on the path engine.

The conductance of a unit ``y_j`` of a layer is the share of Integrated Gradients that flows
through it: along the straight input path ``z(a) = b + a (x - b)``::

    Cond_j = integral_0^1 dF/dy_j (z(a)) * d y_j(z(a)) / da  da
           ~ sum_k dF/dy_j (z(a_k)) * (y_j(z(a_{k+1})) - y_j(z(a_k)))

over ``steps + 1`` nodes ``a_0 < ... < a_steps`` of a quadrature rule (its nodes only; Captum
``LayerConductance``'s discretisation). Summed over the layer it telescopes to ``F(x) - F(b)``
when the nodes include both ends (``"riemann_trapezoid"`` / ``"captum_trapezoid"``) and the
score depends on the input only through the layer; the default Gauss-Legendre nodes stop short
of both ends.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..cam.base import take
from ..errors import XaiError, check_choice, check_positive_int
from ..hooks import HookSession, LayerTap
from ..runner import ModelRunner
from .base import PathExplainer, Paths
from .engine import runs
from .layer import Layer
from .line import baseline_scores, line_points
from .quadrature import RULES, get_rule

_F64 = torch.float64


class LayerConductance(PathExplainer):
    """Layer conductance (Dhamdhere et al. 2018; Captum ``LayerConductance``): how much of the
    straight-line path's change of the score flows through each unit of a layer.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        layer: the layer (dotted name or module) whose output (or, with ``layer_input=True``,
            first input) is attributed; a list of layers gives a dict name -> attributions
            (one run per layer).
        steps: path segments; the model runs at ``steps + 1`` nodes per path.
        method: whose nodes to use: ``"gauss_legendre"`` (default, as Captum),
            ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
            ``"riemann_trapezoid"`` or ``"captum_trapezoid"`` (both ends included: the sum
            over the layer is then ``F(x) - F(b)`` up to the discretisation error).
        layer_input: attribute to the layer's first input (Captum's
            ``attribute_to_layer_input=True``).
        normalize, input_range, seed: see :mod:`xai_torch.path.base`.

    Call arguments:
        baseline: where the input paths start (default ``"black"``), as for
            :class:`~xai_torch.path.IntegratedGradients`.

    Returns:
        ``(B, [K,] ...)`` shaped like the layer's tensor, signed; ``explain`` returns a
        :class:`~xai_torch.path.PathExplanation` whose ``delta`` compares the sum with
        ``F(x) - F(baseline)``.

    Cost:
        ``steps + 1`` forward + backward passes per image and baseline, plus one forward per
        image and baseline with ``explain``.

    Example:
        >>> cond = xt.LayerConductance(model, "layer4", steps=50, method="riemann_trapezoid")
        >>> cond(x, target=281).shape       # resnet18 at 224 px
        torch.Size([8, 512, 7, 7])
    """

    def __init__(self, model: Any, layer: Any, *, steps: int = 50, method: str = "gauss_legendre",
                 layer_input: bool = False, normalize: Any = None, input_range: Any = None,
                 seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, normalize=normalize, input_range=input_range, seed=seed,
                         batch_size=batch_size, progress=progress)
        if layer is None:
            raise XaiError("LayerConductance needs a layer (a dotted name or a module of the model); got None.")
        self._set_layers(model, layer, layer_input)
        self.method = check_choice(method, "method", list(RULES))
        self.steps = check_positive_int(steps, "steps")

    def _config(self) -> dict[str, Any]:
        return {**self._layer_config(), "steps": self.steps, "method": self.method, **super()._config()}

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        assert layer is not None
        base = prepared
        j_count, b_count = base.shape[:2]
        r_count = b_count * k
        n_paths, nodes = r_count * j_count, self.steps + 1
        alphas, _ = get_rule(self.method, nodes)
        dev = x.device
        fb = baseline_scores(runner, base, k) if details else None
        paths = torch.arange(n_paths, device=dev).repeat_interleave(nodes)
        steps_of = torch.arange(nodes, device=dev).repeat(n_paths)
        points = line_points(x, base, k, paths, alphas.to(dev).repeat(n_paths),
                             torch.zeros(n_paths * nodes, dtype=_F64, device=dev))
        acc: Optional[torch.Tensor] = None
        carry: list[torch.Tensor] = []  # dF/dy at the last node of the previous chunk
        record = torch.full((3, n_paths * nodes), float("nan"), dtype=_F64, device=dev)
        has_probs: list[bool] = []

        with HookSession() as session:
            tap = LayerTap(session, self.model, [layer], layer_inputs=self.layer_input)

            def chunk(start: int, stop: int) -> None:
                nonlocal acc
                z, rows, slots, _, _ = points(start, stop)
                got = runner.layer_grad(z, rows, lambda _: take(tap, None), [layer[0]])
                g, y = got.grads[0].to(_F64), got.acts[0].to(_F64)
                if acc is None:
                    acc = torch.zeros((n_paths, *g.shape[1:]), dtype=_F64, device=dev)
                s = steps_of[start:stop].view(-1, *[1] * (g.ndim - 1))
                prev = torch.cat([carry[0] if carry else torch.zeros_like(g[:1]), g[:-1]])
                # node k adds dF/dy(k-1) * y(k) and takes dF/dy(k) * y(k) away (telescoped differences)
                contrib = y * (prev * (s >= 1) - g * (s < self.steps))
                for a, b in runs(slots):
                    acc[int(slots[a])] += contrib[a:b].sum(0)
                carry[:] = [g[-1:]]
                record[0, start:stop] = got.scores.to(_F64)
                record[2, start:stop] = got.grads[0].flatten(1).abs().mean(1).to(_F64)
                p = got.probs
                if p is not None:
                    record[1, start:stop] = p.to(_F64)
                    has_probs.append(True)

            runner.map(chunk, n_paths * nodes)
        assert acc is not None
        attr = acc.view(r_count, j_count, *acc.shape[1:]).mean(1)
        view = (r_count, j_count, nodes)
        probs = record[1].view(view).to(runner.dtype) if has_probs else None
        return Paths(attr, fb, alphas, record[0].view(view).to(runner.dtype), probs,
                     record[2].view(view).to(runner.dtype))
