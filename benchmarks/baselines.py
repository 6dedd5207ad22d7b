"""The evaluation toolkit on the course model: the gradient baselines every chapter has to beat.

Usage: ``python benchmarks/baselines.py [n_images]``. Runs ``xai_course.evaluate.compare`` for the plain
gradient (saliency), the signed gradient and gradient x input on the first ``n_images`` (default 128)
of ``shapes(2000, split="test", seed=123)``, with the default settings of ``compare``, and prints the
table that the README quotes.
"""

import sys

import torch

import xai_course as xc


def main(n_images: int = 128) -> None:
    torch.manual_seed(0)
    model = xc.models.load("shapes_cnn")
    test = xc.data.shapes(2000, split="test", seed=123)[:n_images]
    methods = {
        "saliency": xc.gradient.saliency,
        "signed gradient": lambda m, x, t: xc.gradient.saliency(m, x, t, abs=False),
        "gradient x input": xc.gradient.gradient_x_input,
    }
    table = xc.evaluate.compare(methods, model, test.images, masks=test.masks, progress=False)
    print(f"shapes_cnn, {n_images} test images (seed 123), compare() defaults")
    print(table)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
