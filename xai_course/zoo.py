"""Pretrained ImageNet networks from torchvision, and real photographs to explain with them.

``load(name)`` returns torchvision's network (``vgg16``, ``resnet18``, ``resnet50`` or any other of its image
classifiers) through torchvision's own weights API: the weights' file lives in torch's cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), is downloaded there on first use
and found there afterwards. Before a download, a connection to the server is tried for at most
``CONNECT_TIMEOUT`` seconds, so that a machine without internet gets a clear ``ConnectionError`` saying what to do
instead of a hang. ``weights=None`` gives torchvision's random initialization, seeded. ``preprocess`` applies the
weights' own transforms (resize, centre crop to 224 x 224, ImageNet normalization), ``categories`` returns the 1000
class names stored with the weights (no download), ``photos`` the colour photographs that ship with
scikit-image, and ``decode`` a student's own photo from the bytes of its file. Introduced in chapter 09.
"""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from .core import check_seed, describe

if TYPE_CHECKING:  # torchvision is imported where it is used: importing it takes seconds, only chapter 09 needs it
    from torchvision.models import WeightsEnum

CONNECT_TIMEOUT = 5.0  # seconds to wait for the weights' server before giving up
MAX_BYTES = 10_000_000  # the largest file decode accepts
PHOTOS = {  # scikit-image's photographs: the colour ones, and the cameraman (grey, repeated on three channels)
    "astronaut": skdata.astronaut,
    "chelsea": skdata.chelsea,
    "coffee": skdata.coffee,
    "rocket": skdata.rocket,
    "motorcycle": lambda: skdata.stereo_motorcycle()[0],
    "hubble_deep_field": skdata.hubble_deep_field,
    "camera": skdata.camera,
}


def _check_name(name) -> str:
    import torchvision

    models = torchvision.models.list_models(module=torchvision.models)
    if name not in models:
        raise ValueError(f"name: expected a torchvision image classifier such as 'vgg16', 'resnet18' or 'resnet50' "
                         f"(torchvision.models.list_models(torchvision.models)), got {describe(name)}")  # fmt: skip
    return name


def _weights(name: str, weights="DEFAULT") -> WeightsEnum:
    """torchvision's weights ``weights`` ("DEFAULT", a name such as "IMAGENET1K_V1", or the enum member) of ``name``;
    None (random weights) stands for "DEFAULT", whose transforms and class names apply as well."""
    import torchvision

    available = torchvision.models.get_model_weights(_check_name(name))
    names = list(available.__members__)
    if weights is None:
        return available.DEFAULT
    if isinstance(weights, available):
        return weights
    if isinstance(weights, str) and weights in names:
        return available[weights]
    expected = f"None or one of {names} (or a {available.__name__} member) for {name}"
    if isinstance(weights, str):
        raise ValueError(f"weights: expected {expected}, got {weights!r}")
    raise TypeError(f"weights: expected {expected}, got {describe(weights)}")


def weights_file(name: str, weights="DEFAULT") -> Path:
    """Where torch's cache keeps the file of ``weights`` for ``name`` (it may not exist yet). Chapter 09."""
    url = _weights(name, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _unreachable(url: str, timeout: float) -> str | None:
    """None if the server of ``url`` accepts a connection within ``timeout`` seconds, else why not. The attempt
    runs in a thread of its own, so that a name lookup that hangs cannot hold up the caller either."""
    host, outcome = urlparse(url).hostname, []

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer from {host} within {timeout:g} s"


def load(name: str, weights="DEFAULT", *, seed: int = 0) -> nn.Module:
    """torchvision's network ``name`` ("vgg16", "resnet18", "resnet50", ...) in eval mode.

    ``weights``: "DEFAULT" (the best ImageNet weights torchvision has), a name such as "IMAGENET1K_V1", read from
    torch's cache (``weights_file``) or downloaded into it; or None for random weights, torchvision's
    initialization drawn after ``torch.manual_seed(seed)`` (the caller's random state is restored afterwards).
    Raises ``ConnectionError`` within about ``CONNECT_TIMEOUT`` seconds if the file is not cached and its server
    cannot be reached. Chapter 09.
    """
    import torchvision

    if weights is None:
        seed = check_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torchvision.models.get_model(_check_name(name), weights=None).eval()
    chosen, path = _weights(name, weights), weights_file(name, weights)
    problem = None if path.exists() else _unreachable(chosen.url, CONNECT_TIMEOUT)
    if problem:
        size = chosen.meta.get("_file_size")
        raise ConnectionError(
            f"weights: {chosen} of {name} are not in torch's cache ({path}) and cannot be downloaded ({problem}). "
            f"Connect to the internet and call again (torchvision saves the file there"
            f"{f', {size:.0f} MB' if size else ''}), or copy {path.name} from {chosen.url} into {path.parent}, "
            "or pass weights=None for random weights."
        )
    return torchvision.models.get_model(name, weights=chosen).eval()


def _check_image(image, what: str) -> torch.Tensor:
    expected = "a float tensor (3, H, W) or (N, 3, H, W) with values in [0, 1], or a list of (3, H, W) tensors"
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError(f"images: expected {expected}, got {what}{describe(image)}")
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"images: expected {expected}, got {what}{describe(image)}")
    if image.numel() and not (image.min() >= 0 and image.max() <= 1):
        low, high = image.min().item(), image.max().item()
        raise ValueError(f"images: expected {expected}, got {what}values in [{low:.3g}, {high:.3g}]")
    return image


def preprocess(name: str, images, weights="DEFAULT") -> torch.Tensor:
    """``images`` as the network ``name`` with ``weights`` expects them: the weights' own transforms (resize, centre
    crop to 224 x 224, normalization with the ImageNet mean and standard deviation).

    ``images``: a float tensor (3, H, W) or (N, 3, H, W) with values in [0, 1], or a list of (3, H, W) tensors of
    any sizes. ``weights`` as in ``load``; None (random weights) takes the transforms of "DEFAULT". Returns a
    float32 batch (N, 3, 224, 224). Chapter 09.
    """
    transform = _weights(name, weights).transforms()
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images: expected at least one image, got an empty list")
        checked = [_check_image(image, f"item {i}: ") for i, image in enumerate(images)]
        if any(image.ndim != 3 for image in checked):
            raise ValueError("images: expected a list of (3, H, W) tensors, got a batched item")
        return torch.stack([transform(image) for image in checked])
    images = _check_image(images, "")
    return transform(images if images.ndim == 4 else images[None])


def categories(name: str, weights="DEFAULT") -> list[str]:
    """The class names stored with ``weights`` of ``name`` (1000 ImageNet classes; None: those of "DEFAULT"),
    without downloading anything. Chapter 09."""
    return list(_weights(name, weights).meta["categories"])


def photos() -> dict[str, torch.Tensor]:
    """scikit-image's photographs (``PHOTOS``) as float tensors (3, H, W) in [0, 1]: astronaut, chelsea (a cat),
    coffee, rocket, motorcycle (the left view of its stereo pair), hubble_deep_field, and the greyscale cameraman
    repeated on three channels. Left out: the other greyscale images (coins, moon, text, textures), the microscopy
    and retina images, and the synthetic ones. Chapter 09."""
    result = {}
    for name, read in PHOTOS.items():
        image = torch.from_numpy(np.asarray(read())).float() / 255
        result[name] = image[None].repeat(3, 1, 1) if image.ndim == 2 else image.permute(2, 0, 1).contiguous()
    return result


def decode(data: bytes, max_bytes: int = MAX_BYTES) -> torch.Tensor:
    """The image file ``data`` (JPEG, PNG, anything Pillow reads) as floats (3, H, W) in [0, 1].

    Greyscale, palette and transparent images become RGB. Raises ``ValueError`` with a message for
    the student if ``data`` is empty, larger than ``max_bytes`` or not an image Pillow can read.
    Chapter 09.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected the bytes of an image file, got {describe(data)}")
    data = bytes(data)
    if not 0 < len(data) <= max_bytes:
        expected = f"an image file of 1 to {max_bytes:,} bytes"
        raise ValueError(f"data: expected {expected}, got {len(data):,} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as error:  # UnidentifiedImageError: an OSError
        problem = f"got {len(data):,} bytes it cannot read: {error}"
        raise ValueError(f"data: expected an image file that Pillow can read, {problem}") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
