"""The CAM family on hooks: CAM, Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM, Score-CAM
and Guided Grad-CAM.

Every variant shares :class:`LayerCAMBase`: one forward pass with a forward hook on each
target layer (the hook keeps the layer output and hands the rest of the network a copy, so
later in-place ops cannot change what was captured), then one ``torch.autograd.grad`` to the
captured activations (no backward below the layer). A variant is its channel-weight function
(:meth:`~LayerCAMBase.channel_weights`) or its map function (:meth:`~LayerCAMBase.layer_map`).

Outputs are raw maps after the ReLU, upsampled bilinearly (``align_corners=False``) to the
input size: ``(B, 1, H, W)``, or ``(B, 1, h, w)`` with ``upsample=False``. No
normalisation: that is :mod:`xai_torch.viz`'s job. Several layers are fused as
pytorch-grad-cam does (each map ReLU'd, upsampled and min-max normalised per image, then
averaged), which loses the raw scale.

Common arguments (besides :mod:`xai_torch.explainer`'s):

Args:
    layer: a dotted name (``"layer4"``, ``"features.denseblock4"``), a module of the model, or
        a list of them.
    upsample: return maps at the input resolution (default) or at the layer's.
    call: which call of the layer to use when it runs more than once per forward (0-based);
        by default such a layer raises, naming the count.
    reshape: callable from the layer output to ``(B, C, h, w)`` for token layers; see
        :func:`vit_reshape` and :func:`swin_reshape`.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .batching import map_chunks
from .errors import XaiError, XaiWarning, check_choice, describe
from .explainer import Explainer, Explanation, result_dtype
from .hooks import HookSession
from .layers import find_layers
from .rules import GUIDED, PLAIN, RectifierMode, check_interceptable
from .targets import ClassTarget, Target
from .viz import minmax


@dataclass
class CAMExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus the layer-resolution results.

    Attributes:
        layer_maps: one raw map per layer after the ReLU, ``(B, [K,] 1, h, w)``.
        weights: per-layer channel weights ``(B, [K,] C)`` for weight-based variants, else None.
        layers: the dotted names of the layers.
    """

    layer_maps: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    layers: list = field(default_factory=list)


# --- token layers (transformers) ------------------------------------------------------------
def tokens_to_grid(tokens: torch.Tensor, prefix_tokens: int = 1, height: Optional[int] = None,
                   width: Optional[int] = None) -> torch.Tensor:
    """``(B, T, C)`` tokens -> ``(B, C, h, w)``: drop ``prefix_tokens`` (class / register
    tokens) and lay the rest on an ``h x w`` grid (square when neither is given)."""
    if tokens.ndim != 3:
        raise XaiError(f"token layers must output (B, tokens, channels); got {describe(tokens)}.")
    b, t, c = tokens.shape
    n = t - prefix_tokens
    if height is None and width is None:
        height = int(round(n**0.5))
        width = n // max(height, 1)
    elif height is None:
        height = n // width
    elif width is None:
        width = n // height
    if height * width != n or n <= 0:
        raise XaiError(
            f"{t} tokens minus {prefix_tokens} prefix token(s) do not fill a {height} x {width} grid; "
            "give height= and width= (or the right prefix_tokens) to vit_reshape."
        )
    return tokens[:, prefix_tokens:].transpose(1, 2).reshape(b, c, height, width)


def vit_reshape(prefix_tokens: int = 1, height: Optional[int] = None, width: Optional[int] = None) -> Callable:
    """``reshape=`` for ViT-style ``(B, T, C)`` layers with class/register tokens first.

    Example:
        >>> xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10", reshape=xt.vit_reshape())
    """
    return lambda t: tokens_to_grid(t, prefix_tokens, height, width)


def swin_reshape() -> Callable:
    """``reshape=`` for Swin-style channels-last ``(B, h, w, C)`` layers."""
    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 4:
            raise XaiError(f"swin_reshape expects (B, h, w, C); got {describe(t)}.")
        return t.permute(0, 3, 1, 2)
    return reshape


# --- capture --------------------------------------------------------------------------------
class _Capture:
    """Forward hooks that record each layer's outputs during one explainer forward pass."""

    def __init__(self, session: HookSession, layers: list[tuple[str, nn.Module]]) -> None:
        self.layers = layers
        self.outputs: list[list[torch.Tensor]] = [[] for _ in layers]
        self.enabled = True
        for i, (_, module) in enumerate(layers):
            session.forward_hook(module, self._hook(i))

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if not self.enabled:
                return None
            if not isinstance(output, torch.Tensor):
                raise XaiError(
                    f"layer {self.layers[i][0]!r} returns a {describe(output)}, not a tensor; choose "
                    "a layer whose output is a feature map or tokens."
                )
            self.outputs[i].append(output)
            return output.clone()  # the network goes on with a copy: in-place ops later leave ours intact

        return hook

    def take(self, call: Optional[int]) -> list[torch.Tensor]:
        taken = []
        for (name, _), outs in zip(self.layers, self.outputs):
            if not outs:
                raise XaiError(
                    f"layer {name!r} was not called during the forward pass; choose a layer on the "
                    "path from the input to the output."
                )
            if call is None and len(outs) > 1:
                raise XaiError(
                    f"layer {name!r} runs {len(outs)} times per forward pass (a reused module); pass "
                    f"call=0..{len(outs) - 1} to say which call to explain, or choose another layer."
                )
            index = 0 if call is None else call
            if not -len(outs) <= index < len(outs):
                raise XaiError(f"call={call} but layer {name!r} runs {len(outs)} times per forward pass.")
            taken.append(outs[index])
        for outs in self.outputs:
            outs.clear()
        return taken


def upsample_to(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear, ``align_corners=False`` (= OpenCV's INTER_LINEAR, pytorch-grad-cam's resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


# --- the base ----------------------------------------------------------------------------------
class LayerCAMBase(Explainer):
    """Base of the CAM family. A variant overrides :meth:`channel_weights` (Grad-CAM style:
    map = ReLU(sum_k w_k A_k)) or :meth:`layer_map` (element-wise variants)."""

    #: whether the variant needs dScore/dA (CAM and Score-CAM do not)
    needs_gradient = True

    def __init__(self, model, layer, *, upsample: bool = True, call: Optional[int] = None,
                 reshape: Optional[Callable] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        if not isinstance(model, nn.Module):
            raise XaiError(f"{type(self).__name__} needs an nn.Module to find layer(s) in; got {type(model).__name__}.")
        self.layer = layer
        self.layers = find_layers(model, layer)
        self.upsample = bool(upsample)
        if call is not None and (isinstance(call, bool) or not isinstance(call, int)):
            raise XaiError(f"call must be None or an int; got {describe(call)}.")
        self.call = call
        if reshape is not None and not callable(reshape):
            raise XaiError(f"reshape must be a callable (B, ...) -> (B, C, h, w); got {describe(reshape)}.")
        self.reshape = reshape
        if len(self.layers) > 1 and not self.upsample:
            raise XaiError("several layers are fused at the input resolution: use upsample=True.")

    def _config(self) -> dict:
        names = [n for n, _ in self.layers]
        return {"layer": names[0] if len(names) == 1 else names, "upsample": self.upsample,
                **({"call": self.call} if self.call is not None else {}), **super()._config()}

    # -- what a variant overrides --------------------------------------------------------
    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` channel weights from activations and gradients ``(n, C, h, w)``."""
        raise NotImplementedError

    def layer_map(self, acts: torch.Tensor, grads: Optional[torch.Tensor]):
        """Map before the ReLU ``(n, 1, h, w)`` and the channel weights (or None)."""
        w = self.channel_weights(acts, grads)
        return (w[:, :, None, None] * acts).sum(1, keepdim=True), w

    # -- engine ------------------------------------------------------------------------------
    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        g = self.reshape(t) if self.reshape is not None else t
        if not isinstance(g, torch.Tensor) or g.ndim != 4:
            hint = " (token layers need reshape=xt.vit_reshape() or xt.swin_reshape())" if self.reshape is None else ""
            raise XaiError(f"the layer output must be (B, C, h, w) after reshape; got a {describe(g)}{hint}.")
        return g

    def _forward(self, x: torch.Tensor, capture: _Capture, state: dict):
        return self.model(x)

    def _gradients(self, scores, acts, x, state):
        grads = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
        for (name, _), g in zip(self.layers, grads):
            if g is None:
                raise XaiError(f"the target score does not depend on layer {name!r}; choose a layer it depends on.")
        return grads

    def _chunk(self, xc, rows, target, capture, state):
        """Maps for the samples ``rows`` (input chunk ``xc``)."""
        with torch.inference_mode(False), torch.enable_grad():
            xg = xc.detach().clone().requires_grad_(True)
            out = self._forward(xg, capture, state)
            acts = capture.take(self.call)
            scores, classes = target.scores(out, rows)
            grads = None
            if self.needs_gradient:
                if not scores.requires_grad:
                    raise XaiError(f"{type(self).__name__}: the target score has no gradient (it is detached).")
                grads = self._gradients(scores, acts, xg, state)
        maps, weights = [], []
        for i, a in enumerate(acts):
            a = self._grid(a.detach())
            g = None if grads is None else self._grid(grads[i].detach())
            if g is not None and self.reshape is not None:
                self._warn_unreachable(i, grads[i], g)
            m, w = self.layer_map(a, g)
            maps.append(torch.relu(m))
            weights.append(w)
        extra = self._extra(xc, maps, state)
        return maps, weights, scores.detach(), classes, extra

    def _extra(self, xc, maps, state):
        return None

    def _warn_unreachable(self, i, tokens_grad, grid_grad):
        if not bool(grid_grad.any()) and bool(tokens_grad.any()):
            warnings.warn(
                f"{type(self).__name__}: the spatial tokens of layer {self.layers[i][0]!r} do not reach "
                "the output (only the class token does, as in the last block of a ViT); its map is "
                "empty. Choose an earlier block.", XaiWarning, stacklevel=6)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession) -> CAMExplanation:
        capture = _Capture(session, self.layers)
        state: dict = {}
        parts = self._map_samples(x, target, lambda xc, rows: self._chunk(xc, rows, target, capture, state))
        dtype = result_dtype(x)

        def cat(i, j=None, dt=dtype):
            items = [p[i] if j is None else p[i][j] for p in parts]
            return None if items[0] is None else self._per_image(items, x, target, dt)

        layer_maps = [cat(0, j) for j in range(len(self.layers))]
        weights = [cat(1, j) for j in range(len(self.layers))]
        size = x.shape[-2:]
        if len(layer_maps) == 1:
            m = layer_maps[0]
            maps = upsample_to(m.flatten(0, -4), size).reshape(*m.shape[:-2], *size) if self.upsample else m
        else:
            ups = [minmax(upsample_to(m.flatten(0, -4), size), eps=1e-7) for m in layer_maps]
            maps = minmax(torch.stack(ups).mean(0), eps=1e-7).reshape(*layer_maps[0].shape[:-2], *size)
        extra = cat(4)
        return self._result(maps if extra is None else extra, cat(3, dt=None), cat(2), layer_maps, weights)

    def _result(self, attributions, classes, scores, layer_maps, weights) -> CAMExplanation:
        return CAMExplanation(attributions, classes, scores, layer_maps, weights, [n for n, _ in self.layers])


# --- gradient variants ---------------------------------------------------------------------------
class GradCAM(LayerCAMBase):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(dS/dA_k) A_k)``.

    Equals Captum's ``LayerGradCam(relu_attributions=True)`` upsampled bilinearly, and
    pytorch-grad-cam after its min-max scaling.

    Example:
        >>> with xt.GradCAM(model, layer="layer4") as cam:
        ...     maps = cam(x, target=[3, 7])          # (2, 1, H, W), raw, >= 0
    """

    def channel_weights(self, acts, grads):
        return grads.mean((2, 3))


class GradCAMPlusPlus(LayerCAMBase):
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19): with ``g = dS/dA``,
    ``alpha = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where g or the denominator is 0),
    ``w_k = sum_ij alpha ReLU(g)``, map ``ReLU(sum_k w_k A_k)``.

    Args:
        alpha_norm: the authors' TensorFlow code renormalises alpha per channel
            (``alpha /= sum_ij alpha``); neither the paper nor the libraries do. Off by default.
    """

    def __init__(self, model, layer, *, alpha_norm: bool = False, **kwargs) -> None:
        super().__init__(model, layer, **kwargs)
        self.alpha_norm = bool(alpha_norm)

    def _config(self) -> dict:
        return {**super()._config(), "alpha_norm": self.alpha_norm}

    def channel_weights(self, acts, grads):
        g2 = grads.pow(2)
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * grads.pow(3)
        ok = (grads != 0) & (denom > 0)
        alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
        if self.alpha_norm:
            total = alpha.sum((2, 3), keepdim=True)
            alpha = alpha / torch.where(total != 0, total, torch.ones_like(total))
        return (alpha * torch.relu(grads)).sum((2, 3))


class HiResCAM(LayerCAMBase):
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k g_k * A_k)`` element-wise; equals Grad-CAM
    whenever the gradient is spatially constant (a GAP -> linear head)."""

    def layer_map(self, acts, grads):
        return (grads * acts).sum(1, keepdim=True), None


class XGradCAM(LayerCAMBase):
    """XGrad-CAM (Fu et al. 2020): weights ``sum_ij g A / (sum_ab A + 1e-7)``.

    Layers with signed activations (BatchNorm outputs, tokens) can have ``sum A ~ 0``: a
    warning says so.
    """

    def channel_weights(self, acts, grads):
        total = acts.sum((2, 3))
        if bool((total.abs() < 1e-6).any()) and bool((acts < 0).any()):
            warnings.warn("XGradCAM: some channels of a signed layer sum to ~0, which makes their weights "
                          "explode; a layer after a ReLU is safer.", XaiWarning, stacklevel=4)
        return (grads * acts).sum((2, 3)) / (total + 1e-7)


class LayerCAM(LayerCAMBase):
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(g_k) * A_k)`` element-wise."""

    def layer_map(self, acts, grads):
        return (torch.relu(grads) * acts).sum(1, keepdim=True), None


# --- forward-only variants ----------------------------------------------------------------------
class _ForwardOnlyCAM(LayerCAMBase):
    """Variants that need the activations and the clean prediction only (no backward)."""

    needs_gradient = False

    def _clean_forward(self, xc, rows, target, capture):
        with torch.no_grad():
            out = self.model(xc)
            acts = self._grid(capture.take(self.call)[0].detach())
            scores, classes = target.scores(out, rows)
        return acts, scores, classes

    def _chunk(self, xc, rows, target, capture, state):
        acts, scores, classes = self._clean_forward(xc, rows, target, capture)
        with torch.no_grad():
            w = self._weights(xc, rows, acts, target, classes, capture)
            m = torch.relu((w[:, :, None, None] * acts).sum(1, keepdim=True))
        return [m], [w], scores, classes, None

    def _weights(self, xc, rows, acts, target, classes, capture) -> torch.Tensor:
        raise NotImplementedError


class CAM(_ForwardOnlyCAM):
    """Class activation mapping (Zhou et al. 2016): ``ReLU(sum_k W[c, k] A_k)`` with W the
    weights of the linear classifier after global average pooling; one forward, no backward.

    Args:
        fc: the classifier (name or module); by default the model's last ``nn.Linear``. Its
            ``in_features`` must equal the layer's channels.

    Example:
        >>> maps = xt.CAM(resnet, layer="layer4")(x)     # = h * w * GradCAM on GAP -> FC nets
    """

    def __init__(self, model, layer, *, fc=None, **kwargs) -> None:
        super().__init__(model, layer, **kwargs)
        if len(self.layers) > 1:
            raise XaiError("CAM uses the layer right before global average pooling: give one layer.")
        if fc is None:
            linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise XaiError("CAM needs a linear classifier after global average pooling; the model has "
                               "no nn.Linear. Pass fc= or use GradCAM.")
            self.fc = linears[-1]
        else:
            self.fc = find_layers(model, fc, "fc")[0]
            if not isinstance(self.fc[1], nn.Linear):
                raise XaiError(f"fc={self.fc[0]!r} is a {type(self.fc[1]).__name__}, not an nn.Linear.")

    def _config(self) -> dict:
        return {**super()._config(), "fc": self.fc[0]}

    def _weights(self, xc, rows, acts, target, classes, capture):
        if classes is None:
            raise XaiError("CAM explains classes (it reads the classifier's weights); use GradCAM for "
                           "callable targets.")
        w = self.fc[1].weight.detach()
        if w.shape[1] != acts.shape[1]:
            raise XaiError(f"fc {self.fc[0]!r} takes {w.shape[1]} features but the layer has {acts.shape[1]} "
                           "channels; CAM needs the layer right before global average pooling.")
        return w[classes].to(acts.dtype)


class ScoreCAM(_ForwardOnlyCAM):
    """Score-CAM (Wang et al. 2020): each channel's upsampled, min-max normalised map masks the
    input, and the model's score on the masked input weights the channel. ``1 + C``
    forwards per image, streamed in chunks of ``batch_size`` masked images, with a progress
    bar.

    Args:
        weighting: ``"official"`` (authors' code: ``w_k = softmax(f(x * H_k))_c``, constant maps
            skipped), ``"paper"`` (Alg. 1: ``softmax_k(p_c(b + H_k (x - b)) - p_c(b))``) or
            ``"grad_cam_lib"`` (pytorch-grad-cam: ``align_corners=True`` upsampling, ``+1e-8``
            normalisation, the target's own score (the logit), softmax over channels).
            Callable targets are scored by the callable.
        baseline: the paper weighting's baseline value ``b``, in model space (default 0).

    Example:
        >>> maps = xt.ScoreCAM(model, layer="layer4", batch_size=64)(x)
    """

    WEIGHTINGS = ("official", "paper", "grad_cam_lib")

    def __init__(self, model, layer, *, weighting: str = "official", baseline: float = 0.0, **kwargs) -> None:
        super().__init__(model, layer, **kwargs)
        self.weighting = check_choice(weighting, "weighting", self.WEIGHTINGS)
        self.baseline = float(baseline)
        if len(self.layers) > 1:
            raise XaiError("ScoreCAM explains one layer at a time.")

    def _config(self) -> dict:
        return {**super()._config(), "weighting": self.weighting, "baseline": self.baseline}

    def _scorer(self, target, classes, rows):
        """(output, local image index) -> score of the class chosen on the clean input."""
        if classes is None:
            return lambda out, idx: target.scores(out, rows[idx])[0]
        kind = target.score if self.weighting == "grad_cam_lib" else "softmax"
        chosen = ClassTarget(classes, score=kind).bind(classes.shape[0])
        return lambda out, idx: chosen.scores(out, idx)[0]

    def _weights(self, xc, rows, acts, target, classes, capture):
        n, c = acts.shape[:2]
        size = tuple(xc.shape[-2:])
        align = self.weighting == "grad_cam_lib"
        score = self._scorer(target, classes, rows)
        flat = acts.flatten(2)
        active = torch.ones(n, c, dtype=torch.bool, device=acts.device) if align else \
            flat.max(-1).values > flat.min(-1).values  # the official code skips constant maps
        pairs = active.nonzero()

        def masked_scores(start, stop):
            img, ch = pairs[start:stop, 0], pairs[start:stop, 1]
            up = F.interpolate(acts[img, ch][:, None], size=size, mode="bilinear", align_corners=align)
            lo = up.flatten(1).min(1).values[:, None, None, None]
            hi = up.flatten(1).max(1).values[:, None, None, None]
            h = (up - lo) / (hi - lo + (1e-8 if align else 0.0))
            masked = self.baseline + h * (xc[img] - self.baseline) if self.weighting == "paper" else xc[img] * h
            return score(self.model(masked), img)

        bs = self.batch_size or self._chunk_size(xc, xc.device)
        capture.enabled = False  # the masked and baseline forwards are not explained
        try:
            parts = map_chunks(masked_scores, pairs.shape[0], bs, device=xc.device, progress=self.progress,
                               desc="ScoreCAM")
            base = self._baseline_scores(xc, score) if self.weighting == "paper" else None
        finally:
            capture.enabled = True
        scores = acts.new_zeros(n, c)
        if parts:
            scores[pairs[:, 0], pairs[:, 1]] = torch.cat(parts).to(acts.dtype)
        if self.weighting == "official":
            return scores
        if base is not None:
            scores = scores - base[:, None].to(acts.dtype)
        return scores.softmax(dim=1)

    def _baseline_scores(self, xc, score):
        """Each image's score on the constant baseline: one forward when the output is a
        tensor (the baseline is the same image for all), else one per image."""
        n = xc.shape[0]
        out = self.model(torch.full_like(xc[:1], self.baseline))
        if isinstance(out, torch.Tensor):
            out = out.expand(n, *out.shape[1:])
        else:
            out = self.model(torch.full_like(xc, self.baseline))
        return score(out, torch.arange(n, device=xc.device))


# --- Guided Grad-CAM ---------------------------------------------------------------------------------
class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the raw Grad-CAM
    map, upsampled bilinearly and broadcast over channels: ``(B, C, H, W)``, signed.

    One forward pass serves both: the rectifier calls are recorded with a switchable rule, the
    plain backward to the layer gives Grad-CAM, the guided backward to the input gives GBP.
    ``explain`` also returns the Grad-CAM maps (``layer_maps``).
    """

    def __init__(self, model, layer, **kwargs) -> None:
        super().__init__(model, layer, **kwargs)
        if not self.upsample:
            raise XaiError("GuidedGradCAM multiplies pixel attributions: it needs upsample=True.")

    def _explain(self, x, target, session):
        check_interceptable(self.model)
        return super()._explain(x, target, session)

    def _forward(self, x, capture, state):
        mode = RectifierMode(PLAIN)
        with mode:
            out = self.model(x)
        if mode.calls == 0:
            raise XaiError("GuidedGradCAM found no ReLU/ReLU6 call in the model's forward pass; guided "
                           "backpropagation has nothing to act on. Use GradCAM.")
        state["mode"] = mode
        return out

    def _gradients(self, scores, acts, x, state):
        mode = state["mode"]
        mode.rule = PLAIN
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=True, allow_unused=True)
        if any(g is None for g in grads):
            raise XaiError("the target score does not depend on the chosen layer.")
        mode.rule = GUIDED
        (state["guided"],) = torch.autograd.grad(scores.sum(), x)
        return grads

    def _extra(self, xc, maps, state):
        cam = upsample_to(maps[0], xc.shape[-2:])
        return state.pop("guided").detach() * cam


__all__ = [
    "CAM", "CAMExplanation", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "HiResCAM", "LayerCAM",
    "LayerCAMBase", "ScoreCAM", "XGradCAM", "swin_reshape", "tokens_to_grid", "vit_reshape",
]
