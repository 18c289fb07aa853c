import pytest
import torch
import torchvision
from torch import nn

import xai_torch as xt


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18(weights=None)


def test_dotted_names_and_modules(resnet):
    assert xt.find_layer(resnet, "layer4.1.conv2") == ("layer4.1.conv2", resnet.layer4[1].conv2)
    assert xt.find_layer(resnet, resnet.layer3) == ("layer3", resnet.layer3)
    dense = torchvision.models.densenet121(weights=None)
    assert xt.find_layer(dense, "features.denseblock4")[1] is dense.features.denseblock4
    assert [n for n, _ in xt.find_layers(resnet, ["layer3", resnet.layer4])] == ["layer3", "layer4"]


def test_unknown_name_lists_the_closest(resnet):
    with pytest.raises(xt.XaiError, match="'layer4.1.conv3' is not a submodule.*'layer4.1.conv2'"):
        xt.find_layer(resnet, "layer4.1.conv3")
    with pytest.raises(xt.XaiError, match="'layr4'.*'layer4'"):
        xt.find_layer(resnet, "layr4")
    with pytest.raises(xt.XaiError, match="is not part of the model"):
        xt.find_layer(resnet, nn.Conv2d(1, 1, 1))
    with pytest.raises(xt.XaiError, match="dotted module name or an nn.Module"):
        xt.find_layer(resnet, 4)
    with pytest.raises(xt.XaiError, match="non-empty list"):
        xt.find_layers(resnet, [])


def test_tokens_to_grid():
    grid = xt.tokens_to_grid(torch.arange(2 * 7 * 3.0).reshape(2, 7, 3), prefix_tokens=1, height=2, width=3)
    assert grid.shape == (2, 3, 2, 3) and grid[0, 0, 0, 0] == 3.0  # token 1, channel 0
    with pytest.raises(xt.XaiError, match="do not fill"):
        xt.tokens_to_grid(torch.zeros(1, 8, 3), prefix_tokens=1)  # 7 spatial tokens
    torch.testing.assert_close(xt.vit_reshape(prefix_tokens=1, height=2, width=3)(torch.ones(1, 7, 4)),
                               torch.ones(1, 4, 2, 3))
    with pytest.raises(xt.XaiError, match="swin_reshape expects"):
        xt.swin_reshape()(torch.zeros(2, 3, 4))
    assert xt.swin_reshape()(torch.zeros(2, 3, 4, 5)).shape == (2, 5, 3, 4)
