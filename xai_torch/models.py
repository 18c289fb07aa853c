"""The one model loader: the command line, the report and dataset runs build models and read images here.

* :func:`load_model`: the packaged EfficientNet-Lite0, a torchvision or timm architecture or a
  local Hugging Face config / folder (:mod:`xai_torch.hubs`), with an optional state-dict file
  (:func:`load_weights`, which says key by key why a file does not fit).
* :func:`auto_cam_layer`: the CAM layer of a CNN (its last convolutional block) or a transformer.
* :func:`load_image`: any image file OpenCV reads, or a packaged photo's name.
* :func:`check_device`: ``--device`` as a ``torch.device``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from . import hubs, zoo
from .errors import XaiError, closest_names
from .hooks import HookSession
from .hubs import transformer_cam_layer
from .layers import has_attention
from .presets import CAM_LAYER

#: torchvision's ImageNet input normalisation ``(mean, std)`` for pixels in [0, 1]
IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

def load_image(spec: str) -> tuple[str, np.ndarray, str]:
    """Read one image for ``explain``: any file OpenCV decodes, or a packaged photo's name.

    Args:
        spec: a path (PNG, JPEG, BMP, TIFF, WebP...; greyscale and alpha are turned into RGB),
            or, when no such file exists, one of ``zoo.IMAGES`` (``"chelsea"``...).

    Returns:
        ``(name, rgb, source)``: the file stem, the uint8 RGB image ``(H, W, 3)`` and where it
        came from.

    Raises:
        XaiError: a missing file, a folder, a file OpenCV cannot decode, or a JPEG that ends
            before its image data does (cut off: OpenCV would decode the part it has, fill the
            rest with grey and only print "Premature end of JPEG file"; :func:`jpeg_complete`).

    Example:
        >>> name, rgb, src = load_image("photos/cat.jpg")     # ("cat", (H, W, 3) uint8, "photos/cat.jpg")
    """
    import cv2

    p = Path(spec)
    if not p.exists():
        if spec in zoo.IMAGES:
            return spec, zoo.image(spec), f"packaged:{spec}"
        raise XaiError(f"image file {spec!r} does not exist (packaged photos can be named instead: "
                       f"{', '.join(zoo.IMAGES)}).")
    if p.is_dir():
        raise XaiError(f"{spec!r} is a folder; pass the image files themselves (e.g. {spec}/*.jpg).")
    with open(p, "rb") as f:
        is_jpeg = f.read(2) == b"\xff\xd8"
    if is_jpeg and not jpeg_complete(p.read_bytes()):
        raise XaiError(f"{spec!r} is an incomplete JPEG: the file ends before its image data does (cut off by an "
                       "interrupted download or copy?). OpenCV would fill the missing part with grey and the "
                       "explanation would show it; copy or download the file again.")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise XaiError(f"could not read {spec!r} as an image: OpenCV cannot decode it. Pass a PNG, JPEG, BMP, "
                       "TIFF or WebP file.")
    return p.stem, np.ascontiguousarray(bgr[..., ::-1]), str(p)


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG stream reaches its end-of-image marker (EOI), walking its segments.

    Segments are skipped by their lengths and each scan's entropy-coded data up to the next
    marker (a stuffed ``FF 00`` or a restart marker is data), so an ``FF D9`` inside an EXIF
    thumbnail or a segment's payload is not mistaken for the end. Bytes where a marker should
    be are skipped as libjpeg does. Data that does not start with the start marker is not a
    JPEG: ``True`` (not this function's to judge).

    Args:
        data: the file's bytes.

    Returns:
        ``False`` when the data ends before the EOI marker (a cut-off file).

    Example:
        >>> jpeg_complete(open("cat.jpg", "rb").read()[:20000])
        False
    """
    if data[:2] != b"\xff\xd8":
        return True
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:  # extraneous bytes before a marker: libjpeg skips them too
            i = data.find(b"\xff", i)
            if i < 0:
                return False
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return False
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            continue
        if i + 2 > n:
            return False
        i += int.from_bytes(data[i:i + 2], "big")
        if marker != 0xDA:
            continue
        while True:  # a scan: entropy-coded data up to the next real marker
            j = data.find(b"\xff", i)
            if j < 0 or j + 1 >= n:
                return False
            follow = data[j + 1]
            if follow == 0xFF:  # fill before a marker
                i = j + 1
            elif follow == 0x00 or 0xD0 <= follow <= 0xD7:
                i = j + 2
            else:
                i = j
                break
    return False


def check_device(text: str) -> torch.device:
    """``--device`` as a torch.device; a clear error for CUDA on a machine without it."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise XaiError(f"--device must be cpu, cuda or cuda:N; got {text!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XaiError(f"--device {text}: CUDA is not available here (torch.cuda.is_available() is False); "
                       "use --device cpu.")
    return device


@dataclass
class LoadedModel:
    """A model ready for the command line.

    Attributes:
        model: in eval mode, on its device.
        name: ``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"timm:NAME"`` or ``"hf:PATH"``.
        weights: the weights file, ``"packaged"``, or None (random initialisation).
        normalize: ``(mean, std)`` of its input normalisation for pixels in [0, 1].
        layer: its CAM layer, or None to pick the last convolutional block (:func:`auto_cam_layer`).
        to_input: 224 x 224 uint8 RGB crops -> the model's input batch.
    """

    model: torch.nn.Module
    name: str
    weights: Optional[str]
    normalize: tuple[Any, Any]
    layer: Optional[str]
    to_input: Callable[[Sequence[np.ndarray]], torch.Tensor] = field(repr=False)


def _imagenet_input(crops: Sequence[np.ndarray], normalize: tuple[Any, Any] = IMAGENET_NORMALIZE) -> torch.Tensor:
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, 3, 1, 1) for v in normalize)
    return (x - mean) / std


def _hub_model(spec: str, weights: Union[str, Path, None], num_classes: Optional[int],
               device: Union[str, torch.device]) -> LoadedModel:
    kind, name = spec.split(":", 1)
    model, norm = hubs.build_timm(name, num_classes) if kind == "timm" else hubs.build_hf(name, num_classes)
    if weights is not None:
        load_weights(model, weights, spec, num_classes or int(getattr(model, "num_classes", 1000)))
    normalize = norm or IMAGENET_NORMALIZE
    return LoadedModel(model.eval().to(device), spec, str(weights) if weights else None, normalize, None,
                       lambda crops: _imagenet_input(crops, normalize))


def load_weights(model: torch.nn.Module, file: Union[str, Path], model_name: str, classes: int = 1000) -> None:
    """Load a state dict file into ``model``, or say precisely why it does not fit.

    Args:
        model: the freshly built model.
        file: a ``torch.save(model.state_dict(), file)`` file; a checkpoint dict holding it under
            ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` works, and a DataParallel
            ``"module."`` prefix is removed.
        model_name: for messages.
        classes: the model's number of classes (to suggest ``--num-classes``).

    Raises:
        XaiError: missing or unreadable file, not a state dict, or keys / shapes that do not fit
        (the message lists them).

    Example:
        >>> load_weights(torchvision.models.resnet18(), "resnet18.pt", "torchvision:resnet18")
    """
    p = Path(file)
    if not p.is_file():
        raise XaiError(f"weights file {str(file)!r} does not exist.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors all mean "not a state dict we can read"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XaiError(f"could not read {str(file)!r} as PyTorch weights ({first[:200]}); save them with "
                       "torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XaiError(f"{str(file)!r} does not hold a state dict (a dict of tensors); save one with "
                       "torch.save(model.state_dict(), path).")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            listed = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in shapes[:4])
            parts.append(f"{len(shapes)} tensor(s) of another shape ({listed}{' ...' if len(shapes) > 4 else ''})")
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file key(s) the model does not have (e.g. {', '.join(unexpected[:3])})")
        hint = ""
        heads = {a[0] for _, a, b in shapes if b and b[0] == classes and a and a[0] != classes}
        if shapes and not missing and not unexpected and len(heads) == 1:
            hint = f" The file looks trained for {heads.pop()} classes: pass --num-classes with that number."
        elif len(missing) > len(own) // 2:
            hint = " It looks like the weights of another architecture: check --model."
        raise XaiError(f"the weights in {str(file)!r} do not fit {model_name} ({len(own)} tensors in the model, "
                       f"{len(state)} in the file): {'; '.join(parts)}.{hint}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise XaiError(f"the weights in {str(file)!r} do not fit {model_name}: {err}") from None


def load_model(spec: str, weights: Union[str, Path, None] = None, num_classes: Optional[int] = None,
               device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Build the model ``explain`` names: the packaged EfficientNet-Lite0, a torchvision or timm
    architecture, or a local Hugging Face model.

    Args:
        spec: ``"efficientnet_lite0"`` (trained, packaged); ``"torchvision:NAME"``, NAME one
            of ``torchvision.models.list_models()`` classification models (built with
            ``weights=None``: nothing is downloaded); ``"timm:NAME"`` (``pretrained=False``, at
            224 px; :func:`~xai_torch.hubs.build_timm`); ``"hf:PATH"``, a local ``config.json``
            or a folder with one and maybe its weights (:func:`~xai_torch.hubs.build_hf`; the
            model is wrapped by :func:`xai_torch.adapt`, so its layer names are its own).
        weights: an optional state dict file (:func:`load_weights`).
        num_classes: a torchvision / timm model's number of classes (default 1000), a Hugging
            Face config's ``num_labels``.
        device: where the model goes.

    Returns:
        :class:`LoadedModel`.

    Example:
        >>> lm = load_model("torchvision:resnet18", weights="resnet18.pt")
        >>> lm.model(lm.to_input([zoo.center_crop(zoo.image("chelsea"))])).shape
        torch.Size([1, 1000])
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise XaiError(f"--num-classes must be a positive integer; got {num_classes!r}.")
    if spec in ("efficientnet_lite0", "lite0", "packaged"):
        if num_classes not in (None, 1000):
            raise XaiError("--num-classes applies to torchvision models; the packaged Lite0 has 1000 classes.")
        model = zoo.efficientnet_lite0()
        if weights is not None:
            load_weights(model, weights, "efficientnet_lite0")
        return LoadedModel(model.eval().to(device), "efficientnet_lite0", str(weights) if weights else "packaged",
                           zoo.NORMALIZE, CAM_LAYER, lambda crops: zoo.preprocess(list(crops), crop=False))
    if isinstance(spec, str) and spec.startswith("torchvision:"):
        import torchvision  # type: ignore[import-untyped]  # no py.typed in torchvision

        name = spec.split(":", 1)[1]
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            close = closest_names(name, available)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise XaiError(f"torchvision has no classification model {name!r}.{hint} Available: "
                           f"{', '.join(available)}.")
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        try:
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError) as err:
            raise XaiError(f"could not build torchvision:{name} ({err}).") from None
        if weights is not None:
            load_weights(model, weights, spec, num_classes or 1000)
        return LoadedModel(model.eval().to(device), spec, str(weights) if weights else None, IMAGENET_NORMALIZE,
                           None, _imagenet_input)
    if isinstance(spec, str) and spec.split(":", 1)[0] in ("timm", "hf") and spec.split(":", 1)[1:] != [""]:
        return _hub_model(spec, weights, num_classes, device)
    raise XaiError(f"unknown model {spec!r}; use efficientnet_lite0 (the packaged, trained ImageNet model), "
                   "torchvision:NAME (e.g. torchvision:resnet50 --weights resnet50.pt), timm:NAME (e.g. "
                   "timm:vit_tiny_patch16_224) or hf:PATH (a local config.json or model folder).")


def auto_cam_layer(model: torch.nn.Module, x: torch.Tensor) -> str:
    """The CAM layer of a CNN: the last module to finish its forward that contains a Conv2d and
    outputs a ``(B, C, H, W)`` map with ``H, W > 1`` (``layer4`` of a ResNet, ``features`` of
    VGG / DenseNet / MobileNet / EfficientNet / ConvNeXt, ``Mixed_7c`` of Inception v3,
    ``trunk_output`` of RegNet; ``classifier.1`` of SqueezeNet, its class-map convolution).
    A model with attention modules gets :func:`transformer_cam_layer`'s.

    Args:
        model: the model (its hooks are removed again, whatever happens).
        x: an input batch; one image of it is forwarded.

    Returns:
        The dotted module name.

    Example:
        >>> auto_cam_layer(torchvision.models.resnet18(), torch.zeros(1, 3, 224, 224))
        'layer4'
    """
    if has_attention(model):
        return transformer_cam_layer(model, x)
    candidates = [(n, m) for n, m in model.named_modules()
                  if n and any(isinstance(s, torch.nn.Conv2d) for s in m.modules())]
    finished: list[str] = []

    def record(name: str) -> Callable[[torch.nn.Module, Any, Any], None]:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
                finished.append(name)
        return hook

    with HookSession() as session, torch.no_grad():
        for n, m in candidates:
            session.forward_hook(m, record(n))
        model(x[:1])
    if not finished:
        raise XaiError("found no convolutional layer with a (B, C, H, W) output for the CAM methods; pass "
                       "--layer NAME (a dotted module name, see model.named_modules()).")
    return finished[-1]



