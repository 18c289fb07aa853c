"""The localisation metrics (pointing game, relevance mass and rank): hand-computed cases and
bad inputs."""
import math

import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch.metrics import localisation as L


def test_pointing_game_tolerance_and_ties():
    sal = torch.zeros(4, 20, 20)
    sal[0, 5, 5] = 1          # inside
    sal[1, 5, 12] = 1         # 3 px right of the mask edge (col 9): hit within tolerance 3, miss at 2
    sal[2, 15, 15] = 1        # far away
    sal[3, 5, 5] = sal[3, 15, 15] = 1   # tie: one in, one out
    masks = torch.zeros(4, 20, 20, dtype=torch.bool)
    masks[:, 2:8, 2:10] = True
    r3 = L.pointing_game(sal, masks, tolerance=3)
    assert r3.hit.tolist() == [1.0, 1.0, 0.0, 0.5]
    assert float(r3.accuracy) == pytest.approx(2.5 / 4)
    r2 = L.pointing_game(sal, masks, tolerance=2)
    assert r2.hit.tolist() == [1.0, 0.0, 0.0, 0.5]
    assert L.pointing_game(sal, masks, tolerance=0, ties="any").hit.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert L.pointing_game(sal, masks, tolerance=0, ties="all").hit.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert L.pointing_game(sal, masks, tolerance=0, ties="first").hit.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert r3.points[3].tolist() == [5, 5]


def test_pointing_game_diagonal_tolerance_is_euclidean_and_empty_mask_is_nan():
    sal = torch.zeros(2, 11, 11)
    sal[:, 8, 8] = 1
    masks = torch.zeros(2, 11, 11, dtype=torch.bool)
    masks[0, 5, 5] = True            # distance sqrt(18) = 4.24 from (8, 8)
    assert L.pointing_game(sal, masks, tolerance=4.2).hit.tolist()[0] == 0.0
    res = L.pointing_game(sal, masks, tolerance=4.3)
    assert res.hit[0] == 1.0 and math.isnan(res.hit[1])
    assert float(res.accuracy) == 1.0


def test_pointing_game_per_class_average():
    sal = torch.zeros(3, 4, 4)
    sal[:, 0, 0] = 1
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 3, 3] = masks[2, 0, 0] = True
    res = L.pointing_game(sal, masks, tolerance=0, labels=[7, 7, 9])
    assert res.per_class == {7: 0.5, 9: 1.0} and float(res.accuracy) == 0.75


def test_relevance_mass_and_rank():
    rel = torch.tensor([[[4.0, 3.0], [2.0, -1.0]]])
    mask = torch.tensor([[[1, 0], [1, 1]]])
    assert float(L.relevance_mass(rel, mask).score[0]) == pytest.approx(6 / 9)
    assert float(L.relevance_mass(rel, mask, positive_only=False).score[0]) == pytest.approx(5 / 8)
    # K = 3: top-3 are 4, 3, 2 -> two of them in the mask
    assert float(L.relevance_rank(rel, mask).score[0]) == pytest.approx(2 / 3)
    empty = L.relevance_mass(rel, torch.zeros(1, 2, 2))
    assert math.isnan(float(empty.score[0])) and math.isnan(float(empty.mean))
    assert math.isnan(float(L.relevance_rank(rel, torch.zeros(1, 2, 2)).score[0]))
    # channel pooling and numpy input
    rgb = np.stack([rel[0].numpy()] * 3)[None]
    assert float(L.relevance_mass(rgb, mask.numpy()).score[0]) == pytest.approx(6 / 9)


@pytest.mark.parametrize("call", [
    lambda: L.pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 5)),
    lambda: L.pointing_game(torch.rand(2, 4, 4), torch.full((2, 4, 4), 0.5)),
    lambda: L.pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 4), tolerance=-1),
    lambda: L.pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 4), ties="random"),
    lambda: L.pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 4), labels=[1]),
    lambda: L.relevance_rank("map", torch.ones(2, 4, 4)),
    lambda: L.relevance_mass(torch.rand(2, 4, 4), [[1]]),
])
def test_localisation_bad_inputs(call):
    with pytest.raises(xt.XaiError):
        call()
