"""Every method of the course on torchvision's networks at 224 x 224: speed against Zennit and Captum, peak memory.

Speed: ``vgg16``, ``resnet18`` and ``resnet50`` with random weights (``zoo.load(name, weights=None)``, seed 0) explain
class 0 of one photo, the cat (``zoo.photos()["chelsea"]`` through ``zoo.preprocess``: 224 x 224, normalized with
the ImageNet mean and standard deviation). For each method, ours and the reference explain the same class; their maps
are first checked to agree (max |difference| / max |reference| within 1e-5 against Zennit, 1e-6 against Captum and
for the ResNets' LRP), then both are timed alternately (median of ``--repeats`` after one warm-up call each;
explainers and composites are built per call on both sides):

- LRP presets ``epsilon`` and ``epsilon_gamma_box`` (zB bounds: black and white after normalization, per channel)
  against Zennit's composites. On the ResNets, ours is timed on ``lrp.canonize(net, x)`` with the canonization
  inside the timed call (a copy of the network and two forward passes that compare its outputs), and again on a
  network canonized once before ("canonized once"); Zennit with its ``ResNetCanonizer`` (applied in each call) and
  the residual ``Sum`` in its layer map. Zennit's canonizer
  leaves every BatchNorm dividing by sqrt(1 + eps) (tests/test_lrp_resnet.py), so agreement is checked on the
  network Zennit explains (each BatchNorm's output scaled by that factor), as in the tests, and in float64: in
  float32 the two maps differ by rounding, which LRP-epsilon amplifies where a denominator is near zero (on
  resnet18, 5e-4 of the largest value with ``epsilon``, 3e-5 with ``epsilon_gamma_box``; 2e-8 and 2e-11 in float64).
- deep Taylor (zB at the input, z+ elsewhere) against Zennit's ZBox + ZPlus on a copy whose biases are 0, on vgg16
  only: on a ResNet, Zennit's residual ``Sum`` splits by the inputs' values, ours by z+ (not the same method).
- deconvnet, guided backprop and the plain gradient (saliency, absolute value) against Captum's ``Deconvolution``,
  ``GuidedBackprop`` and ``Saliency``.

The requirement is time(ours) / time(reference) <= 1.0 on every row, as on the course models.

Memory: each method of the course explains the cat with ``resnet50`` in a fresh Python process, with the settings
printed in the table. The process imports everything, loads the network and the photo (and, for LRP and deep Taylor,
canonizes nothing yet: the canonization is part of the explanation), then resets its peak resident set size
(``echo 5 > /proc/self/clear_refs``) and reads its resident set (``VmRSS``, the baseline); it runs the explanation and
reads the peak resident set size since the reset (``VmHWM``). Printed: that peak (the whole process: Python, PyTorch,
the network and the explanation) and its growth over the baseline (what the explanation adds). glibc's
``MALLOC_MMAP_THRESHOLD_`` is fixed at 64 KiB, so that freed tensors go back to the system at once and the resident
size follows the live memory. The requirement is a peak of the whole process under 2 GB (2048 MiB) for every method
at its default batch size; the rows in ``LARGER_BATCHES`` show what a larger batch costs.
Run: ``OMP_NUM_THREADS=1 python benchmarks/photos_224.py`` (``--part speed`` or ``--part memory`` for one half).
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import subprocess
import sys
import warnings

import torch
from _common import alternating_medians, relative_error
from captum.attr import Deconvolution, GuidedBackprop, Saliency
from torch import nn
from torch.nn import functional as F
from zennit import attribution as zattribution
from zennit import composites, rules, types
from zennit import torchvision as ztorchvision

from xai_course import deconvnet, deep_taylor, gradient, lrp, zoo

NETWORKS = ("vgg16", "resnet18", "resnet50")
TARGET = 0
MEMORY_LIMIT_MB = 2048


def photo(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cat as ``name`` expects it (1, 3, 224, 224), and black and white after normalization (1, 3, 1, 1)."""
    x = zoo.preprocess(name, zoo.photos()["chelsea"])
    low, high = (zoo.preprocess(name, torch.full((3, 224, 224), v))[:, :, :1, :1] for v in (0.0, 1.0))
    return x, low, high


# ----------------------------------------------------------------------------- speed


def zennit_map(model: nn.Module, x: torch.Tensor, composite) -> torch.Tensor:
    """Zennit's relevance, started from the logit of class TARGET."""
    with zattribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(torch.tensor([TARGET]), out.shape[1]).to(out))
    return relevance


def zennit_lrp(preset: str, x, low, high, resnet: bool):
    """Zennit's composite for one of our presets (with the ResNet canonizer on a ResNet)."""
    canonizers = [ztorchvision.ResNetCanonizer()] if resnet else []
    if preset == "epsilon":
        layer_map = [(nn.Conv2d, rules.Epsilon()), (nn.Linear, rules.Epsilon())] + composites.layer_map_base()
        return composites.LayerMapComposite(layer_map, canonizers=canonizers)
    return composites.EpsilonGammaBox(low=low.expand_as(x), high=high.expand_as(x), canonizers=canonizers)


def zennit_deep_taylor(x, low, high):
    """Zennit's DTD composite: ZBox on the first convolution, ZPlus on every other layer."""
    layer_map = composites.layer_map_base() + [(types.Convolution, rules.ZPlus()), (nn.Linear, rules.ZPlus())]
    first = rules.ZBox(low.expand_as(x), high.expand_as(x))
    return composites.SpecialFirstLayerMapComposite(layer_map, [(types.Convolution, first)])


def as_zennit_canonizes(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm outputs are divided once more by sqrt(1 + eps): what Zennit explains."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data /= math.sqrt(1 + m.eps)
            m.bias.data /= math.sqrt(1 + m.eps)
    return model


def captum_map(method: type, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        return method(model).attribute(x, target=TARGET)


def lrp_row(preset: str, net: nn.Module, x, low, high, resnet: bool) -> list[tuple]:
    """Ours and Zennit's LRP and the agreement check (on a ResNet: in float64, on the network Zennit explains; and a
    second row with ours on a network canonized before)."""
    def ours(model=net, x=x, low=low, high=high):
        canonical = lrp.canonize(model, x) if resnet else model
        return lrp.explain(canonical, x, TARGET, composite=preset, low=low, high=high)

    def theirs(model=net, x=x, low=low, high=high):
        return zennit_map(model, x, zennit_lrp(preset, x, low, high, resnet))

    if not resnet:
        return [(f"LRP {preset}", ours, theirs, lambda: relative_error(ours(), theirs()))]
    double = copy.deepcopy(net).double()
    x64, low64, high64 = (t.double() for t in (x, low, high))
    check = functools.cache(lambda: relative_error(ours(as_zennit_canonizes(double), x64, low64, high64),
                                                   theirs(double, x64, low64, high64)))  # fmt: skip
    canonical = lrp.canonize(net, x)  # once, as a chapter does before explaining several photos
    once = lambda: lrp.explain(canonical, x, TARGET, composite=preset, low=low, high=high)
    return [(f"LRP {preset}", ours, theirs, check), ("  canonized once", once, theirs, check)]


def cases(name: str, net: nn.Module) -> list[tuple]:
    """(row, ours, reference, the agreement check: the relative error, tolerance) for one network."""
    x, low, high = photo(name)
    resnet = name.startswith("resnet")
    rows = [(*row, 1e-6 if resnet else 1e-5) for preset in ("epsilon", "epsilon_gamma_box")
            for row in lrp_row(preset, net, x, low, high, resnet)]  # fmt: skip
    if not resnet:
        zero = deep_taylor.zero_biases(net)
        dtd = lambda: deep_taylor.explain(zero, x, TARGET, low=low, high=high)
        zennit = lambda: zennit_map(zero, x, zennit_deep_taylor(x, low, high))
        rows.append(("deep Taylor zB", dtd, zennit, lambda: relative_error(dtd(), zennit()), 1e-5))
    for label, method, rival in (("deconvnet", deconvnet.deconvnet, Deconvolution),
                                 ("guided backprop", deconvnet.guided_backprop, GuidedBackprop),
                                 ("gradient (saliency)", gradient.saliency, Saliency)):  # fmt: skip
        ours = lambda method=method: method(net, x, TARGET)
        theirs = lambda rival=rival: captum_map(rival, net, x)
        rows.append((label, ours, theirs, lambda ours=ours, theirs=theirs: relative_error(ours(), theirs()), 1e-6))
    return rows


def speed(repeats: int) -> bool:
    print(f"Speed at 224 x 224, one photo, class {TARGET}, random weights, median of {repeats} "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"{'network':9s} {'method':21s} {'ours (s)':>9s} {'reference (s)':>14s} {'ratio':>6s} {'rel. error':>11s}")
    worst = 0.0
    for name in NETWORKS:
        net = zoo.load(name, weights=None)
        for row, ours, theirs, check, tolerance in cases(name, net):
            error = check()
            assert error <= tolerance, f"{name} {row}: ours and the reference disagree ({error:.2e})"
            t_ours, t_theirs = alternating_medians(ours, theirs, repeats)
            worst = max(worst, t_ours / t_theirs)
            rival = "Zennit" if "LRP" in row or "Taylor" in row or "once" in row else "Captum"
            print(f"{name:9s} {row:21s} {t_ours:9.3f} {t_theirs:7.3f} {rival:6s} {t_ours / t_theirs:6.2f} "
                  f"{error:11.1e}", flush=True)  # fmt: skip
    print(f"largest ratio = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return worst <= 1.0


# ----------------------------------------------------------------------------- memory

METHODS = {  # method: (what it runs, the call on resnet50 ``net``, the photo ``x`` and its bounds)
    "gradient": ("saliency", "gradient.saliency(net, x, 0)"),
    "LRP": ("epsilon_gamma_box, canonized in the call",
            "lrp.explain(lrp.canonize(net, x), x, 0, composite='epsilon_gamma_box', low=low, high=high)"),
    "deep Taylor": ("zB, canonized in the call", "deep_taylor.explain(lrp.canonize(net, x), x, 0, low=low, high=high)"),
    "Deep SHAP": ("background: the 6 other photos, 2 per pass (the default)",
                  "shap.deep(net, x, 0, background=others)"),
    "Deep SHAP, 6 per pass": ("background: the 6 other photos in one pass",
                              "shap.deep(net, x, 0, background=others, batch_size=12)"),
    "Kernel SHAP": ("16 SLIC superpixels, 256 coalitions",
                    "shap.kernel(net, x, 0, segments=shap.superpixels(pixels), n_samples=256)"),
    "sliding window": ("window 28, stride 28 (64 windows)",
                       "occlusion.sliding_window(net, x, 0, window=28, stride=28)"),
    "RISE": ("128 masks (2 batches)", "occlusion.rise(net, x, 0, n_masks=128)"),
    "SIDU": ("layer1.0.conv1 (64 maps)", "occlusion.sidu(net, x, 0, layer='layer1.0.conv1')"),
    "deconvnet": ("", "deconvnet.deconvnet(net, x, 0)"),
    "guided backprop": ("", "deconvnet.guided_backprop(net, x, 0)"),
    "inversion": ("layer2, 5 Adam steps, on pixels in [0, 1]",
                  "inversion.optimize(nn.Sequential(Normalize(), net), pixels, '1.layer2', steps=5, progress=False)"),
    "Grad-CAM": ("layer4", "cam.grad_cam(net, x, 0, layer='layer4')"),
    "IG": ("50 steps, batches of 5 (the default at 224)", "gradient.integrated_gradients(net, x, 0)"),
    "IG, batches of 64": ("50 steps, batches of 64", "gradient.integrated_gradients(net, x, 0, batch_size=64)"),
    "SmoothGrad": ("50 samples, batches of 5 (the default at 224)", "gradient.smoothgrad(net, x, 0)"),
    "SmoothGrad, batches of 64": ("50 samples, batches of 64", "gradient.smoothgrad(net, x, 0, batch_size=64)"),
}  # fmt: skip
LARGER_BATCHES = {"Deep SHAP, 6 per pass", "IG, batches of 64", "SmoothGrad, batches of 64"}  # not required

CHILD = """
import torch
from torch import nn
from xai_course import cam, deconvnet, deep_taylor, gradient, inversion, lrp, occlusion, shap, zoo

def status(key):  # kB -> MiB
    return next(int(row.split()[1]) for row in open("/proc/self/status") if row.startswith(key + ":")) / 1024

net = zoo.load("resnet50", weights=None)
images = zoo.photos()
x = zoo.preprocess("resnet50", images["chelsea"])
low, high = (zoo.preprocess("resnet50", torch.full((3, 224, 224), v))[:, :, :1, :1] for v in (0.0, 1.0))
pixels = ((x - low) / (high - low)).clamp(0, 1)
others = zoo.preprocess("resnet50", [images[n] for n in images if n != "chelsea"])

class Normalize(nn.Module):  # pixels in [0, 1] -> what resnet50 reads
    def forward(self, pixels):
        return low + pixels * (high - low)

open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident set size
baseline = status("VmRSS")
result = {call}
print(status("VmHWM"), status("VmHWM") - baseline)
"""


def peak_mb(call: str) -> tuple[float, float]:
    """The peak resident set size (MiB) of a fresh process during ``call``, and its growth over the baseline."""
    code = CHILD.format(call=call)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big blocks straight back to the OS: RSS = live memory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{call} failed:\n{out.stderr[-2000:]}")
    peak, growth = out.stdout.split()[-2:]
    return float(peak), float(growth)


def memory(names) -> bool:
    assert sys.platform.startswith("linux"), "the peak resident set size is read from /proc/self/status"
    print(f"Peak memory of one explanation of the cat (224 x 224) with resnet50, random weights, a fresh process each "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"{'method':24s} {'settings':46s} {'peak (MiB)':>10s} {'growth (MiB)':>12s}")
    worst = 0.0
    for name in names:
        settings, call = METHODS[name]
        peak, growth = peak_mb(call)
        worst = worst if name in LARGER_BATCHES else max(worst, peak)
        print(f"{name:24s} {settings:46s} {peak:10.0f} {growth:12.0f}", flush=True)
    print(f"largest peak at the default batch sizes = {worst:.0f} MiB (requirement < {MEMORY_LIMIT_MB} MiB: "
          f"{'met' if worst < MEMORY_LIMIT_MB else 'NOT met'})")  # fmt: skip
    return worst < MEMORY_LIMIT_MB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "memory", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    ok = True
    if args.part in ("speed", "both"):
        ok &= speed(args.repeats)
    if args.part in ("memory", "both"):
        ok &= memory(args.methods)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
