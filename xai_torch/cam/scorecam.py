"""Score-CAM: channels weighted by the model's score on inputs masked by each channel."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Optional, TypeVar

import torch
from torch import nn

from ..batching import map_chunks
from ..errors import XaiError, check_choice
from ..imageops import upsample_to
from ..runner import ModelRunner
from ..targets import ClassTarget, Target
from .base import CAMState
from .cam import ForwardOnlyCAM

Scorer = Callable[[Any, torch.Tensor], torch.Tensor]
T = TypeVar("T")

#: the share of the free CUDA memory the streamed chunks may take
HEADROOM = 0.8


def stream_fitting(run: ModelRunner, fn: Callable[[int, int], T], n: int, headroom: float = HEADROOM) -> list[T]:
    """``fn(start, stop)`` over ``[0, n)`` in the largest chunks that fit: on CUDA with
    ``batch_size=None`` the first chunk (the automatic size) measures the peak memory one sample
    takes (``torch.cuda.max_memory_allocated``, whose peak statistic it resets), and the rest runs
    in chunks that fill ``headroom`` of the free memory, with the out-of-memory back-off of
    :func:`~xai_torch.batching.map_chunks`. Elsewhere, or with a ``batch_size``: ``run.map``.
    The results are those of any chunking, in order."""
    dev = run.device
    first = run.chunk
    if run.batch_size is not None or dev.type != "cuda" or n <= first:
        return run.map(fn, n)
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    results = map_chunks(fn, first, first, device=dev, progress=run.progress, desc=run.name)
    torch.cuda.synchronize(dev)
    per_sample = max(1, torch.cuda.max_memory_allocated(dev) - before) / first
    free = torch.cuda.mem_get_info(dev)[0] + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    size = max(first, int(headroom * free / per_sample))
    return results + map_chunks(lambda a, b: fn(first + a, first + b), n - first, size, device=dev,
                                progress=run.progress, desc=run.name)


class ScoreCAM(ForwardOnlyCAM):
    """Score-CAM (Wang et al. 2020): each channel's upsampled, min-max normalised map masks the
    input, and the model's score on the masked input weights the channel. ``1 + C``
    forwards per image, streamed in chunks of ``batch_size`` masked images (``None``: on CUDA,
    the largest chunks that fit in 80% of the free memory, sized by a probe of the first chunk,
    :func:`stream_fitting`; no more than one chunk of masked images exists at a time), with a
    progress bar. In attached mode (``from_output``) your forward is the clean one: only the masked
    forwards run (the images are kept from your forward).

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
    keeps_input: ClassVar[bool] = True

    def __init__(self, model: nn.Module, layer: Any, *, weighting: str = "official", baseline: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.weighting = check_choice(weighting, "weighting", self.WEIGHTINGS)
        self.baseline = float(baseline)
        if len(self.layers) > 1:
            raise XaiError("ScoreCAM explains one layer at a time.")

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "weighting": self.weighting, "baseline": self.baseline}

    def _scorer(self, target: Target, classes: Optional[torch.Tensor], rows: torch.Tensor) -> Scorer:
        """(output, local image index) -> score of the class chosen on the clean input."""
        if classes is None:
            return lambda out, idx: target.scores(out, rows[idx])[0]
        kind = target.score if self.weighting == "grad_cam_lib" and isinstance(target, ClassTarget) else "softmax"
        chosen: Target = ClassTarget(classes, score=kind).bind(classes.shape[0])
        return lambda out, idx: chosen.scores(out, idx)[0]

    def _weights(self, x: Optional[torch.Tensor], rows: torch.Tensor, acts: torch.Tensor, target: Target,
                 classes: Optional[torch.Tensor], state: CAMState) -> torch.Tensor:
        assert x is not None
        n, c = acts.shape[:2]
        size = tuple(x.shape[-2:])
        align = self.weighting == "grad_cam_lib"
        score = self._scorer(target, classes, rows)
        flat = acts.flatten(2)
        active = torch.ones(n, c, dtype=torch.bool, device=acts.device) if align else \
            flat.max(-1).values > flat.min(-1).values  # the official code skips constant maps
        pairs = active.nonzero()

        def masked_scores(start: int, stop: int) -> torch.Tensor:
            img, ch = pairs[start:stop, 0], pairs[start:stop, 1]
            up = upsample_to(acts[img, ch][:, None], size, align_corners=align)
            lo = up.flatten(1).min(1).values[:, None, None, None]
            hi = up.flatten(1).max(1).values[:, None, None, None]
            h = (up - lo) / (hi - lo + (1e-8 if align else 0.0))
            masked = self.baseline + h * (x[img] - self.baseline) if self.weighting == "paper" else x[img] * h
            return score(state.run.forward(masked), img)

        with state.tap.paused():  # the masked and baseline forwards are not explained
            parts = stream_fitting(state.run, masked_scores, pairs.shape[0])
            base = self._baseline_scores(state.run, x, score) if self.weighting == "paper" else None
        scores = acts.new_zeros(n, c)
        if parts:
            scores[pairs[:, 0], pairs[:, 1]] = torch.cat(parts).to(acts.dtype)
        if self.weighting == "official":
            return scores
        if base is not None:
            scores = scores - base[:, None].to(acts.dtype)
        return scores.softmax(dim=1)

    def _baseline_scores(self, run: ModelRunner, x: torch.Tensor, score: Scorer) -> torch.Tensor:
        """Each image's score on the constant baseline: one forward when the output is a
        tensor (the baseline is the same image for all), else one per image."""
        n = x.shape[0]
        out = run.forward(torch.full_like(x[:1], self.baseline))
        if isinstance(out, torch.Tensor):
            out = out.expand(n, *out.shape[1:])
        else:
            out = run.forward(torch.full_like(x, self.baseline))
        return score(out, torch.arange(n, device=x.device))
