"""The images of a run: an image folder read and decoded image by image, or a map-style dataset.

What a run's configuration records of its images (:attr:`Source.identity`) follows ``hash``:

* ``"content"``: the sha256 of every file's bytes (a folder) or of every item's tensor (a
  dataset), so an image whose content changed under the same name is noticed: a resume is
  refused, with the dataset named in the difference. A folder's file is hashed again as it is
  read for the run, and one that changed since raises :class:`BadImage`.
* ``"names"``: the ids only (and, for a folder, each file's size): fast for huge folders.
* ``"auto"`` (default): ``"content"`` for a folder of at most :data:`AUTO_HASH_BYTES` (2 GB,
  a few seconds to hash), else ``"names"``; a dataset object or factory: ``"names"``. The
  identity records the choice and why (``"hash": "content"``, ``"hash_rule": "auto: ..."``).

Folder listing skips hidden files and folders (names starting with ``.``, among them the
``._name.jpg`` resource files macOS leaves on other disks) and keeps the files with an image
extension (:data:`IMAGE_EXTENSIONS`); ``FolderSource.skipped`` counts the hidden ones.
Decoding is :func:`xai_torch.dataset.images.decode_image` (16-bit images scaled, not clipped;
a bad file raises :class:`BadImage` naming the id and the reason).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError
from .build import Normalize, normalisation
from .config import canonical, import_object
from .images import BadImage, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: ``hash="auto"`` hashes the content of folders up to this many bytes (2 GB)
AUTO_HASH_BYTES = 2 * 1024**3
HASH_MODES = ("auto", "content", "names")

__all__ = ["AUTO_HASH_BYTES", "BadImage", "DatasetSource", "FolderSource", "HASH_MODES", "IMAGE_EXTENSIONS",
           "Source", "build_source"]


class Source:
    """The images of a run: ``ids``, ``identity`` (what the configuration records of it),
    ``get(i) -> (C, H, W)`` (raises :class:`BadImage` for an image that cannot be used) and
    ``label(i)`` (-1: unknown)."""

    ids: list[str]
    identity: dict[str, Any]

    def get(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def label(self, i: int) -> int:
        raise NotImplementedError


def _digest_list(ids: list[str], digests: list[str]) -> str:
    """One sha256 over ``id<TAB>digest`` lines."""
    return hashlib.sha256("".join(f"{i}\t{d}\n" for i, d in zip(ids, digests)).encode()).hexdigest()


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


class FolderSource(Source):
    """Image files under ``root`` (sorted relative paths; ImageFolder labels when every image
    sits in a class folder; hidden files and folders skipped), resized, centre-cropped and
    normalised for the model. ``digests`` (``hash="content"``): sha256 of each file, by position."""

    def __init__(self, root: Path, size: int, resize: int, normalize: Normalize, hash: str = "auto",
                 max_pixels: Optional[int] = None) -> None:
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        files = [p for p in found if not _hidden(p.relative_to(root))]
        self.skipped = len(found) - len(files)
        if not files:
            raise XaiError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}"
                           f"{f'; {self.skipped} hidden files skipped' if self.skipped else ''}).")
        rel = [p.relative_to(root).as_posix() for p in files]
        layered = all("/" in r for r in rel)  # ImageFolder: every image inside a class folder
        classes = sorted({r.split("/", 1)[0] for r in rel}) if layered else []
        index = {c: i for i, c in enumerate(classes)}
        self.root, self.files, self.ids = root, files, rel
        self.labels = [index[r.split("/", 1)[0]] for r in rel] if layered else [-1] * len(rel)
        self.size, self.resize, self.max_pixels = size, resize, max_pixels
        mean, std = normalize
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        sizes = [p.stat().st_size for p in files]
        total = sum(sizes)
        if hash == "auto":
            mode = "content" if total <= AUTO_HASH_BYTES else "names"
            rule = (f"auto: {total / 1e6:.1f} MB {'<=' if mode == 'content' else '>'} "
                    f"{AUTO_HASH_BYTES / 1e9:.1f} GB")
        else:
            mode, rule = hash, "given"
        self.hash = mode
        self.digests: Optional[list[str]] = None
        if mode == "content":
            self.digests = [_sha256_of(p) for p in files]
            content = {"content_sha256": _digest_list(rel, self.digests)}
        else:
            content = {"sizes_sha256": _digest_list(rel, [str(n) for n in sizes])}
        self.identity = {"kind": "image_folder", "layout": "imagefolder" if layered else "flat", "classes": classes,
                         "preprocess": {"resize": resize, "crop": size, "normalize": canonical(normalize)},
                         "hash": mode, "hash_rule": rule, **content}

    def read(self, i: int) -> bytes:
        """The bytes of image ``i`` (checked against its recorded sha256 under ``hash="content"``)."""
        try:
            data = self.files[i].read_bytes()
        except OSError as err:
            raise BadImage(self.ids[i], f"cannot read the file ({err.strerror or err})") from None
        if self.digests is not None and hashlib.sha256(data).hexdigest() != self.digests[i]:
            raise BadImage(self.ids[i], "its content changed since the run started (sha256 differs); rerun to "
                                        "explain the new content")
        return data

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` decoded (``(H, W, 3)``, uint8 or float32 in [0, 1]), before resizing."""
        return decode_image(self.read(i), self.ids[i], self.max_pixels)

    def get(self, i: int) -> torch.Tensor:
        from ..zoo import center_crop

        arr = self.pixels(i)
        arr = center_crop(arr, self.size, self.resize)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float()
        if arr.dtype == np.uint8:
            t = t / 255.0
        return (t - self.mean) / self.std

    def label(self, i: int) -> int:
        return self.labels[i]


def _sha256_of(path: Path) -> str:
    from .config import sha256_file

    try:
        return sha256_file(path)
    except OSError as err:
        raise XaiError(f"cannot read {str(path)!r} to hash it ({err.strerror or err}); fix its permissions or pass "
                       "hash='names'.") from None


class DatasetSource(Source):
    """A map-style dataset: items are ``(C, H, W)`` tensors or ``(tensor, label)``; its ``ids``
    attribute names the images when present, its ``labels`` / ``targets`` give the labels."""

    def __init__(self, dataset: Any, name: str, hash: str = "auto") -> None:
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
        self.identity = {"kind": "dataset", "name": name, "hash": "content" if hash == "content" else "names",
                         "hash_rule": "auto: a dataset's items are hashed only with hash='content'"
                         if hash == "auto" else "given"}
        if hash == "content":  # every item once: the user asked for it
            digests = []
            for i in range(n):
                t = self.get(i).contiguous()
                digests.append(hashlib.sha256(f"{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest())
            self.identity["content_sha256"] = _digest_list(ids, digests)

    def get(self, i: int) -> torch.Tensor:
        try:
            item = self.dataset[i]
        except Exception as err:  # noqa: BLE001 - the dataset's own error, named with the image
            raise BadImage(self.ids[i], f"the dataset raised {type(err).__name__}: {err}") from err
        if isinstance(item, (tuple, list)):
            if len(item) > 1 and self.labels is None:
                self._label_of[i] = int(item[1])
            item = item[0]
        if not isinstance(item, torch.Tensor) or item.ndim != 3:
            raise BadImage(self.ids[i], f"dataset item {i} must be a (C, H, W) tensor or (tensor, label); got "
                                        f"{type(item).__name__}{tuple(item.shape) if hasattr(item, 'shape') else ''}")
        return item.float()

    def label(self, i: int) -> int:
        if self.labels is not None:
            return self.labels[i]
        return self._label_of.get(i, -1)


def build_source(data: Any, model_spec: object, input_size: int = 224, resize: Optional[int] = None, *,
                 hash: str = "auto", max_pixels: Optional[int] = None) -> Source:
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
        hash: what the identity records of the images: ``"content"`` (sha256 of every file or
            item), ``"names"`` (ids, and a folder's file sizes) or ``"auto"`` (content for
            folders up to :data:`AUTO_HASH_BYTES`; see the module docstring).
        max_pixels: folder images with more pixels raise :class:`BadImage` (default PIL's
            ``Image.MAX_IMAGE_PIXELS``, 89.5 MP; ``0``: no limit).

    Returns:
        A :class:`Source`.

    Raises:
        XaiError: no images, an unknown ``hash``, data that is neither a folder nor a dataset.

    Example:
        >>> src = build_source("val/", "efficientnet_lite0", hash="content")
        >>> src.ids[:2], src.identity["hash"]
    """
    if hash not in HASH_MODES:
        raise XaiError(f"hash must be one of {', '.join(HASH_MODES)}; got {hash!r}.")
    resize = resize or round(input_size * 256 / 224)
    if not isinstance(data, (str, os.PathLike)):
        return DatasetSource(data, type(data).__name__, hash)
    text = str(data)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, input_size, resize, normalisation(model_spec), hash, max_pixels)
    if ":" in text and not path.exists():
        factory = import_object(text, "dataset factory")
        return DatasetSource(factory() if callable(factory) else factory, text, hash)
    raise XaiError(f"data {text!r} is neither an image folder nor a dataset factory 'package.module:function'.")
