"""Input invariance (Kindermans et al. 2019, "The (Un)reliability of Saliency Methods").

Two models that compute the same function of the *content* of an image should get the same
explanation. :func:`input_invariance` builds the paper's pair: the user's model on ``x`` and
a deep copy whose first layer absorbs a constant shift ``m`` of the input in its bias
(``b' = b - W m``), run on ``x + m``. Both give the same logits (checked); a method whose maps
differ between them depends on the input's offset, not on what the model computes. Plain
gradients are invariant; Input x Gradient and Integrated Gradients with a zero baseline are not.

Padding: a convolution that zero-pads its input sees the shift everywhere except in the padded
border, so a bias change alone is exact only away from the border. This module makes the pair
exact everywhere: when the layer zero-pads (``padding_mode="zeros"`` with padding > 0, or a padding
module inside it), the copy's first layer also adds a fixed border correction
``W m - conv(pad0(m))`` (zero in the interior) through a forward hook on the copy;
``InvarianceResult.border_corrected`` says when it did. Reflect, replicate and
circular padding shift the border with the image: the bias alone is exact.

A first layer without a bias (``bias=False``, as before a BatchNorm) gets a zero bias in the
copy before absorbing the shift (``InvarianceResult.bias_added``): the copy still computes the
same function of the content, which is all the paper's construction needs.

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import XaiError, check_input, describe
from ..explainer import Explainer
from ..runner import ModelRunner, warn_if_training
from ..targets import ClassTarget, as_target, class_output
from ._common import REDUCTIONS, reduce_channels, to_result
from .sanity import _build_explainer, _resolve_similarity

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass
class InvarianceResult:
    """What :func:`input_invariance` returns (per-image tensors on ``x.device``).

    Attributes:
        relative_change: ``(B,)`` float64 ``||a' - a|| / ||a||`` of the attributions (all
            channels, flattened): ``a`` of the model on ``x``, ``a'`` of the shifted copy on
            ``x + shift`` (0 when both are 0, ``inf`` when only ``a`` is 0).
        invariant: ``(B,)`` bool, ``relative_change <= tolerance``.
        similarity: name -> ``(B,)`` float64 similarity of the two channel-reduced maps.
        logit_change: ``(B,)`` float64 ``max |z' - z| / max |z|`` of the two models' logits
            (the check that they compute the same function).
        targets: ``(B,)`` the classes explained (the same for both models).
        shift: the shift added to every pixel of each channel, one float per channel.
        layer: the dotted name of the first layer, which absorbed the shift.
        border_corrected: whether a zero-padding border correction was needed (module doc).
        bias_added: whether the first layer had no bias and the copy's got one (module doc).
        original, shifted: ``(B, ...)`` the two attributions when ``keep_maps=True``.
    """

    relative_change: torch.Tensor
    invariant: torch.Tensor
    similarity: dict[str, torch.Tensor]
    logit_change: torch.Tensor
    targets: torch.Tensor
    shift: tuple[float, ...]
    layer: str
    border_corrected: bool
    bias_added: bool = False
    original: Optional[torch.Tensor] = None
    shifted: Optional[torch.Tensor] = None


def check_copyable(model: Any, explainer: Any, why: str) -> None:
    """The checks of a metric that explains a changed copy of the model (``why`` says what it
    changes): an ``nn.Module``, and an explainer or a factory ``model -> explainer``.

    Raises:
        XaiError: either is not what it must be.
    """
    if not isinstance(model, nn.Module):
        raise XaiError(f"{why}: it needs an nn.Module; got {describe(model)}.")
    if not callable(explainer):
        raise XaiError(f"explainer must be an xai_torch explainer or a factory model -> explainer; "
                       f"got {describe(explainer)}.")

def _shift_vector(shift: Any, x: torch.Tensor) -> torch.Tensor:
    """``shift`` as ``(C,)`` float64: a number, one number per channel, or ``"mean"``."""
    c = x.shape[1]
    if isinstance(shift, str):
        if shift != "mean":
            raise XaiError(f"shift must be a number, one number per channel or 'mean'; got {shift!r}.")
        return -x.detach().double().transpose(0, 1).reshape(c, -1).mean(1).cpu()
    if isinstance(shift, bool):
        raise XaiError(f"shift must be a number, one number per channel or 'mean'; got {describe(shift)}.")
    try:
        s = torch.as_tensor(shift, dtype=torch.float64).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise XaiError(f"shift must be a number, one number per channel or 'mean'; got {describe(shift)}.") from err
    if s.numel() == 1:
        s = s.expand(c).clone()
    if s.numel() != c or not bool(torch.isfinite(s).all()):
        raise XaiError(f"shift must be a finite number or {c} finite numbers (one per channel of x); "
                       f"got {describe(shift)}.")
    return s


def _first_layer(copy: nn.Module, runner: ModelRunner, x: torch.Tensor) -> tuple[str, nn.Module, torch.Tensor]:
    """Forward ``x`` through the copy, recording the first module with parameters of its own
    that runs and what it was fed. Returns its name, the module and the logits."""
    seen: list[tuple[str, nn.Module, Any]] = []
    handles = []
    for name, m in copy.named_modules():
        if next(m.parameters(recurse=False), None) is None:
            continue

        def pre(mod: nn.Module, args: Any, name: str = name) -> None:
            if not seen:
                seen.append((name, mod, args[0] if args else None))
        handles.append(m.register_forward_pre_hook(pre))
    try:
        out = runner.forward(x)
    finally:
        for h in handles:
            h.remove()
    logits = class_output(out)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise XaiError(f"input_invariance compares the logits of the two models: the model must return "
                       f"(B, num_classes); it returned {describe(out)}.")
    if not seen:
        raise XaiError(f"input_invariance found no layer with parameters in {type(copy).__name__}: nothing can "
                       "absorb the shift.")
    name, layer, fed = seen[0]
    what = f"the first layer '{name}' ({type(layer).__name__})"
    if not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)) or isinstance(
            layer, nn.modules.conv._ConvTransposeNd):
        raise XaiError(f"{what} cannot absorb a shift of the input in a bias: input_invariance needs a Conv or "
                       "Linear layer first (a normalisation or embedding first changes with the shift). Shift the "
                       "input of a model that starts with a Conv / Linear, e.g. after folding its normalisation.")
    b = x.shape[0]
    if not isinstance(fed, torch.Tensor) or fed.shape[0] != b or fed.numel() != x.numel() or not torch.equal(
            fed.reshape(b, -1), x.reshape(b, -1)):
        raise XaiError(f"{what} is not fed the input itself (the forward transforms x before it: "
                       "normalisation, resizing...); the shift cannot be absorbed there.")
    if isinstance(layer, nn.Linear) and fed.shape != (b, x[0].numel()):
        raise XaiError(f"{what} takes input of shape {tuple(fed.shape)}; input_invariance needs it to see the "
                       f"flattened image ({b}, {x[0].numel()}) to absorb a per-channel shift.")
    if isinstance(layer, nn.modules.conv._ConvNd) and fed.shape != x.shape:
        raise XaiError(f"{what} takes input of shape {tuple(fed.shape)}, not the image's {tuple(x.shape)}.")
    return name, layer, logits.detach()


def _absorb(layer: nn.Module, shift: torch.Tensor, x: torch.Tensor) -> Optional[torch.Tensor]:
    """Subtract ``W shift`` from the (copied) layer's bias (a layer without one gets a zero bias
    first); returns the border correction to add to its output, or ``None`` when the bias alone
    is exact. The correction is found by running a float64 copy of the layer itself, bias zeroed,
    on the constant image ``shift``: any padding the layer does (its own zero padding, or a
    padding module inside it, as ``Conv2dStaticSamePadding``) shows there."""
    assert isinstance(layer.weight, torch.Tensor)
    w = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        delta = w @ shift.to(w.device).repeat_interleave(x[0].numel() // x.shape[1])
        correction = None
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        conv = _CONV[len(layer.kernel_size)]
        extent = [d * (k - 1) + 1 for d, k in zip(layer.dilation, layer.kernel_size)]
        m = shift.to(w.device).view(1, -1, *([1] * len(extent)))
        delta = conv(m.expand(1, -1, *extent), w, None, 1, 0, layer.dilation, layer.groups).flatten()
        probe = copy.deepcopy(layer).double()
        with torch.no_grad():
            if probe.bias is not None:
                probe.bias.zero_()
            full = probe(m.expand(1, -1, *x.shape[2:]).clone())
        correction = delta.view(1, -1, *([1] * len(extent))) - full
        if float(correction.abs().max()) <= 1e-9 * (float(delta.abs().max()) + 1e-30):
            correction = None  # no padding, or one that shifts with the image (reflect, replicate...)
    with torch.no_grad():
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=layer.weight.dtype, device=w.device),
                                      requires_grad=layer.weight.requires_grad)
        layer.bias.sub_(delta.to(layer.bias.dtype))
    return None if correction is None else correction.to(layer.weight.dtype)


def input_invariance(model: nn.Module, explainer: Any, x: torch.Tensor, target: Any = None, *,
                     shift: Union[float, Sequence[float], torch.Tensor, str] = -1.0,
                     similarity: Union[str, Sequence[str], Mapping[str, Callable[..., Any]]] = (),
                     tolerance: float = 1e-2, logit_tolerance: Optional[float] = None, reduce: str = "sum",
                     call_kwargs: Optional[Mapping[str, Any]] = None, keep_maps: bool = False,
                     batch_size: Optional[int] = None, progress: Optional[bool] = None) -> InvarianceResult:
    """Input invariance (Kindermans et al. 2019): does the explanation change when the input is
    shifted by a constant and the model's first layer absorbs the shift (same logits)?

    A deep copy of ``model`` gets ``b' = b - W m`` in its first Conv / Linear layer (found by
    a forward hook: the first module with parameters that runs, which must be fed ``x``
    itself); the copy on ``x + m`` and ``model`` on ``x`` must give the same logits, else
    :class:`~xai_torch.XaiError`. Both are explained for the same classes. The user's model is
    never touched. Zero padding is handled exactly (module doc).

    Args:
        model: an ``nn.Module`` whose first layer is a Conv (1d/2d/3d) or Linear fed ``x``.
        explainer: an xai_torch explainer built on ``model`` (deep-copied with the model), or a
            factory ``model -> explainer`` (called on ``model`` and on the copy).
        x, target, reduce, batch_size, progress: see :mod:`xai_torch.metrics._common`.
            ``batch_size`` applies to the two logit checks (give the explainer its own).
        shift: the constant ``m`` added to ``x``: a number, one per channel, or ``"mean"``
            (minus the per-channel mean of ``x``). Default -1 (the paper's MNIST shift).
        similarity: names from :data:`~xai_torch.metrics.similarity.SIMILARITIES` (or a dict
            name -> function) comparing the two reduced maps; ``()`` (default): none.
        tolerance: the largest ``relative_change`` counted as invariant (1 %: float32 rounding moves
            a deep network's gradient by ~0.5 % between the two models; IxG moves by O(1)).
        logit_tolerance: the largest ``max |z' - z| / max |z|`` accepted by the logit check;
            ``None``: the square root of the dtype's epsilon (3.5e-4 in float32).
        call_kwargs: call keywords for both explainer calls (``{"baseline": 0.0}``...).
        keep_maps: keep both attributions in the result.

    Returns:
        :class:`InvarianceResult`.

    Raises:
        XaiError: a model whose first layer cannot absorb a shift (named, with the reason),
            logits that differ, bad arguments.

    Cost:
        Two forwards per image (the logit check) and two explainer calls on ``B`` images.

    Example:
        >>> r = xt.metrics.input_invariance(model, xt.InputXGradient(model), x, shift=-1.0)
        >>> r.invariant, r.relative_change          # (B,) bool, (B,) float64
    """
    x4, _ = check_input(x)
    check_copyable(model, explainer, "input_invariance copies the model to shift its first layer")
    m = _shift_vector(shift, x4)
    sims = _resolve_similarity(similarity) if similarity != () else {}
    if reduce not in REDUCTIONS:
        raise XaiError(f"reduce must be one of {list(REDUCTIONS)}; got {reduce!r}.")
    for value, name in ((tolerance, "tolerance"), (logit_tolerance, "logit_tolerance")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
            raise XaiError(f"{name} must be a number >= 0; got {describe(value)}.")
    kwargs = dict(call_kwargs or {})
    tgt = as_target(target, x4.shape[0])
    if not isinstance(tgt, ClassTarget) or tgt.k is not None:
        raise XaiError("input_invariance explains one class per image: give None, an int or one class per image.")
    warn_if_training(model, "input_invariance", stacklevel=3)

    model_copy, explainer_copy = _build_explainer(explainer, model)
    original_explainer = explainer if isinstance(explainer, Explainer) else explainer(model)
    runner = ModelRunner(model_copy, batch_size=batch_size, progress=progress, name="input_invariance",
                         sample=x4[0], device=x4.device)
    xd = x4.detach().to(runner.device, copy=True)
    with runner.session():
        name, layer, logits = _first_layer(model_copy, runner, xd)
    if tgt.classes is None:
        classes = logits.argmax(1)
    else:
        classes = tgt.classes.expand(x4.shape[0]).to(logits.device)
        if bool(((classes < 0) | (classes >= logits.shape[1])).any()):
            raise XaiError(f"target classes must lie in [0, {logits.shape[1] - 1}] for this model; "
                           f"got {sorted(set(classes.tolist()))[:5]}.")
    bias_added = getattr(layer, "bias", None) is None
    correction = _absorb(layer, m, xd)
    handle = None if correction is None else layer.register_forward_hook(_border_hook(correction))
    xs = (xd.double() + m.to(xd.device).view(1, -1, *([1] * (xd.ndim - 2)))).to(xd.dtype)
    try:
        with runner.session():
            shifted_logits = class_output(runner.forward(xs)).detach()
        eps = torch.finfo(logits.dtype).eps if logits.is_floating_point() else 0.0
        tol = math.sqrt(eps) if logit_tolerance is None else float(logit_tolerance)
        scale = logits.double().abs().amax(1).clamp_min(1e-12)
        change = (shifted_logits.double() - logits.double()).abs().amax(1) / scale
        if bool((change > tol).any()):
            raise XaiError(f"the shifted copy's logits differ from the model's by up to {float(change.max()):.3g} "
                           f"(relative; tolerance {tol:.3g}) after '{name}' ({type(layer).__name__}) absorbed the "
                           "shift: the model is not a function of its first layer's output alone (an input skip, a "
                           "normalisation of x...). Raise logit_tolerance only if this is rounding.")
        a = _attribution(original_explainer(xd.clone(), target=classes.cpu(), **kwargs), "the model's")
        a2 = _attribution(explainer_copy(xs, target=classes.cpu(), **kwargs), "the shifted copy's")
    finally:
        if handle is not None:
            handle.remove()
    if a.shape != a2.shape:
        raise XaiError(f"the explainer returned attributions of shapes {tuple(a.shape)} and {tuple(a2.shape)}.")
    ref = torch.linalg.vector_norm(a.flatten(1), dim=1)
    diff = torch.linalg.vector_norm((a2 - a).flatten(1), dim=1)
    rel = torch.where(ref > 0, diff / ref.clamp_min(1e-300),
                      torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff)))
    maps = [reduce_channels(t if t.ndim == 4 else t[:, None], reduce) for t in (a, a2)] \
        if a.ndim in (3, 4) else [a.flatten(1), a2.flatten(1)]
    return InvarianceResult(
        relative_change=to_result(rel, x4), invariant=(rel <= tolerance).to(x4.device),
        similarity={k: to_result(torch.as_tensor(fn(maps[0], maps[1])), x4) for k, fn in sims.items()},
        logit_change=to_result(change, x4), targets=classes.to(x4.device), shift=tuple(m.tolist()),
        layer=name, border_corrected=correction is not None, bias_added=bias_added,
        original=to_result(a, x4) if keep_maps else None, shifted=to_result(a2, x4) if keep_maps else None,
    )


def _border_hook(corr: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A forward hook adding ``corr`` ``(1, C, *S)`` to the layer's output. For 2-d maps only the
    border rows and columns where it is non-zero are added (the interior is zero): the full add
    would cost a pass over the layer's output per call."""
    if corr.ndim != 4:
        return lambda mod, args, out: out + corr
    rows = corr.abs().amax((0, 1, 3)) > 0
    cols = corr.abs().amax((0, 1, 2)) > 0
    h, w = rows.numel(), cols.numel()
    top = int(rows.int().argmin()) if not bool(rows.all()) else h
    bottom = int(rows.flip(0).int().argmin()) if not bool(rows.all()) else 0
    left = int(cols.int().argmin()) if not bool(cols.all()) else w
    right = int(cols.flip(0).int().argmin()) if not bool(cols.all()) else 0
    if top + bottom >= h or left + right >= w or bool(corr[..., top:h - bottom, left:w - right].any()):
        return lambda mod, args, out: out + corr
    parts = [(slice(0, top), slice(None)), (slice(h - bottom, h), slice(None)),
             (slice(top, h - bottom), slice(0, left)), (slice(top, h - bottom), slice(w - right, w))]

    def hook(mod: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone() if out._base is not None else out
        for r, c in parts:
            out[..., r, c] += corr[..., r, c]
        return out
    return hook


def _attribution(out: Any, whose: str) -> torch.Tensor:
    if hasattr(out, "attributions") and not isinstance(out, torch.Tensor):
        out = out.attributions
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.is_complex():
        raise XaiError(f"{whose} explainer must return real attributions (B, ...); got {describe(out)}.")
    t = out.detach().double()
    if not bool(torch.isfinite(t).all()):
        raise XaiError(f"{whose} attribution has NaN or infinite values.")
    return t


__all__ = ["InvarianceResult", "input_invariance"]
