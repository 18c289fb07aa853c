"""PIC (SIC / AIC), the metric: skips, call counts, pixel mappings, bad inputs, and parity with
PAIR's ``saliency.metrics.pic`` on the packaged model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.errors import XaiError, XaiWarning
from xai_torch.metrics.pic import pic
from xai_torch.metrics.pic_curve import PicResult, aggregate, pic_curve
from xai_torch.metrics.pic_images import bokeh_image, generate_random_mask, webp_entropy
from xai_torch.metrics.pic_images import one_blas_thread as _one_blas_thread

from conftest import Counting, SmallNet, assert_no_trace, snapshot

THR = (0.1, 0.3, 0.6)


class Detail(nn.Module):
    """Two classes; class 0's logit grows with the image's fine detail (mean |horizontal
    difference|, about 1/3 on noise photos), so blurring lowers its probability and, once below
    0.1, flips the top-1: every PIC check passes on noise photos, for SIC and AIC."""

    def __init__(self, gain: float = 20.0) -> None:
        super().__init__()
        self.gain = gain
        self.eval()

    def forward(self, x):
        d = (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
        return torch.stack([self.gain * (d - 0.1), torch.zeros_like(d)], 1)


class Smooth(Detail):
    """The opposite: blurred images score higher on class 0."""

    def forward(self, x):
        return -super().forward(x)


class Const(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 5, dtype=x.dtype, device=x.device)


def photos(b: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Noise photos as model input in [0, 1] (exact multiples of 1/255)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g).float() / 255


def relevance(b: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# The metric
def test_pic_counts_shapes_and_both():
    x, a = photos(), relevance()
    model = Counting(Detail()).eval()
    before = snapshot(model, x, a)
    sic = pic(model, x, a, thresholds=THR, num_points=20)
    assert_no_trace(before, snapshot(model, x, a))
    assert model.sizes == [3, 3, 9]  # originals, fully blurred, thresholds: len(THR) + 2 per image
    assert isinstance(sic, PicResult) and sic.kind == "sic" and sic.skipped == [None] * 3
    assert sic.auc.dtype == torch.float64 and sic.auc.shape == (3,)
    assert sic.curve_y.shape == sic.curve_x.shape == (3, 21)
    assert sic.entropy.shape == sic.scores.shape == (3, 5) and sic.points_x.shape == (3, 3)
    assert sic.thresholds.tolist() == [0.0, *THR, 1.0] and sic.targets.tolist() == [0, 0, 0]
    assert bool(((sic.auc > 0) & (sic.auc < 1)).all())
    # the recorded pieces give the curve back
    cx, cy, auc = pic_curve(sic.entropy, sic.scores, num_points=20)
    assert torch.equal(cy, sic.curve_y) and torch.equal(auc, sic.auc)
    # the fully blurred image of each photo is what bokeh_image makes of its random mask
    photo0 = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert sic.entropy[0, 0] == webp_entropy(bokeh_image(photo0, sic.random_mask[0]))
    assert sic.entropy[0, -1] == webp_entropy(photo0)

    model.sizes.clear()
    both = pic(model, x, a, kind="both", thresholds=THR, num_points=20, batch_size=4)
    assert sum(model.sizes) == 15 and max(model.sizes) <= 4  # SIC and AIC share the forwards
    s2, aic = both
    torch.testing.assert_close(s2.curve_y, sic.curve_y, rtol=0, atol=0)
    model.sizes.clear()
    aic_alone = pic(model, x, a, kind="aic", thresholds=THR, num_points=20)
    assert model.sizes == [3, 3, 9]
    assert torch.equal(aic.auc, aic_alone.auc) and aic.kind == "aic" and aic.skipped == [None] * 3
    assert set(aic.scores.flatten().tolist()) <= {0.0, 1.0}
    # workers only change the speed; an explainer is called once with the clean classes
    seen = []

    def explainer(z, target=None):
        seen.append(target.tolist())
        return a[:, None].expand(-1, 3, -1, -1) / 3

    serial = pic(Detail(), x, explainer, thresholds=THR, num_points=20, workers=1)
    assert seen == [[0, 0, 0]]
    torch.testing.assert_close(serial.curve_y, sic.curve_y, rtol=0, atol=0)
    # results of several batches aggregate as one
    agg = aggregate([sic, serial], "mean")
    flat = aggregate(torch.cat([sic.curve_y, serial.curve_y]), "mean")
    assert agg.images == 6 and torch.equal(agg.curve_y, flat.curve_y) and torch.equal(agg.auc, flat.auc)


def test_pic_no_trace_on_a_training_model():
    torch.manual_seed(0)
    model = SmallNet()  # training mode: BatchNorm statistics must come back unchanged
    x, a = photos(2), relevance(2)
    before = snapshot(model, x, a)
    with pytest.warns(XaiWarning, match="training mode"):
        res = pic(model, x, a, thresholds=THR, min_pred_value=0.0)
    assert_no_trace(before, snapshot(model, x, a))
    assert res.auc.shape == (2,)


def test_pic_skip_conditions():
    x, a = photos(), relevance()
    # 1. the original scores below min_pred_value: only the originals are forwarded
    model = Counting(Const()).eval()
    res = pic(model, x, a, thresholds=THR)
    assert model.sizes == [3] and all("min_pred_value" in s for s in res.skipped)
    assert torch.isnan(res.auc).all() and torch.isnan(res.curve_y).all()
    # 2. a flat photo: the fully blurred image is as large as the original; 3. a model that
    # prefers blur. Mixed in one batch, the valid image goes on.
    x2 = x.clone()
    x2[1] = 0.5
    model = Counting(Detail()).eval()
    res = pic(model, x2, a, thresholds=THR, min_pred_value=0.0)
    assert model.sizes == [3, 2, 6]
    assert res.skipped[0] is None and res.skipped[2] is None and "WebP" in res.skipped[1]
    assert torch.isnan(res.auc[1]) and not torch.isnan(res.auc[[0, 2]]).any()
    assert not torch.isnan(aggregate(res).auc)
    model = Counting(Smooth()).eval()
    res = pic(model, x, a, target=0, thresholds=THR, min_pred_value=0.0)
    assert model.sizes == [3, 3] and all("fully blurred image scores" in s for s in res.skipped)
    # AIC: a target that is not the clean top-1 scores 0 < min_pred_value
    res = pic(Detail(), x, a, target=1, kind="aic", thresholds=THR)
    assert all("min_pred_value" in s for s in res.skipped)


def test_pic_pixel_mappings_agree():
    x, a = photos(2), relevance(2)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    xn = (x - m) / s

    class Norm(nn.Module):  # the Detail model behind a normalisation
        def forward(self, z):
            return Detail()(z * s + m)

    ref = pic(Detail(), x, a, thresholds=THR, num_points=20)
    photo = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    for kw in (dict(normalize=(mean, std)),
               dict(image=photo.numpy(), normalize=(mean, std)),
               dict(image=list(photo), preprocess=lambda u: (u.permute(0, 3, 1, 2).float() / 255 - m) / s)):
        res = pic(Norm().eval(), xn, a, thresholds=THR, num_points=20, **kw)
        assert torch.equal(res.entropy, ref.entropy)
        torch.testing.assert_close(res.auc, ref.auc, rtol=0, atol=1e-6)
    # the same seed gives the same random masks, a given mask is used as is
    assert torch.equal(res.random_mask, ref.random_mask)
    mask = generate_random_mask(16, 16, 0.05, seed=9)
    res = pic(Detail(), x, a, thresholds=THR, random_mask=mask)
    assert torch.equal(res.random_mask, mask.expand(2, -1, -1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="pic"), "kind"),
    (dict(thresholds=(0.3, 0.1)), "ascending"),
    (dict(thresholds=(0.0, 0.5)), r"\(0, 1\)"),
    (dict(thresholds=(0.5, 1.0)), r"\(0, 1\)"),
    (dict(thresholds=()), "non-empty"),
    (dict(image=np.zeros((3, 16, 16, 3), np.float32)), "uint8"),
    (dict(image=np.zeros((3, 8, 8, 3), np.uint8)), "matching x"),
    (dict(image=np.zeros((3, 16, 16, 3), np.uint8)), "does not match x"),
    (dict(normalize=(0.5, 0.0)), "std"),
    (dict(random_mask=np.zeros((4, 4), bool)), "random_mask"),
    (dict(min_pred_value=1.5), "min_pred_value"),
    (dict(num_points=0), "num_points"),
    (dict(workers=0), "workers"),
    (dict(kind="aic", target=lambda out: out[:, 0]), "class targets"),
    (dict(attribution=torch.zeros(3, 8, 8)), "attribution"),
])
def test_pic_bad_inputs_before_any_call(kwargs, match):
    model = Counting(Detail()).eval()
    args = dict(attribution=relevance())
    args.update(kwargs)
    attribution = args.pop("attribution")
    with pytest.raises(XaiError, match=match):
        pic(model, photos(), attribution, **args)
    assert model.sizes == []


def test_pic_needs_pixel_mapping_for_normalised_x():
    model = Counting(SmallNet().eval()).eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(XaiError, match="normalize"):
        pic(model, x, relevance(1))
    assert model.sizes == []


# --------------------------------------------------------------------------------------------
# Parity with PAIR
@pytest.fixture
def one_blas_thread():
    """PAIR's interpolation makes tiny LAPACK calls whose spinning OpenBLAS threads stall a loaded
    machine (xai_torch limits BLAS itself while it interpolates)."""
    with _one_blas_thread():
        yield


class _Memo(nn.Module):
    """The model, remembering its logits per input: PAIR's pred_func then scores the very same
    images with the very same logits (and counts the images it has not seen)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cache, self.misses = model, {}, 0
        self.eval()

    def forward(self, z):
        out = self.model(z)
        for zi, oi in zip(z, out):
            self.cache[zi.numpy().tobytes()] = oi.detach().clone()
        return out

    def lookup(self, z):
        rows = []
        for zi in z:
            key = zi.numpy().tobytes()
            if key not in self.cache:
                self.misses += 1
                with torch.no_grad():
                    self.cache[key] = self.model(zi[None])[0]
            rows.append(self.cache[key])
        return torch.stack(rows).double()


@pytest.mark.parity
def test_parity_pair_lite0(lite0, chelsea, monkeypatch, one_blas_thread):
    from saliency.metrics import pic as P

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # removed in NumPy 2.4
    # PAIR's SIC and AIC runs blur the same masks: interpolate and encode each image once
    blurred, sizes = {}, {}
    create, entropy = P.create_blurred_image, P.estimate_image_entropy

    def cached_blur(full_img, pixel_mask, method="linear"):
        key = pixel_mask.tobytes()
        if key not in blurred:
            blurred[key] = create(full_img, pixel_mask, method)
        return blurred[key]

    def cached_entropy(image):
        key = image.tobytes()
        if key not in sizes:
            sizes[key] = entropy(image)
        return sizes[key]

    monkeypatch.setattr(P, "create_blurred_image", cached_blur)
    monkeypatch.setattr(P, "estimate_image_entropy", cached_entropy)

    photo = xt.zoo.to_image(chelsea)[0]
    grad = xt.Gradient(lite0)(chelsea).double().abs().sum(1)[0]
    blocks = torch.randint(0, 4, (14, 14), generator=torch.Generator().manual_seed(0)).double()
    ties = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)  # 4 levels: thresholds share masks
    maps = torch.stack([grad, ties])
    thr = (0.05, 0.2, 0.5)
    masks = generate_random_mask(224, 224, 0.01, batch=2, seed=0)
    memo = _Memo(lite0)

    def prep(u):
        return (u.permute(0, 3, 1, 2).float() - 127) / 128  # xt.zoo.preprocess without the crop

    sic, aic = pic(memo, chelsea.expand(2, -1, -1, -1), maps, kind="both", image=np.stack([photo] * 2),
                   preprocess=prep, thresholds=thr, random_mask=masks, min_pred_value=0.3, batch_size=1)
    cls = int(sic.targets[0])
    assert sic.skipped == [None, None] and aic.skipped == [None, None]
    # the tie map reveals the same pixels at 5 % and 20 %: a duplicate x on the curve
    assert sic.points_x[1, 0] == sic.points_x[1, 1]

    for res in (sic, aic):
        def pred(batch, kind=res.kind):
            out = memo.lookup(prep(torch.from_numpy(batch)))
            return out.softmax(1)[:, cls].tolist() if kind == "sic" else (out.argmax(1) == cls).double().tolist()

        refs = [P.compute_pic_metric(photo, maps[i].numpy(), masks[i].numpy(), pred, thr, min_pred_value=0.3)
                for i in range(2)]
        for i, ref in enumerate(refs):
            assert np.array_equal(res.curve_x[i].numpy(), ref.curve_x)
            np.testing.assert_allclose(res.curve_y[i].numpy(), ref.curve_y, rtol=0, atol=1e-9)
            assert float(res.auc[i]) == pytest.approx(float(ref.auc), abs=1e-9)
            np.testing.assert_allclose(res.scores[i].numpy(), ref.predictions, rtol=0, atol=0)
            assert res.thresholds.tolist() == ref.thresholds
        for method in ("median", "mean"):
            agg, ref = aggregate(res, method), P.aggregate_individual_pic_results(refs, method)
            np.testing.assert_allclose(agg.curve_y.numpy(), ref.curve_y, rtol=0, atol=1e-9)
            assert float(agg.auc) == pytest.approx(float(ref.auc), abs=1e-9)
    assert memo.misses == 0  # every image PAIR made is byte-identical to one of ours
