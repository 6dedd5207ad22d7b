"""How noisy RISE is, with the paper's estimator and with the control variate, and what that does to chapter 08.

Noise/contrast of a map (``occlusion.noise_to_contrast``): the root mean square of its standard errors about the
map's mean (``rise(..., return_error=True)``, from the spread of the masks' terms) over the standard deviation of
the true map over the pixels (the estimate's, less the part the noise adds). Both estimators have the same
expectation, S_c = E[P_c(x * M) M] / p.

1. ``--seeds`` seeds on the four canonical images: the standard error against the spread of the maps across seeds
   (the slow, obvious reference), and the ratio itself against the one computed from the seeds.
2. Noise/contrast at 300, 1000 and 4000 masks, paper against control variate, on ``shapes_cnn`` (black and mean
   fill), ``shapes_resnet``, ``shapes_cnn_clever_hans`` and a random-weight ShapesCNN (mean fill): the mean and the
   largest over the four images, the masks a ratio of 0.1 would take (the ratio falls like 1 / sqrt(N)) and the
   seconds per image that costs at the measured speed.
3. Chapter 08's scores of RISE (control variate, mean fill, seeds 0 to 2) against the budget, next to the sliding
   window's and the paper's estimator at 300 masks (chapter 08 before issue 21): AOPC and rank accuracy on the
   four canonical images (8 steps, as the chapter).
4. Exact coverage: masks drawn in groups of B sharing one shift, in which every grid cell is kept exactly p B times,
   so that every pixel is covered exactly p of the time (each mask still has RISE's distribution, so the paper's
   estimator keeps its expectation; its standard error comes from the groups' means). Against the control variate
   on ordinary masks, at 1000 and 4000 masks, on ``shapes_cnn`` and ``shapes_resnet`` (mean fill).

Run: ``OMP_NUM_THREADS=1 python benchmarks/rise_noise.py`` (about ten minutes on one idle core).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from xai_course import data, evaluate, models, occlusion
from xai_course.core import baseline_like

BUDGETS = (300, 1000, 4000)


def maps_at(model, x, baseline, budgets, seed, control_variate):
    """RISE maps and standard errors (image, H, W) of images x at each budget, from one pass of max(budgets) masks."""
    fill = baseline_like(x, baseline)
    target = model(x).argmax(1).tolist()
    scores = [occlusion.rise_scores(model, x_n, f_n, t, max(budgets), 8, 0.5, seed, 64) for x_n, f_n, t in
              zip(x, fill, target)]  # fmt: skip
    out = {}
    for n in budgets:
        pairs = [occlusion.rise_map(s[:n], x.shape[2:], 8, 0.5, seed, control_variate, 256) for s in scores]
        out[n] = tuple(torch.stack(m) for m in zip(*pairs))
    return out


def check_against_seeds(model, x, seeds: int) -> None:
    print(f"1. standard error against the spread across {seeds} seeds (shapes_cnn, mean fill, four images)")
    for control_variate in (False, True):
        runs = [maps_at(model, x, "mean", (300, 1000), s, control_variate) for s in range(seeds)]
        for n in (300, 1000):
            maps = torch.stack([r[n][0] for r in runs])  # seed, image, H, W
            errors = torch.stack([r[n][1] for r in runs])
            about_mean = maps - maps.mean((2, 3), keepdim=True)
            spread = about_mean.std(0).pow(2).mean((1, 2)).sqrt()
            truth = about_mean.mean(0).pow(2).mean((1, 2)) - spread.pow(2) / seeds
            from_seeds = spread / truth.sqrt()
            estimated = torch.stack([occlusion.noise_to_contrast(m, e) for m, e in zip(maps, errors)]).median(0)[0]
            ratio = errors.pow(2).mean((0, 2, 3)).sqrt() / spread
            name = "control variate" if control_variate else "paper"
            print(f"   {name:15s} N = {n:4d}: standard error / spread {fmt(ratio)};  noise/contrast from the seeds "
                  f"{fmt(from_seeds)}, estimated (median over seeds) {fmt(estimated)}")  # fmt: skip


def fmt(values: torch.Tensor) -> str:
    return " ".join(f"{v:.2f}" for v in values.tolist())


def noise_table(x) -> None:
    torch.manual_seed(0)
    settings = [
        ("shapes_cnn", models.load("shapes_cnn"), 0.0),
        ("shapes_cnn", models.load("shapes_cnn"), "mean"),
        ("shapes_resnet", models.load("shapes_resnet"), "mean"),
        ("shapes_cnn_clever_hans", models.load("shapes_cnn_clever_hans"), "mean"),
        ("random-weight ShapesCNN", models.ShapesCNN().eval(), "mean"),
    ]
    print("\n2. noise/contrast on the four canonical images: mean (largest); masks for 0.1 and seconds per image")
    print("| model | fill | estimator | 300 | 1000 | 4000 | masks for 0.1 | s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model, baseline in settings:
        start = time.perf_counter()
        maps = maps_at(model, x, baseline, BUDGETS, 0, False)
        seconds_per_mask = (time.perf_counter() - start) / (len(x) * max(BUDGETS))
        with_cv = maps_at(model, x, baseline, BUDGETS, 0, True)
        for estimator, m in (("paper", maps), ("control variate", with_cv)):
            ratios = {n: occlusion.noise_to_contrast(*m[n]) for n in BUDGETS}
            needed = max(BUDGETS) * (ratios[max(BUDGETS)].max().item() / 0.1) ** 2
            cells = " | ".join(f"{r.mean():.2f} ({r.max():.2f})" for r in ratios.values())
            fill = "black" if baseline == 0.0 else baseline
            print(f"| {name} | {fill} | {estimator} | {cells} | {needed:,.0f} | {needed * seconds_per_mask:.0f} |")


def chapter_08_scores(x, masks) -> None:
    model = models.load("shapes_cnn")
    budgets = (300, 1000, 2000, 4000, 8000)
    print("\n3. chapter 08's scores of RISE (control variate, mean fill) against the budget, seeds 0, 1, 2")
    window = evaluate.compare({"window": lambda m, x, t: occlusion.sliding_window(m, x, t, baseline="mean")},
                              model, x, masks=masks, steps=8, progress=False)  # fmt: skip
    w = [r for r in window if r.method == "window"][0]
    print(f"   sliding window (mean fill): AOPC {w.aopc:.2f}, rank accuracy {w.rank_accuracy:.3f}")
    runs = [maps_at(model, x, "mean", budgets, seed, True) for seed in range(3)]
    paper = [maps_at(model, x, "mean", (300,), seed, False) for seed in range(3)]
    for n, label in [(300, "paper, N =  300")] + [(n, f"N = {n:4d}") for n in budgets]:
        aopc, rank, noise = [], [], []
        for run in paper if label.startswith("paper") else runs:
            saliency, error = run[n]
            shown = saliency[:, None].expand_as(x).float()
            table = evaluate.compare({"rise": lambda m, x, t, a=shown: a}, model, x, masks=masks, steps=8,
                                     progress=False)  # fmt: skip
            row = [r for r in table if r.method == "rise"][0]
            aopc.append(row.aopc)
            rank.append(row.rank_accuracy)
            noise.append(occlusion.noise_to_contrast(saliency, error).mean().item())
        print(f"   {label}: noise/contrast (mean of the images) {fmt(torch.tensor(noise))};  AOPC "
              f"{fmt(torch.tensor(aopc))};  rank accuracy {' '.join(f'{r:.3f}' for r in rank)}")  # fmt: skip


def balanced_masks(size, n: int, group: int, p: float, seed: int, grid: int = 8) -> torch.Tensor:
    """n RISE masks in groups of ``group`` that share one shift and keep every grid cell exactly p * group times."""
    g = torch.Generator().manual_seed(seed)
    cells = tuple(math.ceil(s / grid) for s in size)
    n_groups = math.ceil(n / group)
    column = (torch.arange(group) < round(p * group)).float()  # p * group ones, shuffled per cell and group
    grids = column[torch.rand(n_groups, group, grid * grid, generator=g).argsort(1)].view(-1, grid, grid)[:n]
    shifts = (torch.rand(n_groups, len(size), generator=g) * torch.tensor(cells)).long()
    shifts = shifts.repeat_interleave(group, 0)[:n]
    return occlusion.resize(grids, size, up=tuple((grid + 1) * c for c in cells), shifts=shifts)


def exact_coverage(x) -> None:
    print("\n4. exact coverage (groups of B masks) against the control variate: noise/contrast, mean (largest) of 4")
    print("| model | masks | control variate | paper, exact coverage B = 2 | paper, exact coverage B = 8 |")
    print("|---|---|---|---|---|")
    for name in ("shapes_cnn", "shapes_resnet"):
        model = models.load(name)
        fill, target = baseline_like(x, "mean"), model(x).argmax(1)
        ordinary = maps_at(model, x, "mean", (1000, 4000), 0, True)
        cells = {}
        for group in (2, 8):
            masks = balanced_masks(x.shape[2:], 4000, group, 0.5, 0)
            for n in (1000, 4000):
                maps, errors = [], []
                for x_n, f_n, t in zip(x, fill, target.tolist()):
                    m = masks[:n, None]
                    scores = torch.cat([model(f_n + m[i : i + 250] * (x_n - f_n)).softmax(1)[:, t]
                                        for i in range(0, n, 250)]).double()  # fmt: skip
                    terms = (scores[:, None, None] * masks[:n].double() / 0.5).view(n // group, group, -1).mean(1)
                    about_mean = terms - terms.mean(1, keepdim=True)
                    maps.append(terms.mean(0).view(x.shape[2:]))
                    errors.append((about_mean.std(0) / math.sqrt(n // group)).view(x.shape[2:]))
                cells[group, n] = occlusion.noise_to_contrast(torch.stack(maps), torch.stack(errors))
        for n in (1000, 4000):
            row = [occlusion.noise_to_contrast(*ordinary[n]), cells[2, n], cells[8, n]]
            print(f"| {name} | {n} | " + " | ".join(f"{r.mean():.2f} ({r.max():.2f})" for r in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    four = data.canonical()[:4]
    check_against_seeds(models.load("shapes_cnn"), four.images, args.seeds)
    noise_table(four.images)
    chapter_08_scores(four.images, four.masks)
    exact_coverage(four.images)


if __name__ == "__main__":
    main()
