"""Tiny transformers and inputs shared by tests/test_attention_*.py."""
from __future__ import annotations

import timm
import torch
import torchvision
from torch import nn


def tiny_vit(seed: int = 0, layers: int = 2, size: int = 32, patch: int = 8, classes: int = 5) -> nn.Module:
    """torchvision's VisionTransformer, 2 heads of 8 dims, eval mode, a random (not zero) head."""
    torch.manual_seed(seed)
    m = torchvision.models.VisionTransformer(image_size=size, patch_size=patch, num_layers=layers, num_heads=2,
                                             hidden_dim=16, mlp_dim=32, num_classes=classes)
    nn.init.normal_(m.heads.head.weight, std=0.5)   # torchvision starts the head at zero: no gradient
    return m.eval()


def tiny_timm(seed: int = 0, depth: int = 2, img_size=32, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=8, depth=depth,
                             num_classes=5, embed_dim=16, num_heads=2, **kwargs).eval()


def images(b: int = 2, size=(32, 32), seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(seed))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        # sequence first: no fused fast path (which would make torch.jit.trace's graph depend on grad mode)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, t):
        h = self.ln1(t).transpose(0, 1)
        t = t + self.attn(h, h, h, need_weights=False)[0].transpose(0, 1)
        return t + self.mlp(self.ln2(t))


class TinyViTNet(nn.Module):
    """The contract's SmallNet with attention (tests/test_contract.py): the same layer names
    (``conv1`` the patch embedding, ``bn``, ``relu`` reused in place, ``conv2``, ``fc`` the head)
    around two pre-norm self-attention blocks (``nn.MultiheadAttention``, ``need_weights=False``
    as torchvision's ViT) over a CLS token and the patch grid (2 x 2 at 10 px); optional failure
    inside, after conv1, bn and the ReLU ran."""

    def __init__(self, classes: int = 5, channels: int = 3, dim: int = 8, patch: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, dim, patch, stride=patch)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 5, dim) * 0.5)
        self.blocks = nn.ModuleList([_Block(dim, 2) for _ in range(2)])
        self.fc = nn.Linear(dim, classes)
        self.fail_with: BaseException | None = None

    def forward(self, x):
        return self.after_stem(self.relu(self.bn(self.conv1(x))))

    def after_stem(self, h):
        if self.fail_with is not None:
            raise self.fail_with
        h = self.relu(self.conv2(h))
        t = h.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos[:, : t.shape[1] + 1]
        for blk in self.blocks:
            t = blk(t)
        return self.fc(t[:, 0])

    def head(self, tokens):
        """LeGrad's block score: the classifier on the mean token."""
        return self.fc(tokens.mean(dim=1))
