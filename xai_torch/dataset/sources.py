"""The images of a run: an image folder read and decoded image by image, or a map-style dataset."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError
from .build import Normalize, normalisation
from .config import canonical, import_object

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class Source:
    """The images of a run: ``ids``, ``identity`` (what the configuration records of it),
    ``get(i) -> (C, H, W)`` and ``label(i)`` (-1: unknown)."""

    ids: list[str]
    identity: dict[str, Any]

    def get(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def label(self, i: int) -> int:
        raise NotImplementedError


class FolderSource(Source):
    """Image files under ``root`` (sorted relative paths; ImageFolder labels when every image
    sits in a class folder), resized, centre-cropped and normalised for the model."""

    def __init__(self, root: Path, size: int, resize: int, normalize: Normalize) -> None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise XaiError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        rel = [p.relative_to(root).as_posix() for p in files]
        layered = all("/" in r for r in rel)  # ImageFolder: every image inside a class folder
        classes = sorted({r.split("/", 1)[0] for r in rel}) if layered else []
        index = {c: i for i, c in enumerate(classes)}
        self.root, self.files, self.ids = root, files, rel
        self.labels = [index[r.split("/", 1)[0]] for r in rel] if layered else [-1] * len(rel)
        self.size, self.resize = size, resize
        mean, std = normalize
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        self.identity = {"kind": "image_folder", "layout": "imagefolder" if layered else "flat", "classes": classes,
                         "preprocess": {"resize": resize, "crop": size, "normalize": canonical(normalize)}}

    def get(self, i: int) -> torch.Tensor:
        from PIL import Image

        from ..zoo import center_crop

        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert("RGB"))
        arr = center_crop(arr, self.size, self.resize)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
        return (t - self.mean) / self.std

    def label(self, i: int) -> int:
        return self.labels[i]


class DatasetSource(Source):
    """A map-style dataset: items are ``(C, H, W)`` tensors or ``(tensor, label)``; its ``ids``
    attribute names the images when present, its ``labels`` / ``targets`` give the labels."""

    def __init__(self, dataset: Any, name: str) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise XaiError(f"dataset {name!r} must be a map-style dataset (__len__ and __getitem__); "
                           f"got {type(dataset).__name__}.")
        n = len(dataset)
        if n == 0:
            raise XaiError(f"dataset {name!r} is empty.")
        ids = getattr(dataset, "ids", None)
        ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        if len(ids) != n or len(set(ids)) != n:
            raise XaiError(f"dataset {name!r}: .ids must hold {n} distinct ids; got {len(ids)} "
                           f"({len(set(ids))} distinct).")
        self.dataset, self.ids = dataset, ids
        labels = getattr(dataset, "labels", None)
        labels = getattr(dataset, "targets", None) if labels is None else labels
        self.labels: Optional[list[int]] = (
            [int(v) for v in labels] if labels is not None and len(labels) == n else None)
        self._label_of: dict[int, int] = {}  # labels found in (tensor, label) items
        self.identity = {"kind": "dataset", "name": name}

    def get(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        if isinstance(item, (tuple, list)):
            if len(item) > 1 and self.labels is None:
                self._label_of[i] = int(item[1])
            item = item[0]
        if not isinstance(item, torch.Tensor) or item.ndim != 3:
            raise XaiError(f"dataset item {i} must be a (C, H, W) tensor or (tensor, label); got "
                           f"{type(item).__name__}{tuple(item.shape) if hasattr(item, 'shape') else ''}.")
        return item.float()

    def label(self, i: int) -> int:
        if self.labels is not None:
            return self.labels[i]
        return self._label_of.get(i, -1)


def build_source(data: Any, model_spec: object, input_size: int = 224, resize: Optional[int] = None) -> Source:
    """The images of a run.

    Args:
        data: an image folder (ImageFolder layout or flat, searched recursively, ids = relative
            paths in sorted order), ``"package.module:function"`` returning a map-style dataset,
            or a dataset object. Dataset items are ``(C, H, W)`` tensors in the model's input
            space or ``(tensor, label)``; a dataset's ``ids`` attribute, when present, names its
            images (else the index is the id).
        model_spec: the run's model (its input normalisation is applied to folder images).
        input_size: crop size for folder images.
        resize: shorter side before the crop (default ``input_size * 256 / 224``).

    Returns:
        A :class:`Source`.

    Example:
        >>> build_source("val/", "efficientnet_lite0").ids[:2]
    """
    resize = resize or round(input_size * 256 / 224)
    if not isinstance(data, (str, os.PathLike)):
        return DatasetSource(data, type(data).__name__)
    text = str(data)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, input_size, resize, normalisation(model_spec))
    if ":" in text and not path.exists():
        factory = import_object(text, "dataset factory")
        return DatasetSource(factory() if callable(factory) else factory, text)
    raise XaiError(f"data {text!r} is neither an image folder nor a dataset factory 'package.module:function'.")
