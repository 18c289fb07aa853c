"""IG's colour paths (issue 20 item 2): the CIE L*a*b* conversion, the path's end points and
derivative, completeness with the path curve, normalize=, several targets and baselines, bad input."""
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.path.color import color_line, color_points, lab_to_rgb, pixel_span, rgb_to_lab

from conftest import Counting, assert_no_trace, snapshot

NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Smooth(nn.Module):
    """A smooth float64 CNN (softplus, tanh). The colour paths themselves are only C^1 (the
    linear segments of the sRGB and L* curves), so the quadrature error falls as about 1/n^2:
    completeness is checked at 128 steps."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Parameter(torch.randn(6, 3, 3, 3, generator=g, dtype=torch.float64) * 0.5)
        self.fc = nn.Parameter(torch.randn(4, 6, generator=g, dtype=torch.float64))

    def forward(self, x):
        h = nn.functional.softplus(nn.functional.conv2d(x, self.conv, padding=1))
        return torch.tanh(h.mean((2, 3))) @ self.fc.T * 3


@pytest.fixture
def pixels():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def points(x, base, path, alphas, lo, span):
    """z(a) and dz/da of each row's colour path."""
    return color_points(*color_line(x, base, path, lo, span), alphas, lo, span)


def to_model(p):
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in NORM)
    return (p - mean) / std


def test_lab_conversion(pixels):
    from skimage.color import rgb2lab

    lab = rgb_to_lab(pixels)
    ref = torch.from_numpy(rgb2lab(pixels[0].permute(1, 2, 0).numpy())).permute(2, 0, 1)
    torch.testing.assert_close(lab[0], ref, rtol=0, atol=1e-2)  # skimage's older XYZ constants: 4th digit
    torch.testing.assert_close(lab_to_rgb(lab), pixels, rtol=0, atol=1e-12)
    grey = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    assert float(rgb_to_lab(grey)[0, 1:].abs().max()) < 1e-4  # achromatic: a* = b* = 0
    torch.testing.assert_close(rgb_to_lab(torch.ones(1, 3, 1, 1, dtype=torch.float64))[0, :, 0, 0],
                               torch.tensor([100.0, 0, 0], dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("path", ["luminosity", "saturation"])
def test_end_points_and_derivative(pixels, path):
    x = to_model(pixels)
    black = to_model(torch.zeros_like(pixels))
    lo, span = pixel_span(x, NORM)
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    end, _ = points(x, black, path, ones, lo, span)
    torch.testing.assert_close(end, x, rtol=0, atol=1e-12)  # the path ends at the image
    start, _ = points(x, black, path, zeros, lo, span)
    lab0, lab_x = rgb_to_lab(pixels * 0 + (start - lo) / span), rgb_to_lab(pixels)
    if path == "luminosity":  # the baseline's lightness (black: 0), the image's chroma
        torch.testing.assert_close(lab0[:, 0], torch.zeros_like(lab0[:, 0]), rtol=0, atol=1e-9)
        torch.testing.assert_close(lab0[:, 1:], lab_x[:, 1:], rtol=0, atol=1e-9)
        grey_img = pixels.mean(1, keepdim=True).expand_as(pixels)  # an achromatic image starts at black itself
        s, _ = points(to_model(grey_img), black, path, zeros, lo, span)
        torch.testing.assert_close(s, black, rtol=0, atol=1e-9)
    else:  # grey of the image's own lightness
        torch.testing.assert_close(lab0[:, 0], lab_x[:, 0], rtol=0, atol=1e-9)
        p0 = (start - lo) / span
        torch.testing.assert_close(p0, p0[:, :1].expand_as(p0), rtol=0, atol=1e-9)
    a = torch.full((2,), 0.37, dtype=torch.float64)
    _, d = points(x, black, path, a, lo, span)
    h = 1e-6
    fd = (points(x, black, path, a + h, lo, span)[0] - points(x, black, path, a - h, lo, span)[0]) / (2 * h)
    torch.testing.assert_close(d, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", ["luminosity", "saturation"])
def test_completeness_and_path_curve(pixels, path):
    model = Smooth()
    x = to_model(pixels)
    before = snapshot(model, x)
    counting = Counting(model)
    res = xt.IntegratedGradients(counting, steps=128, path=path, normalize=NORM).explain(x, target=[[1, 3], [0, 2]])
    assert res.attributions.shape == (2, 2, 3, 8, 8) and res.path_scores.shape == (2, 2, 1, 128)
    assert float(res.relative_delta.max()) < 1e-3, res.relative_delta
    coarse = xt.IntegratedGradients(model, steps=16, path=path, normalize=NORM).explain(x, target=[[1, 3], [0, 2]])
    assert float(res.delta.abs().max()) < float(coarse.delta.abs().max()) / 4  # it converges
    assert res.model_calls == 2 + 2 * 2 * 128 + 2  # clean images, the paths, their starts
    black = to_model(torch.zeros_like(pixels))
    lo, span = pixel_span(x, NORM)
    z0, _ = points(x, black, path, torch.zeros(2, dtype=torch.float64), lo, span)
    with torch.no_grad():
        out = model(z0)
    torch.testing.assert_close(res.baseline_scores[..., 0], out[[[0], [1]], [[1, 3], [0, 2]]])
    # the curve: the score at every node, rising from the start's to the image's
    alphas, weights = xt.path.gauss_legendre(128)
    torch.testing.assert_close(res.alphas, alphas)
    zs, _ = points(x[:1].expand(128, -1, -1, -1), black[:1].expand(128, -1, -1, -1), path, alphas,
                         lo[:1], span[:1])
    with torch.no_grad():
        torch.testing.assert_close(res.path_scores[0, 0, 0], model(zs)[:, 1])
    assert_no_trace(before, snapshot(model, x))


def test_baselines_and_default_range(pixels):
    model = Smooth()
    # without normalize / input_range each image's own min and max are its black and white
    res = xt.IntegratedGradients(model, steps=128, path="luminosity").explain(
        pixels, target=1, baseline=["black", "white"])
    assert res.baseline_scores.shape == (2, 2) and float(res.relative_delta.max()) < 1e-3


def test_bad_paths(pixels):
    model = Counting(Smooth())
    for kwargs, match in [({"path": "hue"}, r"path.*'line', 'luminosity', 'saturation'"),
                          ({"path": "luminosity", "method": "adaptive", "steps": 32}, "adaptive"),
                          ({"path": "saturation", "layer": "conv"}, None)]:
        with pytest.raises(xt.XaiError, match=match):
            xt.IntegratedGradients(model, **kwargs)
    with pytest.raises(xt.XaiError, match="3 channels"):
        xt.IntegratedGradients(model, path="luminosity")(pixels[:, :1], target=0)
    with pytest.raises(xt.XaiError, match="takes no baseline"):
        xt.IntegratedGradients(model, path="saturation")(pixels, target=0, baseline="white")
    assert model.sizes == []
    assert "path='saturation'" in repr(xt.IntegratedGradients(model, path="saturation"))
    assert "path=" not in repr(xt.IntegratedGradients(model))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
def test_cuda_matches_cpu(pixels):
    model = Smooth()
    x = to_model(pixels)
    cpu = xt.IntegratedGradients(model, steps=32, path="luminosity", normalize=NORM).explain(x, target=1)
    gpu = xt.IntegratedGradients(Smooth().cuda(), steps=32, path="luminosity", normalize=NORM).explain(x, target=1)
    assert gpu.attributions.device.type == "cpu"
    torch.testing.assert_close(gpu.attributions, cpu.attributions, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gpu.delta, cpu.delta, rtol=1e-5, atol=1e-9)
