"""DeepLIFT (Rescale rule) and DeepLIFT-SHAP: :class:`DeepLift`, :class:`DeepLiftShap`.

DeepLIFT (Shrikumar, Greenside & Kundaje 2017) explains ``F(x) - F(b)``, the change of the target
score from a baseline ``b`` to the image ``x``: each elementwise nonlinearity ``y = f(z)`` passes
gradients multiplied by ``(f(z_x) - f(z_b)) / (z_x - z_b)`` instead of ``f'(z)``, and the
attribution is ``(x - b) * dF/dx`` with those multipliers. It satisfies *summation-to-delta*:
``sum(attributions) = F(x) - F(b)`` up to float rounding, for models built from linear operations,
elementwise nonlinearities and max pooling (``explain`` returns the error, ``delta``).

How: one forward of the concatenated batch ``[x; b]`` (``2n`` rows) inside
:class:`~xai_torch.relevance.deeplift_rules.RescaleMode`, which applies the rule to every *call* of
a nonlinearity (modules, reused modules, functional and in-place forms), then one backward. No
module of the model is hooked or changed. Captum's ``DeepLift`` hooks ``nn.ReLU``-type *modules*
instead: a module called twice per forward (a reused ``ReLU``, as in torchvision's ResNet blocks)
raises or gets wrong multipliers, and functional ``F.relu`` calls get the plain gradient
(Captum #1082, #1104, #578); ``tests/test_relevance_deeplift.py`` shows both.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..batching import map_chunks
from ..cam.base import take
from ..errors import XaiError, XaiWarning, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession, LayerTap
from ..layers import find_layers
from ..modelio import Packed, pack_rows
from ..rules import check_interceptable
from ..runner import ModelRunner, result_dtype
from ..seeding import check_seed, make_generator
from ..space import check_baselines, check_space, make_baselines, value_range
from ..targets import ClassTarget, Target
from .deeplift_rules import RescaleMode

__all__ = ["DeepLift", "DeepLiftExplanation", "DeepLiftShap"]


@dataclass
class DeepLiftExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of DeepLIFT.

    Attributes:
        delta: ``(B,)`` (or ``(B, K)``) summation-to-delta error, signed:
            ``sum(attributions) - (F(x) - mean_j F(b_j))``; 0 up to float rounding when every
            nonlinearity has a rule (and, with ``layer=``, every path goes through the layer).
        baseline_scores: ``(B, [K,] J)`` target score of each of the ``J`` baselines.
        rule_calls: calls per forward the rules were applied to, by function (``{"relu": 17}``).
        no_rule: nonlinear calls per forward with no rule (the gradient was used), by function.
        model_calls: samples the model evaluated (forward + backward), baselines included, and
            the one forward-only image that checks the input fits the model first.
    """

    delta: Optional[torch.Tensor] = None
    baseline_scores: Optional[torch.Tensor] = None
    rule_calls: dict[str, int] = field(default_factory=dict)
    no_rule: dict[str, int] = field(default_factory=dict)
    model_calls: int = 0


class DeepLift(Explainer):
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), signed, per channel.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer` (``batch_size`` counts the
            model's rows: ``batch_size // 2`` images and their baselines per forward).
        eps: below this ``|z_x - z_b|`` a multiplier is the gradient at ``z_x`` (Captum's 1e-10).
        normalize, input_range: where black and white lie in the model's input space, for the
            named baselines (see :mod:`xai_torch.path.base`).
        seed: seed of stochastic baselines (``"uniform"``, ``"gaussian"``).
        layer: attribute to a layer (a dotted name or a module): ``(a_x - a_b) * dF/da`` with
            the DeepLIFT multipliers above it (Captum ``LayerDeepLift``), shaped like the layer.
        layer_input: attribute to the layer's first input instead of its output.
        call: which call of a layer that runs several times per forward.

    Call arguments:
        baseline: **zero by default** (the all-zero input, Captum's default); or any baseline of
            the IG family (:mod:`xai_torch.space`): ``"black"``, ``"white"``, ``"blur"``...,
            a tensor broadcastable to ``x`` (per-image baselines as ``(B, C, H, W)``), a
            callable, or a list of them (the attributions are averaged over the list). For a
            tuple ``x`` (an image and metadata...; not with ``layer=``): a tuple with one number
            or tensor per member, or one number for all (default ``0.0``); the attributions are
            then a tuple, one per member, and ``delta`` sums over all members.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for ``(B, K)`` targets); with ``layer=`` shaped
        like the layer. ``explain`` adds ``delta``, ``baseline_scores``, ``rule_calls``,
        ``no_rule`` (:class:`DeepLiftExplanation`).

    Raises:
        XaiError: a baseline that does not broadcast to ``x``, a TorchScript / compiled model
        (its calls cannot be intercepted), an unknown layer. Nonlinear operations with no
        rule (softmax, normalisation layers, products of two input-dependent tensors such as
        squeeze-excitation gates) warn, naming them: the gradient is used there.

    Cost:
        One forward and one backward of ``2 B`` rows per baseline, and one forward of one image
        (no gradient) that checks the input first.

    Example:
        >>> attr = xt.DeepLift(model)(x, target=[3, 7])                  # zero baseline
        >>> res = xt.DeepLift(model, normalize=xt.zoo.NORMALIZE).explain(x, baseline="black")
        >>> res.delta                                                     # ~0 per image
    """

    call_keywords: tuple[str, ...] = ("baseline",)
    default_baseline: Any = 0.0
    tuple_inputs = True  # x may be (image, metadata...): a baseline per member, see Call arguments

    def __init__(self, model: Any, *, eps: float = 1e-10, normalize: Any = None, input_range: Any = None,
                 seed: Optional[int] = None, layer: Any = None, layer_input: bool = False,
                 call: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or not math.isfinite(eps):
            raise XaiError(f"eps must be a finite number >= 0; got {describe(eps)}.")
        self.eps = float(eps)
        self.normalize, self.input_range = check_space(normalize, input_range)
        self.seed = check_seed(seed)
        if not isinstance(layer_input, bool):
            raise XaiError(f"layer_input must be True or False; got {describe(layer_input)}.")
        if call is not None and (isinstance(call, bool) or not isinstance(call, int)):
            raise XaiError(f"call must be None or an int; got {describe(call)}.")
        self.layer, self.layer_input, self.call = layer, layer_input, call
        self.layers: Optional[list[tuple[str, nn.Module]]] = None
        if layer is not None:
            if not isinstance(model, nn.Module):
                raise XaiError(f"{type(self).__name__}(layer=...) needs an nn.Module to find the layer in; "
                               f"got {type(model).__name__}.")
            self.layers = find_layers(model, layer)
            if len(self.layers) != 1:
                raise XaiError(f"{type(self).__name__} attributes to one layer; got {len(self.layers)}. "
                               "Make one explainer per layer.")

    def _config(self) -> dict[str, Any]:
        layer = {} if self.layers is None else {"layer": self.layers[0][0], "layer_input": self.layer_input,
                                                "call": self.call}
        return {"eps": self.eps, "normalize": self.normalize, "input_range": self.input_range, "seed": self.seed,
                **layer, **super()._config()}

    def baselines(self, x: torch.Tensor, baseline: Any = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The baselines this explainer would use for ``x``: ``(J, B, C, H, W)``."""
        specs = check_baselines(self.default_baseline if baseline is None else baseline)
        x4 = x if x.ndim == 4 else x[None]
        lo, hi = value_range(x4, self.normalize, self.input_range)
        return make_baselines(specs, x4, lo, hi, generator)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 baseline: Any = None, **kwargs: Any) -> DeepLiftExplanation:
        check_interceptable(self.model, f"{type(self).__name__}'s rules would not apply and it would silently "
                                        "return (x - baseline) * gradient")
        run = self.runner(x, target)
        xd = run.place(x)
        base = self.baselines(xd, baseline, make_generator(self.seed, run.device))  # fails before any model call
        return self._attribute(run, x, xd, base, target, session)

    def _attribute(self, run: ModelRunner, x: torch.Tensor, xd: torch.Tensor, base: torch.Tensor, target: Target,
                   session: HookSession) -> DeepLiftExplanation:
        """Attributions of images ``xd`` against baselines ``base`` ``(J, B, C, H, W)`` (each
        image paired with its own ``J`` rows; a background broadcasts over ``B``)."""
        j_count, b_count = base.shape[:2]
        k = target.k or 1
        tap = LayerTap(session, self.model, self.layers, layer_inputs=self.layer_input) if self.layers else None
        name = type(self).__name__
        counts: dict[str, Any] = {}

        def chunk(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
            rows = torch.arange(start, stop, device=run.device)
            image, j = rows // (k * j_count), rows % j_count
            xc, bc = xd[image], base[j, image]
            n = stop - start
            mode = RescaleMode(n, self.eps)
            with torch.inference_mode(False), torch.enable_grad():
                leaf = xc.detach().clone().requires_grad_(True)
                with mode:
                    out = run.forward(torch.cat([leaf, bc]), grad=True, images=torch.cat([image, image]))
                s, classes = _score(target, out, rows // j_count, n)
                if not s.requires_grad:
                    raise XaiError(f"{name}: the target score does not depend on x through autograd (the model or "
                                   "the target callable detaches it, or runs under torch.no_grad).")
                acts = [leaf] if tap is None else take(tap, self.call)
                (g,) = torch.autograd.grad(s[:n].sum(), acts, allow_unused=True)
            if g is None:
                where = "x" if tap is None else f"layer {tap.layers[0][0]!r}"
                raise XaiError(f"{name}: the target score does not depend on {where}; choose a layer on the path "
                               "from the input to the scored output.")
            if tap is None:
                attr = (xc - bc) * g
            else:
                a = acts[0].detach()
                if a.shape[0] != 2 * n:
                    raise XaiError(f"{name}: layer {tap.layers[0][0]!r} does not keep the batch first ({a.shape[0]} "
                                   f"rows for {2 * n} samples); choose a layer whose output is (B, ...).")
                attr = (a[:n] - a[n:]) * g[:n]
            if not counts:
                counts.update(calls=dict(mode.calls), unruled=dict(mode.unruled))
            return attr.detach(), s.detach().view(2, n), classes

        # one image first: a model that cannot take x fails there, its error (and the runner's
        # one-image probe's) the same, before any [x; b] forward
        run.forward(xd[:1], images=torch.arange(1))
        total = b_count * k * j_count
        parts = map_chunks(chunk, total, max(1, run.chunk // 2), device=run.device, progress=run.progress, desc=name)
        if counts["unruled"]:
            names = ", ".join(f"{key} x{v}" for key, v in counts["unruled"].items())
            warnings.warn(f"{name}: nonlinear operations with no DeepLIFT rule ({names}) pass the plain gradient; "
                          "summation-to-delta does not hold exactly through them.", XaiWarning, stacklevel=5)
        dtype = result_dtype(x)
        attr = torch.cat([p[0] for p in parts]).double()
        attr = attr.view(b_count * k, j_count, *attr.shape[1:]).mean(1)
        scores = torch.cat([p[1] for p in parts], 1).double().view(2, b_count * k, j_count)
        fx, fb = scores[0, :, 0], scores[1]
        delta = attr.flatten(1).sum(1) - (fx - fb.mean(1))
        classes = None if parts[0][2] is None else torch.cat([p[2] for p in parts if p[2] is not None])
        targets = None if classes is None else self._per_image([classes.view(-1, j_count)[:, 0]], x, target)
        return DeepLiftExplanation(
            attributions=self._per_image([attr], x, target, dtype), targets=targets,
            scores=self._per_image([fx], x, target, dtype), delta=self._per_image([delta], x, target, dtype),
            baseline_scores=self._per_image([fb], x, target, dtype), rule_calls=counts["calls"],
            no_rule=counts["unruled"], model_calls=run.calls)


def _score(target: Target, out: Any, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(2n,)`` target scores of a ``[x; b]`` forward (both halves scored for the images'
    targets: an argmax target is pinned to the image's class) and the images' classes."""
    both = torch.cat([rows, rows])
    s, classes = target.scores(out, both)
    if isinstance(target, ClassTarget) and target.classes is None and classes is not None:
        pinned = ClassTarget(classes[:n].cpu(), target.score).bind(n)
        local = torch.arange(n, device=rows.device)
        s, _ = pinned.scores(out, torch.cat([local, local]))
    return s, None if classes is None else classes[:n]


class DeepLiftShap(DeepLift):
    """DeepLIFT-SHAP (Lundberg & Lee 2017; Captum ``DeepLiftShap``): DeepLIFT averaged over a
    background of baselines, each image paired with every background row (batched).

    Args:
        model: see :mod:`xai_torch.explainer`.
        background: ``(N, C, H, W)`` baselines in the model's input space (a ``(C, H, W)``
            image is ``N = 1``), e.g. blurred or black images, or samples of the data; used in
            ``x``'s dtype, as baselines are. For a tuple ``x`` (an image and metadata...): a
            tuple with one ``(N, *member shape)`` tensor per member, row ``j`` of every member
            making baseline ``j``; the attributions are then a tuple, one per member.
        eps, layer, layer_input, call, batch_size, progress: as :class:`DeepLift`.

    Returns:
        as :class:`DeepLift`; ``delta`` is ``sum(attributions) - (F(x) - mean_j F(b_j))`` per
        image and ``baseline_scores`` is ``(B, [K,] N)``.

    Raises:
        XaiError: a background that is not a finite float tensor of ``x``'s image shape; for
        a tuple, members with different ``N`` or a member that does not fit ``x``'s (named).

    Cost:
        One forward and one backward of ``2 B N`` rows (and one image forward, as DeepLift).

    Example:
        >>> bg = torch.stack([xt.imageops.gaussian_blur(x[0], 10.0), torch.zeros_like(x[0])])
        >>> attr = xt.DeepLiftShap(model, bg)(x, target=[3, 7])
    """

    call_keywords: tuple[str, ...] = ()

    def __init__(self, model: Any, background: Any, *, eps: float = 1e-10, layer: Any = None,
                 layer_input: bool = False, call: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, eps=eps, layer=layer, layer_input=layer_input, call=call, batch_size=batch_size,
                         progress=progress)
        self.member_shapes: Optional[list[tuple[int, ...]]] = None
        if isinstance(background, tuple):  # one (N, ...) tensor per member of a tuple x, packed as x is
            background, self.member_shapes = pack_rows(background, "background")
        if not isinstance(background, torch.Tensor) or not background.is_floating_point() \
                or background.ndim not in (3, 4) or background.numel() == 0:
            raise XaiError("background must be a non-empty float tensor (N, C, H, W) of baselines (or one (C, H, W) "
                           f"image); got {describe(background)}.")
        if not bool(torch.isfinite(background).all()):
            raise XaiError("background has NaN or infinite values.")
        self.background = (background if background.ndim == 4 else background[None]).detach()

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        for key in ("normalize", "input_range", "seed"):
            cfg.pop(key)
        return {"background": tuple(self.background.shape), **cfg}

    def _packed(self, x: Any) -> Packed:
        packed = super()._packed(x)
        packed.check_rows(self.member_shapes, "background", type(self).__name__)
        return packed

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> DeepLiftExplanation:
        bg = self.background
        if self.member_shapes is not None and not (x.shape[1:3] == (1, 1) and bg.shape[1:] == x.shape[1:]):
            raise XaiError(f"{type(self).__name__}: the background is a tuple (one tensor per member of a tuple x) "
                           "but x is one tensor; give x as a tuple, or a tensor background.")
        if bg.shape[1:] != x.shape[1:]:
            raise XaiError(f"background images have shape {tuple(bg.shape[1:])} but x has images of shape "
                           f"{tuple(x.shape[1:])}; give a background (N, C, H, W) of x's image shape.")
        check_interceptable(self.model, f"{type(self).__name__}'s rules would not apply and it would silently "
                                        "return (x - baseline) * gradient")
        run = self.runner(x, target)
        xd = run.place(x)
        base = bg.to(device=run.device, dtype=x.dtype)[:, None].expand(bg.shape[0], x.shape[0], *bg.shape[1:])
        return self._attribute(run, x, xd, base, target, session)
