"""What LIME and KernelSHAP share (xai_torch/region/superpixel.py): hidden values, composition of
perturbed images, painting weights back through the labels."""
import torch

import xai_torch as xt
from xai_torch.region.superpixel import compose, hidden_images, paint, segment_means


def grid(h: int, w: int, rows: int, cols: int) -> torch.Tensor:
    """(H, W) labels of a rows x cols grid of blocks."""
    return (torch.arange(h)[:, None] * rows // h) * cols + torch.arange(w)[None] * cols // w


def test_hidden_values_and_composition():
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    labels = grid(6, 8, 2, 2).expand(2, 6, 8).clone()
    labels[1] = labels[1].flip(1)
    means = segment_means(x, labels)
    for b in range(2):
        for s in range(4):
            m = labels[b] == s
            torch.testing.assert_close(means[b][:, m], x[b][:, m].mean(1, keepdim=True).expand(3, int(m.sum())))
    gray = hidden_images(x, labels, "gray")
    torch.testing.assert_close(gray[:, 0, 0, 0], (x.flatten(1).min(1).values + x.flatten(1).max(1).values) / 2)
    mid = hidden_images(x, labels, "gray", (torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1), 2.0))
    torch.testing.assert_close(mid[1, :, 3, 3], torch.tensor([1.0, 1.5, 2.0]))
    assert bool((hidden_images(x, labels, -0.5) == -0.5).all())
    torch.testing.assert_close(hidden_images(x, labels, "blur", blur_sigma=2.0), xt.path.gaussian_blur(x, 2.0))
    per_channel = hidden_images(x, labels, torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1))
    torch.testing.assert_close(per_channel[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]))
    # composition: rows of different images in one chunk, against a pixel loop
    z = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    images = torch.tensor([0, 1, 1])
    out = compose(x, means, labels, z, images)
    for i in range(3):
        b = int(images[i])
        keep = z[i][labels[b]]
        torch.testing.assert_close(out[i], torch.where(keep, x[b], means[b]))
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    torch.testing.assert_close(paint(weights, labels)[:, 0], weights.gather(1, labels.flatten(1)).view(2, 6, 8))
