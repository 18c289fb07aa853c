"""pytorch-grad-cam's two smoothings, for every CAM (constructor keywords of the CAM base):

* ``eigen_smooth=True``: a layer's map is the projection of its weighted activations
  ``w_k A_k`` (or the element-wise products of HiResCAM / LayerCAM) on their first principal
  component (pixels as samples, channels centred), instead of their sum over channels: the
  map EigenCAM computes from the activations alone, signed so that its largest magnitude is
  positive (see :func:`first_component`).
* ``aug_smooth=True``: test-time augmentation as the library's default ``ttach`` compose:
  horizontal flip (off, on) times input scaling ``0.9, 1, 1.1``: six explanations, each
  min-max scaled per image (as the library's CAMs are), flipped back and averaged. The result
  lies in [0, 1] and has lost the raw scale, as a fused multi-layer map has.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..imageops import minmax

#: (horizontal flip, input factor): ttach.Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))


def first_component(weighted: torch.Tensor) -> torch.Tensor:
    """``(n, C, h, w)`` -> ``(n, 1, h, w)``: each sample's pixels ``(h w, C)``, channels centred,
    projected on the first right singular vector, signed so that its largest magnitude is
    positive (``|max| >= |min|``, Seg-Eigen-CAM's correction).

    A principal component's sign is arbitrary: LAPACK's (pytorch-grad-cam's, through
    ``numpy.linalg.svd``) can flip under a 1e-11 change of the input, e.g. between batch sizes,
    and the ReLU after it then keeps the other half of the map. The correction makes the map
    reproducible; it equals the library's wherever LAPACK's sign already satisfies it."""
    n, c, h, w = weighted.shape
    flat = torch.nan_to_num(weighted, nan=0.0).flatten(2).transpose(1, 2)  # (n, hw, C)
    flat = flat - flat.mean(1, keepdim=True)
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()  # half types: in float32
    proj = (work @ torch.linalg.svd(work, full_matrices=False).Vh[:, 0, :, None])[..., 0]  # (n, hw)
    flip = proj.amin(1).abs() > proj.amax(1).abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.to(weighted.dtype).reshape(n, 1, h, w)


def augmented_mean(explain: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of ``minmax(minmax(explain(aug(x))))`` flipped back, over :data:`AUGMENTATIONS`.

    ``explain`` maps images ``(B, C, H, W)`` to maps ``(B, [K,] 1, H, W)`` at the input size."""
    total = None
    for flip, factor in AUGMENTATIONS:
        z = x.flip(-1) if flip else x
        # scaled twice with the 1e-7, as pytorch-grad-cam's forward scales each layer, then the mean
        m = minmax(minmax(explain(z * factor if factor != 1.0 else z), eps=1e-7), eps=1e-7)
        m = m.flip(-1) if flip else m
        total = m if total is None else total + m
    assert total is not None
    return total / len(AUGMENTATIONS)
