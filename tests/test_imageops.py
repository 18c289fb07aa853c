"""The shared image operations (xai_torch/imageops.py): the Gaussian blur against scipy, RISE's
kernel and blur, min-max scaling (with zeros for a rounding-noise range), bilinear upsampling
and the top fraction of a map."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import imageops
from xai_torch.imageops import gaussian_blur, minmax, rise_blur, rise_kernel, top_fraction, upsample_to


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# --- blurs -----------------------------------------------------------------------------------------
def test_gaussian_blur_equals_scipy():
    from scipy import ndimage

    x = torch.randn(3, 2, 20, 15, dtype=torch.float64)
    sigmas = torch.tensor([0.0, 0.1, 1.7])
    ours = gaussian_blur(x, sigmas)
    for i, s in enumerate(sigmas.tolist()):
        ref = x[i].numpy() if s == 0 else ndimage.gaussian_filter(x[i].numpy(), [0, s, s], mode="constant")
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=0, atol=1e-12)
    big = gaussian_blur(x[:1], 50.0)  # a radius (200 px) far beyond the image
    ref = ndimage.gaussian_filter(x[0].numpy(), [0, 50, 50], mode="constant")
    np.testing.assert_allclose(big[0].numpy(), ref, rtol=0, atol=1e-12)


def test_gaussian_blur_is_the_public_path_blur_and_checks_its_input():
    x = torch.rand(2, 3, 6, 7, generator=rng())
    assert xt.path.gaussian_blur is gaussian_blur
    assert gaussian_blur(x, 1.5).dtype == x.dtype
    with pytest.raises(xt.XaiError, match=r"\(n, C, H, W\)"):
        gaussian_blur(x[0], 1.0)
    with pytest.raises(xt.XaiError, match=">= 0"):
        gaussian_blur(x, torch.tensor([1.0, -1.0]))


def test_rise_kernel_equals_scipy_gaussian_filter_of_an_impulse():
    from scipy.ndimage import gaussian_filter

    for size, sigma in ((11, 5.0), (7, 1.3), (5, 9.0)):
        impulse = np.zeros((size, size))
        impulse[size // 2, size // 2] = 1
        np.testing.assert_allclose(rise_kernel(size, sigma).numpy(), gaussian_filter(impulse, sigma), atol=1e-15)


def test_rise_blur_is_depthwise_zero_padded_convolution():
    x = torch.randn(2, 3, 9, 8, generator=rng(), dtype=torch.float64)
    k = rise_kernel()
    out = rise_blur(x)
    pad = torch.nn.functional.pad(x, (5, 5, 5, 5))
    ref = torch.zeros_like(x)
    for i in range(9):
        for j in range(8):
            ref[:, :, i, j] = (pad[:, :, i:i + 11, j:j + 11] * k).sum((-1, -2))
    torch.testing.assert_close(out, ref)
    assert xt.metrics.rise_blur is rise_blur


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 0}, "size .* odd int >= 1"), ({"size": -3}, "size"), ({"size": 4}, "odd"), ({"size": 2.0}, "size"),
    ({"size": True}, "size"), ({"sigma": 0.0}, "sigma .* > 0"), ({"sigma": -1.0}, "sigma"),
    ({"sigma": float("nan")}, "sigma"), ({"sigma": float("inf")}, "sigma"), ({"sigma": "5"}, "sigma"),
])
def test_rise_blur_checks_its_arguments(kwargs, match):
    """size=0 reached oneDNN's raw RuntimeError, an even size gave an (H + 1, W + 1) image and
    sigma=0 a NaN image; each is an XaiError naming the argument now."""
    x = torch.rand(2, 3, 9, 8, generator=rng())
    with pytest.raises(xt.XaiError, match=match):
        rise_blur(x, **kwargs)


def test_rise_blur_checks_x_and_takes_any_odd_size():
    with pytest.raises(xt.XaiError, match=r"\(B, C, H, W\)"):
        rise_blur(torch.rand(3, 9, 8))
    with pytest.raises(xt.XaiError, match="floating-point"):
        rise_blur(torch.ones(1, 3, 9, 8, dtype=torch.long))
    with pytest.raises(xt.XaiError, match="floating-point"):
        rise_blur(np.zeros((1, 3, 9, 8)))
    x = torch.rand(2, 3, 9, 8, generator=rng(), dtype=torch.float64)
    torch.testing.assert_close(rise_blur(x, size=1, sigma=2), x)  # a 1-tap kernel is the identity
    assert rise_blur(x, size=np.int64(3), sigma=np.float32(0.5)).shape == x.shape


# --- min-max ---------------------------------------------------------------------------------------
def test_minmax_closed_form_and_eps():
    t = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    torch.testing.assert_close(minmax(t), torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    torch.testing.assert_close(minmax(t, eps=1.0), torch.tensor([[0.0, 0.4], [0.2, 0.8]]))
    batch = torch.stack([t, 2 * t - 7, torch.full_like(t, 3.0)])[:, None]  # (3, 1, 2, 2), each map on its own
    out = minmax(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    torch.testing.assert_close(out[0, 0], out[1, 0])
    assert bool((out[2] == 0).all())
    assert xt.viz.minmax is minmax


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_minmax_gives_zeros_for_a_constant_map_and_one_ulp_apart(dtype):
    # issue 18: a map whose range is rounding noise (e.g. a 1 x 1 CAM upsampled bilinearly gives
    # values one ulp apart) is constant, not a noise map stretched to [0, 1]
    for base in (5.0, -3.0, 1e-3, 1e4):
        const = torch.full((2, 1, 4, 4), base, dtype=dtype)
        assert bool((minmax(const) == 0).all()) and bool((minmax(const, eps=1e-7) == 0).all())
        b = torch.tensor(base, dtype=dtype)
        up = torch.nextafter(b.double(), torch.tensor(float("inf"), dtype=torch.float64)) if dtype == torch.float64 \
            else b + b.abs() * torch.finfo(dtype).eps  # one ulp (or less) above base
        ulp = const.clone()
        ulp[:, :, ::2] = up.to(dtype)
        assert bool((ulp != const).any()), "the test map must not be constant"
        assert bool((minmax(ulp) == 0).all()) and bool((minmax(ulp, eps=1e-7) == 0).all())
    assert bool((minmax(torch.zeros(3, 3, dtype=dtype)) == 0).all())


def test_minmax_keeps_small_but_real_ranges():
    # relative, not absolute: a map of tiny values is still scaled, and a range of many ulps is kept
    tiny = torch.tensor([[0.0, 1e-30], [5e-31, 1e-30]], dtype=torch.float64)
    torch.testing.assert_close(minmax(tiny), torch.tensor([[0.0, 1.0], [0.5, 1.0]], dtype=torch.float64))
    offset = torch.tensor([[1.0, 1.0 + 1e-3]])
    torch.testing.assert_close(minmax(offset), torch.tensor([[0.0, 1.0]]))
    assert imageops.MINMAX_ULPS * torch.finfo(torch.float32).eps < 1e-5
    ints = torch.tensor([[1, 3], [2, 5]])
    torch.testing.assert_close(minmax(ints), torch.tensor([[0.0, 0.5], [0.25, 1.0]]))


# --- upsampling ------------------------------------------------------------------------------------
def test_upsample_to_is_bilinear_half_pixel_and_skips_the_same_size():
    maps = torch.rand(2, 1, 3, 4, generator=rng(), dtype=torch.float64)
    assert upsample_to(maps, (3, 4)) is maps
    out = upsample_to(maps, torch.Size([12, 16]))
    ref = torch.nn.functional.interpolate(maps, size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    aligned = upsample_to(maps, (5, 7), align_corners=True)
    torch.testing.assert_close(aligned[..., 0, 0], maps[..., 0, 0])  # corners kept
    torch.testing.assert_close(aligned[..., -1, -1], maps[..., -1, -1])
    # OpenCV's INTER_LINEAR (pytorch-grad-cam's resize) on a float map
    import cv2

    cv = cv2.resize(maps[0, 0].float().numpy(), (16, 12), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[0, 0].float().numpy(), cv, atol=1e-6)


# --- top fraction ----------------------------------------------------------------------------------
def test_top_fraction():
    maps = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    keep = top_fraction(maps, 0.3)
    assert int(keep.sum()) == 30 and bool(keep[0, 0, 9, 9]) and not bool(keep[0, 0, 0, 0])
    with pytest.raises(xt.XaiError, match="fraction"):
        top_fraction(maps, 0)
    assert xt.region.top_fraction is top_fraction


def test_top_fraction_keeps_whole_regions_or_exactly_the_fraction():
    maps = torch.tensor([[[3.0, 2.0, 2.0, 2.0], [1.0, 1.0, 0.0, 0.0]]])   # 8 pixels, a 3-pixel tie at 2
    whole = top_fraction(maps, 0.25)
    exact = top_fraction(maps, 0.25, exact=True)
    assert whole.sum() == 4 and exact.sum() == 2          # the tied region kept whole / cut in raster order
    assert exact[0, 0].tolist() == [True, True, False, False]
    assert top_fraction(maps, 0.0, exact=True).sum() == 0
    with pytest.raises(xt.XaiError, match=r"\(0, 1\]"):
        top_fraction(maps, 0.0)
