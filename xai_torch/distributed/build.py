"""The model and the explainer of a run, from their names on the command line."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, Optional, Union

from torch import nn

from ..errors import XaiError, XaiWarning, closest_names
from ..explainer import Explainer
from .config import import_object

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
    return (IMAGENET_MEAN, IMAGENET_STD)


def build_model(spec: Union[str, nn.Module], weights: Optional[str] = None, device: Any = "cpu") -> nn.Module:
    """The model of a run, in eval mode on ``device``.

    Args:
        spec: ``"efficientnet_lite0"`` (the packaged, trained model), ``"torchvision:NAME"``
            (built with ``weights=None``), ``"package.module:function"`` (a factory called
            with no argument that returns an ``nn.Module``), or an ``nn.Module``.
        weights: a state-dict file loaded strictly into the model (see ``xai_torch.cli.load_weights``).
        device: where the model goes.

    Returns:
        The model (``eval()`` is called: the run owns this model).

    Example:
        >>> model = build_model("torchvision:resnet18", weights="resnet18.pth")
    """
    from .. import zoo

    model: nn.Module
    if isinstance(spec, nn.Module):
        model = spec
    elif spec == "efficientnet_lite0":
        model = zoo.efficientnet_lite0()
    elif isinstance(spec, str) and spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        available = torchvision.models.list_models()
        if name not in available:
            raise XaiError(f"unknown torchvision model {name!r}; close names: "
                           f"{closest_names(name, available) or available[:10]}.")
        model = torchvision.models.get_model(name, weights=None)
        if weights is None:
            warnings.warn(f"{spec} has random weights (built with weights=None): pass a state-dict file "
                          "(--weights FILE) to explain a trained model.", XaiWarning, stacklevel=2)
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
        from ..cli import load_weights  # the command line's loader: checks keys and shapes one by one

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
    import xai_torch

    obj = getattr(xai_torch, name, None)
    if isinstance(obj, type) and issubclass(obj, Explainer) and name != "SmoothGrad":
        return obj
    return None


def build_explainer(method: Method, model: nn.Module, options: Optional[dict[str, Any]] = None,
                    normalize: Optional[Normalize] = None) -> Explainer:
    """The explainer of a run.

    Args:
        method: a name from ``xai_torch.cli.METHODS`` (``"gradient"``, ``"smoothgrad"``,
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
    from .. import zoo
    from ..cli import METHODS

    options = dict(options or {})
    explainer: object
    if callable(method) and not isinstance(method, str):
        explainer = method(model, **options)
    elif method in METHODS:
        factory = METHODS[method][0]
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        kwargs = {}  # presets that take the model's CAM layer / input normalisation get them
        if "layer" in params and "layer" in options:
            kwargs["layer"] = options["layer"]
        if "normalize" in params and normalize is not None and "normalize" not in options:
            kwargs["normalize"] = normalize
        try:
            made = factory(model, **kwargs)
        except XaiError as err:
            raise XaiError(f"method {method!r} does not fit this model ({err}). A CAM needs the model's layer: "
                           "--option layer=NAME (e.g. layer4 of a ResNet).") from None
        changes = dict(options)
        cfg = made._config()
        if (normalize is not None and "normalize" not in options and cfg.get("normalize") == zoo.NORMALIZE
                and tuple(normalize) != tuple(zoo.NORMALIZE)):
            changes["normalize"] = normalize
        explainer = recreate(made, model, changes) if changes else made
    elif (cls := _explainer_class(method)) is not None:
        try:
            explainer = cls(model, **options)
        except TypeError as err:
            raise XaiError(f"cannot build {method} with options {options}: {err}.") from None
    elif ":" in method:
        explainer = import_object(method, "method factory")(model, **options)
    else:
        import xai_torch

        classes = [n for n in getattr(xai_torch, "__all__", []) if n not in ("Explainer", "SmoothGrad")
                   and _explainer_class(n) is not None]
        raise XaiError(f"unknown method {method!r}; choose a preset from {', '.join(METHODS)}, a class from "
                       f"{', '.join(classes)}, or a factory 'package.module:function'.")
    if not isinstance(explainer, Explainer):
        raise XaiError(f"method {method!r} must give an xai_torch Explainer; got {type(explainer).__name__}.")
    return explainer


def is_seeded(explainer: Explainer) -> bool:
    """Whether the explainer draws random numbers from a ``seed`` of its configuration."""
    return "seed" in explainer._config()
