"""The model's input space and the baselines built in it.

``normalize=(mean, std)`` or ``input_range=(lo, hi)`` tells where black and white lie in the
model's input space (:func:`check_space`, :func:`value_range`). Path methods start there, and
the metrics and region methods fill removed or hidden pixels with the same values.

A ``baseline`` argument is one of:

* ``"black"`` / ``"white"``: black and white **in pixel space**, mapped to the model's input
  space with the explainer's ``normalize=(mean, std)`` or ``input_range=(lo, hi)``. Without
  either, they fall back to each image's own minimum and maximum (over all channels, as
  XRAI does), which is close to black and white for natural photos but not equal.
* ``"uniform"``: uniform noise over the valid range, per element.
* ``"gaussian"``: ``clip(x + N(0, s^2))`` with ``s = 0.15 * (hi - lo)``.
* ``"blur"``: ``x`` blurred with a Gaussian of ``sigma = 10`` pixels (zero padding, see
  :func:`~xai_torch.imageops.gaussian_blur`).
* ``"max_distance"``: per element the valid value farthest from ``x`` (``hi`` where ``x`` is
  below the middle of the range, else ``lo``); note that it still encodes the image.
* :class:`Baseline`: one of the names above with other parameters,
  e.g. ``Baseline("blur", sigma=3)``.
* a tensor that broadcasts to ``x`` (a scalar, ``(C, 1, 1)``, ``(1, C, H, W)``,
  ``(B, C, H, W)``...), in the model's input space;
* a callable ``x -> tensor`` broadcastable to ``x``;
* a list of any of these: the attribution is averaged over them (the stochastic ones are
  drawn independently).

The last four named baselines follow Sturmfels, Lundberg & Lee, "Visualizing the Impact of
Feature Attribution Baselines", Distill 2020.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch

from .errors import XaiError, describe
from .imageops import gaussian_blur

NAMES = ("black", "white", "uniform", "gaussian", "blur", "max_distance")
_DEFAULTS = {"gaussian": {"sigma": 0.15}, "blur": {"sigma": 10.0}}


class Baseline:
    """A named baseline with its parameters.

    Args:
        name: one of ``"black", "white", "uniform", "gaussian", "blur", "max_distance"``.
        sigma: for ``"gaussian"`` the noise standard deviation as a fraction of the valid
            range (default 0.15); for ``"blur"`` the blur standard deviation in pixels
            (default 10).

    Example:
        >>> ig(x, baseline=[xt.Baseline("blur", sigma=3), "black"])
    """

    def __init__(self, name: str, sigma: Optional[float] = None) -> None:
        if name not in NAMES:
            raise XaiError(f"unknown baseline {name!r}; choose one of {list(NAMES)}, a tensor, a callable "
                           "x -> tensor, or a list of these.")
        if sigma is not None and name not in _DEFAULTS:
            raise XaiError(f"baseline {name!r} takes no sigma.")
        self.name = name
        self.sigma = float(sigma if sigma is not None else _DEFAULTS.get(name, {}).get("sigma", 0.0))
        if self.sigma < 0:
            raise XaiError(f"baseline sigma must be >= 0; got {sigma}.")

    def __repr__(self) -> str:
        return f"Baseline({self.name!r}" + (f", sigma={self.sigma})" if self.name in _DEFAULTS else ")")

    @property
    def stochastic(self) -> bool:
        return self.name in ("uniform", "gaussian")

    def __call__(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The baseline for images ``x`` whose valid range is ``[lo, hi]`` (broadcastable)."""
        name = self.name
        if name == "black":
            return lo.expand_as(x).clone()
        if name == "white":
            return hi.expand_as(x).clone()
        if name == "uniform":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return lo + u * (hi - lo)
        if name == "gaussian":
            e = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return torch.minimum(torch.maximum(x + e * self.sigma * (hi - lo), lo), hi)
        if name == "blur":
            return gaussian_blur(x, self.sigma)
        return torch.where(x < (lo + hi) / 2, hi.expand_as(x), lo.expand_as(x))  # max_distance


#: one baseline as :func:`check_baselines` coerces it: named, a tensor, or a callable ``x -> tensor``.
Spec = Union[Baseline, torch.Tensor, Callable[[torch.Tensor], Any]]


def _channel_values(value: Any, channels: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, channels):
        raise XaiError(f"{name} needs 1 or {channels} values (one per channel); got {t.numel()}.")
    return t.reshape(1, -1, 1, 1)


def check_space(normalize: Any, input_range: Any) -> tuple[Any, Any]:
    """Validate the ``normalize`` / ``input_range`` constructor arguments."""
    if normalize is not None and input_range is not None:
        raise XaiError("give normalize=(mean, std) or input_range=(lo, hi), not both.")
    for name, value in (("normalize", normalize), ("input_range", input_range)):
        if value is None:
            continue
        if not isinstance(value, Sequence) or len(value) != 2:
            raise XaiError(f"{name} must be a pair ({'mean, std' if name == 'normalize' else 'lo, hi'}); "
                           f"got {describe(value)}.")
        if name == "normalize" and bool((torch.as_tensor(value[1], dtype=torch.float64) <= 0).any()):
            raise XaiError(f"normalize std must be > 0; got {value[1]!r}.")
    return normalize, input_range


def value_range(x: torch.Tensor, normalize: Any = None, input_range: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space values of black and white for images ``x`` ``(B, C, H, W)``.

    Returns:
        ``(lo, hi)``, each ``(1, C, 1, 1)`` from ``normalize`` (pixels in ``[0, 1]``) or
        ``input_range``, else ``(B, 1, 1, 1)``: each image's own min and max.
    """
    c = x.shape[1]
    if normalize is not None:
        mean, std = (_channel_values(v, c, "normalize") for v in normalize)
        lo, hi = (0 - mean) / std, (1 - mean) / std
    elif input_range is not None:
        lo, hi = (_channel_values(v, c, "input_range") for v in input_range)
    else:
        flat = x.detach().flatten(1)
        lo, hi = flat.min(1).values.reshape(-1, 1, 1, 1), flat.max(1).values.reshape(-1, 1, 1, 1)
    if bool((hi < lo).any()):
        raise XaiError("the valid input range has hi < lo; check normalize / input_range.")
    return lo.to(device=x.device, dtype=x.dtype), hi.to(device=x.device, dtype=x.dtype)


def _as_spec(spec: Any) -> Spec:
    if isinstance(spec, str):
        return Baseline(spec)
    if isinstance(spec, (Baseline, torch.Tensor)) or callable(spec):
        out: Spec = spec
        return out
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.tensor(float(spec))
    raise XaiError(f"baseline must be a name {list(NAMES)}, an xt.Baseline, a tensor, a number, a callable "
                   f"x -> tensor, or a list of these; got {describe(spec)}.")


def broadcast_to_images(b: Any, x: torch.Tensor, what: str) -> torch.Tensor:
    """``b`` (a tensor broadcastable to the images ``x``) expanded to ``x``'s shape, dtype and device."""
    if not isinstance(b, torch.Tensor):
        raise XaiError(f"{what} must give a tensor; got {describe(b)}.")
    if not b.is_floating_point():
        b = b.to(x.dtype)
    try:
        shape = torch.broadcast_shapes(b.shape, x.shape)  # type: ignore[no-untyped-call]  # torch's stub
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise XaiError(f"{what} of shape {tuple(b.shape)} does not broadcast to x of shape {tuple(x.shape)}; "
                       "give a scalar, (C, 1, 1), (1, C, H, W) or (B, C, H, W) tensor.")
    if not bool(torch.isfinite(b).all()):
        raise XaiError(f"{what} has NaN or infinite values.")
    out: torch.Tensor = b.detach().to(device=x.device, dtype=x.dtype).expand(x.shape)
    return out


def check_baselines(baseline: Any) -> list[Spec]:
    """Coerce a ``baseline`` argument to a non-empty list of specs (no tensors built yet)."""
    specs = list(baseline) if isinstance(baseline, (list, tuple)) else [baseline]
    if not specs:
        raise XaiError("baseline is an empty list; give at least one baseline.")
    return [_as_spec(s) for s in specs]


def make_baselines(specs: list[Spec], x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Build the baselines for images ``x``.

    Returns:
        ``(J, B, C, H, W)``: ``J`` baselines per image, in ``x``'s dtype and device.
    """
    out = []
    for j, spec in enumerate(specs):
        what = f"baseline[{j}]" if len(specs) > 1 else "baseline"
        if isinstance(spec, Baseline):
            b = spec(x, lo, hi, generator)
        elif isinstance(spec, torch.Tensor):
            b = spec
        else:
            b = spec(x)
        out.append(broadcast_to_images(b, x, what))
    return torch.stack(out)
