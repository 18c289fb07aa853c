"""The partition trees of :class:`~xai_torch.region.PartitionSHAP`: binary hierarchies over an
image's features whose nodes are the coalitions Owen values are computed on.

* :class:`AxisTree`: shap's default for images (``shap.maskers.Image``): the ``(H, W, C)``
  box is split in two, the longer of height and width first (height on a tie), the lower half
  on the left (``H // 2`` rows of ``H``), channels only once a box is one pixel. Leaves are the
  ``H W C`` elements, numbered in shap's order (``(h W + w) C + c``). Nodes are the boxes
  themselves, built on demand: no ``(M - 1, 4)`` matrix of 150528 leaves is ever made.
* :class:`LinkageTree`: a scipy-style linkage ``(M - 1, >= 2)`` (row ``i`` joins nodes
  ``tree[i, 0]`` and ``tree[i, 1]`` into node ``M + i``; leaves are ``0..M-1``), over the
  ``H W C`` elements in shap's order or over an image's superpixels.
  :func:`superpixel_linkage` builds one from a segmentation: adjacent superpixels merge
  bottom-up, the pair with the smallest Ward distance (``n_a n_b / (n_a + n_b) |mean colour
  difference|^2``) first, so small regions of similar colour join before large or different
  ones (shap #1773).

Both give the dense keep masks of coalitions (unions of disjoint nodes) and spread node values
down to the elements as shap's ``lower_credit`` does: an element gets its leaf's value plus,
from every ancestor, the ancestor's value divided by the ancestor's element count (a
superpixel's value is shared evenly by its ``pixels x C`` elements).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, describe

Box = tuple[int, int, int, int, int, int]  # h0, h1, w0, w1, c0, c1
Node = Union[Box, int]


class AxisTree:
    """shap's axis-aligned tree over an image of ``(C, H, W)`` = ``shape`` (see the module doc)."""

    def __init__(self, c: int, h: int, w: int) -> None:
        self.c, self.h, self.w = c, h, w
        self.root: Box = (0, h, 0, w, 0, c)
        self.leaves = c * h * w

    @staticmethod
    def size(node: Any) -> int:
        return int((node[1] - node[0]) * (node[3] - node[2]) * (node[5] - node[4]))

    @staticmethod
    def children(node: Any) -> Optional[tuple[Box, Box]]:
        """The two halves of a box (``None`` for one element)."""
        h0, h1, w0, w1, c0, c1 = node
        hw, ww, cw = h1 - h0, w1 - w0, c1 - c0
        if hw >= ww and hw > 1:
            m = h0 + hw // 2
            return (h0, m, w0, w1, c0, c1), (m, h1, w0, w1, c0, c1)
        if ww > 1:
            m = w0 + ww // 2
            return (h0, h1, w0, m, c0, c1), (h0, h1, m, w1, c0, c1)
        if cw > 1:
            m = c0 + cw // 2
            return (h0, h1, w0, w1, c0, m), (h0, h1, w0, w1, m, c1)
        return None

    def keep(self, coalitions: list[tuple[Any, ...]], device: torch.device) -> torch.Tensor:
        """``(n, C, H, W)`` bool: the elements of each coalition (a tuple of boxes)."""
        out = np.zeros((len(coalitions), self.c, self.h, self.w), dtype=bool)
        for i, boxes in enumerate(coalitions):
            for h0, h1, w0, w1, c0, c1 in boxes:
                out[i, c0:c1, h0:h1, w0:w1] = True
        return torch.from_numpy(out).to(device)

    def spread(self, values: dict[Any, np.ndarray], k: int) -> np.ndarray:
        """``(K, C, H, W)`` float64 element values from node values (see the module doc)."""
        out = np.zeros((k, self.c, self.h, self.w))
        for (h0, h1, w0, w1, c0, c1), v in values.items():
            out[:, c0:c1, h0:h1, w0:w1] += (v / ((h1 - h0) * (w1 - w0) * (c1 - c0)))[:, None, None, None]
        return out


def check_linkage(tree: Any, leaves: Optional[int] = None, what: str = "tree") -> np.ndarray:
    """A linkage ``(M - 1, >= 2)`` checked to be one binary tree over ``M`` leaves (every node
    but the root a child exactly once, children before parents); ``leaves`` the ``M`` the
    image needs. Returns the ``(M - 1, 2)`` int64 children."""
    array = tree.detach().cpu().numpy() if isinstance(tree, torch.Tensor) else np.asarray(tree)
    if array.ndim != 2 or array.shape[1] < 2 or not np.issubdtype(array.dtype, np.number):
        raise XaiError(f"{what} must be 'axis', 'superpixels' or an (M - 1, 2+) linkage matrix (scipy's format); "
                       f"got {describe(tree)}.")
    m = array.shape[0] + 1
    if leaves is not None and m != leaves:
        raise XaiError(f"{what} does not cover the image: it joins {m} leaves but the image has {leaves} features "
                       "(H W C elements in shap's (H, W, C) order, or the superpixels of segments=).")
    kids = array[:, :2]
    if not np.all(kids == np.round(kids)):
        raise XaiError(f"{what}: the children (first two columns) must be integer node ids.")
    kids = kids.astype(np.int64)
    parent = np.arange(m, 2 * m - 1)[:, None]
    used = np.bincount(kids.ravel().clip(0, 2 * m - 2), minlength=2 * m - 1)
    if kids.min(initial=0) < 0 or np.any(kids >= parent) or np.any(used[:-1] != 1) or used[-1] != 0:
        raise XaiError(f"{what} is not one binary tree over {m} leaves: row i must join two earlier nodes (leaves "
                       f"0..{m - 1}, row j is node {m} + j) and every node but the root must be joined exactly once.")
    return kids


class LinkageTree:
    """A linkage over the ``H W C`` elements (``labels=None``) or over the superpixels of
    ``labels`` ``(H, W)`` (see the module doc)."""

    def __init__(self, kids: np.ndarray, shape: tuple[int, int, int], labels: Optional[np.ndarray] = None) -> None:
        self.kids = kids
        self.c, self.h, self.w = shape
        self.leaves = kids.shape[0] + 1
        self.root: int = 2 * self.leaves - 2
        self.labels = labels
        m = self.leaves
        sizes = np.ones(2 * m - 1, dtype=np.int64)
        for i, (a, b) in enumerate(kids):
            sizes[m + i] = sizes[a] + sizes[b]
        # depth-first order (left first): every node's leaves are one interval [start, start + size)
        start = np.zeros(2 * m - 1, dtype=np.int64)
        for i in range(m - 2, -1, -1):  # parents before children
            a, b = kids[i]
            start[a] = start[m + i]
            start[b] = start[m + i] + sizes[a]
        self.sizes, self.start = sizes, start
        self.position = start[:m]  # leaf -> depth-first position
        if labels is not None:  # elements of a superpixel: its pixels x channels
            self.elements = np.bincount(labels.ravel(), minlength=m).astype(np.float64) * self.c
        else:
            self.elements = np.ones(m)

    def size(self, node: Any) -> int:
        return int(self.sizes[node])

    def children(self, node: Any) -> Optional[tuple[int, int]]:
        if node < self.leaves:
            return None
        a, b = self.kids[node - self.leaves]
        return int(a), int(b)

    def _intervals(self, groups: list[list[Any]], k: int, weights: Optional[list[list[Any]]] = None) -> np.ndarray:
        """``(n, k, M)`` per leaf: the sum over each group's nodes of their weight (``weights[i][j]``,
        ``(k,)``; default 1) on the node's leaves."""
        diff = np.zeros((len(groups), k, self.leaves + 1))
        for i, nodes in enumerate(groups):
            for j, node in enumerate(nodes):
                s, e = self.start[node], self.start[node] + self.sizes[node]
                v = 1.0 if weights is None else weights[i][j]
                diff[i, :, s] += v
                diff[i, :, e] -= v
        by_position = np.cumsum(diff, -1)[..., :-1]
        return by_position[..., self.position]  # (n, k, M) per leaf

    def _elements(self, per_leaf: np.ndarray) -> np.ndarray:
        """``(n, k, M)`` per leaf -> ``(n, k, C, H, W)`` per element."""
        n, k = per_leaf.shape[:2]
        out: np.ndarray
        if self.labels is None:  # leaves are the elements in shap's (H, W, C) order
            out = per_leaf.reshape(n, k, self.h, self.w, self.c).transpose(0, 1, 4, 2, 3)
        else:
            out = np.broadcast_to(per_leaf[:, :, self.labels][:, :, None], (n, k, self.c, self.h, self.w))
        return out

    def keep(self, coalitions: list[tuple[Any, ...]], device: torch.device) -> torch.Tensor:
        per_leaf = self._intervals([list(c) for c in coalitions], 1) > 0.5
        return torch.from_numpy(np.ascontiguousarray(self._elements(per_leaf)[:, 0])).to(device)

    def leaf_values(self, values: dict[Any, np.ndarray], k: int) -> np.ndarray:
        """``(K, M)`` the value of each leaf (a superpixel's total) from node values."""
        nodes = list(values)
        if not nodes:
            return np.zeros((k, self.leaves))
        shares = [[values[v] / self.sizes[v] for v in nodes]]
        out: np.ndarray = self._intervals([nodes], k, shares)[0]
        return out

    def spread(self, values: dict[Any, np.ndarray], k: int) -> np.ndarray:
        per_leaf = self.leaf_values(values, k) / self.elements
        return np.ascontiguousarray(self._elements(per_leaf[None])[0])


def superpixel_linkage(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A linkage ``(S - 1, 4)`` (children, Ward distance, size in pixels) over the ``S``
    superpixels of ``labels`` ``(H, W)`` (``0..S-1``), merging adjacent ones bottom-up by
    colour (``image`` ``(H, W, C)``, see the module doc); superpixels that touch nothing (a
    label map in pieces) join last, nearest colour first."""
    s = int(labels.max()) + 1
    flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
    count = np.bincount(labels.ravel(), minlength=s).astype(np.float64)
    sums = np.stack([np.bincount(labels.ravel(), flat[:, j], minlength=s) for j in range(flat.shape[1])], 1)
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adjacent: dict[int, set[int]] = {i: set() for i in range(s)}
    for a, b in np.unique(np.sort(pairs, 1), axis=0).tolist():
        adjacent[a].add(b)
        adjacent[b].add(a)
    node = list(range(s))  # cluster id -> its node id in the linkage
    n, total, alive = count.copy(), sums.copy(), set(range(s))
    out = np.zeros((s - 1, 4))

    def ward(a: int, b: int) -> float:
        d = total[a] / n[a] - total[b] / n[b]
        return float(n[a] * n[b] / (n[a] + n[b]) * (d @ d))

    for step in range(s - 1):
        cands = [(ward(a, b), node[a], node[b], a, b) for a in alive for b in adjacent[a] if a < b]
        if not cands:  # disconnected pieces: any pair
            cands = [(ward(a, b), node[a], node[b], a, b) for a in alive for b in alive if a < b]
        dist, _, _, a, b = min(cands)
        out[step] = (min(node[a], node[b]), max(node[a], node[b]), dist, n[a] + n[b])
        n[a], total[a] = n[a] + n[b], total[a] + total[b]  # a becomes the merged cluster
        node[a] = s + step
        alive.discard(b)
        for c in adjacent.pop(b):
            adjacent[c].discard(b)
            if c != a:
                adjacent[c].add(a)
                adjacent[a].add(c)
        adjacent[a].discard(a)
    return out


__all__ = ["AxisTree", "LinkageTree", "check_linkage", "superpixel_linkage"]
