"""Write the notebooks' sources (unexecuted) from the cells below; ``_run.py`` executes them.

    .venv/bin/python notebooks/_make.py            # rewrite every notebook from this file
    .venv/bin/python notebooks/_run.py             # execute them in place (stores the outputs)

Each notebook opens with a ``parameters`` cell (sizes: steps, samples); the test suite may
override it, the stored outputs come from the values written here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
%matplotlib inline
import io
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display

import xai_torch as xt
from xai_torch import viz

torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 64, "font.size": 8, "axes.titlesize": 8})
model = xt.zoo.efficientnet_lite0()                      # trained ImageNet EfficientNet-Lite0, eval mode


def load(name):
    """The packaged photo, centre-cropped to the model's 224 x 224, and the model input."""
    photo = xt.zoo.center_crop(xt.zoo.image(name))
    return photo, xt.zoo.preprocess(photo, crop=False)


def top5(x):
    with torch.no_grad():
        p = model(x).softmax(-1)
    values, indices = p.topk(5)
    return [[(xt.zoo.label(int(i)), float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, indices)]


def show(panels, titles, rows=1, size=2.0):
    """A grid of pictures (uint8 RGB arrays or [0, 1] greyscale maps) with titles, shown as a JPEG."""
    cols = -(-len(panels) // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.25 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel, title in zip(axes.ravel(), panels, titles):
        ax.imshow(panel, cmap="gray" if np.ndim(panel) == 2 else None, vmin=0, vmax=1 if np.ndim(panel) == 2 else None)
        ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(fig)
    display(Image(buffer.getvalue()))
'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags=()):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(text: str):
    return code(text, tags=("parameters",))


def setup(image_line: str):
    return code(SETUP + "\n\n" + image_line)


NOTEBOOKS = {}

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["01_integrated_gradients"] = [
    md('''
# Integrated Gradients: baselines, the path and completeness

This notebook retells the *Integrated Gradients* section of the seed chapter (figures 4-2 to 4-9)
with the packaged EfficientNet-Lite0 and a packaged photo instead of the chapter's VGG-16 and
cockatoo. Integrated Gradients (IG) integrates the gradient of the target score `F` along the
straight line from a baseline `x'` to the image `x`:

$$\\mathrm{IG}_i(x) = (x_i - x'_i)\\int_0^1 \\frac{\\partial F(x' + \\alpha (x - x'))}{\\partial x_i}\\, d\\alpha$$

so that the attributions add up to `F(x) - F(x')` (*completeness*). Everything below is computed
when the notebook runs; the stored outputs come from the parameters in the next cell.
'''),
    params('''
STEPS = 16            # quadrature nodes per path: model evaluations per image and baseline
ADAPTIVE_STEPS = 32   # budget of the adaptive rule (its minimum is 32)
IMAGE = "coffee"
'''),
    setup('''\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")
target = int(model(x).argmax())'''),
    md('''
## Baselines (figure 4-2)

A baseline should carry no information the model uses. The common choices are a black image, a
white image and noise. `xt.Baseline` builds them in the model's input space; `xt.zoo.NORMALIZE`
tells the explainer how pixels were normalised, so that "black" is black.
'''),
    code('''
lo, hi = xt.path.value_range(x, normalize=xt.zoo.NORMALIZE)
noise = xt.Baseline("uniform")(x, lo, hi, generator=torch.Generator().manual_seed(0))
baselines = {"black": "black", "white": "white", "uniform noise": noise}
pictures = [xt.zoo.to_image(xt.Baseline(b)(x, lo, hi))[0] for b in ("black", "white")] + [xt.zoo.to_image(noise)[0]]
show([photo, *pictures], ["image", *baselines])
'''),
    md('''
## The straight-line path (figures 4-3 and 4-4)

Images on the path `x' + α (x - x')` from the black baseline, with the model's probability of the
predicted class. The prediction appears long before `α = 1`: the "aha moment" of the chapter.
'''),
    code('''
alphas = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.4, 1.0])
black = xt.Baseline("black")(x, lo, hi)
path = black + alphas.view(-1, 1, 1, 1) * (x - black)
with torch.no_grad():
    p_path = model(path).softmax(-1)[:, target]
show(list(xt.zoo.to_image(path)), [f"α={a:.2f}  p={p:.2f}" for a, p in zip(alphas.tolist(), p_path.tolist())])
'''),
    md('''
## IG from three baselines

`explain` returns a `PathExplanation`: the attributions, the completeness error `delta`
(`sum(IG) - (F(x) - F(x'))`, in logits) and the path curve: `alphas`, the probability
`path_probs`, the score `path_scores` and the mean gradient magnitude `path_grad` at every node.
'''),
    code('''
ig = xt.IntegratedGradients(model, steps=STEPS, normalize=xt.zoo.NORMALIZE)
results, seconds = {}, {}
for name, b in baselines.items():
    start = time.perf_counter()
    results[name] = ig.explain(x, target=target, baseline=b)
    seconds[name] = time.perf_counter() - start

print(f"{'baseline':14s} {'F(x)':>7s} {'F(x_)':>7s} {'sum IG':>7s} {'delta':>7s} {'rel.':>6s} {'p(x_)':>6s} {'s':>5s}")
for name, r in results.items():
    fx, fb = float(r.scores[0]), float(r.baseline_scores[0, 0])
    print(f"{name:14s} {fx:7.2f} {fb:7.2f} {float(r.attributions.sum()):7.2f} {float(r.delta[0]):7.3f} "
          f"{float(r.relative_delta[0]):6.3f} {float(r.path_probs[0, 0, 0]):6.3f} {seconds[name]:5.1f}")
'''),
    md('''
## More steps, or better-placed steps

The chapter's check: if `delta` is large compared with `F(x) - F(x')`, the integral is not
converged. The probability jumps over a short stretch of `α`, and a fixed rule with few nodes
can miss it. Doubling the budget and placing the nodes where the path score changes
(`method="adaptive"`) brings the error down:
'''),
    code('''
ig_adaptive = xt.IntegratedGradients(model, steps=ADAPTIVE_STEPS, method="adaptive", normalize=xt.zoo.NORMALIZE)
r = ig_adaptive.explain(x, target=target, baseline="black")
print(f"black, {STEPS} Gauss-Legendre nodes: delta = {float(results['black'].delta[0]):.3f} "
      f"(relative {float(results['black'].relative_delta[0]):.3f})")
print(f"black, {ADAPTIVE_STEPS} adaptive nodes:      delta = {float(r.delta[0]):.3f} "
      f"(relative {float(r.relative_delta[0]):.3f})")
'''),
    md('''
## Path curves (figures 4-3, 4-5 and 4-6)

Top: the probability of the predicted class along each path; bottom: the mean gradient
magnitude. The gradients are large only around the "aha moment" and nearly vanish once the
prediction saturates, which is why IG integrates them instead of reading the gradient at `x`.
'''),
    code('''
fig = viz.plot_path_curve(list(results.values()), labels=list(results))
for name, r in results.items():
    a, p = r.alphas.double(), r.path_probs[0, 0].double()
    aha = float(a[int((p >= 0.5 * p[-1]).nonzero()[0])])
    print(f"{name:14s}: probability reaches half its final value at alpha = {aha:.2f}")
fig
'''),
    md('''
## Attribution maps (figures 4-8 and 4-9)

The maps are `Σ_c |IG|` scaled to their 99th percentile (PAIR's normalisation,
`viz.grayscale`), alone and over the photo. The baseline changes the explanation: a white
baseline gives no credit to white pixels, a black one none to black pixels.
'''),
    code('''
maps = {name: viz.grayscale(r.attributions)[0] for name, r in results.items()}
show([photo, *maps.values()], ["image", *(f"IG, {n}" for n in maps)])
show([photo, *(viz.heatmap_overlay(photo, m) for m in maps.values())], ["image", *maps])
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["02_blur_ig_guided_ig"] = [
    md('''
# Blur IG and Guided IG versus Integrated Gradients

The chapter's *Improvements on Integrated Gradients* (figures 4-10 to 4-12): **Blur IG** removes
the baseline: the path runs from a strongly blurred copy of the image to the image, through
blurs of decreasing width. **Guided IG** keeps a baseline but adapts the path: at every step it
moves the features with the smallest gradient first, so that the path avoids regions where large,
irrelevant gradients accumulate.
'''),
    params('''
STEPS = 16            # IG and Blur IG nodes
GUIDED_STEPS = 16     # Guided IG steps (sequential model calls)
MAX_SIGMA = 50.0      # Blur IG's strongest blur, in pixels
IMAGE = "chelsea"
'''),
    setup('''\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")
target = int(model(x).argmax())'''),
    md('''
## Blurring destroys the information (figure 4-10)

The model's top prediction as the blur grows: fine details go first, and at the widest blur the
image no longer shows what the model recognised.
'''),
    code('''
sigmas = [0.0, 1.0, 3.0, 6.7, 15.0, MAX_SIGMA]
blurred = torch.cat([x if s == 0 else xt.path.gaussian_blur(x, s) for s in sigmas])
preds = top5(blurred)
show(list(xt.zoo.to_image(blurred)),
     [f"σ={s:g}: {p[0][0].split(',')[0][:14]} {p[0][1]:.2f}" for s, p in zip(sigmas, preds)])
'''),
    md('''
## Three path methods

Same target, same budget of model evaluations for IG and Blur IG. `delta` is the completeness
error in logits (for Blur IG, against the most blurred image).
'''),
    code('''
methods = {
    "IG (black)": (xt.IntegratedGradients(model, steps=STEPS, normalize=xt.zoo.NORMALIZE), {"baseline": "black"}),
    "Blur IG": (xt.BlurIG(model, steps=STEPS, max_sigma=MAX_SIGMA), {}),
    "Guided IG (black)": (xt.GuidedIG(model, steps=GUIDED_STEPS, normalize=xt.zoo.NORMALIZE), {"baseline": "black"}),
}
results = {}
print(f"{'method':18s} {'F(x)':>6s} {'F(start)':>8s} {'sum':>6s} {'delta':>7s} {'rel.':>6s} {'calls':>5s} {'s':>5s}")
for name, (explainer, kwargs) in methods.items():
    start = time.perf_counter()
    r = results[name] = explainer.explain(x, target=target, **kwargs)
    t = time.perf_counter() - start
    print(f"{name:18s} {float(r.scores[0]):6.2f} {float(r.baseline_scores[0, 0]):8.2f} "
          f"{float(r.attributions.sum()):6.2f} {float(r.delta[0]):7.3f} {float(r.relative_delta[0]):6.3f} "
          f"{r.model_calls:5d} {t:5.1f}")
'''),
    md('''
With this small budget the straight line from black has not converged on this photo: the
probability jumps within the first few percent of the path (see the curves at the end), between
two of the fixed nodes, and the completeness error is a large fraction of `F(x) - F(x')`. Guided
IG spends the same number of gradient evaluations along a path it adapts as it goes, and its
error is much smaller. Blur IG's error is measured against the most blurred image, which the
model still scores (figure 4-10's "information-less" image is not quite that).

## Saliency maps (figures 4-11 and 4-12)

`Σ_c |a|` scaled to the 99th percentile. The Spearman rank correlation between the maps says how
much the three methods agree on which pixels matter.
'''),
    code('''
maps = {name: viz.grayscale(r.attributions)[0] for name, r in results.items()}
show([photo, *maps.values()], ["image", *maps])
show([photo, *(viz.heatmap_overlay(photo, m) for m in maps.values())], ["image", *maps])
names = list(maps)
for i in range(len(names)):
    for j in range(i + 1, len(names)):
        rho = float(xt.metrics.spearman(torch.from_numpy(maps[names[i]])[None], torch.from_numpy(maps[names[j]])[None]))
        print(f"Spearman({names[i]}, {names[j]}) = {rho:.3f}")
'''),
    md('''
## Where the paths learn

Blur IG's path position is the blur width σ (from `MAX_SIGMA` down to 0); IG's and Guided IG's is
α. Guided IG reports the score (logit) but no probability, so the curves below show the target
logit along each path.
'''),
    code('''
fig, axes = plt.subplots(1, 3, figsize=(9, 2.4))
for ax, (name, r) in zip(axes, results.items()):
    ax.plot(r.alphas.double().reshape(-1).numpy(), r.path_scores[0, 0].double().numpy(), marker=".")
    ax.set_title(name)
    ax.set_xlabel("σ" if name == "Blur IG" else "α")
axes[0].set_ylabel("target logit")
fig.tight_layout()
plt.show()
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["03_xrai"] = [
    md('''
# XRAI: regions from Integrated Gradients, and the top 30 %

The chapter's *XRAI* section (figures 4-14 to 4-18). XRAI segments the image with Felzenszwalb's
graph algorithm at several scales (`k = 50 ... 1200`), computes IG from a black and a white
baseline, and ranks the segments greedily by attribution density; the map gives each pixel the
density of the region that added it. Showing only the top 30 % of the map keeps the regions that
matter most.
'''),
    params('''
STEPS = 10            # IG steps per baseline (XRAI uses two baselines)
FRACTION = 0.3        # the chapter's "top 30 %"
IMAGE = "chelsea"
'''),
    setup('''\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")
target = int(model(x).argmax())'''),
    md('''
## Felzenszwalb segmentation at several scales (figure 4-15)

A larger `k` prefers larger segments.
'''),
    code('''
from skimage.segmentation import mark_boundaries

scales = (50, 250, 1200)
labels = {k: xt.segmentation.felzenszwalb(x, scale=k, image=photo)[0] for k in scales}
show([mark_boundaries(photo, labels[k].numpy()) for k in scales],
     [f"k = {k}: {int(labels[k].max()) + 1} segments" for k in scales])
'''),
    md('''
## XRAI (figures 4-16 and 4-17)
'''),
    code('''
xrai = xt.XRAI(model, steps=STEPS)
start = time.perf_counter()
res = xrai.explain(x, target=target)
print(f"XRAI: {time.perf_counter() - start:.1f} s, {len(res.segments[0])} candidate segments, "
      f"{len(res.regions[0])} ranked regions")
print("densities of the first five regions:", [round(float(g), 4) for g in res.gains[0][:5]])
covered = torch.cumsum(torch.stack([m.float().mean() for m in res.regions[0]]), 0)
print(f"regions needed to cover {FRACTION:.0%} of the image: {int((covered < FRACTION).sum()) + 1}")
heat = res.attributions[0, 0]
show([photo, viz.grayscale(res.base_attribution)[0], viz.scaled(heat)[0],
      viz.heatmap_overlay(photo, viz.scaled(heat)[0])],
     ["image", "IG (black + white)", "XRAI", "XRAI overlay"])
'''),
    md('''
## The top 30 % (figure 4-18)

`viz.top_fraction_overlay` darkens every pixel outside the top fraction of the map
(`xt.region.top_fraction` gives the same mask as a tensor). How much of the prediction do these
pixels carry on their own? Below, the model sees only the top 30 % (the rest replaced by the
dataset mean, zero in the model's input space), and for comparison a random 30 % of the pixels.
'''),
    code('''
keep = xt.region.top_fraction(res.attributions, FRACTION)
shown = {"whole image": x, f"XRAI top {FRACTION:.0%}": x * keep}
g = torch.Generator().manual_seed(0)
random_keep = (torch.rand(1, 1, 224, 224, generator=g) < FRACTION)
shown[f"random {FRACTION:.0%}"] = x * random_keep
with torch.no_grad():
    p = model(torch.cat(list(shown.values()))).softmax(-1)[:, target]
for (name, _), prob in zip(shown.items(), p.tolist()):
    print(f"{name:15s} p({xt.zoo.label(target)}) = {prob:.3f}")
show([photo, viz.top_fraction_overlay(photo, heat, FRACTION, dim=0.0), viz.top_fraction_overlay(photo, heat, FRACTION)],
     ["image", f"top {FRACTION:.0%}", f"top {FRACTION:.0%} (others dimmed)"])
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["04_gradcam"] = [
    md('''
# Grad-CAM versus Grad-CAM++

The chapter's *Grad-CAM* section (figures 4-20 to 4-22). Grad-CAM weights the activation maps
`A^k` of a convolution layer by the spatial mean of the gradients, `α_k = mean_ij ∂y^c/∂A^k_ij`,
sums them and keeps the positive part: `ReLU(Σ_k α_k A^k)`. Grad-CAM++ weights each gradient
with second- and third-order terms so that several instances and whole objects are covered more
evenly. Both are computed at the layer's resolution (7 x 7 for EfficientNet-Lite0's
`_conv_head`) and upsampled to the image.
'''),
    params('''
IMAGES = ["chelsea", "coffee", "motorcycle", "rocket"]
LAYER = "_conv_head"
'''),
    setup('''\
photos, xs = zip(*(load(name) for name in IMAGES))
x = torch.cat(xs)
for name, preds in zip(IMAGES, top5(x)):
    print(f"{name:11s} {preds[0][1]:.3f} {preds[0][0]}")'''),
    md('''
## One batched call per method

The explainers run on the whole batch at once; each image is explained for its own top class.
'''),
    code('''
results = {}
for name, cls in (("Grad-CAM", xt.GradCAM), ("Grad-CAM++", xt.GradCAMPlusPlus)):
    start = time.perf_counter()
    with cls(model, layer=LAYER) as cam:
        results[name] = cam.explain(x)
    print(f"{name:10s} {time.perf_counter() - start:.2f} s, layer map {tuple(results[name].layer_maps[0].shape)}, "
          f"upsampled {tuple(results[name].attributions.shape)}")
print("classes explained:", [xt.zoo.label(int(t)).split(",")[0] for t in results["Grad-CAM"].targets])
'''),
    md('''
## The coarse map and its upsampling (figure 4-21)

The raw 7 x 7 map (nearest neighbour) and the bilinear upsampling that is drawn over the photo.
The smooth picture suggests a precision the 7 x 7 grid does not have.
'''),
    code('''
raw = results["Grad-CAM"].layer_maps[0][0, 0]
show([photos[0], viz.scaled(raw)[0], viz.scaled(results["Grad-CAM"].attributions[0])[0]],
     ["image", f"raw {tuple(raw.shape)}", "upsampled"])
'''),
    md('''
## Grad-CAM and Grad-CAM++ side by side (figure 4-22)

Each map is min-max scaled (`viz.scaled`) and drawn over its photo. The numbers compare the two
methods: the Spearman correlation of their maps, and the share of each map's mass that lies in
the 30 % of pixels where it is highest (a lower share means a more spread-out map).
'''),
    code('''
scaled = {name: viz.scaled(r.attributions) for name, r in results.items()}
panels, titles = [], []
for i, name in enumerate(IMAGES):
    diff = scaled["Grad-CAM++"][i] - scaled["Grad-CAM"][i]
    panels += [photos[i]] + [viz.heatmap_overlay(photos[i], scaled[m][i]) for m in results]
    panels.append(viz.diverging_overlay(photos[i], diff / max(np.abs(diff).max(), 1e-12)))
    titles += [name, *results, f"++ minus plain (max {np.abs(diff).max():.2f})"]
show(panels, titles, rows=len(IMAGES))

def top_share(m, fraction=0.3):
    v = np.sort(m.ravel())[::-1]
    return v[: int(fraction * v.size)].sum() / max(v.sum(), 1e-12)

print(f"{'image':11s} {'Spearman':>8s} {'top-30% mass: Grad-CAM':>24s} {'Grad-CAM++':>11s}")
for i, name in enumerate(IMAGES):
    a, b = (torch.from_numpy(scaled[m][i])[None] for m in results)
    print(f"{name:11s} {float(xt.metrics.spearman(a, b)):8.3f} {top_share(scaled['Grad-CAM'][i]):24.3f} "
          f"{top_share(scaled['Grad-CAM++'][i]):11.3f}")
'''),
    md('''
On the last convolution of EfficientNet-Lite0 the two maps are nearly the same: a 7 x 7 grid
with one dominant object leaves Grad-CAM++'s per-location weighting little to redistribute. The
last column shows where Grad-CAM++ puts more (green) or less (red) weight than Grad-CAM, after
both are scaled to [0, 1]; the chapter's figure 4-22 difference shows up on images with several
instances or on layers with finer grids.
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["05_lime"] = [
    md('''
# LIME: superpixels that speak for and against the prediction

The chapter's *LIME* section (figures 4-23 to 4-27). LIME segments the image into superpixels
(quickshift, lime's default), switches random subsets of them off, asks the model for the class
probability of every perturbed image, and fits a weighted linear model on the on/off pattern;
its coefficients say how much each superpixel pushes the prediction up (green) or down (red).
'''),
    params('''
SAMPLES = 100         # perturbed images (lime's num_samples; lime's default is 1000)
IMAGE = "chelsea"
'''),
    setup('''\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")
target = int(model(x).argmax())'''),
    md('''
## Superpixels (figure 4-23) and perturbations (figures 4-24 and 4-25)

Hidden superpixels are replaced by their own mean colour (`hide="mean"`, lime's default, figure
4-25) or by grey (`hide="gray"`, figure 4-24).
'''),
    code('''
from skimage.segmentation import mark_boundaries

lime = xt.LIME(model, samples=SAMPLES, seed=0)
segments = lime.segments(x, image=photo)          # (1, H, W) quickshift labels
count = int(segments.max()) + 1
print(f"{count} superpixels")

from xai_torch.region.superpixel import compose, hidden_images
g = torch.Generator().manual_seed(1)
z = torch.rand(3, count, generator=g) < 0.6
rows = torch.zeros(3, dtype=torch.long)
lo, hi = xt.path.value_range(x, normalize=xt.zoo.NORMALIZE)
perturbed = torch.cat([compose(x, hidden_images(x, segments, hide, (lo, hi)), segments, z, rows)
                       for hide in ("mean", "gray")])
with torch.no_grad():
    p = model(perturbed).softmax(-1)[:, target]
show([mark_boundaries(photo, segments[0].numpy()), *xt.zoo.to_image(perturbed)],
     ["superpixels", *(f"{h}: p={v:.2f}" for h, v in zip(["mean"] * 3 + ["gray"] * 3, p.tolist()))], rows=1, size=1.6)
'''),
    md('''
## The explanation (figures 4-26 and 4-27)

`explain` returns the segments, one weight per superpixel, and how well the linear surrogate fits
the model (`r2`, and its prediction for the whole image next to the model's probability).
'''),
    code('''
start = time.perf_counter()
res = lime.explain(x, target=target, segments=segments)
print(f"LIME: {time.perf_counter() - start:.1f} s, {res.model_calls} model calls")
w = res.weights[0, :count]
print(f"surrogate R^2 = {float(res.r2[0]):.3f}; surrogate at the image = {float(res.local_pred[0]):.3f}, "
      f"model = {float(res.scores[0]):.3f}")
order = w.argsort(descending=True)
print("strongest for :", [(int(i), round(float(w[i]), 4)) for i in order[:5]])
print("strongest against:", [(int(i), round(float(w[i]), 4)) for i in order.flip(0)[:5]])
print(f"{int((w > 0).sum())} superpixels for the class, {int((w < 0).sum())} against")
'''),
    code('''
pos = torch.where(w > 0, w, torch.zeros_like(w))
show([photo,
      viz.superpixel_overlay(photo, segments[0], pos, top=5),
      viz.superpixel_overlay(photo, segments[0], w, top=10),
      viz.superpixel_overlay(photo, segments[0], w, boundaries="all")],
     ["image", "top 5, positive only", "top 10, green for / red against", "all superpixels"])
'''),
    md('''
## KernelSHAP on the same superpixels

KernelSHAP fits the same kind of linear model with the Shapley kernel and the constraint that the
weights add up to `p(x) - p(all hidden)`. With the same superpixels and a small budget it is a
quick second opinion: how many of LIME's five strongest superpixels does it also rank in its
five strongest?
'''),
    code('''
shap = xt.KernelSHAP(model, samples=SAMPLES, seed=0)
start = time.perf_counter()
sres = shap.explain(x, target=target, segments=segments)
sv = sres.weights[0, :count]
print(f"KernelSHAP: {time.perf_counter() - start:.1f} s; sum of values {float(sv.sum()):.3f} = "
      f"p(x) - p(hidden) = {float(sres.scores[0] - sres.base_values[0]):.3f}")
common = set(order[:5].tolist()) & set(sv.argsort(descending=True)[:5].tolist())
print(f"top-5 superpixels shared with LIME: {len(common)} of 5; "
      f"Spearman of the weights: {float(xt.metrics.spearman(w[None].double(), sv[None].double())):.3f}")
show([viz.superpixel_overlay(photo, segments[0], w, top=10), viz.superpixel_overlay(photo, segments[0], sv, top=10)],
     ["LIME, top 10", "KernelSHAP, top 10"])
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["06_guided_backprop"] = [
    md('''
# Guided Backprop and Guided Grad-CAM

The chapter's last methods (figures 4-30 to 4-34). The plain gradient passes the backward signal
through a ReLU where its *input* was positive; DeConvNet passes it where the *signal* is
positive; Guided Backprop requires both, which zeroes more entries and gives sharper maps.
Guided Grad-CAM multiplies the Guided Backprop map by the upsampled Grad-CAM map, element by
element, so that the fine detail is kept only where the class evidence is.

EfficientNet-Lite0 uses ReLU6 (33 calls from 17 modules per forward pass); the rules apply to
every call without replacing any module of the model.
'''),
    params('''
IMAGES = ["chelsea", "coffee"]
LAYER = "_conv_head"
'''),
    setup('''\
photos, xs = zip(*(load(name) for name in IMAGES))
x = torch.cat(xs)
for name, preds in zip(IMAGES, top5(x)):
    print(f"{name:11s} {preds[0][1]:.3f} {preds[0][0]}")'''),
    code('''
explainers = {
    "Gradient": xt.Gradient(model),
    "DeConvNet": xt.Deconvnet(model),
    "Guided Backprop": xt.GuidedBackprop(model),
    "Grad-CAM": xt.GradCAM(model, layer=LAYER),
    "Guided Grad-CAM": xt.GuidedGradCAM(model, layer=LAYER),
}
results = {}
for name, e in explainers.items():
    start = time.perf_counter()
    results[name] = e.explain(x)
    a = results[name].attributions.abs().sum(1).flatten(1)          # (B, H*W) magnitude per pixel
    top = a.sort(1, descending=True).values[:, : a.shape[1] // 20].sum(1) / a.sum(1)
    print(f"{name:16s} {time.perf_counter() - start:5.2f} s  shape {tuple(results[name].attributions.shape)}  "
          f"share of the magnitude in the top 5 % of pixels: {', '.join(f'{v:.2f}' for v in top.tolist())}")
'''),
    md('''
## The maps (figures 4-33 and 4-34)

Pixel methods as `Σ_c |a|` scaled to the 99th percentile (`viz.grayscale`), Grad-CAM min-max
scaled over the photo. DeConvNet's map is mostly a regular grid, nearly the same for both photos: with
the ReLU masks ignored, what is left is the checkerboard of the strided convolutions. Guided
Backprop keeps the edges of the objects; multiplied by Grad-CAM, only those in the class region
remain.
'''),
    code('''
panels, titles = [], []
for i, name in enumerate(IMAGES):
    panels.append(photos[i])
    titles.append(name)
    for m, r in results.items():
        pic = viz.heatmap_overlay(photos[i], viz.scaled(r.attributions)[i]) if m == "Grad-CAM" \\
            else viz.grayscale(r.attributions)[i]
        panels.append(pic)
        titles.append(m)
show(panels, titles, rows=len(IMAGES), size=1.7)
'''),
    md('''
## Guided Grad-CAM is the product of the two

Checked numerically: Guided Backprop times the bilinearly upsampled Grad-CAM map equals Guided
Grad-CAM.
'''),
    code('''
cam = torch.nn.functional.interpolate(results["Grad-CAM"].layer_maps[0], size=x.shape[-2:], mode="bilinear",
                                      align_corners=False)
product = results["Guided Backprop"].attributions * cam
ggc = results["Guided Grad-CAM"].attributions
print(f"max |GBP x Grad-CAM - Guided Grad-CAM| = {float((product - ggc).abs().max()):.2e} "
      f"(max |Guided Grad-CAM| = {float(ggc.abs().max()):.2e})")
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["07_sanity_checks"] = [
    md('''
# Sanity checks: model randomisation and deletion / insertion

The chapter warns that "Guided Backprop and its variants fail basic sanity checks" (Adebayo et
al. 2018, *Sanity Checks for Saliency Maps*). The **model-parameter randomisation test**
re-initialises the layers of the model one group at a time, from the logits down (cascading),
and compares each new explanation with the one of the trained model. An explanation that
depends on what the model learned should change; one that stays the same is closer to an edge
detector. Everything runs on a deep copy: the model itself is untouched.

The **deletion / insertion** metrics (Petsiuk et al. 2018, RISE) ask a different question:
delete the pixels an explanation ranks highest and watch the class probability fall (lower area
is better), or insert them into a blurred image and watch it rise (higher is better).
'''),
    params('''
IMAGE = "chelsea"
LAYER = "_conv_head"
# randomisation steps, from the logits down (a list is one step)
STEPS = [["_fc"], ["_conv_head", "_bn1"], ["_blocks.15"], ["_blocks.11", "_blocks.12", "_blocks.13", "_blocks.14"]]
CURVE_POINTS = 10     # deletion / insertion steps
'''),
    setup('''\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")
target = int(model(x).argmax())'''),
    md('''
## Cascading model randomisation

Spearman rank correlation of the `Σ_c |a|` maps (`reduce="abs"`) with the trained model's map,
after each cumulative step.
'''),
    code('''
factories = {
    "Gradient": lambda m: xt.Gradient(m),
    "Guided Backprop": lambda m: xt.GuidedBackprop(m),
    "Grad-CAM": lambda m: xt.GradCAM(m, layer=LAYER),
}
sanity = {}
for name, factory in factories.items():
    start = time.perf_counter()
    sanity[name] = xt.metrics.model_randomization(model, factory, x, target=target, layers=STEPS, mode="cascading",
                                                  similarity=("spearman", "ssim"), reduce="abs", keep_maps=True)
    print(f"{name:16s} {time.perf_counter() - start:.1f} s")
print()
print(viz.randomization_table(sanity, similarity="spearman"))
'''),
    code('''
fig, ax = plt.subplots(figsize=(6, 4.2))
viz.plot_randomization(sanity, ax=ax, similarity="spearman")
plt.show()
'''),
    md('''
The maps after each step (figure 2 of the paper): Guided Backprop keeps drawing the cat after
the top of the network is random; Gradient and Grad-CAM do not. (A `nan` means the randomised
model's map is constant, here an all-zero Grad-CAM: nothing to rank.)
'''),
    code('''
panels, titles = [], []
for name, r in sanity.items():
    maps = torch.cat([r.original[:, None], r.maps], 1)[0]        # (1 + L, H, W): trained, then each step
    panels += [viz.grayscale(m[None, None])[0] for m in maps]
    titles += [f"{name}: trained"] + [f"random down to {s[0]}" for s in STEPS]
show(panels, titles, rows=len(sanity), size=1.6)
'''),
    md('''
## Deletion and insertion AUC

The same three methods, plus a random map as the floor, with `CURVE_POINTS` steps per curve.
'''),
    code('''
step = -(-224 * 224 // CURVE_POINTS)
maps = {name: factories[name](model)(x, target=target) for name in factories}
maps["random"] = torch.rand(1, 1, 224, 224, generator=torch.Generator().manual_seed(0))
deletion, insertion = {}, {}
for name, attr in maps.items():
    deletion[name] = xt.metrics.deletion(model, x, attr, target=target, step=step)
    insertion[name] = xt.metrics.insertion(model, x, attr, target=target, step=step)
print(f"{'method':16s} {'deletion AUC':>12s} {'insertion AUC':>13s}")
for name in maps:
    print(f"{name:16s} {float(deletion[name].auc[0]):12.3f} {float(insertion[name].auc[0]):13.3f}")
'''),
    code('''
viz.plot_causal_curves(deletion, insertion)
'''),
    md('''
The two metrics do not agree, and neither agrees with the sanity check. Deletion replaces pixels
with zeros in the model's input space (RISE's choice); scattered pixel-level maps (Gradient,
Guided Backprop, even the random map) punch high-frequency holes everywhere, which destroys the
prediction fast and earns a low (good) deletion AUC, while Grad-CAM removes one smooth blob at a
time. Insertion into a blurred image is less sensitive to that artefact. Guided Backprop scores
well on both although it barely depends on the model's weights: a faithfulness score alone does
not show that an explanation explains *this* model.
'''),
]

# --------------------------------------------------------------------------------------------------
NOTEBOOKS["08_partition_shap"] = [
    md("""
# Partition SHAP: the four best classes, region by region

Seed 002's figure: shap's Partition explainer on a cat photo, `maskers.Image("inpaint_telea")`,
the four classes the model ranks highest, each with its own map: red regions raise that class's
probability, blue ones lower it. Partition SHAP splits the image in two again and again (shap's
axis-aligned tree: the longer side first) and gives each half its Owen value: the Shapley value
of a two-player game between the halves, averaged over the other half hidden (inpainted) and
shown. Regions are never assumed independent of each other, and the values of an image add up
to `p(x) - p(everything inpainted)` for each class.

`xt.PartitionSHAP` computes shap's values (same masker, `max_evals` and batch size: equal to float
tolerance, see `tests/test_region_partition.py`), for all images and all four classes at once.
"""),
    params("""
MAX_EVALS = 300       # model evaluations per image (seed 002 used 1000; shap's default is 500)
ROUND = 50            # masked images per image and round (shap's batch_size; seed 002 used 50)
IMAGE = "chelsea"
"""),
    setup("""\
photo, x = load(IMAGE)
for name, p in top5(x)[0]:
    print(f"{p:6.3f}  {name}")"""),
    md("""
## Four classes in one call

`target=xt.TopK(4)` explains the four best classes of each image (shap's
`outputs=shap.Explanation.argsort.flip[:4]`); `normalize=` tells the inpainting how to turn the
model's input back into 8-bit pixels, which is what OpenCV inpaints.
"""),
    code("""
ps = xt.PartitionSHAP(model, masker="inpaint_telea", max_evals=MAX_EVALS, round_size=ROUND,
                      normalize=xt.zoo.NORMALIZE, seed=0)
start = time.perf_counter()
res = ps.explain(x, target=xt.TopK(4))
print(f"Partition SHAP: {time.perf_counter() - start:.1f} s, {int(res.evaluations[0])} evaluations "
      f"(max_evals {MAX_EVALS}), {res.model_calls} model calls, attributions {tuple(res.attributions.shape)}")
for j in range(4):
    total = float(res.attributions[0, j].sum())
    gap = float(res.scores[0, j] - res.base_values[0, j])
    print(f"{xt.zoo.label(int(res.targets[0, j])):<22} p = {float(res.scores[0, j]):.3f}: "
          f"sum of values {total:.4f} = p(x) - p(inpainted) = {gap:.4f}")
"""),
    md("""
## The figure: red for, blue against

Each map is the sum over the colour channels; one colour scale for all four, as shap's
`image_plot` draws them, over a grey copy of the photo.
"""),
    code("""
maps = res.attributions[0].sum(1)                       # (4, H, W)
scale = float(maps.abs().flatten().quantile(0.999))
grey = np.repeat(photo.mean(-1, keepdims=True), 3, -1) / 255.0
panels = [photo]
for m in maps:
    colour = viz.signed_colorize((m / scale).numpy()) / 255.0
    panels.append((0.3 * grey + 0.7 * colour).clip(0, 1))
show(panels, ["image", *(f"{xt.zoo.label(int(c))}" for c in res.targets[0])], size=2.0)
pos = [float(m.clamp(min=0).sum()) for m in maps]
print("positive mass per class:", [round(v, 4) for v in pos])
"""),
    md("""
The maps are coarse at this budget: the tree stops at boxes of 28 to 56 pixels, and it goes
deeper where a split changes the scores most (shap expands that node next), so the regions that
matter get finer first. Raise `MAX_EVALS` (seed 002 used 1000) for finer maps; the cost is one
forward and one inpainting per evaluation.
"""),
]


def write(names=None) -> list[Path]:
    out = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write(sys.argv[1:]):
        print("wrote", p.relative_to(HERE.parent))
