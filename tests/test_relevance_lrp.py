"""LRP: each rule's closed form on a 2-layer net, conservation, targets, layers, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_torch as xt
from xai_torch.relevance import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

from conftest import assert_no_trace, snapshot

EPS = 1e-6


def _sign1(d):
    return torch.where(d >= 0, 1.0, -1.0).to(d)


def _two_layer(seed=0):
    """Linear(4, 3) - ReLU - Linear(3, 2) on ``(B, 4, 1, 1)`` images."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    return net, x


def _hidden_relevance(net, x, t):
    """LRP-0 on the top layer with R_out = logit: R_k = a_k W2_tk (exact, bias absorbed)."""
    a = F.relu(net[1](x.flatten(1)))
    return a * net[3].weight[t]          # (B, 3)


def _ref(rule, x, w, b, r, lo=None, hi=None):
    """The rule written per connection: contributions c_ij = x_i w_ji, R_i = sum_j c_ij / d_j R_j."""
    c = x[:, None, :] * w[None]                                  # (B, out, in)
    z = c.sum(-1) + b
    if rule == "epsilon":
        return (c * (r / (z + EPS * _sign1(z)))[..., None]).sum(1)
    if rule == "lrp0":
        return (c * (r / z)[..., None]).sum(1)
    p, n = c.clamp(min=0), c.clamp(max=0)
    if rule == "zplus":
        return (p * (r / (p.sum(-1) + b.clamp(min=0) + EPS))[..., None]).sum(1)
    if rule == "alpha2_beta1":
        dp, dn = p.sum(-1) + b.clamp(min=0) + EPS, n.sum(-1) + b.clamp(max=0) - EPS
        return (2 * p * (r / dp)[..., None] - n * (r / dn)[..., None]).sum(1)
    if rule == "gamma":
        g = 0.25
        qp, qn = c + g * p, c + g * n
        dp, dn = qp.sum(-1) + b + g * b.clamp(min=0), qn.sum(-1) + b + g * b.clamp(max=0)
        sp = torch.where(z > 0, r, 0.0) / (dp + EPS * _sign1(dp))
        sn = torch.where(z < 0, r, 0.0) / (dn + EPS * _sign1(dn))
        return (qp * sp[..., None] + qn * sn[..., None]).sum(1)
    if rule == "flat":
        return (torch.ones_like(c) * (r / (w.shape[1] + EPS))[..., None]).sum(1)
    if rule == "wsquare":
        w2 = (w * w)[None].expand_as(c)
        return (w2 * (r / (w2.sum(-1) + b * b + EPS))[..., None]).sum(1)
    assert rule == "zbox"
    q = c - lo * w.clamp(min=0)[None] - hi * w.clamp(max=0)[None]
    d = q.sum(-1)
    return (q * (r / (d + EPS * _sign1(d)))[..., None]).sum(1)


RULES = {"epsilon": Epsilon(), "lrp0": Epsilon(0.0), "zplus": ZPlus(), "alpha2_beta1": AlphaBeta(2, 1),
         "gamma": Gamma(0.25), "flat": Flat(), "wsquare": WSquare(), "zbox": ZBox(-2.0, 3.0)}


@pytest.mark.parametrize("name", list(RULES))
def test_rule_closed_form_on_two_layers(name):
    net, x = _two_layer()
    t = torch.tensor([0, 1])
    res = xt.LRP(net, {"1": RULES[name], "3": "lrp0"}).explain(x, t)
    r = _hidden_relevance(net, x, t)
    want = _ref(name, x.flatten(1), net[1].weight.detach(), net[1].bias.detach(), r.detach(), -2.0, 3.0)
    torch.testing.assert_close(res.attributions.flatten(1), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.relevance_sum, want.sum(1))


def test_rule_names_and_objects_agree():
    net, x = _two_layer()
    a = xt.LRP(net, {nn.Linear: "gamma"})(x)
    b = xt.LRP(net, {nn.Linear: Gamma(0.25)})(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


class _BiasFree(nn.Module):
    """Convolutions, a residual addition, max and average pooling; no bias anywhere."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.max_pool2d(h, 2)
        h = F.relu(h + self.c2(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


@pytest.mark.parametrize("composite", [{nn.Conv2d: "lrp0", nn.Linear: "lrp0"},
                                       {nn.Conv2d: Epsilon(1e-12), nn.Linear: Epsilon(1e-12)}])
def test_conservation_on_bias_free_network(composite):
    torch.manual_seed(0)
    net = _BiasFree().double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    res = xt.LRP(net, composite, stabilizer=0.0).explain(x, target=[0, 1, 2])
    assert res.conservation_error is not None
    torch.testing.assert_close(res.relevance_sum, res.scores, rtol=1e-9, atol=0)
    assert float(res.conservation_error.abs().max()) < 1e-9 * float(res.scores.abs().max())
    assert res.rules == {"c1": "Epsilon(epsilon=0.0)", "c2": "Epsilon(epsilon=0.0)", "fc": "Epsilon(epsilon=0.0)"} \
        or all("1e-12" in v for v in res.rules.values())


def test_nonconserving_rule_has_no_conservation_error():
    net, x = _two_layer()
    res = xt.LRP(net, {nn.Linear: Epsilon(0.5)}).explain(x)
    assert res.conservation_error is None and res.relevance_sum.shape == (2,)


def test_batched_targets_equal_single_targets_and_layer_shape():
    torch.manual_seed(0)
    net = _BiasFree().eval()
    x = torch.randn(2, 3, 8, 8)
    lrp = xt.LRP(net, "epsilon_plus_flat")
    both = lrp.explain(x, target=torch.tensor([[0, 3], [2, 1]]))
    assert both.attributions.shape == (2, 2, 3, 8, 8) and both.relevance_sum.shape == (2, 2)
    for k in range(2):
        one = lrp(x, target=both.targets[:, k])
        torch.testing.assert_close(both.attributions[:, k], one)
    at = xt.LRP(net, {nn.Conv2d: "lrp0", nn.Linear: "lrp0"}, stabilizer=0.0, layer="c1").explain(x, target=1)
    assert at.attributions.shape == (2, 6, 8, 8)     # all relevance passes c1 (c2 has a skip around it)
    torch.testing.assert_close(at.relevance_sum, at.scores, rtol=1e-4, atol=1e-6)


def test_neuron_target_runs_and_sums_to_the_neuron():
    torch.manual_seed(0)
    net = _BiasFree().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    res = xt.LRP(net, {nn.Conv2d: "lrp0", nn.Linear: "lrp0"}, stabilizer=0.0).explain(
        x, target=xt.NeuronTarget("c2", 3))
    assert res.attributions.shape == x.shape
    torch.testing.assert_close(res.relevance_sum, res.scores, rtol=1e-8, atol=1e-12)


def test_first_layer_gets_the_composite_first_rule_and_batchnorm_is_merged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    res = xt.LRP(net, "epsilon_plus_flat").explain(torch.randn(1, 3, 8, 8))
    assert res.rules == {"0": "Flat(stabilizer=1e-06)", "3": "ZPlus(stabilizer=1e-06)", "7": "Epsilon(epsilon=1e-06)"}
    assert res.merged_batchnorms == 2
    # relevance at a conv whose BatchNorm is merged: the LayerTap's copy of its output still merges
    x = torch.randn(1, 3, 8, 8)
    at_conv = xt.LRP(net, "epsilon_plus_flat", layer="3").explain(x)
    at_bn = xt.LRP(net, "epsilon_plus_flat", layer="4").explain(x)
    assert at_conv.merged_batchnorms == at_bn.merged_batchnorms == 2
    torch.testing.assert_close(at_conv.attributions, at_bn.attributions)


def test_activation_without_rule_warns_naming_it():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)).eval()
    with pytest.warns(xt.XaiWarning, match="gelu x1"):
        res = xt.LRP(net).explain(torch.randn(2, 4, 1, 1))
    assert res.no_rule == {"gelu": 1}


def test_bad_input_raises_and_changes_nothing():
    net, x = _two_layer()
    before = snapshot(net, x)
    with pytest.raises(xt.XaiError, match="epsilon_plus_flat"):
        xt.LRP(net, "epsilon_plux")
    with pytest.raises(xt.XaiError, match="zplus"):
        xt.LRP(net, {nn.Linear: "z_plus"})
    with pytest.raises(xt.XaiError, match="no layer 'fc'"):
        xt.LRP(net, rules={"fc": "lrp0"})
    with pytest.raises(xt.XaiError, match=r"no rule for layer '3' \(Linear\)"):
        xt.LRP(net, {"1": "lrp0"})(x)
    with pytest.raises(xt.XaiError, match="alpha - beta = 1"):
        AlphaBeta(2, 2)
    with pytest.raises(xt.XaiError, match="TorchScript"):
        xt.LRP(torch.jit.trace(net, x))(x)
    with pytest.raises(xt.XaiError, match="no convolution or linear"):
        xt.LRP(nn.Sequential(nn.Flatten(), nn.ReLU()))(x)
    assert_no_trace(before, snapshot(net, x))


def test_no_trace_and_leaves_user_state_alone():
    torch.manual_seed(0)
    net = _BiasFree().eval()
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(net, x)
    with xt.LRP(net, "epsilon_gamma_box", normalize=([0.5] * 3, [0.25] * 3)) as lrp:
        a = lrp(x)
        b = lrp(x)
    assert_no_trace(before, snapshot(net, x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
