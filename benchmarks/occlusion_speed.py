"""Speed and memory of ``occlusion.sliding_window`` and ``occlusion.rise`` on the course model.

Sliding window: ours and Captum's ``Occlusion`` explain the predicted class of ``--images`` canonical images with
ShapesCNN (window 8, stride 4, value 0, i.e. ``sliding_window_shapes=(3, 8, 8)``, ``strides=(3, 4, 4)``,
``baselines=0``), both evaluating ``--batch-size`` occluded images per forward pass (Captum's
``perturbations_per_eval``); the maps are first checked to agree (max |difference| / max |Captum| below 1e-5),
then both are timed alternately (median of ``--repeats``), and Captum again with its default
``perturbations_per_eval=1``. Requirement: time(ours) / time(Captum's faster setting) <= 1.0.

RISE: ``rise`` with ``--masks`` masks (grid 8, p 0.5) on one canonical image, against ``--masks`` plain forward
passes of the model on the same image in batches of the same size under ``torch.no_grad()``, with contiguous and
with channels-last inputs (``rise`` feeds channels-last batches, which run faster on a CPU). Requirement:
time(rise) / time(the faster forward passes) <= 1.25.

Memory: each measurement runs in a fresh Python process, which first warms up (loads the model, runs ``rise``
with 1024 masks), then reads its peak resident set size (``VmHWM`` in ``/proc/self/status``; ``ru_maxrss`` would
keep the parent's peak across fork and exec), runs ``rise`` with N masks and reads it again; the growth of the
peak is what N masks cost. glibc's ``MALLOC_MMAP_THRESHOLD_`` is fixed at 64 KiB in these processes, so that
freed tensors go back to the system at once and the resident size follows the live memory instead of the
allocator's adaptive caching. RISE's memory must not grow with N (1000 vs 8000). As a
check that the measurement sees PyTorch's CPU allocations (which ``tracemalloc`` does not), the same is done
for holding all N masks at once (``rise_masks``), which must grow by about N x 64 x 64 x 4 bytes.
Run: ``OMP_NUM_THREADS=1 python benchmarks/occlusion_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
from _common import alternating_medians, course_model
from captum.attr import Occlusion

from xai_course import data, occlusion
from xai_course.core import batch_slices

MEMORY_MASKS = (1000, 8000)


def sliding_window_benchmark(model, args) -> None:
    x = data.canonical(args.images).images
    target = model(x).argmax(1)
    captum = Occlusion(model)

    def run_captum(per_eval: int = args.batch_size) -> torch.Tensor:
        return captum.attribute(
            x, target=target, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.0,
            perturbations_per_eval=per_eval,
        )  # fmt: skip

    run_ours = lambda: occlusion.sliding_window(model, x, target, window=8, stride=4, batch_size=args.batch_size)
    reference = run_captum()
    error = ((run_ours() - reference).abs().max() / reference.abs().max()).item()
    ours, batched = alternating_medians(run_ours, run_captum, args.repeats)
    _, default = alternating_medians(run_ours, lambda: run_captum(1), args.repeats)
    theirs = min(batched, default)
    windows = len(occlusion.window_starts(64, 8, 4)) ** 2
    print(f"Sliding window, {len(x)} images x {windows} windows, batch {args.batch_size}")
    print(f"  max |ours - Captum| / max |Captum| = {error:.2e} (< 1e-5)")
    print(
        f"  time ours {ours:.3f} s, Captum Occlusion {batched:.3f} s with perturbations_per_eval={args.batch_size}, "
        f"{default:.3f} s with its default 1; ratio to the faster {ours / theirs:.3f} (<= 1.0)"
    )


def rise_benchmark(model, args) -> None:
    x = data.canonical(1).images
    run_rise = lambda: occlusion.rise(model, x, n_masks=args.masks, batch_size=args.batch_size)

    def forward_passes(memory_format: torch.memory_format):
        @torch.no_grad()
        def run() -> None:
            for part in batch_slices(args.masks, args.batch_size):
                model(x.expand(part.stop - part.start, -1, -1, -1).contiguous(memory_format=memory_format))

        return run

    run_plain, run_last = forward_passes(torch.contiguous_format), forward_passes(torch.channels_last)
    run_rise(), run_plain(), run_last()
    ours, plain = alternating_medians(run_rise, run_plain, args.repeats)
    _, last = alternating_medians(run_rise, run_last, args.repeats)
    print(f"RISE, {args.masks} masks on one image, batch {args.batch_size}")
    print(
        f"  time rise {ours:.3f} s; {args.masks} plain forward passes {plain:.3f} s (channels-last inputs, as rise "
        f"uses: {last:.3f} s); ratio to the faster {ours / min(plain, last):.3f} (<= 1.25)"
    )


CHILD = """
import sys, torch
sys.path.insert(0, {benchmarks!r})
from _common import course_model
from xai_course import data, occlusion

def peak_mb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over fork and exec)
    line = next(row for row in open("/proc/self/status") if row.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

torch.set_num_threads(1)
model, x = course_model(), data.canonical(1).images
occlusion.rise(model, x, n_masks=1024, batch_size={batch_size})  # warm-up: the allocator settles, caches fill
before = peak_mb()
if {mode!r} == "rise":
    occlusion.rise(model, x, n_masks={n}, batch_size={batch_size})
else:
    masks = occlusion.rise_masks((64, 64), {n})
print(peak_mb() - before)
"""


def peak_growth_mb(mode: str, n: int, batch_size: int) -> float:
    """Growth of the peak RSS (MB) of a fresh process when it runs ``mode`` with ``n`` masks."""
    code = CHILD.format(benchmarks=sys.path[0], mode=mode, n=n, batch_size=batch_size)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big blocks straight back to the OS: RSS = live memory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def memory_benchmark(args) -> None:
    assert sys.platform.startswith("linux"), "the peak RSS is read from /proc/self/status"
    rise = [peak_growth_mb("rise", n, args.batch_size) for n in MEMORY_MASKS]
    held = [peak_growth_mb("all masks", n, args.batch_size) for n in MEMORY_MASKS]
    expected = [n * 64 * 64 * 4 / 2**20 for n in MEMORY_MASKS]
    print(f"Peak memory growth over a warmed-up process (VmHWM), n_masks {MEMORY_MASKS[0]} vs {MEMORY_MASKS[1]}")
    print(f"  rise: {rise[0]:.1f} MB vs {rise[1]:.1f} MB (must not grow)")
    print(
        f"  check, all masks held at once: {held[0]:.1f} MB vs {held[1]:.1f} MB "
        f"(expected about {expected[0]:.0f} and {expected[1]:.0f} MB, less what fits under the warm-up's peak)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--masks", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=occlusion.BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    model = course_model()
    sliding_window_benchmark(model, args)
    rise_benchmark(model, args)
    memory_benchmark(args)


if __name__ == "__main__":
    main()
