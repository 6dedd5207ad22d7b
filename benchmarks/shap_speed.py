"""Speed and accuracy of ``shap.kernel`` against shap's KernelExplainer, and ``shap.deep`` against Captum.

Kernel SHAP: both explain the predicted class of ``--images`` canonical images with ShapesCNN on a regular
grid of ``--segments`` superpixels with the mean-colour baseline and ``--samples`` coalitions. KernelExplainer
calls its value function f once with all the coalitions; f masks them all at once (vectorised, as ours) and
runs the model under no_grad, either on all of them in one call (KernelExplainer as shipped, which has no
batch size) or in batches of ``--batch-size`` (the workaround users write themselves, shap issue #1977, and the
batch size ours uses). Error = max |phi - phi_exact| per image (exact by enumeration), averaged over ``--seeds``
seeds and the images; KernelExplainer runs with its default ``l1_reg`` (feature selection down to 10) and, for
the error only, also with ``l1_reg=False`` (its plain regression; ours samples and estimates differently, see
``kernel_shap_accuracy.py``, which measures the errors at small budgets). Requirements: time(kernel) /
time(KernelExplainer as shipped) <= 0.5 and error(kernel) <= error(KernelExplainer). The ratio to the
user-batched f is printed too: both then run the same forward passes, and ours gain only from the channels-last
layout.

Deep SHAP: ``shap.deep`` and Captum's DeepLiftShap with the same ``--background`` rows on the same images.
Requirement: time(deep) / time(DeepLiftShap) <= 1.0. (Captum's values on the raw ShapesCNN are wrong where a
MaxPool2d follows a ReLU; tests/test_shap.py checks agreement on the same function with a 1x1 identity
convolution in between.) Run: ``OMP_NUM_THREADS=1 python benchmarks/shap_speed.py``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import shap as shap_library
import torch
from _common import alternating_medians
from captum.attr import DeepLiftShap

from xai_course import data, models, shap

SHAP_DEFAULT_L1_REG = "num_features(10)"  # KernelExplainer.shap_values' default in shap 0.54


def shap_kernel_explainer(model, image, segments, target, n_samples, batch_size, seed, l1_reg) -> np.ndarray:
    """shap's KernelExplainer on the segments: background = all off, explained point = all on.

    ``batch_size=None``: f runs the model once on all the coalitions it is given."""
    baseline = image.mean(dim=(1, 2), keepdim=True).expand_as(image)

    @torch.no_grad()
    def f(z: np.ndarray) -> np.ndarray:
        z, step = torch.from_numpy(z > 0.5), batch_size or len(z)
        out = []
        for start in range(0, len(z), step):
            keep = z[start : start + step][:, segments].unsqueeze(1)
            out.append(model(torch.where(keep, image, baseline))[:, target])
        return torch.cat(out).double().numpy()

    m = int(segments.max()) + 1
    np.random.seed(seed)
    explainer = shap_library.KernelExplainer(f, np.zeros((1, m)))
    return np.asarray(explainer.shap_values(np.ones((1, m)), nsamples=n_samples, silent=True, l1_reg=l1_reg))[0]


def kernel_one_image(model, x, s, t, args) -> tuple[float, ...]:
    """Errors vs exact (mean over seeds) of ours, shap's (its default l1_reg and none), and median times of
    ours, shap as shipped and shap with a batched f."""
    _, exact = shap.exact(model, x, t, segments=s, return_values=True)
    ours = lambda seed: shap.kernel(model, x, t, segments=s, n_samples=args.samples, seed=seed, return_values=True)[1]
    theirs = lambda seed, l1_reg, batch_size=args.batch_size: shap_kernel_explainer(
        model, x, s, t, args.samples, batch_size, seed, l1_reg
    )
    errors = [np.mean([(ours(seed) - exact).abs().max().item() for seed in range(args.seeds)])]
    for l1_reg in (SHAP_DEFAULT_L1_REG, False):
        errors.append(np.mean([np.abs(theirs(seed, l1_reg) - exact.numpy()).max() for seed in range(args.seeds)]))
    run_shipped, run_batched = lambda: theirs(0, SHAP_DEFAULT_L1_REG, None), lambda: theirs(0, SHAP_DEFAULT_L1_REG)
    ours_time, shipped = alternating_medians(lambda: ours(0), run_shipped, args.repeats)
    _, batched = alternating_medians(lambda: ours(0), run_batched, args.repeats)
    return (*errors, ours_time, shipped, batched)


def kernel_benchmark(args) -> None:
    model = models.load("shapes_cnn")
    images = data.canonical(args.images).images
    segments = shap.superpixels(images, n_segments=args.segments, method="grid")
    targets = model(images).argmax(1).tolist()
    rows = np.array([kernel_one_image(model, x, s, t, args) for x, s, t in zip(images, segments, targets)])
    ours_error, default_error, plain_error = rows[:, :3].mean(0)
    ours_time, shipped, batched = rows[:, 3:].sum(0)
    print(f"Kernel SHAP, M = {int(segments.max()) + 1} grid segments, {args.samples} samples, {len(images)} images")
    print(f"  error vs exact (mean max |phi - exact|, ours <= shap): ours {ours_error:.4g}, shap {default_error:.4g}")
    print(f"  (shap with l1_reg={SHAP_DEFAULT_L1_REG!r}, its default; with l1_reg=False: {plain_error:.4g})")
    print(f"  time ours {ours_time:.3f} s; shap KernelExplainer as shipped (f runs the model once on all coalitions)")
    print(f"  {shipped:.3f} s, ratio {ours_time / shipped:.3f} (<= 0.5); with f batched by the user like ours")
    print(f"  ({args.batch_size} images per call) {batched:.3f} s, ratio {ours_time / batched:.3f}")


def deep_benchmark(args) -> None:
    model = models.load("shapes_cnn")
    x = data.canonical(args.images).images
    background = data.shapes(args.background, split="train", seed=1).images
    target = model(x).argmax(1)
    captum = DeepLiftShap(model)
    run_ours = lambda: shap.deep(model, x, target, background=background)
    run_captum = lambda: captum.attribute(x, baselines=background, target=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = alternating_medians(run_ours, run_captum, args.repeats)
    print(f"Deep SHAP, {len(x)} images, {len(background)} background rows")
    print(f"  time ours {ours:.3f} s, Captum DeepLiftShap {theirs:.3f} s, ratio {ours / theirs:.3f} (<= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--background", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=shap.BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    kernel_benchmark(args)
    deep_benchmark(args)


if __name__ == "__main__":
    main()
