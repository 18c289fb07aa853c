"""Model-parameter randomisation (Adebayo et al. 2018) on the trained EfficientNet-Lite0, CPU.

Cascading randomisation from the logits down, over nine layer groups (the classifier, the head,
then the network's stages), for Gradient, GuidedBackprop and Grad-CAM (``_conv_head``) on three
packaged photos. The table gives the Spearman rank correlation between the intact model's map
(sum of |a| over channels, the paper's "ABS" maps) and the map after each step, averaged over
the images (NaN, an all-zero map, left out; the count is shown). A method that depends on the
weights falls towards 0 from the first rows; Guided Backprop stays near 1 while only the top
layers are random (the paper's finding).
"""
from __future__ import annotations

import time
import warnings

import torch

import xai_torch as xt
from xai_torch.metrics.sanity import model_randomization

IMAGES = ("chelsea", "coffee", "motorcycle")


def _blocks(*i: int) -> list[str]:
    return [f"_blocks.{k}" for k in i]


#: cut points for Lite0, logits first: one step per group (EfficientNet-B0 stages: 0 | 1-2 | 3-4 |
#: 5-7 | 8-10 | 11-14 | 15).
STEPS = [["_fc"], ["_conv_head", "_bn1"], _blocks(15), _blocks(11, 12, 13, 14), _blocks(8, 9, 10),
         _blocks(5, 6, 7), _blocks(3, 4), _blocks(1, 2), _blocks(0) + ["_bn0", "_conv_stem"]]
LABELS = ["fc", "head (conv+bn)", "block 15", "blocks 11-14", "blocks 8-10", "blocks 5-7", "blocks 3-4",
          "blocks 1-2", "block 0 + stem"]


def run(images=IMAGES) -> str:
    model = xt.zoo.efficientnet_lite0()
    x = torch.cat([xt.zoo.preprocess(xt.zoo.image(name)) for name in images])
    methods = {
        "Gradient": xt.Gradient(model),
        "GuidedBackprop": xt.GuidedBackprop(model),
        "GradCAM": lambda m: xt.GradCAM(m, layer="_conv_head"),
    }
    cols, seconds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, explainer in methods.items():
            start = time.perf_counter()
            res = model_randomization(model, explainer, x, layers=STEPS, reduce="abs", similarity=("spearman",))
            seconds[name] = time.perf_counter() - start
            s = res.scores["spearman"]
            cols[name] = (s.nanmean(0), torch.isnan(s).sum(0), res.rerun["spearman"].nanmean())
    lines = [f"EfficientNet-Lite0, cascading randomisation, Spearman of sum|a| maps, mean of {len(images)} photos "
             f"({', '.join(images)}), CPU, {torch.get_num_threads()} threads",
             f"{'randomised down to':<20}" + "".join(f"{n:>16}    " for n in methods)]
    lines.append(f"{'(rerun, intact)':<20}" + "".join(f"{cols[n][2].item():>16.3f}    " for n in methods))
    for i, label in enumerate(LABELS):
        cells = []
        for n in methods:
            mean, nans = cols[n][0][i].item(), int(cols[n][1][i])
            cells.append(f"{mean:>16.3f}" + (f" ({nans})" if nans else "    "))
        lines.append(f"{label:<20}" + "".join(cells))
    lines.append(f"{'seconds':<20}" + "".join(f"{seconds[n]:>16.1f}    " for n in methods))
    lines.append("(n): images whose map became constant (all zero), left out of the mean.")
    return "\n".join(lines)


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
