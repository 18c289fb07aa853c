"""What LIME and KernelSHAP share: superpixels, hidden values, batched perturbations.

Both methods switch superpixels on and off. A coalition is a 0/1 row ``z`` over an image's
``S`` superpixels; its perturbed image keeps the pixels of the superpixels with ``z = 1`` and
takes the others from a *hidden* image of the same size. The rows of every image are
composed on the model's device in chunks of at most ``batch_size`` images
(``keep = Z[:, labels]``, ``where(keep, x, hidden)``), scored in one no-grad forward per
chunk, and each method fits per-superpixel weights to the scores; the weights are painted
back through the label map as a ``(B, 1, H, W)`` map.

Row 0 of every image is the unperturbed image: it is scored first, for all images at once,
and that pass pins argmax targets to the class of the clean image.

Constructor arguments shared by :class:`~xai_torch.region.LIME` and
:class:`~xai_torch.region.KernelSHAP` (besides ``model``, ``batch_size``, ``progress``, see
:mod:`xai_torch.explainer`):

Args:
    hide: what a hidden superpixel shows, in the model's input space:

        * ``"mean"`` (default, lime's ``hide_color=None``): each superpixel filled with its
          own mean, per channel;
        * ``"gray"``: mid-grey, the midpoint of black and white per channel when
          ``normalize`` / ``input_range`` is given, else the midpoint of each image's own min
          and max (over all channels);
        * ``"blur"``: a Gaussian-blurred copy of the image (``blur_sigma`` pixels, zero
          padding, :func:`xai_torch.imageops.gaussian_blur`);
        * a number, or a tensor that broadcasts to ``(B, C, H, W)`` (``(C, 1, 1)`` per
          channel...): that value.
    segmenter: ``"quickshift"`` (default, lime's parameters), ``"slic"``, ``"felzenszwalb"``
        or a callable ``(x, image=None) -> (B, H, W)`` integer labels (use
        ``functools.partial(xt.segmentation.slic, n_segments=50)`` to set parameters).
        Labels are renumbered from 0 in every image, so no superpixel is void.
    output: what a class target explains: ``"softmax"`` (probability, default, as lime and
        shap), ``"logit"`` or ``"log_softmax"``. Callable targets are scored by the callable.
        A one-logit model ``z`` (binary classifier) is explained by ``sigmoid(z)`` /
        ``logsigmoid(z)`` (see :data:`xai_torch.targets.SCORES`).
    normalize, input_range: the model-space black and white for ``hide="gray"`` (see
        :mod:`xai_torch.space`).
    blur_sigma: the blur of ``hide="blur"``, in pixels (default 10, as ``xt.Baseline("blur")``).
    seed: seed of the random coalitions; the same seed repeats bit-for-bit on the same
        device. ``None`` uses torch's global RNG.

Call arguments (besides ``x`` and ``target``):

Args:
    segments: ``(H, W)`` or ``(B, H, W)`` integer labels to use instead of the segmenter (at
        least two superpixels per image).
    image: pixel-space images for the segmenter (``(B, C, H, W)`` / ``(B, H, W, C)``, floats in
        ``[0, 1]`` or uint8), e.g. the photo before normalisation; see
        :mod:`xai_torch.segmentation`.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_choice, check_fill, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession
from ..imageops import gaussian_blur
from ..runner import result_dtype
from ..seeding import check_seed, make_generator
from ..segmentation import SEGMENTERS, check_segments, get_segmenter
from ..space import broadcast_to_images, check_space, value_range
from ..targets import ClassTarget, Target
from ..threads import small_ops

HIDES = ("mean", "gray", "blur")
OUTPUTS = ("softmax", "logit", "log_softmax")


@dataclass
class SuperpixelExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of a superpixel method.

    Attributes:
        segments: ``(B, H, W)`` long labels, contiguous from 0 in every image.
        weights: ``(B, [K,] S)`` weight of each superpixel, ``S`` the largest count in the
            batch; image ``b`` uses the first ``num_segments[b]`` and the rest are 0.
        num_segments: ``(B,)`` superpixels per image.
        model_calls: images the model evaluated (perturbations and clean images).
    """

    segments: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    num_segments: Optional[torch.Tensor] = None
    model_calls: int = 0


# --- pure tensor pieces -------------------------------------------------------------------------------
def check_hide(hide: Any) -> Union[str, float, torch.Tensor]:
    """Validate ``hide`` (a mode name, a number or a tensor); returns it."""
    if isinstance(hide, str):
        return check_choice(hide, "hide", HIDES)
    if isinstance(hide, torch.Tensor) and not hide.is_floating_point():
        raise XaiError(f"hide must be one of {list(HIDES)}, a number or a float tensor; got {describe(hide)}.")
    fill: Union[float, torch.Tensor] = check_fill(hide, f"hide (one of {list(HIDES)}, or a model-space fill)")
    return fill


def segment_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each superpixel filled with its own mean per channel (float64 sums): ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    idx = labels.reshape(b, 1, h * w)
    count = int(labels.max()) + 1
    flat = x.detach().reshape(b, c, h * w).to(torch.float64)
    sums = flat.new_zeros(b, c, count).scatter_add_(2, idx.expand(b, c, h * w), flat)
    sizes = flat.new_zeros(b, 1, count).scatter_add_(2, idx, torch.ones_like(flat[:, :1]))
    means = sums / sizes.clamp(min=1)
    return means.gather(2, idx.expand(b, c, h * w)).reshape(b, c, h, w).to(x.dtype)


def hidden_images(x: torch.Tensor, labels: torch.Tensor, hide: Union[str, float, torch.Tensor],
                  lo_hi: Optional[tuple[Any, Any]] = None, blur_sigma: float = 10.0) -> torch.Tensor:
    """What hidden superpixels show, ``(B, C, H, W)`` on ``x.device`` (see the module doc).

    Args:
        lo_hi: ``(lo, hi)`` model-space black and white for ``"gray"`` (broadcastable to x),
            or ``None`` for each image's own min and max.
    """
    if isinstance(hide, torch.Tensor):
        return broadcast_to_images(hide, x, "hide")
    if isinstance(hide, float):
        return torch.full_like(x, hide)
    if hide == "mean":
        return segment_means(x, labels)
    if hide == "gray":
        lo, hi = lo_hi if lo_hi is not None else value_range(x)  # each image's own min and max
        return ((lo + hi) / 2).to(device=x.device, dtype=x.dtype).expand(x.shape)
    return gaussian_blur(x.detach(), blur_sigma)


def compose(x: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor, z: torch.Tensor,
            images: torch.Tensor, single: Optional[bool] = None,
            hidden_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Perturbed images ``(n, C, H, W)``: row ``i`` is image ``images[i]`` with the superpixels
    where ``z[i]`` is 0 taken from ``hidden``.

    Args:
        x, hidden: ``(B, C, H, W)`` (``hidden``: any number of images with ``hidden_rows``).
        labels: ``(B, H, W)`` long labels.
        z: ``(n, S)`` 0/1 (bool or numbers), ``S`` at least the number of labels.
        images: ``(n,)`` long, the image of each row.
        single: whether all rows belong to one image (then it is broadcast instead of copied
            ``n`` times); ``None`` finds out.
        hidden_rows: ``(n,)`` long, the row of ``hidden`` each perturbed image takes its hidden
            pixels from (KernelSHAP's background images); default ``images``.
    """
    n = z.shape[0]
    h, w = labels.shape[1:]
    if single is None:
        single = bool((images == images[0]).all())
    if single:
        keep = z.to(torch.bool)[:, labels[images[0]]]
        i = images[:1]
        return torch.where(keep[:, None], x[i], hidden[i] if hidden_rows is None else hidden[hidden_rows])
    keep = z.to(torch.bool).gather(1, labels.reshape(labels.shape[0], h * w)[images]).view(n, 1, h, w)
    if hidden_rows is not None:
        return torch.where(keep, x[images], hidden[hidden_rows])
    # rows come in runs of one image: one broadcast `where` per run straight into the batch (no
    # gathered copies of x and hidden)
    out = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device)
    ids, counts = torch.unique_consecutive(images, return_counts=True)
    pos = 0
    for i, c in zip(ids.tolist(), counts.tolist()):
        torch.where(keep[pos:pos + c], x[i:i + 1], hidden[i:i + 1], out=out[pos:pos + c])
        pos += c
    return out


def paint(weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-superpixel weights ``(B, [K,] S)`` -> maps ``(B, [K,] 1, H, W)`` (``labels`` ``(B, H, W)``)."""
    b, h, w = labels.shape
    idx = labels.reshape(b, 1, h * w)
    flat = weights.reshape(b, -1, weights.shape[-1])
    out = flat.gather(2, idx.expand(b, flat.shape[1], h * w))
    return out.reshape(*weights.shape[:-1], 1, h, w)


# --- the explainer base ------------------------------------------------------------------------------
@dataclass
class Design:
    """The coalitions of one call: ``z`` ``(B, N, S)`` bool (row 0 all ones), ``rows`` ``(B,)``
    how many rows of each image are real (the rest is padding). A method that needs more for
    its solve subclasses it."""

    z: torch.Tensor
    rows: torch.Tensor


@dataclass
class Fit:
    """What a method's :meth:`~SuperpixelExplainer._fit` returns: ``weights`` ``(B, K, S)``
    float64. A method subclasses it with its own result fields, each ``(B, K)`` (per image and
    target) or ``(B,)`` (per image), copied to the explanation field of the same name."""

    weights: torch.Tensor


class SuperpixelExplainer(Explainer):
    """Base of LIME and KernelSHAP: a method implements :meth:`_design` (its coalitions) and
    :meth:`_fit` (weights from the scores)."""

    call_keywords: tuple[str, ...] = ("segments", "image")

    def __init__(self, model: Any, *, hide: Any = "mean", segmenter: Any = "quickshift", output: str = "softmax",
                 normalize: Any = None, input_range: Any = None, blur_sigma: float = 10.0, seed: Optional[int] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.hide = check_hide(hide)
        if isinstance(segmenter, str) and segmenter not in SEGMENTERS:
            get_segmenter(segmenter)  # raises, naming the choices
        if not (isinstance(segmenter, str) or callable(segmenter)):
            raise XaiError(f"segmenter must be a name {list(SEGMENTERS)} or a callable (x, image=None) -> (B, H, W) "
                           f"labels; got {describe(segmenter)}.")
        self.segmenter = segmenter
        self.output = check_choice(output, "output", OUTPUTS)
        self.normalize, self.input_range = check_space(normalize, input_range)
        if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, numbers.Real) or not blur_sigma >= 0:
            raise XaiError(f"blur_sigma must be a number >= 0 (pixels); got {describe(blur_sigma)}.")
        self.blur_sigma: float = float(blur_sigma)
        self.seed: Optional[int] = check_seed(seed)

    def _coerce_target(self, target: Any, batch: int) -> Target:
        t = super()._coerce_target(target, batch)
        if isinstance(t, ClassTarget):  # class indices are scored as `output` says
            return ClassTarget(t.classes, score=self.output).bind(batch) if t.classes is not None else \
                ClassTarget(None, score=self.output)
        return t

    def _config(self) -> dict[str, Any]:
        seg = self.segmenter if isinstance(self.segmenter, str) else getattr(self.segmenter, "__name__",
                                                                            type(self.segmenter).__name__)
        hide = self.hide if not isinstance(self.hide, torch.Tensor) else f"tensor{tuple(self.hide.shape)}"
        cfg: dict[str, Any] = {"hide": hide, "segmenter": seg, "output": self.output}
        if self.normalize is not None:
            cfg["normalize"] = self.normalize
        if self.input_range is not None:
            cfg["input_range"] = self.input_range
        if isinstance(self.hide, str) and self.hide == "blur":
            cfg["blur_sigma"] = self.blur_sigma
        return {**cfg, "seed": self.seed, **super()._config()}

    # -- what a method implements ----------------------------------------------------------------
    def _design(self, counts: list[int], generator: Optional[torch.Generator], device: torch.device) -> Design:
        raise NotImplementedError

    def _fit(self, design: Design, y: torch.Tensor, counts: torch.Tensor) -> Fit:
        """The weights (and the method's extras) from ``y`` ``(B, N, K)`` float64, the scores of
        the design's rows (padding rows are 0)."""
        raise NotImplementedError

    def _result(self, **kwargs: Any) -> SuperpixelExplanation:
        return SuperpixelExplanation(**kwargs)

    def _design_for(self, x: torch.Tensor, counts: list[int], generator: Optional[torch.Generator],
                    device: torch.device) -> Design:
        """The design for images ``x`` (model space, on ``device``): :meth:`_design` unless a
        method needs the images (LIME's user ``perturbation``)."""
        return self._design(counts, generator, device)

    def _observe(self, design: Design, images: torch.Tensor, rows: torch.Tensor, x: torch.Tensor,
                 perturbed: torch.Tensor) -> None:
        """Called before the forward of every evaluated row (``images``, ``rows`` ``(n,)``) with
        the images ``x`` ``(B, C, H, W)`` and the perturbed ones ``(n, C, H, W)`` (row 0: ``x``
        itself); LIME's user ``similarity`` records its weights here. Default: nothing."""

    def _background(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """``(N, C, H, W)`` images hidden superpixels are taken from, one perturbed image per
        row and background image, the scores averaged (KernelSHAP's ``background=``), checked
        against ``x`` and placed like it; ``None`` (default): the hidden image of ``hide``."""
        return None

    # -- one call ---------------------------------------------------------------------------------
    def segments(self, x: torch.Tensor, segments: Any = None, image: Any = None) -> torch.Tensor:
        """The ``(B, H, W)`` labels this explainer uses for ``x`` (checked, from 0)."""
        x4 = x if x.ndim == 4 else x[None]
        if segments is not None:
            if image is not None:
                raise XaiError("give segments= or image= (the pixel images to segment), not both.")
            return check_segments(segments, x4)
        labels = get_segmenter(self.segmenter)(x4, image=image)
        if not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        try:
            return check_segments(labels, x4).to(x4.device)
        except XaiError as err:
            raise XaiError(f"the segmenter's labels: {err}") from None

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 segments: Any = None, image: Any = None, **kwargs: Any) -> SuperpixelExplanation:
        runner = self.runner(x, target)
        device = runner.device
        xd = runner.place(x)  # the user's x is never handed to the model
        b = xd.shape[0]
        # everything that can be wrong with the inputs fails here, before any model call
        labels = self.segments(xd, segments, image).to(device)
        lo_hi = None
        if isinstance(self.hide, str) and self.hide == "gray" and (self.normalize, self.input_range) != (None, None):
            lo_hi = value_range(xd, self.normalize, self.input_range)
        background = self._background(xd)
        hidden = hidden_images(xd, labels, self.hide, lo_hi, self.blur_sigma) if background is None else background
        reps = 1 if background is None else background.shape[0]  # perturbed images per row
        counts = (labels.flatten(1).max(1).values + 1).tolist()
        with small_ops():  # the design's many small ops: one thread (a busy machine stalls them otherwise)
            design = self._design_for(xd, counts, make_generator(self.seed, device), device)
        k = target.k or 1
        first = torch.arange(b, device=device)
        self._observe(design, first, torch.zeros_like(first), xd, xd)

        # 1. the clean images (row 0 of every image): scores, and the pinned class targets (class
        # targets arrive scored as `output` says, see _coerce_target)
        scorer, fx, found, _ = runner.pin(xd, target)
        classes = None if found is None else found.view(b, k)
        y = torch.zeros(b, design.z.shape[1], k, dtype=torch.float64, device=device)
        y[:, 0] = fx.view(b, k).to(torch.float64)

        # 2. every other row, image after image, in chunks of at most `chunk` perturbed images
        rows = design.rows.cpu() - 1  # row 0 is done
        img_cpu = torch.repeat_interleave(torch.arange(b), rows * reps)  # per row, its `reps` images
        flat = torch.arange(img_cpu.shape[0]) // reps  # the row's index among all rows
        row = (flat - (torch.cumsum(rows, 0) - rows)[img_cpu] + 1).to(device)
        img = img_cpu.to(device)
        back = (torch.arange(img_cpu.shape[0]) % reps).to(device)
        per_back = None if background is None else y.new_zeros(b, y.shape[1], reps, k)

        def perturbed(start: int, stop: int) -> None:
            i, r = img[start:stop], row[start:stop]
            z = compose(xd, hidden, labels, design.z[i, r], i, single=bool(img_cpu[start] == img_cpu[stop - 1]),
                        hidden_rows=None if background is None else back[start:stop])
            self._observe(design, i, r, xd, z)
            out = runner.forward(z)
            s = torch.stack([scorer.scores(out, i * k + j)[0] for j in range(k)], 1).detach().to(torch.float64)
            if per_back is None:
                y[i, r] = s
            else:  # kept per background image, averaged at the end (in a fixed order)
                per_back[i, r, back[start:stop]] = s

        if img.shape[0]:
            runner.map(perturbed, img.shape[0])
        if per_back is not None:
            y[:, 1:] = per_back[:, 1:].mean(2)
        with small_ops():  # a small batched solve (lasso: a loop of tiny sweeps)
            fit = self._fit(design, y, torch.tensor(counts, device=device))

        dtype = result_dtype(x)
        keep_k = target.k is not None

        def out(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device=x.device, dtype=dtype if t.is_floating_point() else t.dtype)
            return t if keep_k else t[:, 0]

        attributions = paint(fit.weights, labels)  # (B, K, 1, H, W)
        extras = {}
        for f in fields(fit):  # (B, K) per target, (B,) per image
            if f.name != "weights":
                v = getattr(fit, f.name)
                extras[f.name] = out(v) if v.ndim == 2 else v.to(x.device)
        return self._result(
            attributions=out(attributions), targets=out(classes) if classes is not None else None,
            scores=out(y[:, 0]), segments=labels.to(x.device), weights=out(fit.weights),
            num_segments=torch.tensor(counts, device=x.device), model_calls=runner.calls, **extras,
        )
