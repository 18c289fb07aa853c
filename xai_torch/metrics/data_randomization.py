"""Data randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", section 5).

Train the same architecture twice: on the real labels and on a random permutation of them (the
second model can only memorise). An explanation that depends on the relation between images and
labels must differ between the two models; one that stays similar (edge detectors, in the paper
Guided Backprop and Guided Grad-CAM) reflects the input or the architecture, not what was
learned. :func:`data_randomization` explains the same images with both trained models and
compares the maps; training the models is the caller's (``benchmarks/bench_data_randomization.py``
trains a small CNN on sklearn's digits).

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from ..errors import XaiError, check_choice, check_input, describe
from ..runner import ModelRunner
from ..targets import ClassTarget, as_target, class_output
from ._common import REDUCTIONS, reduce_channels, to_result
from .fragility_maps import top_mask
from .invariance import _attribution
from .similarity import BUILTIN, SIMILARITIES

#: what :func:`data_randomization` compares by: the similarities of
#: :mod:`~xai_torch.metrics.similarity` and the top-k intersection.
MEASURES = (*SIMILARITIES, "topk")


@dataclass
class DataRandomizationResult:
    """What :func:`data_randomization` returns (per-image tensors on ``x.device``).

    Attributes:
        scores: measure name -> ``(B,)`` float64 similarity of the two models' maps (1: the
            same; ``"topk"``: the share of the real model's top-k pixels in the other's top-k).
        targets: ``(B,)`` the classes explained, the same for both models.
        agreement: ``(B,)`` bool, whether the random-label model predicts that class too.
        k: the top-k size.
        real, randomized: ``(B, H, W)`` the two reduced maps when ``keep_maps=True``.
    """

    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: Optional[torch.Tensor] = None
    agreement: Optional[torch.Tensor] = None
    k: int = 0
    real: Optional[torch.Tensor] = None
    randomized: Optional[torch.Tensor] = None


def _logits(model: Any, x: torch.Tensor, batch_size: Optional[int], progress: Optional[bool]) -> torch.Tensor:
    runner = ModelRunner(model, batch_size=batch_size, progress=progress, name="data_randomization", sample=x[0],
                         device=x.device)
    xd = x.detach().to(runner.device)
    with runner.session():
        parts = runner.map(lambda s, e: class_output(runner.forward(xd[s:e].clone())).detach(), x.shape[0])
    out = torch.cat(parts)
    if out.ndim != 2:
        raise XaiError(f"data_randomization needs model outputs of shape (B, num_classes); got {describe(out)}.")
    return out


def data_randomization(model_real: nn.Module, model_random: nn.Module, explainer_factory: Callable[[Any], Any],
                       x: torch.Tensor, target: Any = None, *,
                       similarity: Union[str, Sequence[str]] = ("spearman", "ssim", "topk"), k: Optional[int] = None,
                       reduce: str = "abs", call_kwargs: Optional[dict[str, Any]] = None, keep_maps: bool = False,
                       batch_size: Optional[int] = None, progress: Optional[bool] = None) -> DataRandomizationResult:
    """Similarity of the explanations of a model trained on real labels and of the same
    architecture trained on permuted labels (Adebayo et al. 2018).

    Both models explain the same classes: ``target``, or the real model's prediction. Neither
    model is modified (each explainer is built by ``explainer_factory`` on the user's model).

    Args:
        model_real: the model trained on the real labels.
        model_random: the same architecture trained on randomly permuted labels.
        explainer_factory: ``model -> explainer`` (``lambda m: xt.GradCAM(m, layer="conv2")``).
        x, target, reduce, batch_size, progress: see :mod:`xai_torch.metrics._common`
            (``reduce`` defaults to ``"abs"``, the paper's absolute-value maps).
        similarity: names from :data:`MEASURES`: ``"spearman"``, ``"spearman_abs"``,
            ``"pearson"``, ``"ssim"``, ``"hog"`` (maps of at least 24 px) and ``"topk"``.
        k: top-k size for ``"topk"``; default 10 % of the pixels.
        call_kwargs: call keywords for both explainer calls.
        keep_maps: keep both reduced maps in the result.

    Returns:
        :class:`DataRandomizationResult`.

    Cost:
        One forward per image and model, and one explanation of ``B`` images per model.

    Example:
        >>> r = xt.metrics.data_randomization(real, permuted, lambda m: xt.Gradient(m), x)
        >>> r.scores["spearman"].mean()       # near 1: the method ignores what was learned
    """
    x4, _ = check_input(x)
    for m, name in ((model_real, "model_real"), (model_random, "model_random")):
        if not callable(m):
            raise XaiError(f"{name} must be an nn.Module or a callable; got {describe(m)}.")
    if model_real is model_random:
        raise XaiError("model_real and model_random are the same object; pass the model trained on permuted labels.")
    if not callable(explainer_factory):
        raise XaiError(f"explainer_factory must be a callable model -> explainer; got {describe(explainer_factory)}.")
    names = [similarity] if isinstance(similarity, str) else list(similarity)
    if not names:
        raise XaiError(f"similarity needs at least one of {list(MEASURES)}.")
    for n in names:
        check_choice(n, "similarity", MEASURES)
    check_choice(reduce, "reduce", REDUCTIONS)
    pixels = x4.shape[2] * x4.shape[3]
    if k is None:
        k = max(1, round(0.1 * pixels))
    elif isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= pixels:
        raise XaiError(f"k must be an int in [1, {pixels}]; got {describe(k)}.")
    tgt = as_target(target, x4.shape[0])
    if not isinstance(tgt, ClassTarget) or tgt.k is not None:
        raise XaiError("data_randomization explains one class per image: give None, an int or one class per image.")
    kwargs = dict(call_kwargs or {})

    real_logits = _logits(model_real, x4, batch_size, progress)
    random_logits = _logits(model_random, x4, batch_size, progress)
    if real_logits.shape[1] != random_logits.shape[1]:
        raise XaiError(f"the two models have {real_logits.shape[1]} and {random_logits.shape[1]} classes; train the "
                       "same architecture on the permuted labels.")
    classes = real_logits.argmax(1) if tgt.classes is None else tgt.classes.expand(x4.shape[0]).to(real_logits.device)
    if bool(((classes < 0) | (classes >= real_logits.shape[1])).any()):
        raise XaiError(f"target classes must lie in [0, {real_logits.shape[1] - 1}] for this model; "
                       f"got {sorted(set(classes.tolist()))[:5]}.")
    maps = []
    for model, whose in ((model_real, "the real model's"), (model_random, "the random-label model's")):
        a = _attribution(explainer_factory(model)(x4.detach().clone(), target=classes.cpu(), **kwargs), whose)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[0] != x4.shape[0]:
            raise XaiError(f"{whose} explainer must return (B, C, H, W) or (B, H, W) maps; got {tuple(a.shape)}.")
        maps.append(reduce_channels(a.to(x4.device), reduce))
    if maps[0].shape != maps[1].shape:
        raise XaiError(f"the two explanations have shapes {tuple(maps[0].shape)} and {tuple(maps[1].shape)}.")
    scores = {}
    for n in names:
        if n == "topk":
            kk = min(k, maps[0][0].numel())
            scores[n] = (top_mask(maps[0], kk) & top_mask(maps[1], kk)).sum(1).double() / kk
        else:
            scores[n] = BUILTIN[n](maps[0], maps[1])
    return DataRandomizationResult(
        scores={n: to_result(v, x4) for n, v in scores.items()}, targets=classes.to(x4.device),
        agreement=(random_logits.argmax(1) == classes).to(x4.device), k=k,
        real=to_result(maps[0], x4) if keep_maps else None, randomized=to_result(maps[1], x4) if keep_maps else None,
    )


__all__ = ["DataRandomizationResult", "MEASURES", "data_randomization"]
