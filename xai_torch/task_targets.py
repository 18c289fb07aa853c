"""Targets for models whose output is not one row of class scores: a class's scores summed over
a mask (segmentation) and the best-matching detection box (object detection). See
:mod:`xai_torch.targets` for the ``target`` argument and :class:`~xai_torch.targets.Target`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .errors import XaiError, describe
from .targets import Target


def _main_output(output: Any, key: str) -> Any:
    if isinstance(output, dict):
        if key not in output:
            raise XaiError(f"the model returns a dict with keys {sorted(output)}; pass key= naming the scores.")
        return output[key]
    return output


class SegmentationTarget(Target):
    """Sum of a class's scores over a mask, for segmentation models ``(B, classes, H, W)``.

    Args:
        category: the class channel to explain.
        mask: ``(H, W)`` for every image or ``(B, H, W)`` per image (bool or float weights).
        key: for models that return a dict (torchvision's segmentation models: ``"out"``).

    Example:
        >>> cam = xt.GradCAM(fcn, layer="backbone.layer4")
        >>> maps = cam(x, target=xt.SegmentationTarget(15, mask=person_mask, key="out"))
    """

    def __init__(self, category: int, mask: Any, key: str = "out") -> None:
        self.category = int(category)
        self.mask = torch.as_tensor(mask)
        if self.mask.ndim not in (2, 3):
            raise XaiError(f"mask must be (H, W) or (B, H, W); got {describe(self.mask)}.")
        self.key = key

    def bind(self, batch: int) -> SegmentationTarget:
        if self.mask.ndim == 3 and self.mask.shape[0] != batch:
            raise XaiError(f"mask has {self.mask.shape[0]} images but x has {batch}.")
        return self

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = _main_output(output, self.key)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise XaiError(f"SegmentationTarget needs (B, classes, H, W) scores; got a {describe(out)}.")
        if not 0 <= self.category < out.shape[1]:
            raise XaiError(f"category {self.category} out of range: the model returns {out.shape[1]} classes.")
        mask = self.mask.to(out.device, out.dtype)
        mask = mask[rows.to(out.device)] if mask.ndim == 3 else mask.expand(rows.shape[0], *mask.shape)
        if mask.shape[-2:] != out.shape[-2:]:
            raise XaiError(f"mask is {tuple(mask.shape[-2:])} but the scores are {tuple(out.shape[-2:])}.")
        return (out[:, self.category] * mask).flatten(1).sum(1), None


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of ``(N, 4)`` and ``(M, 4)`` boxes in ``(x1, y1, x2, y2)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-12)


class BoxTarget(Target):
    """Detection target (torchvision detection outputs: a list of dicts with ``boxes``,
    ``labels``, ``scores``): for each reference box, the detection of the same label with the
    highest IoU contributes ``IoU + score``.

    Args:
        boxes: per image, ``(N_i, 4)`` reference boxes ``(x1, y1, x2, y2)``.
        labels: per image, ``(N_i,)`` reference labels.
        iou_threshold: matches below it do not count.

    Raises:
        XaiError: when an image has no detection matching any of its boxes (pytorch-grad-cam
        silently returns an empty map there).
    """

    def __init__(self, boxes: Any, labels: Any, iou_threshold: float = 0.5) -> None:
        self.boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        self.labels = [torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in labels]
        if len(self.boxes) != len(self.labels):
            raise XaiError(f"{len(self.boxes)} box lists but {len(self.labels)} label lists.")
        self.iou_threshold = float(iou_threshold)

    def bind(self, batch: int) -> BoxTarget:
        if len(self.boxes) != batch:
            raise XaiError(f"BoxTarget has reference boxes for {len(self.boxes)} images but x has {batch}.")
        return self

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not isinstance(output, (list, tuple)) or len(output) != rows.shape[0]:
            raise XaiError(f"BoxTarget needs a list of {rows.shape[0]} detection dicts; got a {describe(output)}.")
        result = []
        for det, r in zip(output, rows.tolist()):
            ref_boxes, ref_labels = self.boxes[r].to(det["boxes"].device), self.labels[r].to(det["labels"].device)
            total = det["scores"].sum() * 0
            matched = False
            if det["boxes"].numel():
                iou = box_iou(ref_boxes, det["boxes"])
                iou = torch.where(ref_labels[:, None] == det["labels"][None], iou, torch.zeros_like(iou))
                best, idx = iou.max(1)
                ok = best >= self.iou_threshold
                matched = bool(ok.any())
                total = total + ((best + det["scores"][idx]) * ok).sum()
            if not matched:
                raise XaiError(f"image {r}: no detection matches its reference boxes (same label, IoU >= "
                               f"{self.iou_threshold}); there is nothing to explain.")
            result.append(total)
        return torch.stack(result), None
