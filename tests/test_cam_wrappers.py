"""Wrapped models under the CAM hooks (issue 19, item 5): TorchScript (traced or scripted) layers
cannot be hooked and say so; a layer inside ``torch.utils.checkpoint(use_reentrant=True)`` has no
gradient and says what to do; ``use_reentrant=False`` gives the plain model's results."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import xai_torch as xt
from xai_torch.hooks import check_hookable
from xai_torch.layers import find_layers

from cam_helpers import ALL_CAMS, GRADIENT_CAMS
from conftest import assert_no_trace, snapshot


@pytest.fixture(autouse=True)
def quiet_jit():
    with warnings.catch_warnings():   # torch.jit.trace / script are deprecated (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


class Checkpointed(nn.Module):
    """SmallNet with one part under ``torch.utils.checkpoint``: ``part=1`` conv1 -> bn -> ReLU,
    ``part=2`` conv2 -> ReLU (the CAM layer inside)."""

    def __init__(self, net: nn.Module, part: int, reentrant: bool) -> None:
        super().__init__()
        self.net, self.part, self.reentrant = net, part, reentrant

    def forward(self, x):
        n = self.net
        first = lambda z: n.relu(n.bn(n.conv1(z)))  # noqa: E731
        second = lambda z: n.relu(n.conv2(z))  # noqa: E731
        h = checkpoint(first, x, use_reentrant=self.reentrant) if self.part == 1 else first(x)
        h = checkpoint(second, h, use_reentrant=self.reentrant) if self.part == 2 else second(h)
        return n.fc(h.mean((2, 3)))


def test_traced_and_scripted_models_are_refused_by_name(small, small_x):
    """Instead of "layer was not called" (traced) or PyTorch's "register_forward_hook is not
    supported" (scripted), at construction, before any hook."""
    traced, scripted = torch.jit.trace(small, small_x), torch.jit.script(small)
    for model, how in ((traced, "traced with torch.jit.trace"), (scripted, "scripted with torch.jit.script")):
        before = snapshot(model)
        for cls in ALL_CAMS:
            with pytest.raises(xt.XaiError, match=f"layer 'conv2' cannot be hooked: the model .*{how}"):
                cls(model, layer="conv2")
        with pytest.raises(xt.XaiError, match="TorchScript"):
            with xt.capture(model, "conv2"):
                pass
        assert_no_trace(before, snapshot(model))


def test_a_traced_part_of_an_eager_model():
    """The traced module itself is called from Python (hookable); its layers are not."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    eager = nn.Sequential(body, nn.Conv2d(4, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    mixed = nn.Sequential(torch.jit.trace(body, x), *list(eager)[1:]).eval()
    torch.testing.assert_close(xt.GradCAM(mixed, layer="0")(x, 1), xt.GradCAM(eager, layer="0")(x, 1))
    with pytest.raises(xt.XaiError, match=r"layer '0\.1' cannot be hooked: submodule '0' .*torch.jit.trace"):
        xt.GradCAM(mixed, layer="0.1")
    check_hookable(eager, find_layers(eager, ["0", "0.1", "1"]))   # eager: nothing to say


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
def test_a_layer_inside_a_reentrant_checkpoint_says_what_to_do(small, small_x):
    model = Checkpointed(small, part=2, reentrant=True).eval()
    before = snapshot(model, small_x)
    for cls in [*GRADIENT_CAMS, xt.GuidedGradCAM]:
        with pytest.raises(xt.XaiError, match="layer 'net.conv2' has no gradient.*use_reentrant=False"):
            cls(model, layer="net.conv2")(small_x, 1)
    assert_no_trace(before, snapshot(model, small_x))
    # forward-only CAMs need no gradient: they work, with the plain model's maps
    for cls in (xt.CAM, xt.ScoreCAM):
        torch.testing.assert_close(cls(model, layer="net.conv2")(small_x, 1), cls(small, layer="conv2")(small_x, 1))


def test_a_layer_after_a_reentrant_checkpoint_works(small, small_x):
    """The backward to a layer above the checkpoint never reaches it: no false alarm."""
    model = Checkpointed(small, part=1, reentrant=True).eval()
    for cls in GRADIENT_CAMS:
        torch.testing.assert_close(cls(model, layer="net.conv2")(small_x, 1), cls(small, layer="conv2")(small_x, 1))


def test_a_reentrant_checkpoint_below_the_layer_in_attached_mode(small, small_x):
    """from_output's backward to a layer below the checkpoint meets PyTorch's refusal of
    autograd.grad: it comes back as an XaiError naming use_reentrant=False, chained."""
    model = Checkpointed(small, part=2, reentrant=True).eval()
    with xt.GradCAM(model, layer="net.conv1") as cam:
        out = model(small_x.clone().requires_grad_())
        with pytest.raises(xt.XaiError, match="use_reentrant=False") as info:
            cam.from_output(out, 1)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("part", [1, 2])
def test_non_reentrant_checkpoints_give_the_plain_results(small, small_x, part):
    model = Checkpointed(small, part=part, reentrant=False).eval()
    for cls in ALL_CAMS:
        torch.testing.assert_close(cls(model, layer="net.conv2")(small_x, 1), cls(small, layer="conv2")(small_x, 1),
                                   rtol=0, atol=0)


def test_frozen_layers_below_the_layer_in_attached_mode(small, small_x):
    """A frozen backbone with a trainable head (fine-tuning): the layer's output has no gradient
    in the user's forward; the message says to make x require grad."""
    for p in (*small.conv1.parameters(), *small.bn.parameters(), *small.conv2.parameters()):
        p.requires_grad_(False)
    with xt.GradCAM(small, layer="conv2") as cam:
        out = small(small_x)
        with pytest.raises(xt.XaiError, match=r"x\.requires_grad_\(\)"):
            cam.from_output(out, 1)
        out = small(small_x.clone().requires_grad_())
        got = cam.from_output(out, 1).attributions
    torch.testing.assert_close(got, xt.GradCAM(small, layer="conv2")(small_x, 1))
