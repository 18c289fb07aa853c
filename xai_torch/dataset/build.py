"""The model and the explainer of a run, from their names on the command line."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Optional, Union

from torch import nn

from ..errors import XaiError, XaiWarning
from ..explainer import Explainer
from ..models import IMAGENET_NORMALIZE, load_model, load_weights
from ..presets import METHODS, MethodSpec, explainer_classes
from .config import import_object

#: one input statistic: a scalar or one value per channel
Stat = Union[float, tuple[float, ...]]
#: ``(mean, std)`` of a model's input space for pixels in [0, 1]
Normalize = tuple[Stat, Stat]
#: a run's method: preset or class name, ``package.module:function``, or ``model -> Explainer``
Method = Union[str, Callable[..., Explainer]]


def normalisation(model_spec: object) -> Normalize:
    """(mean, std) of the model's input space for pixels in [0, 1]."""
    from .. import zoo

    if model_spec == "efficientnet_lite0":
        return zoo.NORMALIZE
    return IMAGENET_NORMALIZE


def build_model(spec: Union[str, nn.Module], weights: Optional[str] = None, device: Any = "cpu") -> nn.Module:
    """The model of a run, in eval mode on ``device``.

    Args:
        spec: ``"efficientnet_lite0"`` (the packaged, trained model), ``"torchvision:NAME"``
            (built with ``weights=None``), ``"package.module:function"`` (a factory called
            with no argument that returns an ``nn.Module``), or an ``nn.Module``.
        weights: a state-dict file loaded strictly into the model (:func:`xai_torch.models.load_weights`).
        device: where the model goes.

    Returns:
        The model (``eval()`` is called: the run owns this model).

    Example:
        >>> model = build_model("torchvision:resnet18", weights="resnet18.pth")
    """
    if isinstance(spec, str) and (spec == "efficientnet_lite0" or spec.startswith("torchvision:")):
        loaded = load_model(spec, weights, device=device).model
        if spec.startswith("torchvision:") and weights is None:
            warnings.warn(f"{spec} has random weights (built with weights=None): pass a state-dict file "
                          "(--weights FILE) to explain a trained model.", XaiWarning, stacklevel=2)
        return loaded
    model: nn.Module
    if isinstance(spec, nn.Module):
        model = spec
    elif isinstance(spec, str) and ":" in spec:
        factory = import_object(spec, "model factory")
        made = factory() if callable(factory) else factory
        if not isinstance(made, nn.Module):
            raise XaiError(f"model factory {spec!r} must return an nn.Module; got {type(made).__name__}.")
        model = made
    else:
        raise XaiError(f"unknown model {spec!r}; give 'efficientnet_lite0', 'torchvision:NAME' (e.g. "
                       "torchvision:resnet50 with --weights FILE) or a factory 'package.module:function'.")
    if weights is not None:
        load_weights(model, weights, spec if isinstance(spec, str) else type(spec).__name__)
    return model.eval().to(device)


def recreate(explainer: Explainer, model: nn.Module, changes: dict[str, Any]) -> Explainer:
    """The same explainer class with its configuration (``_config()``) updated by ``changes``."""
    cls = type(explainer)
    cfg = {**explainer._config(), **changes}
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    args = [cfg.pop(params[0])] if params and params[0] in cfg else [model]
    try:
        return cls(*args, **cfg)
    except TypeError as err:
        accepted = sorted(k for k in explainer._config() if k != params[0])
        raise XaiError(f"{cls.__name__} does not take option(s) {sorted(changes)} ({err}); "
                       f"its options: {', '.join(accepted)}.") from None


def _explainer_class(name: str) -> Optional[type[Explainer]]:
    """The package's explainer class ``name`` (SmoothGrad wraps another explainer: not by name)."""
    return None if name == "SmoothGrad" else explainer_classes().get(name)


def build_explainer(method: Method, model: nn.Module, options: Optional[dict[str, Any]] = None,
                    normalize: Optional[Normalize] = None) -> Explainer:
    """The explainer of a run.

    Args:
        method: a name from ``xai_torch.presets.METHODS`` (``"gradient"``, ``"smoothgrad"``,
            ``"integrated_gradients"``...; options override its preset configuration), the
            name of an explainer class of the package (``"GradCAM"``, ``"IntegratedGradients"``:
            built as ``cls(model, **options)``), ``"package.module:function"`` (called as
            ``function(model, **options)``), or a callable ``model -> Explainer``.
        model: the model.
        options: constructor keywords (``{"steps": 32}``, ``{"layer": "layer4"}``).
        normalize: the model's input normalisation, given to presets made for the packaged
            model's (``normalize=xt.zoo.NORMALIZE``) when the model uses another one.

    Returns:
        An :class:`~xai_torch.explainer.Explainer`.

    Example:
        >>> build_explainer("integrated_gradients", model, {"steps": 16})
    """
    options = dict(options or {})
    explainer: object
    if callable(method) and not isinstance(method, str):
        explainer = method(model, **options)
    elif method in METHODS:
        explainer = _build_preset(METHODS[method], model, options, normalize)
    elif (cls := _explainer_class(method)) is not None:
        try:
            explainer = cls(model, **options)
        except TypeError as err:
            raise XaiError(f"cannot build {method} with options {options}: {err}.") from None
    elif ":" in method:
        explainer = import_object(method, "method factory")(model, **options)
    else:
        classes = sorted(n for n in explainer_classes() if n not in ("Explainer", "SmoothGrad"))
        raise XaiError(f"unknown method {method!r}; choose a preset from {', '.join(METHODS)}, a class from "
                       f"{', '.join(classes)}, or a factory 'package.module:function'.")
    if not isinstance(explainer, Explainer):
        raise XaiError(f"method {method!r} must give an xai_torch Explainer; got {type(explainer).__name__}.")
    return explainer


def _build_preset(spec: MethodSpec, model: nn.Module, options: dict[str, Any],
                  normalize: Optional[Normalize]) -> Explainer:
    """A registry method: its preset for this model (CAM layer, input normalisation), with
    ``options`` replacing the preset's keywords."""
    layer = options.get("layer") if spec.layer else None
    norm = options.get("normalize", normalize) if spec.normalize else None
    try:
        preset = spec.build(model, layer=layer, normalize=norm)
    except XaiError as err:
        raise XaiError(f"method {spec.name!r} does not fit this model ({err}). A CAM needs the model's layer: "
                       "--option layer=NAME (e.g. layer4 of a ResNet).") from None
    given = {k: v for k, v in options.items()
             if not ((k == "layer" and spec.layer) or (k == "normalize" and spec.normalize))}
    if not given:
        return preset
    try:  # the options replace the preset's keywords
        return replace(spec, keywords={**spec.keywords, **given}).build(model, layer=layer, normalize=norm)
    except XaiError:
        accepted = sorted(preset._config())
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise XaiError(f"{spec.cls} does not take option(s) {unknown}; its options: {', '.join(accepted)}.") \
                from None
        raise


def rebuild_with_seed(method: Method, model: nn.Module, options: Optional[dict[str, Any]],
                      normalize: Optional[Normalize], explainer: Explainer, seed: int) -> Explainer:
    """The run's explainer with another seed (one per shard): a preset or class name is built
    again with ``seed`` among its options; a factory's explainer is re-created from its configuration."""
    if isinstance(method, str) and (method in METHODS or _explainer_class(method) is not None):
        return build_explainer(method, model, {**(options or {}), "seed": seed}, normalize)
    return recreate(explainer, model, {"seed": seed})


def is_seeded(explainer: Explainer) -> bool:
    """Whether the explainer draws random numbers from a ``seed`` of its configuration."""
    return "seed" in explainer._config()
