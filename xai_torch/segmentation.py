"""Superpixels for the region methods (XRAI, LIME, KernelSHAP), on batches.

Every function takes a batch ``x`` ``(B, C, H, W)`` in the model's input space and returns
label maps ``(B, H, W)`` (``torch.long``, on ``x.device``) whose labels are **contiguous from
0** in every image. scikit-image's ``slic`` starts at 1, and lime then silently treats label 0
as a feature that never exists; here :func:`relabel` always renumbers.

What is segmented:

* by default each image of ``x`` rescaled to ``[0, 1]`` by its own min and max (per-channel
  normalisation is not undone: pass the pixel image when you have it);
* or ``image=``: the pixel-space images, ``(B, C, H, W)`` / ``(B, H, W, C)`` floats in ``[0, 1]``
  or uint8.

Greyscale (C = 1) works: colour-space algorithms (quickshift, slic) see it as grey RGB.

Helpers convert between a label map and a mask matrix: :func:`labels_to_masks`,
:func:`masks_to_labels`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from .errors import XaiError, check_input, describe
from .felzenszwalb import dilated_masks, felzenszwalb_scales
from .threads import small_ops

#: XRAI's oversegmentation (PAIR ``core/xrai.py``).
XRAI_SCALES = (50, 100, 150, 250, 500, 1200)
XRAI_SIGMA = 0.8
XRAI_MIN_SIZE = 150
XRAI_SIZE = 224
XRAI_DILATION = 5


def _hwc(array: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise XaiError(f"image must be (B, C, H, W) or (B, H, W, C); got shape {array.shape}.")
    if array.shape[1:3] == (h, w) and array.shape[3] in (1, 3, c):
        return array
    if array.shape[2:4] == (h, w):
        return np.moveaxis(array, 1, -1)
    raise XaiError(f"image has shape {array.shape} but x is {h} x {w}; give the pixel images of x.")


def pixel_images(x: torch.Tensor, image: Any = None) -> np.ndarray:
    """``(B, H, W, C)`` float64 images in ``[0, 1]`` to segment (see the module doc)."""
    x4, _ = check_input(x)
    b, c, h, w = x4.shape
    if image is None:
        flat = x4.detach().to("cpu", torch.float64).flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        out = (x4.detach().to("cpu", torch.float64) - lo.view(-1, 1, 1, 1)) / span.view(-1, 1, 1, 1)
        return out.permute(0, 2, 3, 1).numpy()
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = _hwc(array, h, w, c)
    if array.shape[0] != b:
        raise XaiError(f"image has {array.shape[0]} images but x has {b}.")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise XaiError(f"image must be float in [0, 1] or uint8; got dtype {array.dtype}.")
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise XaiError("a float image= must lie in [0, 1] (pixel space); got values in "
                       f"[{array.min():.3g}, {array.max():.3g}].")
    return np.clip(array.astype(np.float64), 0, 1)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def relabel(labels: torch.Tensor) -> torch.Tensor:
    """Renumber each image's labels to ``0..S-1`` (keeping their order)."""
    lab = torch.as_tensor(labels)
    single = lab.ndim == 2
    lab = lab[None] if single else lab
    out = torch.empty_like(lab, dtype=torch.long)
    for i in range(lab.shape[0]):
        out[i] = torch.unique(lab[i], return_inverse=True)[1]
    return out[0] if single else out


def _stack(labels: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return relabel(torch.from_numpy(np.stack(labels).astype(np.int64))).to(device)


def felzenszwalb(x: torch.Tensor, scale: float = 100.0, sigma: float = 0.8, min_size: int = 50,
                 image: Any = None) -> torch.Tensor:
    """Felzenszwalb & Huttenlocher graph segmentation (scikit-image), per image.

    Returns:
        ``(B, H, W)`` long labels, contiguous from 0.

    Example:
        >>> labels = xt.segmentation.felzenszwalb(x, scale=100)
    """
    from skimage import segmentation

    imgs = pixel_images(x, image)
    return _stack([segmentation.felzenszwalb(im, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
                   for im in imgs], x.device)


def quickshift(x: torch.Tensor, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2,
               seed: int = 42, image: Any = None) -> torch.Tensor:
    """Quickshift (scikit-image) with lime's parameters. lime's seed never reaches scikit-image
    (its wrapper drops the renamed ``rng`` argument), so lime always runs with ``rng=42``: the
    default here.

    Returns:
        ``(B, H, W)`` long labels, contiguous from 0.
    """
    from skimage import segmentation

    imgs = pixel_images(x, image)
    return _stack([segmentation.quickshift(  # type: ignore[no-untyped-call]  # untyped in scikit-image
        _rgb(im), kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=seed) for im in imgs], x.device)


def slic(x: torch.Tensor, n_segments: int = 100, compactness: float = 10.0, sigma: float = 1.0,
         image: Any = None) -> torch.Tensor:
    """SLIC superpixels (scikit-image), relabelled from 0.

    Returns:
        ``(B, H, W)`` long labels, contiguous from 0.
    """
    from skimage import segmentation

    imgs = pixel_images(x, image)
    return _stack([segmentation.slic(_rgb(im), n_segments=n_segments, compactness=compactness, sigma=sigma,
                                     start_label=0, channel_axis=-1) for im in imgs], x.device)


#: a segmenter: ``(x, image=None) -> (B, H, W)`` integer labels.
Segmenter = Callable[..., Any]

SEGMENTERS: dict[str, Segmenter] = {"felzenszwalb": felzenszwalb, "quickshift": quickshift, "slic": slic}


def get_segmenter(segmenter: Union[str, Segmenter, None], default: str = "quickshift", **kwargs: Any) -> Segmenter:
    """A callable ``(x, image=None) -> (B, H, W)`` labels from a name or a callable."""
    if segmenter is None:
        segmenter = default
    if isinstance(segmenter, str):
        if segmenter not in SEGMENTERS:
            raise XaiError(f"unknown segmenter {segmenter!r}; choose one of {list(SEGMENTERS)} or pass a callable "
                           "(x, image=None) -> (B, H, W) labels.")
        fn = SEGMENTERS[segmenter]

        def segment(x: torch.Tensor, image: Any = None) -> Any:
            return fn(x, image=image, **kwargs)

        return segment
    if callable(segmenter):
        return segmenter
    raise XaiError(f"segmenter must be a name {list(SEGMENTERS)} or a callable; got {describe(segmenter)}.")


def check_segments(segments: Any, x: torch.Tensor, minimum: int = 2) -> torch.Tensor:
    """Validate user segments against ``x`` ``(B, C, H, W)``: ``(H, W)`` (every image) or
    ``(B, H, W)`` integer labels. Returns ``(B, H, W)`` long, contiguous from 0, on x.device."""
    b, _, h, w = x.shape
    seg = segments if isinstance(segments, torch.Tensor) else torch.as_tensor(np.asarray(segments))
    if seg.is_floating_point() or seg.dtype == torch.bool or seg.is_complex():
        raise XaiError(f"segments must be integer labels; got {describe(seg)}.")
    if seg.ndim == 2:
        seg = seg.expand(b, h, w) if tuple(seg.shape) == (h, w) else seg
    if tuple(seg.shape) != (b, h, w):
        raise XaiError(f"segments must be (H, W) = ({h}, {w}) or (B, H, W) = ({b}, {h}, {w}) labels; "
                       f"got shape {tuple(seg.shape)}.")
    seg = relabel(seg.cpu()).to(x.device)
    counts = seg.flatten(1).max(1).values + 1
    if int(counts.min()) < minimum:
        raise XaiError(f"an image has {int(counts.min())} segment(s); the method needs at least {minimum} to "
                       "compare (use a finer segmentation).")
    return seg


def labels_to_masks(labels: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` labels ``0..S-1`` -> ``(S, H, W)`` bool masks (one per label)."""
    if labels.ndim != 2:
        raise XaiError(f"labels_to_masks takes one (H, W) label map; got shape {tuple(labels.shape)}.")
    count = int(labels.max()) + 1 if labels.numel() else 0
    return labels[None] == torch.arange(count, device=labels.device).view(-1, 1, 1)


def masks_to_labels(masks: torch.Tensor) -> torch.Tensor:
    """``(M, H, W)`` bool masks -> ``(H, W)`` labels: each pixel gets the index of the first mask
    that covers it, and ``M`` where none does."""
    if masks.ndim != 3:
        raise XaiError(f"masks_to_labels takes (M, H, W) masks; got shape {tuple(masks.shape)}.")
    m = masks.shape[0]
    covered = masks.any(0)
    first = masks.to(torch.uint8).argmax(0)  # argmax returns the first maximum
    return torch.where(covered, first, torch.full_like(first, m))


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``(M, H, W)`` masks by a disk of ``radius`` (scikit-image's ``disk``),
    as one convolution."""
    if radius <= 0:
        return masks
    r = torch.arange(-radius, radius + 1, device=masks.device)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]
    out = torch.nn.functional.conv2d(masks[:, None].float(), disk, padding=radius)
    return out[:, 0] > 0.5


def dilated_label_masks(labels: torch.Tensor, first: int, last: int, radius: int) -> torch.Tensor:
    """Masks of labels ``first..last`` of one ``(H, W)`` label map, each dilated by a disk of
    ``radius``: pixel ``p`` is in label ``L``'s mask when a pixel of label ``L`` lies within the
    disk around ``p`` (zero padding). Built by scattering the label map at every disk offset,
    ``O(disk * H * W)``, instead of dilating hundreds of masks one by one."""
    h, w = labels.shape
    count = last - first + 1
    flat = torch.zeros(count * h * w, dtype=torch.bool, device=labels.device)
    base = (labels - first) * (h * w)  # where label L's mask starts in the flat buffer
    pos = torch.arange(h * w, device=labels.device).view(h, w)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            # pixels p = (y, x) whose neighbour q = (y + dy, x + dx) is inside the image
            y0, y1, x0, x1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
            flat[(base[y0 + dy:y1 + dy, x0 + dx:x1 + dx] + pos[y0:y1, x0:x1]).flatten()] = True
    return flat.view(count, h, w)


def multiscale(x: torch.Tensor, image: Any = None, scales: Sequence[int] = XRAI_SCALES, sigma: float = XRAI_SIGMA,
               min_size: int = XRAI_MIN_SIZE, size: Optional[int] = XRAI_SIZE,
               dilation: int = XRAI_DILATION) -> list[torch.Tensor]:
    """XRAI's oversegmentation (PAIR ``_get_segments_felzenszwalb``), per image.

    Each image (``x`` itself by default, exactly the array a PAIR user passes, or ``image=``) is
    rescaled to ``[-1, 1]`` by its own min and max, resized to ``size`` x ``size`` (cubic,
    anti-aliased; skipped when already that size, where it is the identity), and segmented by
    Felzenszwalb at every scale (:func:`xai_torch.felzenszwalb.felzenszwalb_scales`: one sorted
    graph for all scales, labels identical to scikit-image's); the labels are resized back
    (nearest, scikit-image's pixel centres), every label of every scale becomes a mask (masks
    overlap across scales; some are empty), and each mask is dilated by a disk of radius ``dilation``.

    Returns:
        One ``(M_i, H, W)`` bool tensor per image, on ``x.device``, in PAIR's order (scales
        ascending, then labels ascending).
    """
    with small_ops():  # the glue is small ops; the kernels are serial
        return _multiscale(x, image, scales, sigma, min_size, size, dilation)


def _multiscale(x: torch.Tensor, image: Any, scales: Sequence[int], sigma: float, min_size: int, size: Optional[int],
                dilation: int) -> list[torch.Tensor]:
    from skimage.transform import resize

    x4, _ = check_input(x)
    if image is None:
        imgs = x4.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    else:
        imgs = pixel_images(x4, image)
    h, w = x4.shape[2:]
    out: list[torch.Tensor] = []
    for im in imgs:
        lo, hi = im.min(), im.max()
        im = (im - lo) / (hi - lo) * 2 - 1 if hi > lo else np.zeros_like(im)
        resized = size is not None and (h, w) != (size, size)
        if resized:
            im = resize(  # type: ignore[no-untyped-call]  # untyped in scikit-image
                im, (size, size), order=3, mode="constant", preserve_range=True, anti_aliasing=True)
        labels = felzenszwalb_scales(im, scales, sigma=sigma, min_size=min_size)  # one sort, every scale
        if resized:  # nearest, as PAIR: which pixel each output pixel takes is the same at every scale
            labels = _resize_nearest(labels, (h, w))
        out.append(_label_masks(torch.from_numpy(np.ascontiguousarray(labels)), dilation).to(x4.device))
    return out


def _resize_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """scikit-image's ``resize(label_map, shape, order=0, mode="constant")`` (PAIR's) of every
    map of ``labels`` ``(S, H, W)``, from one resize of the pixel indices (1-based: the
    constant 0 outside stays 0), exact since nearest sampling copies source values."""
    from skimage.transform import resize

    s, h, w = labels.shape
    index = resize(  # type: ignore[no-untyped-call]  # untyped in scikit-image
        np.arange(1, h * w + 1, dtype=np.float64).reshape(h, w), shape, order=0, preserve_range=True,
        mode="constant", anti_aliasing=False).astype(np.int64)
    flat = np.concatenate([np.zeros((s, 1), np.int64), labels.reshape(s, -1)], axis=1)
    return np.ascontiguousarray(flat[:, index.ravel()].reshape(s, *shape))


def _label_masks(labels: torch.Tensor, dilation: int) -> torch.Tensor:
    """Masks of labels ``min..max`` of every ``(H, W)`` map of ``labels`` ``(S, H, W)``, in
    order, each dilated by a disk of ``dilation``."""
    if dilation > 0:
        fast = dilated_masks(labels.numpy(), dilation)
        if fast is not None:
            return torch.from_numpy(fast)
        return torch.cat([dilated_label_masks(lab, int(lab.min()), int(lab.max()), dilation) for lab in labels])
    return torch.cat([lab[None] == torch.arange(int(lab.min()), int(lab.max()) + 1).view(-1, 1, 1) for lab in labels])
