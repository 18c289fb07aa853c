"""The adaptive quadrature of IG (xai_torch/path/adaptive.py) on the packaged model."""
import torch

import xai_torch as xt


def test_adaptive_rule_meets_half_a_percent_within_256_evaluations(lite0, chelsea):
    res = xt.IntegratedGradients(lite0, steps=256, method="adaptive", normalize=xt.zoo.NORMALIZE).explain(chelsea)
    assert res.model_calls <= 256 + 2  # plus F(x) and F(baseline), as every rule
    assert float(res.relative_delta) <= 0.005
    # the path curve shows the "aha moment": most of the probability arrives early
    probs, alphas = res.path_probs[0, 0], res.alphas[0, 0]
    ok = ~torch.isnan(alphas)
    assert bool((alphas[ok].diff() > 0).all())
    early = probs[ok][alphas[ok] < 0.25]
    assert float(early.max()) > 0.5 * float(probs[ok].max())
    assert int((alphas[ok] < 0.1).sum()) > 64  # the steps went where the score changes
