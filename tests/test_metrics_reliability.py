"""xt.metrics.reliability (Tomsett et al. 2020): Krippendorff's alpha, Cronbach's alpha, the score table."""
import math

import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch.metrics.reliability import bootstrap, mean_estimate, score_table

NA = float("nan")
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units,
# values 1..5, missing values; the paper's results: nominal 0.743, ordinal 0.815, interval 0.849
TEXTBOOK = [[1, 2, 3, 3, 2, 1, 4, 1, 2, NA, NA, NA],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NA, 3],
            [NA, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NA],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NA]]


def test_krippendorff_alpha_textbook_and_closed_forms():
    alpha = xt.metrics.krippendorff_alpha
    assert alpha(TEXTBOOK, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert alpha(TEXTBOOK, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert alpha(TEXTBOOK, "interval") == pytest.approx(0.849, abs=5e-4)
    # by hand: 2 raters, units (1,1) (2,2) (1,2): o = [[2, 1], [1, 2]], n_c = (3, 3), n = 6, nominal
    # alpha = 1 - (n - 1) * o_12+o_21 / (n_1 n_2 + n_2 n_1) = 1 - 5 * 2 / 18 = 4 / 9
    assert alpha([[1, 2, 1], [1, 2, 2]], "nominal") == pytest.approx(4 / 9)
    assert alpha([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]) == 1.0                  # perfect agreement
    assert alpha([[1, 2], [2, 1]]) == pytest.approx(-0.5)   # reversed ranks: o = [[0,2],[2,0]], 1 - 3*4*1/(2*2*2*1)
    rng = np.random.default_rng(0)
    random = np.stack([rng.permutation(6) + 1 for _ in range(300)])                # 300 images rank 6 methods
    assert abs(alpha(random)) < 0.02                                               # chance agreement: ~0
    assert math.isnan(alpha([[1, 1], [1, 1]]))                                       # no variation
    with pytest.raises(xt.XaiError, match="at least 2 raters and 2 units"):
        alpha([[1, 2, 3]])


def test_cronbach_alpha_closed_form():
    items = np.array([[1.0, 2.0, 2.0], [2.0, 2.0, 3.0], [3.0, 4.0, 3.0], [4.0, 5.0, 5.0]])
    k, total = 3, items.sum(1).var(ddof=1)
    assert xt.metrics.cronbach_alpha(items) == pytest.approx(k / (k - 1) * (1 - items.var(0, ddof=1).sum() / total))
    assert xt.metrics.cronbach_alpha([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    with pytest.raises(xt.XaiError, match="NaN"):
        xt.metrics.cronbach_alpha([[1, NA], [2, 2]])


def test_reliability_of_a_score_table():
    # 5 images, 3 methods; "agree" ranks the methods a > b > c on every image, "noise" at random,
    # "mirror" is "agree" negated (lower is better): the same conclusions
    g = torch.Generator().manual_seed(0)
    level = torch.rand(5, generator=g)
    agree = {"a": level + 2.0, "b": level + 1.0, "c": level}
    table = {"agree": agree, "noise": {m: torch.rand(5, generator=g) for m in "abc"},
             "mirror": {m: -v for m, v in agree.items()}}
    res = xt.metrics.reliability(table, higher_is_better={"mirror": False}, bootstrap_resamples=300, seed=1)
    assert res.metrics == ["agree", "noise", "mirror"] and res.methods == ["a", "b", "c"] and res.images == 5
    assert res.inter_rater["agree"].value == 1.0 and res.inter_rater["mirror"].value == 1.0
    assert res.inter_rater["noise"].value < 0.9
    # every method finds the same images easy (the same `level`): Spearman 1 for each pair
    assert res.inter_method["agree"].value == pytest.approx(1.0)
    assert res.metric_agreement[0, 2] == pytest.approx(1.0) and res.metric_agreement.shape == (3, 3)
    est = res.internal_consistency
    assert est is not None and est.low <= est.value <= est.high
    for e in [*res.inter_rater.values(), *res.inter_method.values()]:
        assert e.low <= e.value + 1e-12 and e.value <= e.high + 1e-12 or math.isnan(e.low)
    again = xt.metrics.reliability(table, higher_is_better={"mirror": False}, bootstrap_resamples=300, seed=1)
    assert again.inter_rater == res.inter_rater   # seeded


def test_bootstrap_intervals():
    v = np.array([0.2, 0.4, 0.6, 0.8])
    est = bootstrap(lambda i: float(v[i].mean()), 4, resamples=500, confidence=0.9)
    assert est.value == pytest.approx(0.5) and 0.2 <= est.low < 0.5 < est.high <= 0.8
    pairs = mean_estimate(torch.tensor([[1.0, NA], [0.0, 0.0]]), resamples=200)
    assert pairs.value == pytest.approx(1 / 3) and 0.0 <= pairs.low <= pairs.high <= 1.0


def test_too_few_images_or_methods_and_bad_tables():
    few = {"deletion": {"a": [0.1, 0.2], "b": [0.3, 0.1]}}
    with pytest.raises(xt.XaiError, match="at least 3 images and 2 methods; got 2 image"):
        xt.metrics.reliability(few)
    with pytest.raises(xt.XaiError, match="at least 3 images and 2 methods; got 3 image.*1 method"):
        xt.metrics.reliability({"deletion": {"a": [0.1, 0.2, 0.3]}})
    with pytest.raises(xt.XaiError, match="same methods"):
        score_table({"m1": {"a": [1, 2, 3], "b": [1, 2, 3]}, "m2": {"b": [1, 2, 3], "a": [1, 2, 3]}})
    with pytest.raises(xt.XaiError, match="NaN"):
        score_table({"m1": {"a": [1, 2, NA], "b": [1, 2, 3]}})
    ok = {"m": {"a": [1, 2, 3], "b": [3, 1, 2]}}
    with pytest.raises(xt.XaiError, match="bootstrap must be a positive"):
        xt.metrics.reliability(ok, bootstrap_resamples=0)
    with pytest.raises(xt.XaiError, match="not in the table"):
        xt.metrics.reliability(ok, higher_is_better={"z": True})
