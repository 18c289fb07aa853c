"""Partition SHAP (Owen values on a hierarchy of image regions), shap's ``PartitionExplainer``
with ``maskers.Image``, batched over images and targets.

The game of an image is ``v(S) = F(the image with the elements of S kept, the rest masked)``.
A binary tree over the elements (:mod:`xai_torch.region.partition_tree`) nests coalitions:
the Owen value splits ``v(all) - v(none)`` between the two halves of the root as a two-player
Shapley game, then each half's share between its own halves, in the two contexts (the other
half hidden, the other half kept) with weight 1/2 each, and so on down. Exactly as shap
(``fixed_context=None``):

* node ``(m00, f00, f11, weight)`` with halves ``L, R``: evaluate ``f10 = v(m00 + L)`` and
  ``f01 = v(m00 + R)``; queue ``(m00, f00, f10, L)``, ``(m00, f00, f01, R)``,
  ``(m00 + R, f01, f11, L)``, ``(m00 + L, f10, f11, R)``, each with half the weight and the
  priority ``max_k |f_end - f_start| * weight`` (largest first; ties broken at random, seeded);
* a leaf gets ``(f11 - f00) * weight``; when the budget is spent every queued node gets it
  too, and its share is spread over its elements in proportion to their count;
* ``max_evals`` counts the whole image and the fully masked one; nodes are taken
  ``ceil(round_size / 2)`` at a time per image (shap's ``batch_size``), a round stops when it
  would pass the budget (so the last one may overshoot by one evaluation, as shap's does).

Differences from shap, on purpose: every image of the batch runs its rounds at once (one model
call sees the rounds of all images, in chunks of ``batch_size``), the priority ties are broken
by a seeded draw instead of numpy's global one, and inpainting maps model-space images to 8-bit
pixels by rounding (see :mod:`xai_torch.region.maskers`).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..batching import progress_bar
from ..errors import XaiError, check_choice, check_positive_int, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession
from ..runner import result_dtype
from ..seeding import check_seed, derive_seed
from ..segmentation import SEGMENTERS, check_segments, get_segmenter, pixel_images
from ..space import check_space
from ..targets import ClassTarget, Target
from .maskers import MASKERS, Masking, bind_masker, check_masker
from .partition_tree import AxisTree, LinkageTree, check_linkage, superpixel_linkage

TREES = ("axis", "superpixels")
OUTPUTS = ("softmax", "logit", "log_softmax")
#: the fewest evaluations: the whole image, the fully masked one and the two halves of the root
MIN_EVALS = 4
Tree = Union[AxisTree, LinkageTree]


@dataclass
class PartitionSHAPExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of :class:`PartitionSHAP`.

    Attributes:
        base_values: ``(B, [K])`` the score of the fully masked image; the attributions of an
            image add up to ``scores - base_values``.
        evaluations: ``(B,)`` model evaluations per image (the whole and the fully masked
            image included), at most ``max_evals + 1``.
        exact: ``(B,)`` bool, whether every leaf was reached (the values are then the exact
            Owen values of the tree; else unexpanded nodes share theirs evenly).
        segments: ``(B, H, W)`` superpixel labels (``tree="superpixels"`` or a tree over
            ``segments=``), else ``None``.
        weights: ``(B, [K], S)`` each superpixel's value (``S`` the largest count; padding 0),
            with superpixel leaves, else ``None``.
        model_calls: images the model evaluated.
    """

    base_values: Optional[torch.Tensor] = None
    evaluations: Optional[torch.Tensor] = None
    exact: Optional[torch.Tensor] = None
    segments: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    model_calls: int = 0


class _Game:
    """One image's Owen recursion: its queue, budget and node values."""

    def __init__(self, tree: Tree, f00: np.ndarray, f11: np.ndarray, budget: int, seed: int) -> None:
        self.tree, self.budget, self.evals, self.exact = tree, budget, 0, True
        self.values: dict[Any, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.queue: list[tuple[float, float, int, tuple[Any, ...]]] = []
        self._push(0.0, 0.0, ((), f00, f11, tree.root, 1.0))

    def _push(self, priority: float, tie: float, item: tuple[Any, ...]) -> None:
        self.count += 1
        heapq.heappush(self.queue, (priority, tie, self.count, item))

    def _credit(self, node: Any, f00: np.ndarray, f11: np.ndarray, weight: float) -> None:
        add = (f11 - f00) * weight
        self.values[node] = self.values[node] + add if node in self.values else add

    def take(self, round_size: int) -> list[tuple[Any, ...]]:
        """The nodes of this round, each ``(m00, f00, f11, node, left, right, weight)``; leaves
        popped on the way are credited, and a spent budget credits the whole queue."""
        if self.queue and self.evals >= self.budget:
            while self.queue:
                m00, f00, f11, node, weight = heapq.heappop(self.queue)[3]
                self._credit(node, f00, f11, weight)
                self.exact = self.exact and self.tree.children(node) is None
            return []
        batch: list[tuple[Any, ...]] = []
        while self.queue and 2 * len(batch) < round_size and self.evals + 2 * len(batch) < self.budget:
            m00, f00, f11, node, weight = heapq.heappop(self.queue)[3]
            kids = self.tree.children(node)
            if kids is None:
                self._credit(node, f00, f11, weight)
                continue
            batch.append((m00, f00, f11, node, kids[0], kids[1], weight))
        self.evals += 2 * len(batch)
        return batch

    def give(self, items: list[tuple[Any, ...]], f10: np.ndarray, f01: np.ndarray) -> None:
        """Queue the four halves of each expanded node (shap's order and priorities), ``f10``
        and ``f01`` ``(n, K)`` the scores of the node's two new coalitions."""
        f00 = np.stack([it[1] for it in items])
        f11 = np.stack([it[2] for it in items])
        w = np.array([it[6] for it in items]) / 2
        change = np.stack([f10 - f00, f01 - f00, f11 - f01, f11 - f10], 1)  # (n, 4, K)
        priority = -np.abs(change).max(2) * w[:, None]
        tie = self.rng.standard_normal((len(items), 4))
        for n, (m00, a, e, _, left, right, _) in enumerate(items):
            halves = ((m00, a, f10[n], left), (m00, a, f01[n], right), (m00 + (right,), f01[n], e, left),
                      (m00 + (left,), f10[n], e, right))
            for j, (ctx, start, end, node) in enumerate(halves):
                self._push(float(priority[n, j]), float(tie[n, j]), (ctx, start, end, node, float(w[n])))

    @property
    def done(self) -> bool:
        return not self.queue


class PartitionSHAP(Explainer):
    """Partition SHAP: Owen values of image regions on a binary hierarchy, shap's
    ``PartitionExplainer`` with ``maskers.Image`` (see the module doc). With the same masker,
    ``max_evals`` and ``round_size`` (shap's ``batch_size``) the values equal shap's.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`; ``batch_size`` only
            chunks the model calls (a round of all images may take several) and never changes
            the values.
        masker: ``"inpaint_telea"`` (default, as seed 002), ``"inpaint_ns"``, ``"blur(kx,ky)"``,
            a number or a tensor of model-space values (see :mod:`xai_torch.region.maskers`).
        max_evals: model evaluations per image, the whole and the fully masked image included
            (shap's ``max_evals``, default 500; at least 4).
        round_size: masked images per image and round, shap's ``batch_size`` (default 10, its
            ``"auto"``): ``ceil(round_size / 2)`` nodes are expanded per round, which changes
            which nodes the budget reaches.
        tree: ``"axis"`` (shap's axis-aligned tree over the ``H W C`` elements),
            ``"superpixels"`` (a hierarchy of adjacent superpixels merged by colour, from
            ``segments=`` or the ``segmenter``) or a linkage matrix ``(M - 1, 2+)`` over the
            elements in shap's ``(H, W, C)`` order, or over the superpixels of ``segments=``.
        segmenter: for ``tree="superpixels"`` without ``segments=``: ``"slic"`` (default),
            ``"quickshift"``, ``"felzenszwalb"`` or a callable (see :mod:`xai_torch.segmentation`).
        output: what a class target explains: ``"softmax"`` (default, shap's examples),
            ``"logit"`` or ``"log_softmax"``.
        normalize, input_range: the model-space black and white (:mod:`xai_torch.space`),
            used by inpainting to reach 8-bit pixels.
        seed: seed of the priority tie-breaks (per image); ``None`` draws from torch's RNG.
        workers: inpainting threads (default: the CPU count).

    Call arguments (besides ``x`` and ``target``): ``segments`` ``(H, W)`` / ``(B, H, W)``
    labels and ``image`` (pixel images for the segmenter), as for :class:`~xai_torch.LIME`.

    Returns:
        ``(B, C, H, W)`` element values (``(B, K, C, H, W)`` for ``(B, K)`` targets) adding up
        to ``scores - base_values`` per image; ``explain`` gives a
        :class:`PartitionSHAPExplanation`.

    Cost:
        ``max_evals`` forwards per image (no gradients), the masker's fills (inpainting: one
        ``cv2.inpaint`` per masked image, in threads), and the queue work in Python.

    Example:
        >>> ps = xt.PartitionSHAP(model, masker="inpaint_telea", normalize=(mean, std), max_evals=500)
        >>> res = ps.explain(x, target=xt.TopK(4))           # the 4 best classes: (B, 4, 3, H, W)
        >>> res.attributions.sum((2, 3, 4)), res.scores - res.base_values   # equal
    """

    call_keywords = ("segments", "image")

    def __init__(self, model: Any, *, masker: Any = "inpaint_telea", max_evals: int = 500, round_size: int = 10,
                 tree: Any = "axis", segmenter: Any = "slic", output: str = "softmax", normalize: Any = None,
                 input_range: Any = None, seed: Optional[int] = None, workers: Optional[int] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.masker = check_masker(masker)
        if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < MIN_EVALS:
            raise XaiError(f"max_evals must be an integer >= {MIN_EVALS} (the whole image, the fully masked one "
                           f"and the two halves of the tree's root); got {describe(max_evals)}.")
        self.max_evals = max_evals
        self.round_size = check_positive_int(round_size, "round_size")
        if isinstance(tree, str):
            self.tree: Any = check_choice(tree, "tree", TREES)
        else:
            self.tree = check_linkage(tree)
        if isinstance(segmenter, str) and segmenter not in SEGMENTERS:
            get_segmenter(segmenter)  # raises, naming the choices
        if not (isinstance(segmenter, str) or callable(segmenter)):
            raise XaiError(f"segmenter must be a name {list(SEGMENTERS)} or a callable; got {describe(segmenter)}.")
        self.segmenter = segmenter
        self.output = check_choice(output, "output", OUTPUTS)
        self.normalize, self.input_range = check_space(normalize, input_range)
        self.seed = check_seed(seed)
        self.workers = None if workers is None else check_positive_int(workers, "workers")

    def _config(self) -> dict[str, Any]:
        masker = self.masker if not isinstance(self.masker, torch.Tensor) else f"tensor{tuple(self.masker.shape)}"
        tree = self.tree if isinstance(self.tree, str) else f"linkage({self.tree.shape[0] + 1} leaves)"
        cfg: dict[str, Any] = {"masker": masker, "max_evals": self.max_evals, "round_size": self.round_size,
                               "tree": tree, "output": self.output}
        if self.tree == "superpixels":
            cfg["segmenter"] = self.segmenter if isinstance(self.segmenter, str) else \
                getattr(self.segmenter, "__name__", type(self.segmenter).__name__)
        for name in ("normalize", "input_range"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        return {**cfg, "seed": self.seed, **super()._config()}

    def _coerce_target(self, target: Any, batch: int) -> Target:
        t = super()._coerce_target(target, batch)
        if isinstance(t, ClassTarget):  # class indices are scored as `output` says
            return ClassTarget(t.classes, score=self.output).bind(batch) if t.classes is not None else \
                ClassTarget(None, score=self.output)
        return t

    def trees(self, x: torch.Tensor, segments: Any = None,
              image: Any = None) -> tuple[list[Tree], Optional[torch.Tensor]]:
        """The tree of every image of ``x`` ``(B, C, H, W)`` and the superpixel labels (or ``None``)."""
        b, c, h, w = x.shape
        if isinstance(self.tree, str) and self.tree == "axis":
            if segments is not None or image is not None:
                raise XaiError("segments= and image= go with tree='superpixels' or a tree over superpixels; "
                               "tree='axis' splits the image itself.")
            return [AxisTree(c, h, w)] * b, None
        if not isinstance(self.tree, str) and segments is None:
            if image is not None:
                raise XaiError("image= is for the segmenter; a linkage tree takes segments= or covers the elements.")
            kids = check_linkage(self.tree, c * h * w)
            return [LinkageTree(kids, (c, h, w))] * b, None
        if segments is not None:
            if image is not None:
                raise XaiError("give segments= or image= (the pixel images to segment), not both.")
            labels = check_segments(segments, x)
        else:
            found = get_segmenter(self.segmenter)(x, image=image)
            try:
                labels = check_segments(found if isinstance(found, torch.Tensor) else torch.as_tensor(found), x)
            except XaiError as err:
                raise XaiError(f"the segmenter's labels: {err}") from None
        lab = labels.cpu().numpy()
        if isinstance(self.tree, str):
            colours = pixel_images(x, image)
            links = [check_linkage(superpixel_linkage(lab[i], colours[i])) for i in range(b)]
        else:
            links = [check_linkage(self.tree, int(lab[i].max()) + 1) for i in range(b)]
        return [LinkageTree(links[i], (c, h, w), lab[i]) for i in range(b)], labels.to(x.device)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 segments: Any = None, image: Any = None, **kwargs: Any) -> PartitionSHAPExplanation:
        runner = self.runner(x, target)
        runner.progress = False  # one bar for the whole call below
        device = runner.device
        xd = runner.place(x)
        b, k = xd.shape[0], target.k or 1
        trees, labels = self.trees(xd, segments, image)  # every input check before the first model call
        masking = bind_masker(self.masker, xd, self.normalize, self.input_range, self.workers)
        scorer, f11, found, _ = runner.pin(masking.shown, target)
        classes = None if found is None else found.view(b, k)

        def score(coalitions: list[tuple[Any, ...]], images: list[int]) -> np.ndarray:
            """``(n, K)`` float64 scores of the coalitions (image by image, in order)."""
            idx = torch.tensor(images, dtype=torch.long, device=device)

            def chunk(start: int, stop: int) -> torch.Tensor:
                parts, i = [], start
                while i < stop:  # runs of one image: its tree and its fill
                    j = i
                    while j < stop and images[j] == images[i]:
                        j += 1
                    parts.append(masking(trees[images[i]].keep(coalitions[i:j], device), images[i]))
                    i = j
                out = runner.forward(torch.cat(parts) if len(parts) > 1 else parts[0])
                rows = idx[start:stop] * k
                return torch.stack([scorer.scores(out, rows + j)[0] for j in range(k)], 1).detach()

            return torch.cat(runner.map(chunk, len(images))).to(torch.float64).cpu().numpy()

        f00 = score([()] * b, list(range(b)))
        f11n = f11.view(b, k).to(torch.float64).cpu().numpy()
        seeds = [derive_seed(self.seed, 0, i) for i in range(b)] if self.seed is not None else \
            torch.randint(0, 2**62, (b,)).tolist()
        games = [_Game(trees[i], f00[i], f11n[i], self.max_evals - 2, seeds[i]) for i in range(b)]
        bar = progress_bar(b * self.max_evals, b * self.max_evals // max(runner.chunk, 1), self.progress,
                           type(self).__name__)
        try:
            while not all(g.done for g in games):
                work = [(i, item) for i, g in enumerate(games) for item in g.take(self.round_size)]
                if not work:
                    continue
                coalitions = [c for _, item in work for c in (item[0] + (item[4],), item[0] + (item[5],))]
                f = score(coalitions, [i for i, _ in work for _ in range(2)])
                first = 0
                for i, g in enumerate(games):  # work is grouped by image, in image order
                    items = [item for j, item in work if j == i]
                    if items:
                        n = len(items)
                        g.give(items, f[2 * first:2 * (first + n):2], f[2 * first + 1:2 * (first + n):2])
                        first += n
                if bar is not None:
                    bar.update(len(coalitions))
        finally:
            if bar is not None:
                bar.close()
        return self._result(x, target, games, f00, f11, classes, labels, runner.calls, k)

    @staticmethod
    def _result(x: torch.Tensor, target: Target, games: list[_Game], f00: np.ndarray, f11: torch.Tensor,
                classes: Optional[torch.Tensor], labels: Optional[torch.Tensor], calls: int,
                k: int) -> PartitionSHAPExplanation:
        dtype = result_dtype(x)
        keep_k = target.k is not None
        b = len(games)

        def out(a: Any) -> torch.Tensor:
            t = torch.as_tensor(a).to(device=x.device)
            t = t.to(dtype) if t.is_floating_point() else t
            return t if keep_k else t[:, 0]

        values = np.stack([g.tree.spread(g.values, k) for g in games])  # (B, K, C, H, W)
        weights = None
        if labels is not None:
            s = max(g.tree.leaves for g in games)
            w = np.zeros((b, k, s))
            for i, g in enumerate(games):
                assert isinstance(g.tree, LinkageTree)
                w[i, :, :g.tree.leaves] = g.tree.leaf_values(g.values, k)
            weights = out(w)
        return PartitionSHAPExplanation(
            attributions=out(values), targets=out(classes) if classes is not None else None,
            scores=out(f11.view(b, k).to(torch.float64)), base_values=out(f00),
            evaluations=torch.tensor([g.evals + 2 for g in games], device=x.device),
            exact=torch.tensor([g.exact and g.done for g in games], device=x.device),
            segments=labels.to(x.device) if labels is not None else None, weights=weights, model_calls=calls,
        )


__all__ = ["MASKERS", "TREES", "Masking", "PartitionSHAP", "PartitionSHAPExplanation"]
