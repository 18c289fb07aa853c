"""Helpers that torchrun subprocesses import (``dist_helpers:...``, with tests/ on PYTHONPATH)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> FC, 5 classes, fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def tiny_model() -> nn.Module:
    """The model factory ``dist_helpers:tiny_model`` (same weights in every process)."""
    gen = torch.Generator().manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


class Tensors(torch.utils.data.Dataset):
    """12 random 3 x 16 x 16 images with labels; item 7 raises when ``broken``."""

    def __init__(self, broken: bool = False) -> None:
        self.x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        self.ids = [f"item{i:02d}" for i in range(12)]
        self.broken = broken

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        if self.broken and i == 7:
            raise OSError("disk on fire")
        return self.x[i], i % 5


def tensors() -> Tensors:
    return Tensors()


def broken_tensors() -> Tensors:
    return Tensors(broken=True)


def write_images(root: Path, n: int = 10) -> list[str]:
    """``n`` small PNGs (crops of the packaged photos, 40 x 48) in an ImageFolder layout."""
    import cv2

    import xai_torch as xt

    names = []
    for i in range(n):
        img = xt.zoo.image(xt.zoo.IMAGES[i % len(xt.zoo.IMAGES)])
        img = cv2.resize(img, (48 + i, 40), interpolation=cv2.INTER_AREA)
        img = np.roll(img, 3 * i, axis=1)
        folder = root / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        names.append(f"{folder.name}/img{i:02d}.png")
    return sorted(names)
