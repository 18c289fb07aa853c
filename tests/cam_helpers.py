"""Models and lists shared by the CAM test files (tests/test_cam_*.py)."""
from __future__ import annotations

import torch
from torch import nn

import xai_torch as xt

GRADIENT_CAMS = [xt.GradCAM, xt.GradCAMPlusPlus, xt.HiResCAM, xt.XGradCAM, xt.LayerCAM]
ALL_CAMS = GRADIENT_CAMS + [xt.CAM, xt.ScoreCAM, xt.GuidedGradCAM]


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> FC: the architecture CAM was defined on."""

    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(5, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def make_gapnet() -> GapNet:
    torch.manual_seed(0)
    return GapNet().double().eval()


def gap_input() -> torch.Tensor:
    return torch.rand(3, 3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def acts_of(model, x):
    with torch.no_grad():
        return model.features(x)


class CallCounter:
    """Counts the model's forward calls (images per call) with a pre-hook, removed on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.sizes = model, []

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(lambda m, a: self.sizes.append(a[0].shape[0]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        return False
