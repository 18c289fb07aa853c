"""Sanity checks for saliency maps: model-parameter randomisation (Adebayo et al. 2018).

An explanation that stays the same when the model's learned weights are replaced by random
ones cannot be explaining what the model learned. :func:`model_randomization` re-initialises
the layers of a *copy* of the model, from the logits down (``"cascading"``) or one at a time
(``"independent"``), explains the same images after each step and compares every map with the
map of the intact model with the similarities of :mod:`xai_torch.metrics.similarity`.

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from ..batching import progress_bar
from ..errors import XaiError, check_choice, check_input, describe
from ..explainer import Explainer
from ..hooks import HookSession, strip_session_hooks
from ..layers import find_layer
from ._common import REDUCTIONS, Scorer, coerce_attribution, to_result
from .similarity import BUILTIN, SIMILARITIES

MODES = ("cascading", "independent")
INITS = ("reset", "normal")


# --------------------------------------------------------------------------------------------
# Model-parameter randomisation
@dataclass
class RandomizationResult:
    """What :func:`model_randomization` returns.

    Attributes:
        layers: the label of each randomisation step, in order (a dotted name, or the names of
            a group joined by ``"+"``).
        mode: ``"cascading"`` or ``"independent"``.
        targets: ``(B,)`` the class explained for every model (the intact model's prediction
            unless given); ``None`` for a callable target.
        original: ``(B, H, W)`` the map of the intact model.
        scores: similarity name -> ``(B, L)``: the similarity of step l's map to ``original``.
        rerun: similarity name -> ``(B,)``: a second explanation of the intact model compared
            with ``original`` (a determinism check: 1 for deterministic methods). Kept apart
            from ``scores``, so that no average over layers includes it (Quantus averages its
            "original" entry into the layers). Empty when ``rerun=False``.
        maps: ``(B, L, H, W)`` the map after each step, when ``keep_maps=True``.
    """

    layers: list[str]
    mode: str
    targets: Optional[torch.Tensor]
    original: torch.Tensor
    scores: dict[str, torch.Tensor]
    rerun: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: Optional[torch.Tensor] = None

    def mean(self, name: str = "spearman") -> torch.Tensor:
        """``(L,)`` the similarity ``name`` per step, averaged over the images (NaN ignored)."""
        if name not in self.scores:
            raise XaiError(f"no similarity {name!r} in this result; it has {sorted(self.scores)}.")
        return self.scores[name].nanmean(0)


def _own_state(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters(recurse=False)) + [b for b in module.buffers(recurse=False) if b is not None]


def _randomisable(module: nn.Module) -> bool:
    """A module :func:`model_randomization` re-initialises by default: it holds parameters of its
    own (or BatchNorm statistics) and has ``reset_parameters``."""
    return callable(getattr(module, "reset_parameters", None)) and len(_own_state(module)) > 0


def _resolve_layers(model: nn.Module, layers: object, init: str) -> list[tuple[str, list[tuple[str, nn.Module]]]]:
    """``layers`` -> [(label, [(name, module) to re-initialise])], checked before any model call."""
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise XaiError(
            "layers must be None (every Conv / Linear / BatchNorm ... from the logits down) or a non-empty list "
            f"of dotted module names (an entry may be a list of names randomised in one step); got {describe(layers)}."
        )
    steps: list[tuple[str, list[tuple[str, nn.Module]]]] = []
    owner: dict[int, int] = {}
    for i, entry in enumerate(layers):
        group = [entry] if isinstance(entry, (str, nn.Module)) else entry
        if not isinstance(group, Sequence) or len(group) == 0:
            raise XaiError(f"layers[{i}] must be a dotted module name or a non-empty list of them; "
                           f"got {describe(entry)}.")
        names, members = [], []
        for spec in group:
            name, module = find_layer(model, spec, f"layers[{i}]")
            names.append(name)
            for sub_name, sub in module.named_modules(prefix=name):
                state = _own_state(sub)
                if not state:
                    continue
                if init == "reset" and not callable(getattr(sub, "reset_parameters", None)):
                    raise XaiError(f"layers[{i}]: {sub_name!r} ({type(sub).__name__}) holds parameters but has no "
                                   "reset_parameters(); use init='normal' or leave it out.")
                for t in state:
                    if id(t) in owner and owner[id(t)] != i:
                        raise XaiError(f"layers[{i}] ({name!r}) overlaps layers[{owner[id(t)]}]: a parameter would be "
                                       "randomised twice. Give disjoint modules.")
                    owner[id(t)] = i
                members.append((sub_name, sub))
        if not members:
            raise XaiError(f"layers[{i}] ({'+'.join(names)!r}) has no parameters to randomise.")
        steps.append(("+".join(names), members))
    return steps


def _resolve_similarity(similarity: object) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    if isinstance(similarity, str):
        similarity = (similarity,)
    if isinstance(similarity, Mapping):
        items = dict(similarity)
        for k, fn in items.items():
            if not isinstance(k, str) or not callable(fn):
                raise XaiError(f"similarity as a dict maps names to functions (a, b) -> (B,); "
                               f"got {k!r}: {describe(fn)}.")
    elif isinstance(similarity, Sequence) and len(similarity) > 0:
        items = {}
        for s in similarity:
            check_choice(s, "similarity", SIMILARITIES)
            items[s] = BUILTIN[s]
    else:
        raise XaiError(f"similarity must be a name from {list(SIMILARITIES)}, a non-empty list of them or a dict "
                       f"name -> function; got {describe(similarity)}.")
    if not items:
        raise XaiError("similarity is empty; give at least one of " + ", ".join(SIMILARITIES) + ".")
    return items


def _save(members: list[tuple[str, nn.Module]]) -> list[dict[str, torch.Tensor]]:
    return [{k: t.detach().clone() for k, t in (*m._parameters.items(), *m._buffers.items()) if t is not None}
            for _, m in members]


def _restore(members: list[tuple[str, nn.Module]], saved: list[dict[str, torch.Tensor]]) -> None:
    """Put a step's saved values back (by attribute name: a reset that swapped a tensor is undone too)."""
    with torch.no_grad():
        for (_, m), values in zip(members, saved):
            for k, v in values.items():
                t = m._parameters[k] if k in m._parameters else m._buffers[k]
                assert t is not None  # _save kept only set tensors
                t.copy_(v)


#: ``reset_parameters()`` draws from torch's global RNG: seeding it and drawing must not interleave
#: with another thread's (two randomisations of one model in two threads gave different weights)
_GLOBAL_RNG = threading.Lock()


def _reinit(members: list[tuple[str, nn.Module]], init: str, seed: int) -> None:
    """Re-initialise every module of one step, reproducibly from ``seed``."""
    with _GLOBAL_RNG:
        _reinit_seeded(members, init, seed)


def _reinit_seeded(members: list[tuple[str, nn.Module]], init: str, seed: int) -> None:
    torch.manual_seed(seed)  # inside fork_rng: the caller's global RNG state is restored
    gen = torch.Generator().manual_seed(seed)
    for _, m in members:
        reset = getattr(m, "reset_parameters", None)
        if init == "reset" and callable(reset):
            reset()
            continue
        weight = getattr(m, "weight", None)
        fan_in = weight[0].numel() if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else 1
        std = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            for p in m.parameters(recurse=False):
                draw = torch.empty(p.shape, dtype=torch.float64)
                nn.init.trunc_normal_(draw, 0.0, std, -2 * std, 2 * std, generator=gen)
                p.copy_(draw)
        reset_stats = getattr(m, "reset_running_stats", None)
        if callable(reset_stats):
            reset_stats()


def _deepcopy(model: nn.Module, explainer: Any) -> tuple[nn.Module, Any]:
    """``deepcopy((model, explainer))`` without the hooks of explainer calls running on
    ``model`` in other threads (they belong to those calls; see ``hooks.SessionHook``). Such a
    call can add or remove a hook while the copy walks the module's hook dicts: that try is
    repeated."""
    for attempt in range(8):
        try:
            model_copy, explainer_copy = copy.deepcopy((model, explainer))
            break
        except RuntimeError as err:
            if "during iteration" not in str(err) or attempt == 7:
                raise
    strip_session_hooks(model_copy)
    return model_copy, explainer_copy


def _build_explainer(explainer: Any, model: nn.Module) -> tuple[nn.Module, Callable[..., Any]]:
    """The copied model and an explainer on it (see ``model_randomization``)."""
    if isinstance(explainer, Explainer):
        if explainer.model is not model:
            raise XaiError(f"the explainer {type(explainer).__name__} explains a different model than `model`; "
                           "build it on `model`, or pass a factory: lambda m: xt.GradCAM(m, layer=...).")
        if explainer._sessions:
            raise XaiError(f"the explainer {type(explainer).__name__} is inside an open `with` block (its hooks are on "
                           "the model); call model_randomization outside it.")
        try:  # one memo: the copied explainer's model and layers point into the copied model
            model_copy, explainer_copy = _deepcopy(model, explainer)
        except Exception as err:  # noqa: BLE001 - reported with the way out
            raise XaiError(f"could not deep-copy {type(explainer).__name__} with its model ({err}); pass a factory "
                           "lambda m: Explainer(m, ...) instead.") from err
        return model_copy, explainer_copy
    model_copy, _ = _deepcopy(model, None)
    built = explainer(model_copy)
    if not callable(built):
        raise XaiError(f"the explainer factory must return an explainer (a callable x, target= -> attributions); "
                       f"it returned {describe(built)}.")
    if isinstance(getattr(built, "model", None), nn.Module) and built.model is not model_copy:
        raise XaiError("the explainer factory must build the explainer on the model it is given "
                       "(lambda m: xt.GradCAM(m, layer=...)), not on another model.")
    return model_copy, built


def model_randomization(model: nn.Module, explainer: Any, x: torch.Tensor, target: Any = None, *,
                        mode: str = "cascading", layers: Optional[Sequence[Any]] = None, init: str = "reset",
                        seed: int = 42,
                        similarity: Union[str, Sequence[str], Mapping[str, Callable[..., Any]]] = (
                            "spearman", "spearman_abs", "ssim", "hog"),
                        reduce: str = "sum", rerun: bool = True, keep_maps: bool = False,
                        batch_size: Optional[int] = None, progress: Optional[bool] = None) -> RandomizationResult:
    """Model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency
    Maps"): how similar the explanations of randomised models stay to the intact model's.

    Everything happens on a deep copy of ``model``; the user's model (parameters, buffers,
    hooks, modes) is never touched. The classes explained are fixed to the intact model's
    prediction (or ``target``) for every randomised model. A method that passes the check
    gives maps whose similarity falls as more layers are randomised; one that stays near 1
    (guided backpropagation, Guided Grad-CAM in the paper) does not depend on the weights.

    Args:
        model: an ``nn.Module`` (see :mod:`xai_torch.metrics._common`).
        explainer: an xai_torch explainer built on ``model`` (it is deep-copied together with
            the model, so its configuration and layers carry over), or a factory
            ``model -> explainer`` called once with the copy, e.g.
            ``lambda m: xt.GradCAM(m, layer="layer4")`` (the way for any other callable
            ``explainer(x, target=...)``).
        x, target, reduce, batch_size, progress: see :mod:`xai_torch.metrics._common`.
            ``batch_size`` applies to the clean forward; the explainer keeps its own.
        mode: ``"cascading"`` randomises the steps cumulatively, in the order given (from the
            logits down by default); ``"independent"`` restores the intact weights before
            randomising each step alone.
        layers: ``None``: every module that has parameters (or BatchNorm statistics) and
            ``reset_parameters`` (Conv, Linear, BatchNorm, ...), in reverse order of first
            execution (from a hooked pass of the clean forward); modules never called are left
            out. Or a list of dotted names; an entry may be a list of names randomised in one
            step (a block group), and a container name randomises all its layers at once.
        init: ``"reset"``: ``reset_parameters()`` after ``torch.manual_seed(seed + step)``
            (the layer's default initialiser, Quantus' choice; BatchNorm's reset also clears
            its running statistics). ``"normal"``: every parameter drawn from a truncated
            normal N(0, 1/fan_in) cut at 2 sigma (the paper's initialiser family; fan_in = 1
            for 1-D weights), and running statistics reset. The draws depend on ``seed`` and
            the step index only, so a step gets the same weights in both modes.
        seed: the seed of the randomisation (the global RNG state is restored afterwards).
        similarity: names from ``SIMILARITIES`` or a dict ``name -> f(a, b) -> (B,)`` (called
            with the raw float64 maps of the intact and the randomised model).
            ``"spearman"``: rank correlation of the maps; ``"spearman_abs"``: of their absolute
            values; ``"pearson"``; ``"ssim"`` and ``"hog"``: on maps min-max normalised to
            [0, 1] (SSIM with data_range 1; HOG needs maps of at least 24x24). With the
            default ``reduce="sum"``, ``"spearman"`` is the paper's signed ("no ABS") variant;
            its ABS variant (sum of |a| over channels) is ``reduce="abs"``.
        rerun: explain the intact model a second time and report its similarity to the
            first run (determinism check, ``result.rerun``).
        keep_maps: keep every step's map in ``result.maps``.

    Returns:
        :class:`RandomizationResult`.

    Shape:
        ``x``: ``(B, C, H, W)``; ``original``: ``(B, H, W)``; ``scores[name]``: ``(B, L)``.

    Raises:
        XaiError: unknown layer names (with the closest names), an empty or overlapping layer
        list, an unknown similarity / mode / init, or an explainer on another model; all
        before any model call.

    Example:
        >>> res = model_randomization(model, lambda m: xt.GradCAM(m, layer="layer4"), x,
        ...                           layers=["fc", "layer4", "layer3", "layer2", "layer1"])
        >>> res.mean("spearman_abs")          # (5,): falls towards 0 for a sane method
    """
    x4, _ = check_input(x)
    if not isinstance(model, nn.Module):
        raise XaiError(f"model_randomization re-initialises layers: model must be an nn.Module; got {describe(model)}.")
    check_choice(mode, "mode", MODES)
    check_choice(init, "init", INITS)
    check_choice(reduce, "reduce", REDUCTIONS)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XaiError(f"seed must be an int; got {describe(seed)}.")
    sims = _resolve_similarity(similarity)
    if "hog" in sims and sims["hog"] is BUILTIN["hog"] and min(x4.shape[2:]) < 24:
        raise XaiError(f"similarity 'hog' needs images of at least 24x24 (8x8-pixel cells, 3x3 blocks); x is "
                       f"{tuple(x4.shape[2:])}. Leave 'hog' out of similarity.")
    if "ssim" in sims and sims["ssim"] is BUILTIN["ssim"] and min(x4.shape[2:]) < 7:
        raise XaiError(f"similarity 'ssim' needs images of at least 7x7; x is {tuple(x4.shape[2:])}.")
    if not (isinstance(explainer, Explainer) or callable(explainer)):
        raise XaiError(f"explainer must be an xai_torch explainer or a factory model -> explainer; got "
                       f"{describe(explainer)}.")
    steps = _resolve_layers(model, layers, init) if layers is not None else None

    model_copy, explain = _build_explainer(explainer, model)
    copies = dict(model_copy.named_modules())
    order: list[str] = []
    with HookSession() as session:
        if steps is None:
            seen = set()
            for name, module in model_copy.named_modules():
                if _randomisable(module):
                    def pre(mod: nn.Module, args: Any, name: str = name) -> None:
                        if name not in seen:
                            seen.add(name)
                            order.append(name)
                    session.forward_pre_hook(module, pre)
        scorer = Scorer(model_copy, x4, target, score="logit", batch_size=batch_size, progress=progress,
                        name="model_randomization")
    if steps is None:
        if not order:
            raise XaiError("the model has no layer with parameters and reset_parameters() that its forward calls; "
                           "pass layers= explicitly.")
        steps = [(n, [(n, copies[n])]) for n in reversed(order)]
    else:  # the same modules, in the copy
        steps = [(label, [(n, copies[n]) for n, _ in members]) for label, members in steps]

    xd = scorer.x
    tgt = scorer.classes.cpu() if scorer.classes is not None else target

    def run() -> torch.Tensor:
        attr = explain(xd.clone(), target=tgt)
        return coerce_attribution(attr, xd, reduce=reduce, name="model_randomization")

    def compare(m: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(fn(original, m)).to(original.device, torch.float64) for k, fn in sims.items()}

    original = run()
    reruns = compare(run()) if rerun else {}
    saved = [_save(members) for _, members in steps] if mode == "independent" else None
    devices = sorted({t.device.index or 0 for t in model_copy.parameters() if t.device.type == "cuda"})
    per_step, maps = [], []
    bar = progress_bar(len(steps), len(steps), progress, "model_randomization")
    try:
        with torch.random.fork_rng(devices=devices):
            for i, (_, members) in enumerate(steps):
                _reinit(members, init, seed + i)
                m = run()
                per_step.append(compare(m))
                if keep_maps:
                    maps.append(m)
                if saved is not None:
                    _restore(members, saved[i])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    scores = {k: to_result(torch.stack([s[k] for s in per_step], 1), x4) for k in sims}
    return RandomizationResult(
        layers=[label for label, _ in steps], mode=mode,
        targets=None if scorer.classes is None else scorer.classes.to(x4.device),
        original=to_result(original, x4), scores=scores, rerun={k: to_result(v, x4) for k, v in reruns.items()},
        maps=to_result(torch.stack(maps, 1), x4) if keep_maps else None,
    )


__all__ = ["RandomizationResult", "model_randomization", "MODES", "INITS"]
