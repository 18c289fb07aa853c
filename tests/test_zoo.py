import numpy as np
import pytest
import torch

import xai_torch as xt


def test_packaged_images_and_preprocess():
    for name in xt.zoo.IMAGES:
        img = xt.zoo.image(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    x = xt.zoo.preprocess([xt.zoo.image("coffee"), xt.zoo.image("camera")])
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    back = xt.zoo.to_image(x)
    assert back.shape == (2, 224, 224, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[0], xt.zoo.center_crop(xt.zoo.image("coffee")))
    with pytest.raises(xt.XaiError, match="unknown image 'lena'.*chelsea"):
        xt.zoo.image("lena")
    with pytest.raises(xt.XaiError, match="uint8 RGB"):
        xt.zoo.preprocess(np.zeros((10, 10, 3), dtype=np.float32))


def test_packaged_model_predicts_the_documented_classes(lite0):
    x = xt.zoo.preprocess([xt.zoo.image(n) for n in ("chelsea", "coffee", "camera")])
    with torch.no_grad():
        p = lite0(x).softmax(1)
    top = p.argmax(1).tolist()
    assert [xt.zoo.label(i) for i in top] == ["tiger cat", "espresso", "tripod"]
    assert float(p[1].max()) > 0.9
    with pytest.raises(xt.XaiError, match="0, 999"):
        xt.zoo.label(1000)
