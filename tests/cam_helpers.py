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


class BNNet(nn.Module):
    """conv -> BN -> ReLU -> maxpool (half size) -> conv -> ReLU -> GAP -> FC, with BN statistics
    that are not the identity: for FullGrad's effective biases and maps resized to the input."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.r = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.p, self.c2, self.fc = nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(self.p(self.r(self.b1(self.c1(x)))))).mean((2, 3)))


def make_bnnet() -> BNNet:
    torch.manual_seed(0)
    m = BNNet()
    with torch.no_grad():
        m.b1.running_mean.uniform_(-1, 1)
        m.b1.running_var.uniform_(0.5, 2)
        m.b1.weight.uniform_(0.5, 1.5)
        m.b1.bias.uniform_(-1, 1)
    return m.eval()


def pgc_scale(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image on (B, H, W) maps (ReLU, min-max with 1e-7)."""
    m = torch.relu(maps)
    m = m - m.flatten(1).min(1).values[:, None, None]
    return m / (m.flatten(1).max(1).values[:, None, None] + 1e-7)


def pgc_maps(cls, model, layers, x, classes, **call):
    """pytorch-grad-cam's maps (B, H, W) for ``classes`` on a deep copy of ``model``."""
    import copy

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    theirs = copy.deepcopy(model)
    with cls(model=theirs, target_layers=[theirs.get_submodule(n) for n in layers]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes], **call))
