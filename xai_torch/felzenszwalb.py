"""Felzenszwalb & Huttenlocher segmentation at several scales from one sorted graph, label for
label scikit-image's ``felzenszwalb``, and the dilated label masks XRAI builds from them.

scikit-image's ``felzenszwalb(image, scale, sigma, min_size)`` smooths the image, weighs the
8-connected pixel graph's edges by colour distance, sorts the edges (``np.argsort``, quicksort:
not stable) and then merges components in that order; only the merge depends on ``scale``. So
:func:`felzenszwalb_scales` smooths, builds and sorts once and runs the merge for every scale,
which XRAI's six scales need.

The results are identical to scikit-image's, not just alike, because every step that decides a
merge is reproduced exactly:

* the smoothed image and the edge costs come from the same calls and the same float64
  expressions, and the order from the same ``np.argsort`` on the same cost array (so edges of
  equal cost are taken in scikit-image's order);
* the merge test compares an edge's cost with ``min(cint + scale / size)`` of its two
  components, where scikit-image stores each ``cint + scale / size`` in a C ``float``
  (float32): the kernel rounds them to float32 too;
* a merged component's root is the smaller of the two roots, so every component's root is its
  smallest pixel index and the labels, numbered by first pixel, equal scikit-image's
  ``np.unique(roots, return_inverse=True)``;
* the ``min_size`` post-merge walks the same sorted edges with the same rule.

The merge and the dilation are small compiled kernels (numba, compiled on first use and cached
on disk) when numba is installed (``pip install xai_torch[fast]``); without it the merge is
scikit-image's own ``felzenszwalb`` once per scale, and the dilation a scatter per disk offset
in torch. Both paths give the same labels.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

numba: Any
try:  # pragma: no branch - numba is an optional extra
    import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

HAVE_NUMBA = numba is not None


def numba_available() -> bool:
    """Whether the compiled kernels run (numba is installed)."""
    return numba is not None


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(cache=True, nogil=True)`` when numba is installed, else ``fn`` itself."""
    if numba is None:  # pragma: no cover
        return fn
    out: Callable[..., Any] = numba.njit(cache=True, nogil=True)(fn)
    return out


@compiled
def _find(parent: Array, i: int) -> int:  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving: the partition, not the tree, matters
        i = parent[i]
    return i


@compiled
def _merge_scales(a: Array, b: Array, costs: Array, n: int, scales: Array, min_size: int,
                  out: Array) -> None:  # pragma: no cover - compiled
    """For every scale: scikit-image's greedy merge over the sorted edges ``(a[e], b[e])`` of
    cost ``costs[e]``, its ``min_size`` post-merge, and labels numbered by first pixel into
    ``out[s]``."""
    m = costs.shape[0]
    for s in range(scales.shape[0]):
        k = scales[s]
        parent = np.arange(n)
        size = np.ones(n, np.int64)
        cint = np.zeros(n)
        for e in range(m):
            r0 = _find(parent, a[e])
            r1 = _find(parent, b[e])
            if r0 == r1:
                continue
            t0 = np.float32(cint[r0] + k / size[r0])  # a C float in scikit-image
            t1 = np.float32(cint[r1] + k / size[r1])
            if costs[e] < np.float64(min(t0, t1)):
                lo, hi = min(r0, r1), max(r0, r1)
                parent[hi] = lo
                size[lo] += size[hi]
                cint[lo] = costs[e]
        for e in range(m):
            r0 = _find(parent, a[e])
            r1 = _find(parent, b[e])
            if r0 != r1 and (size[r0] < min_size or size[r1] < min_size):
                lo, hi = min(r0, r1), max(r0, r1)
                parent[hi] = lo
                size[lo] += size[hi]
        label = np.full(n, -1, np.int64)
        nxt = 0
        for i in range(n):
            r = _find(parent, i)
            if label[r] < 0:
                label[r] = nxt
                nxt += 1
            out[s, i] = label[r]


@compiled
def _dilate_labels(labels: Array, first: Array, start: Array, dy: Array, dx: Array,
                   out: Array) -> None:  # pragma: no cover - compiled
    """``out[start[s] + L - first[s], y, x] = True`` when a pixel of label ``L`` of map ``s``
    lies at ``(y + dy[o], x + dx[o])`` for some disk offset ``o``."""
    h, w = labels.shape[1], labels.shape[2]
    for s in range(labels.shape[0]):
        base = start[s] - first[s]
        for o in range(dy.shape[0]):  # offset-major: rows read and written in order (1.4x pixel-major)
            oy, ox = dy[o], dx[o]
            for y in range(max(0, -oy), min(h, h - oy)):
                for x in range(max(0, -ox), min(w, w - ox)):
                    out[base + labels[s, y + oy, x + ox], y, x] = True


def smoothed(image: Array, sigma: float) -> Array:
    """scikit-image's preprocessing: float64, a Gaussian of ``sigma`` over rows and columns."""
    from skimage.util import img_as_float64

    try:
        from skimage._shared.filters import gaussian
    except ImportError:  # pragma: no cover - older scikit-image
        from skimage.filters import gaussian
    img = img_as_float64(np.atleast_3d(image))  # type: ignore[no-untyped-call]
    out: Array = gaussian(  # type: ignore[no-untyped-call]  # untyped in scikit-image
        img, sigma=[sigma, sigma, 0], mode="reflect", channel_axis=-1)
    return out


def sorted_graph(image: Array, sigma: float) -> tuple[Array, Array, Array]:
    """The 8-connected graph of ``image`` ``(H, W[, C])`` as scikit-image builds it: edges
    ``(a, b)`` (flat pixel indices) and their costs (colour distance after smoothing), in
    scikit-image's order (right, down, down-right, up-right neighbours) sorted by
    ``np.argsort``."""
    img = smoothed(image, sigma)
    h, w = img.shape[:2]
    ids = np.arange(h * w, dtype=np.intp).reshape(h, w)

    def dist(p: Array, q: Array) -> Array:
        d = p - q
        out: Array = np.sqrt(np.sum(d * d, axis=-1))
        return out

    pairs = [  # (pixel, neighbour) views of the image and of the pixel ids
        ((slice(None), slice(1, None)), (slice(None), slice(None, w - 1))),
        ((slice(1, None), slice(None)), (slice(None, h - 1), slice(None))),
        ((slice(1, None), slice(1, None)), (slice(None, h - 1), slice(None, w - 1))),
        ((slice(1, None), slice(None, w - 1)), (slice(None, h - 1), slice(1, None))),
    ]
    costs = np.concatenate([dist(img[p], img[q]).ravel() for p, q in pairs]).astype(np.float64)
    a = np.concatenate([ids[p].ravel() for p, _ in pairs])
    b = np.concatenate([ids[q].ravel() for _, q in pairs])
    order = np.argsort(costs)
    return np.ascontiguousarray(a[order]), np.ascontiguousarray(b[order]), np.ascontiguousarray(costs[order])


def felzenszwalb_scales(image: Array, scales: Sequence[float], sigma: float = 0.8,
                        min_size: int = 20) -> Array:
    """scikit-image's ``felzenszwalb(image, scale, sigma, min_size, channel_axis=-1)`` for
    every scale, from one smoothing, one graph and one sort.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` image.
        scales: the ``scale`` values.

    Returns:
        ``(S, H, W)`` int64 labels, each map numbered ``0..K-1`` as scikit-image numbers them.

    Example:
        >>> labels = felzenszwalb_scales(img, (50, 100, 150), sigma=0.8, min_size=150)
    """
    h, w = np.asarray(image).shape[:2]
    if numba is None:  # pragma: no cover - exercised where numba is missing
        from skimage import segmentation

        return np.stack([segmentation.felzenszwalb(image, scale=s, sigma=sigma, min_size=min_size,
                                                   channel_axis=-1 if np.ndim(image) == 3 else None)
                         for s in scales]).astype(np.int64)
    a, b, costs = sorted_graph(image, sigma)
    out = np.empty((len(scales), h * w), dtype=np.int64)
    _merge_scales(a, b, costs, h * w, np.array([float(s) / 255.0 for s in scales]), int(min_size), out)
    return out.reshape(len(scales), h, w)


def disk_offsets(radius: int) -> tuple[Array, Array]:
    """The ``(dy, dx)`` offsets of scikit-image's ``disk(radius)``."""
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    inside = dy**2 + dx**2 <= radius**2
    return dy[inside].astype(np.int64), dx[inside].astype(np.int64)


def dilated_masks(labels: Array, radius: int) -> Optional[Array]:
    """Every label ``min..max`` of every map of ``labels`` ``(S, H, W)`` as a mask dilated by a
    disk of ``radius``, maps in order: ``(sum of (max - min + 1), H, W)`` bool. ``None``
    without numba (use :func:`xai_torch.segmentation.dilated_label_masks` then)."""
    if numba is None:  # pragma: no cover
        return None
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    first = labels.reshape(labels.shape[0], -1).min(1)
    counts = labels.reshape(labels.shape[0], -1).max(1) - first + 1
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = np.zeros((int(counts.sum()), *labels.shape[1:]), dtype=bool)
    dy, dx = disk_offsets(radius)
    _dilate_labels(labels, first, start, dy, dx, out)
    return out


__all__ = ["HAVE_NUMBA", "numba_available", "compiled", "felzenszwalb_scales", "sorted_graph", "smoothed",
           "dilated_masks", "disk_offsets"]
