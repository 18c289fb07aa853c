"""The metric catalogue (xai_torch.metrics.catalogue) and the leaderboard (xai_torch.leaderboard)."""
import json

import pytest
import torch

import xai_torch as xt
from xai_torch import leaderboard
from xai_torch.metrics import catalogue

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

# every metric the issue names: the existing ones and those of issue 21 item 6 (M1, M2, M3)
EXPECTED = {"deletion", "insertion", "pic_sic", "pic_aic", "road", "infidelity", "sensitivity_n", "max_sensitivity",
            "completeness", "model_randomization", "average_drop", "increase_in_confidence", "arcc",
            "faithfulness_correlation", "monotonicity_arya", "monotonicity_nguyen", "pixel_flipping",
            "region_perturbation", "irof", "sufficiency", "sparseness", "complexity", "effective_complexity",
            "local_lipschitz_estimate", "relative_input_stability", "relative_output_stability", "top_k_intersection",
            "auc", "random_logit", "input_invariance", "fragility", "stability"}


def test_catalogue_covers_every_metric_and_resolves_names():
    assert EXPECTED <= set(catalogue.CATALOGUE)
    for name, spec in catalogue.CATALOGUE.items():
        assert spec.style in catalogue.STYLES and set(spec.needs) <= set(catalogue.NEEDS), name
    for name in catalogue.installed():                              # the records name exported functions
        assert callable(catalogue.function_of(catalogue.CATALOGUE[name])), name
    assert {"deletion", "pic_sic", "road", "stability", "model_randomization", "arcc"} <= set(catalogue.installed())
    assert catalogue.directions(["deletion", "insertion"]) == {"deletion": False, "insertion": True}
    assert catalogue.resolve_metrics("Deletion, sparseness,deletion") == ["deletion", "sparseness"]
    assert "pointing_game" not in catalogue.resolve_metrics("all")   # needs ground-truth masks
    assert "pointing_game" in catalogue.available(masks=True) and "pointing_game" not in catalogue.available()
    with pytest.raises(xt.XaiError, match="unknown metric 'delet'.*Did you mean deletion"):
        catalogue.resolve_metrics("delet")
    with pytest.raises(xt.XaiError, match="needs explainer"):
        catalogue.measure("max_sensitivity", SmallNet(), torch.rand(1, 3, 8, 8), attribution=torch.rand(1, 3, 8, 8))


def test_catalogue_measure_equals_the_metric_it_names():
    torch.manual_seed(0)
    model, x = SmallNet(classes=5).eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    g = xt.Gradient(model)
    a = g(x)
    got = catalogue.measure("deletion", model, x, attribution=a, explainer=g)
    torch.testing.assert_close(got, xt.metrics.deletion(model, x, a, step=4).auc)   # cheap: 16 steps of 64 px
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    got = catalogue.measure("relevance_mass", model, x, attribution=a, masks=masks)
    torch.testing.assert_close(got, xt.metrics.relevance_mass(a, masks).score.double())


def test_leaderboard_two_methods_three_metrics(tmp_path):
    torch.manual_seed(0)
    model = SmallNet(classes=5).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = snapshot(model, x)
    methods = {"gradient": xt.Gradient(model), "x_input": xt.InputXGradient(model)}
    board = leaderboard.evaluate(model, x, methods, "deletion,sparseness,max_sensitivity", bootstrap=50,
                                 settings={"model": "SmallNet"})
    assert_no_trace(before, snapshot(model, x))
    assert board.metrics == ["deletion", "sparseness", "max_sensitivity"] and board.images == 3
    assert not board.failures
    # the cells are the metrics themselves, on the explainer's attributions for the top-1 classes
    a = methods["gradient"](x, target=model(x).argmax(1))
    torch.testing.assert_close(board.scores["sparseness"]["gradient"], xt.metrics.sparseness(a).double())
    e = board.estimates["deletion"]["x_input"]
    assert e.value == pytest.approx(float(board.scores["deletion"]["x_input"].mean())) and e.low <= e.value <= e.high
    # model calls: a gradient costs one forward per image; deletion B + B * 17 points; sparseness none
    assert board.calls == {"gradient": 3, "x_input": 3}
    assert board.metric_calls["deletion"]["gradient"] == 3 + 3 * 17
    assert board.metric_calls["sparseness"]["gradient"] == 0
    ranks = board.ranks()
    assert sorted(ranks["deletion"].values()) == [1.0, 2.0]
    assert board.reliability is not None and board.reliability.metrics == board.metrics
    paths = leaderboard.write(board, tmp_path / "out")
    md, page, data = (p.read_text() for p in paths)
    assert "| deletion ↓ |" in md and "inter-rater α" in md and "**" in md
    assert "<style>" in page and "Metric reliability" in page and "<script" not in page
    assert json.loads(data)["metric_calls"]["deletion"]["x_input"] == 54
    # two images: too few for the reliability figures, said so
    small = leaderboard.evaluate(model, x[:2], methods, ["sparseness"], bootstrap=10)
    assert small.reliability is None and "at least 3 images" in small.note
