"""DeepLIFT (Rescale rule, per call) and DeepLIFT-SHAP: closed forms, summation-to-delta, Captum
parity where Captum is right, and an independent per-call reference where it is not (reused and
functional ReLUs: Captum #1082, #1104, #578)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_torch as xt

from conftest import assert_no_trace, close, snapshot

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class Mlp(nn.Module):
    """(B, 2, 1, 1) -> Linear(2, 3) -> act -> Linear(3, 2): small enough to write DeepLIFT out."""

    def __init__(self, act=torch.relu):
        super().__init__()
        g = _gen(0)
        self.w1, self.c1 = torch.randn(3, 2, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D)
        self.w2 = torch.randn(2, 3, generator=g, dtype=D)
        self.act = act

    def forward(self, x):
        return self.act(x.flatten(1) @ self.w1.T + self.c1) @ self.w2.T


@pytest.mark.parametrize("act", [torch.relu, torch.sigmoid, torch.tanh, F.gelu],
                         ids=["relu", "sigmoid", "tanh", "gelu"])
def test_closed_form_on_a_tiny_net(act):
    net = Mlp(act)
    x, b = torch.randn(4, 2, 1, 1, generator=_gen(1), dtype=D), torch.randn(4, 2, 1, 1, generator=_gen(2), dtype=D)
    zx, zb = x.flatten(1) @ net.w1.T + net.c1, b.flatten(1) @ net.w1.T + net.c1
    m = (act(zx) - act(zb)) / (zx - zb)                       # the Rescale multipliers, by hand
    expect = (x - b).flatten(1) * ((m * net.w2[1]) @ net.w1)  # class 1
    res = xt.DeepLift(net).explain(x, target=1, baseline=b)
    torch.testing.assert_close(res.attributions.flatten(1), expect, rtol=1e-12, atol=1e-14)
    assert res.rule_calls == {act.__name__: 1}
    fx, fb = net(x)[:, 1], net(b)[:, 1]
    torch.testing.assert_close(res.scores, fx)
    torch.testing.assert_close(res.baseline_scores[:, 0], fb)
    assert res.delta.abs().max() < 1e-13


def test_closed_form_by_hand_numbers():
    """y = relu(x1 - x2) + relu(x1 + x2 - 1), x = (2, 1), b = (0, 0): relu(1) - relu(0) = 1 and
    relu(2) - relu(-1) = 2; the first unit gets multiplier 1, the second 2 / 3."""
    net = Mlp()
    net.w1, net.c1 = torch.tensor([[1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=D), torch.tensor([0.0, -1.0, 0.0],
                                                                                               dtype=D)
    net.w2 = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=D)
    attr = xt.DeepLift(net)(torch.tensor([2.0, 1.0], dtype=D).view(1, 2, 1, 1), target=0).flatten()
    # x1: 2 * (1 * 1 + 2/3 * 1) = 10/3;  x2: 1 * (1 * -1 + 2/3 * 1) = -1/3;  sum 3 = F(x) - F(b)
    torch.testing.assert_close(attr, torch.tensor([10 / 3, -1 / 3], dtype=D))


class Cnn(nn.Module):
    """Every nonlinearity a module used once (Captum is right here): conv, BN, ReLU, ELU, avg
    pooling, sigmoid, tanh."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.bn, self.r1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.c2, self.e = nn.Conv2d(6, 8, 3, padding=1), nn.ELU()
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.s, self.fc2, self.t, self.fc3 = nn.Linear(32, 10), nn.Sigmoid(), nn.Linear(10, 6), nn.Tanh(), \
            nn.Linear(6, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)
        self.double().eval()

    def forward(self, x):
        x = self.r1(self.bn(self.c1(x)))
        x = self.pool(self.e(self.c2(x)))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.fc3(self.t(self.fc2(self.s(self.fc1(x)))))


def _captum(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


X = torch.randn(3, 3, 8, 8, generator=_gen(3), dtype=D)
B = 0.3 * torch.randn(3, 3, 8, 8, generator=_gen(4), dtype=D)


@pytest.mark.parity
def test_equals_captum_deeplift_where_each_relu_is_used_once():
    from captum.attr import DeepLift as CaptumDeepLift

    net = Cnn()
    res = xt.DeepLift(net).explain(X, target=[0, 2, 3], baseline=B)
    ref, delta = _captum(CaptumDeepLift, net, inputs=X, baselines=B, target=[0, 2, 3], return_convergence_delta=True)
    close(res.attributions, ref, 1e-10)
    assert res.delta.abs().max() < 1e-12 and delta.abs().max() < 1e-12
    assert res.rule_calls == {"relu": 1, "elu": 1, "sigmoid": 1, "tanh": 1}


class Pooled(nn.Module):
    """conv -> [ELU] -> max pooling -> linear."""

    def __init__(self, elu):
        super().__init__()
        torch.manual_seed(3)
        self.conv, self.act, self.pool, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.ELU() if elu else nn.Identity(), \
            nn.MaxPool2d(2), nn.Linear(64, 5)
        self.double().eval()

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def maxpool_reference(net, x, b, target):
    """Captum's maxpool rule written out: the change of each pooled output, max(p_x, p_b) - p_b
    at the image's argmax and p_x - max(p_x, p_b) at the baseline's, over the input change."""
    zx, zb = net.conv(x), net.conv(b)
    hx, hb = F.elu(zx), F.elu(zb)
    (px, ix), (pb, ib) = F.max_pool2d(hx, 2, return_indices=True), F.max_pool2d(hb, 2, return_indices=True)
    g, top = net.fc.weight[target].view_as(px), torch.maximum(px, pb)
    u = torch.zeros_like(hx).flatten(2)
    u.scatter_add_(2, ix.flatten(2), (g * (top - pb)).flatten(2))
    u.scatter_add_(2, ib.flatten(2), (g * (px - top)).flatten(2))
    gz = u.view_as(hx) / (hx - hb) * (hx - hb) / (zx - zb)  # maxpool multiplier x ELU multiplier
    leaf = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(net.conv(leaf), leaf, gz)
    return (x - b) * gx


@pytest.mark.parity
def test_max_pooling_follows_captums_rule_and_stays_exact_next_to_a_nonlinearity():
    from captum.attr import DeepLift as CaptumDeepLift

    target = torch.tensor([1, 4, 0])
    alone = Pooled(elu=False)
    close(xt.DeepLift(alone)(X, target=target, baseline=B),
          _captum(CaptumDeepLift, alone, inputs=X, baselines=B, target=target), 1e-10)
    net = Pooled(elu=True)
    res = xt.DeepLift(net).explain(X, target=target, baseline=B)
    expect = maxpool_reference(net, X, B, target)
    close(res.attributions, expect, 1e-10)
    assert res.rule_calls == {"elu": 1, "max_pool2d": 1} and res.delta.abs().max() < 1e-12
    # Captum 0.9 with a hooked nonlinearity next to the pooling: other values, summation broken
    ref, delta = _captum(CaptumDeepLift, net, inputs=X, baselines=B, target=target, return_convergence_delta=True)
    assert (ref - expect).abs().max() > 1e-2 * expect.abs().max() and delta.abs().max() > 1e-3


@pytest.mark.parity
def test_equals_captum_deeplift_shap_and_layer_and_neuron_deeplift():
    from captum.attr import DeepLiftShap as CaptumShap
    from captum.attr import LayerDeepLift, NeuronDeepLift

    net, bg = Cnn(), torch.randn(5, 3, 8, 8, generator=_gen(5), dtype=D)
    res = xt.DeepLiftShap(net, bg, batch_size=8).explain(X, target=[1, 0, 3])
    close(res.attributions, _captum(CaptumShap, net, inputs=X, baselines=bg, target=[1, 0, 3]), 1e-10)
    assert res.baseline_scores.shape == (3, 5) and res.delta.abs().max() < 1e-12
    lay = xt.DeepLift(net, layer="c2").explain(X, target=2, baseline=B)
    close(lay.attributions, _captum(LayerDeepLift, net, net.c2, inputs=X, baselines=B, target=2), 1e-10)
    assert lay.attributions.shape == (3, 8, 8, 8) and lay.delta.abs().max() < 1e-12  # every path goes through c2
    # the ELU's input is c2's output: the same attributions (Captum's attribute_to_layer_input on
    # the ELU module differs from its own c2 result, and its convergence delta is 3e-4 there)
    into = xt.DeepLift(net, layer="e", layer_input=True)(X, target=2, baseline=B)
    torch.testing.assert_close(into, lay.attributions, rtol=0, atol=0)
    neuron = xt.DeepLift(net)(X, target=xt.NeuronTarget("c2", (1, 2, 3)), baseline=B)
    close(neuron, _captum(NeuronDeepLift, net, net.c2, inputs=X, neuron_selector=(1, 2, 3), baselines=B), 1e-10)


class Reused(nn.Module):
    """One ReLU module called three times, and functional ReLUs: DeepLIFT per call."""

    def __init__(self, functional=False):
        super().__init__()
        torch.manual_seed(1)
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.relu, self.fc, self.functional = nn.ReLU(), nn.Linear(4, 3), functional
        self.double().eval()

    def act(self, z, m=None):
        """The nonlinearity; the reference replaces it by ``m * z`` with the multiplier ``m``."""
        if m is not None:
            return m * z
        return F.relu(z) if self.functional else self.relu(z)

    def forward(self, x, ms=None):
        ms = ms or [None] * 3
        h1 = self.act(self.c1(x), ms[0])
        h2 = self.act(self.c2(h1), ms[1]) + h1          # a residual addition
        return self.fc(self.act(self.c3(h2), ms[2]).mean((2, 3)))


def per_call_reference(net, x, b, target):
    """DeepLIFT written out: two plain forwards give each call's multiplier, then the gradient of
    the forward with every ReLU call replaced by ``m * z`` (``m`` detached)."""
    zs = []
    for inp in (x, b):
        calls = []
        h1 = F.relu(z := net.c1(inp))
        calls.append(z)
        h2 = F.relu(z := net.c2(h1)) + h1
        calls.append(z)
        calls.append(net.c3(h2))
        zs.append(calls)
    ms = [torch.where((zx - zb).abs() < 1e-10, (zx > 0).to(D), (F.relu(zx) - F.relu(zb)) / (zx - zb))
          for zx, zb in zip(*zs)]
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(leaf, ms)[torch.arange(len(x)), target].sum(), leaf)
    return (x - b) * g


@pytest.mark.parity
@pytest.mark.parametrize("functional", [False, True], ids=["reused_module", "functional"])
def test_reused_and_functional_relus_get_per_call_multipliers_unlike_captum(functional):
    from captum.attr import DeepLift as CaptumDeepLift

    net, target = Reused(functional), torch.tensor([0, 2, 1])
    res = xt.DeepLift(net).explain(X, target=target, baseline=B)
    expect = per_call_reference(net, X, B, target)
    close(res.attributions, expect, 1e-10)
    assert res.rule_calls == {"relu": 3} and res.delta.abs().max() < 1e-12
    if not functional:  # Captum 0.9 refuses a ReLU module called more than once
        with pytest.raises(RuntimeError, match="used more than once"):
            _captum(CaptumDeepLift, net, inputs=X, baselines=B, target=target)
        return
    # functional ReLUs get the plain gradient in Captum: other values, its own summation broken
    ref, delta = _captum(CaptumDeepLift, net, inputs=X, baselines=B, target=target, return_convergence_delta=True)
    assert (ref - expect).abs().max() > 0.1 * expect.abs().max() and delta.abs().max() > 1e-3


def test_summation_to_delta_in_float32_and_batch_size_and_k_targets(small):
    x = torch.randn(3, 3, 12, 12, generator=_gen(6))
    dl = xt.DeepLift(small)
    res = dl.explain(x, target=[[0, 1], [2, 3], [4, 0]], baseline="blur")
    assert res.attributions.shape == (3, 2, 3, 12, 12) and res.delta.shape == (3, 2)
    gap = (res.scores - res.baseline_scores[..., 0]).abs()
    assert (res.delta.abs() <= 1e-5 * gap.clamp_min(1)).all()
    one = xt.DeepLift(small, batch_size=2)(x, target=torch.tensor([1, 3, 0]), baseline="blur")
    torch.testing.assert_close(one, res.attributions[:, 1], rtol=1e-5, atol=1e-6)
    assert res.model_calls == 13  # 3 images x 2 targets, each with its baseline; 1 image checks x fits


def test_baselines_named_per_image_and_lists():
    net = Cnn()
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    black = xt.DeepLift(net, normalize=norm)(X, target=1, baseline="black")
    torch.testing.assert_close(black, xt.DeepLift(net)(X, target=1, baseline=torch.full((3, 1, 1), -2.0, dtype=D)))
    zero = xt.DeepLift(net)(X, target=1)  # the default: zero
    torch.testing.assert_close(zero, xt.DeepLift(net)(X, target=1, baseline=torch.zeros(3, 3, 8, 8, dtype=D)))
    both = xt.DeepLift(net).explain(X, target=1, baseline=[B, 0.0])
    torch.testing.assert_close(both.attributions, (xt.DeepLift(net)(X, target=1, baseline=B) + zero) / 2)
    assert both.baseline_scores.shape == (3, 2) and both.delta.abs().max() < 1e-12
    shap = xt.DeepLiftShap(net, B)(X[:1], target=1)  # the same as the mean over the background
    torch.testing.assert_close(shap, xt.DeepLift(net)(X[:1], target=1, baseline=list(B[:, None])))


class Gated(nn.Module):
    """A squeeze-excitation gate (a product of two input-dependent tensors) and a softmax."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = h * torch.sigmoid(h.mean((2, 3), keepdim=True))
        return self.fc(h.mean((2, 3))).softmax(1)


def test_ops_without_a_rule_warn_naming_them(small_x):
    with pytest.warns(xt.XaiWarning, match=r"product x1.*softmax x1|softmax x1.*product x1"):
        res = xt.DeepLift(Gated().eval()).explain(small_x, target=0)
    assert res.no_rule == {"product": 1, "softmax": 1}
    assert res.rule_calls == {"relu": 1, "sigmoid": 1}


def test_bad_input_raises_and_changes_nothing(small, small_x):
    before = snapshot(small, small_x)
    with pytest.raises(xt.XaiError, match="does not broadcast"):
        xt.DeepLift(small)(small_x, baseline=torch.zeros(2, 3, 12, 12))
    with pytest.raises(xt.XaiError, match="background images have shape"):
        xt.DeepLiftShap(small, torch.zeros(4, 3, 8, 8))(small_x)
    with pytest.raises(xt.XaiError, match="background must be"):
        xt.DeepLiftShap(small, [0.0])
    with pytest.raises(xt.XaiError, match="eps"):
        xt.DeepLift(small, eps=-1.0)
    with pytest.raises(xt.XaiError, match="unexpected call argument"):
        xt.DeepLiftShap(small, small_x)(small_x, baseline=0.0)
    with pytest.raises(xt.XaiError, match="TorchScript.*DeepLift"):
        xt.DeepLift(torch.jit.script(small))(small_x)
    with pytest.raises(xt.XaiError, match="one layer"):
        xt.DeepLift(small, layer=["conv1", "conv2"])
    assert_no_trace(before, snapshot(small, small_x))


def test_no_trace_and_the_inputs_are_left_alone(small, small_x):
    before = snapshot(small, small_x)
    with xt.DeepLift(small, layer="conv2") as dl:
        attr = dl(small_x, target=1, baseline="blur")
    xt.DeepLiftShap(small, small_x[:2])(small_x)
    assert attr.shape == (3, 8, 12, 12) and attr.requires_grad is False
    assert_no_trace(before, snapshot(small, small_x))


def test_ties_take_the_gradient_even_through_an_in_place_relu():
    """Where z_x == z_b the multiplier is f'(z_x) (Captum's rule), also when the ReLU overwrites z."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(inplace=True), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]))
    x = torch.tensor([1.0, -2, 3, 0], dtype=D).view(1, 4, 1, 1)
    b = torch.tensor([0.0, -2, 1, 2], dtype=D).view(1, 4, 1, 1)
    res = xt.DeepLift(net).explain(x, target=0, baseline=b)   # unit 3: z_x = z_b = 3, a tie with f' = 1
    w = net[3].weight[0].detach()
    torch.testing.assert_close(res.attributions.flatten(), torch.stack([w[0], 0 * w[0], 2 * w[2], -2 * w[2]]))
    assert res.delta.abs().max() < 1e-15


class Scaled(nn.Module):
    """A model with a second, non-attributed input: a per-image scale of its logits."""

    def __init__(self):
        super().__init__()
        self.net = Reused()

    def forward(self, x, scale):
        return self.net(x) * scale[:, None]


def test_additional_forward_args_follow_each_image_and_its_baseline():
    net, scale = Scaled(), torch.tensor([1.0, -2.0, 0.5], dtype=D)
    res = xt.DeepLift(net, batch_size=4).explain(X, target=1, baseline=B, additional_forward_args=(scale,))
    alone = xt.DeepLift(net.net)(X, target=1, baseline=B)   # the scale multiplies each image's attributions
    torch.testing.assert_close(res.attributions, alone * scale[:, None, None, None])
    assert res.delta.abs().max() < 1e-12
