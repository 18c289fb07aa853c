"""Random logit test (Sixt et al. 2020; Quantus ``RandomLogit``): how similar is the explanation of
the target class to the explanation of a random other class? A class-sensitive method gives a
low similarity; a method whose map ignores the class (Sixt et al. show it for several modified
backpropagation rules) gives a high one.

Arguments shared by every metric are documented in :mod:`xai_torch.metrics._common`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..batching import check_batch_size
from ..errors import XaiError, check_choice, check_input, check_positive_int, describe
from ..explainer import Explainer
from ..runner import ModelRunner
from ..seeding import check_seed
from ..targets import ClassTarget, as_target, class_output
from ._common import REDUCTIONS, reduce_channels, to_result
from .sensitivity import _check_attribution
from .similarity import pearson, spearman, ssim

SIMILARITY = ("ssim", "spearman", "pearson")


@dataclass
class RandomLogitResult:
    """What :func:`random_logit` returns (per-image tensors on ``x.device``).

    Attributes:
        similarity: ``(B,)`` float64, the similarity of the two explanations (lower is better).
        classes: ``(B,)`` long, the explained class of each image.
        other: ``(B,)`` long, the random other class each image was explained for.
    """

    similarity: torch.Tensor
    classes: torch.Tensor
    other: torch.Tensor


def random_other_classes(classes: torch.Tensor, num_classes: int, seed: Optional[int] = 42) -> torch.Tensor:
    """One class per image drawn uniformly from the ``num_classes - 1`` classes other than
    ``classes[i]``, from a CPU generator seeded with ``seed`` (``None``: torch's global one),
    one draw per image in order: image i's class depends only on ``(seed, i, classes[i])``.

    Shape:
        ``(B,) -> (B,)`` long on ``classes``' device.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = torch.empty(classes.shape[0], dtype=torch.long)
    for i, c in enumerate(classes.tolist()):
        r = int(torch.randint(0, num_classes - 1, (1,), generator=gen))
        out[i] = r + (r >= c)            # skip the class itself
    return out.to(classes.device)


def random_logit(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *,
                 similarity: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "ssim",
                 num_classes: Optional[int] = None, normalise: bool = True, reduce: str = "sum",
                 model: Any = None, seed: Optional[int] = 42, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> RandomLogitResult:
    """Random logit (Sixt et al. 2020): ``similarity(Phi_y(x), Phi_r(x))`` with ``r`` a random
    class other than ``y`` (seeded, :func:`random_other_classes`). Quantus' defaults: SSIM,
    each explanation divided by its largest ``|Phi|``, seed 42.

    Differs from Quantus 0.6: Quantus computes SSIM on the **flattened** maps (a 1-D window of
    7 values running across rows) and divides by the largest value of the whole batch; here SSIM
    runs on the 2-D maps (channels reduced with ``reduce``), as in the paper, and each map is
    divided by its own maximum. Quantus draws the other class with ``np.random.seed(seed)``
    per batch, so its draw depends on how the data are batched; here it depends on the image's
    position only.

    Args:
        explainer: an xai_torch explainer or a callable ``explainer(x, target=classes) -> attributions``.
        x, target, batch_size, progress: see :mod:`xai_torch.metrics._common`.
        similarity: ``"ssim"`` (skimage's, data range the joint range of each pair),
            ``"spearman"``, ``"pearson"``, or a callable ``(a, b) -> (B,)`` on ``(B, H, W)`` maps.
        num_classes: the number of classes (``None``: the model's output width).
        normalise: divide each map by its largest ``|Phi|`` first.
        reduce: channel reduction of the maps (see :mod:`xai_torch.metrics._common`).
        model: the classifier, for a plain-callable explainer (an xai_torch explainer brings its own).
        seed: the seed of the class draw.

    Returns:
        :class:`RandomLogitResult`.

    Cost:
        ``2 B`` explained images (two explainer calls on ``x``) and ``B`` model forwards (no grad)
        for the classes and their count.

    Example:
        >>> xt.metrics.random_logit(xt.Gradient(model), x).similarity
    """
    x4, _ = check_input(x)
    if not callable(explainer):
        raise XaiError(f"explainer must be an xai_torch explainer or a callable (x, target=) -> attributions; "
                       f"got {describe(explainer)}.")
    if not callable(similarity):
        check_choice(similarity, "similarity", SIMILARITY)
    check_choice(reduce, "reduce", REDUCTIONS)
    if not isinstance(normalise, bool):
        raise XaiError(f"normalise must be True or False; got {describe(normalise)}.")
    seed = check_seed(seed)
    batch_size = check_batch_size(batch_size)
    if num_classes is not None:
        num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    tgt = as_target(target, x4.shape[0])
    if not isinstance(tgt, ClassTarget) or tgt.k is not None:
        raise XaiError(f"random_logit compares the explanation of one class per image with another class's: give "
                       f"None, a class or one class per image; got {describe(target)}.")
    owner = explainer.model if isinstance(explainer, Explainer) else model
    if owner is None:
        raise XaiError("random_logit needs the model (its classes): pass model=the classifier (an xai_torch "
                       "explainer brings its own).")
    b = x4.shape[0]
    runner = ModelRunner(owner, batch_size=batch_size, progress=progress, name="random_logit", sample=x4[0],
                         device=x4.device)
    dev = runner.device
    xd = x4.detach().to(dev, copy=True)

    def chunk(start: int, stop: int) -> torch.Tensor:
        out = class_output(runner.forward(xd[start:stop]))
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise XaiError("random_logit needs a model output of shape (B, num_classes); this model returned a "
                           f"{describe(out)}.")
        return out.detach()

    with runner.session():
        logits = torch.cat(runner.map(chunk, b))
    width = logits.shape[1]
    k = width if num_classes is None else num_classes
    if k > width or k < 2:
        raise XaiError(f"num_classes={k} does not fit the model's {width} outputs (need 2 <= num_classes <= {width}).")
    classes = logits.argmax(1) if tgt.classes is None else tgt.classes.expand(b).to(dev)
    if bool(((classes < 0) | (classes >= k)).any()):
        raise XaiError(f"target classes must lie in [0, {k - 1}]; got {sorted(set(classes.tolist()))[:5]}.")
    other = random_other_classes(classes.cpu(), k, seed).to(dev)
    a = _maps(explainer, xd, classes, b, normalise, reduce)
    o = _maps(explainer, xd, other, b, normalise, reduce)
    if callable(similarity):
        score = torch.as_tensor(similarity(a, o))
        if score.shape != (b,):
            raise XaiError(f"similarity must return one value per image ({b},); got {describe(score)}.")
    else:
        fns: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "ssim": ssim, "spearman": spearman, "pearson": pearson}
        score = fns[similarity](a, o)
    return RandomLogitResult(to_result(score.double(), x4), classes.to(x4.device), other.to(x4.device))


def _maps(explainer: Callable[..., Any], x: torch.Tensor, classes: torch.Tensor, b: int, normalise: bool,
          reduce: str) -> torch.Tensor:
    out = explainer(x.clone(), target=classes.cpu())
    e = _check_attribution(out, b, "the explainer's attribution").to(x.device, torch.float64)
    if e.ndim != 4 or e.shape[-2:] != x.shape[-2:]:
        raise XaiError(f"random_logit compares maps of the image's size {tuple(x.shape[-2:])}; the explainer "
                       f"returned {describe(e)} (upsample CAMs first).")
    m = reduce_channels(e, reduce)
    if normalise:
        top = m.flatten(1).abs().amax(1)[:, None, None]
        m = m / torch.where(top == 0, torch.ones_like(top), top)
    return m


__all__ = ["RandomLogitResult", "random_logit", "random_other_classes"]
