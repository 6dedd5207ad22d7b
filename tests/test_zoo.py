"""zoo: torchvision's networks with random weights (seeded), the cached-weights path and the offline error without
any network (nothing is downloaded: a download attempt fails the test), preprocessing against torchvision's own
transforms, the class names and scikit-image's photographs."""

import io
import socket
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from xai_course import zoo


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty TORCH_HOME, and any download attempt an error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def download(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return tmp_path


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet50"])
def test_random_weights_in_eval_mode(name):
    model = zoo.load(name, weights=None)
    assert isinstance(model, nn.Module) and not any(m.training for m in model.modules())
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_random_weights_are_seeded_and_leave_the_global_random_state():
    state = torch.random.get_rng_state()
    first, again, other = (zoo.load("resnet18", weights=None, seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


def test_cached_weights_are_loaded_without_the_network(no_download, monkeypatch):
    """A state dict saved under the file name torchvision expects, in the cache of a temporary TORCH_HOME."""
    path = zoo.weights_file("resnet18")
    assert path.is_relative_to(no_download) and path.name == "resnet18-f37072fd.pth"
    saved = zoo.load("resnet18", weights=None, seed=3).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(saved, path)

    def connect(*args, **kwargs):
        raise AssertionError("connected although the weights are cached")

    monkeypatch.setattr(socket, "create_connection", connect)
    model = zoo.load("resnet18")
    assert not model.training
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("failure", ["refused", "hangs"])
def test_offline_without_cached_weights_a_clear_error_within_seconds(no_download, monkeypatch, failure):
    def connect(address, timeout=None):
        if failure == "hangs":  # a network that swallows packets, or a name lookup that never returns
            time.sleep(30)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(zoo, "CONNECT_TIMEOUT", 1.0)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="not in torch's cache") as error:
        zoo.load("resnet50")
    assert time.perf_counter() - start < 3.0
    message = str(error.value)
    assert str(zoo.weights_file("resnet50")) in message and "resnet50-11ad3fa6.pth" in message
    assert "Connect to the internet" in message and "weights=None" in message
    assert ("within 1 s" if failure == "hangs" else "Name or service not known") in message


def test_preprocess_is_the_weights_own_transform():
    g = torch.Generator().manual_seed(0)
    image, batch = torch.rand(3, 300, 400, generator=g), torch.rand(2, 3, 240, 240, generator=g)
    transform = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    got = zoo.preprocess("resnet50", image)
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    torch.testing.assert_close(got[0], transform(image))
    torch.testing.assert_close(zoo.preprocess("resnet50", batch), transform(batch))
    torch.testing.assert_close(zoo.preprocess("resnet50", image, weights=None), got)  # random weights: DEFAULT's
    v1 = zoo.preprocess("resnet50", image, weights="IMAGENET1K_V1")  # resized to 256 before the crop, not 232
    torch.testing.assert_close(v1[0], torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()(image))
    assert not torch.allclose(v1, got)
    listed = zoo.preprocess("vgg16", [image, batch[0]])
    assert listed.shape == (2, 3, 224, 224)
    grey = zoo.preprocess("resnet18", torch.full((3, 50, 60), 0.5))  # normalized per channel: (0.5 - mean) / std
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(grey[0, :, 100, 100], expected)


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), TypeError, "images: expected a float tensor"),
        (torch.rand(1, 8, 8), ValueError, r"images: expected a float tensor \(3, H, W\)"),
        (torch.rand(3, 8, 8) * 255, ValueError, r"got values in \[.*\]"),
        ([torch.rand(3, 8, 8), torch.rand(4, 8, 8)], ValueError, "item 1"),
        ([], ValueError, "at least one image"),
        ("astronaut.png", TypeError, "images: expected"),
    ],
)
def test_preprocess_errors_name_the_argument(images, error, match):
    with pytest.raises(error, match=match):
        zoo.preprocess("resnet18", images)


def test_name_and_weights_errors():
    with pytest.raises(ValueError, match="name: expected a torchvision image classifier .* got str 'resnet'"):
        zoo.load("resnet", weights=None)
    with pytest.raises(ValueError, match=r"weights: expected None or one of \['IMAGENET1K_V1', 'IMAGENET1K_V2', "):
        zoo.load("resnet50", weights="IMAGENET")
    with pytest.raises(TypeError, match="weights: expected"):
        zoo.load("resnet50", weights=torchvision.models.VGG16_Weights.DEFAULT)
    with pytest.raises(TypeError, match="seed"):
        zoo.load("resnet18", weights=None, seed=1.5)


def test_categories_offline(no_download):
    names = zoo.categories("resnet50")
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby"
    assert names == zoo.categories("vgg16", None) == zoo.categories("resnet18", "IMAGENET1K_V1")


def test_photos():
    photos = zoo.photos()
    assert {"astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera"} <= set(photos)
    for name, image in photos.items():
        assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3, name
        assert image.is_contiguous() and 0 <= image.min() < image.max() <= 1, name
    assert photos["astronaut"].shape == (3, 512, 512)
    assert torch.equal(photos["camera"][0], photos["camera"][2])  # greyscale, repeated
    assert not torch.equal(photos["chelsea"][0], photos["chelsea"][2])
    model = zoo.load("resnet18", weights=None)
    with torch.no_grad():
        assert model(zoo.preprocess("resnet18", list(photos.values()))).shape == (len(photos), 1000)


def _encoded(image: torch.Tensor, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, format=fmt)
    return buffer.getvalue()


def test_decode_gives_back_an_encoded_png_exactly():
    image = torch.randint(0, 256, (3, 20, 30)).float() / 255
    for data in (_encoded(image, "PNG"), bytearray(_encoded(image, "PNG")), memoryview(_encoded(image, "PNG"))):
        decoded = zoo.decode(data)
        assert decoded.dtype == torch.float32 and torch.equal(decoded, image)  # PNG is lossless, k / 255 exactly


def test_decode_makes_greyscale_and_transparent_images_rgb():
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 128))
    for picture in (grey, rgba):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        decoded = zoo.decode(buffer.getvalue())
        assert decoded.shape == (3, picture.height, picture.width)
        if picture.mode == "L":  # grey repeated on the three channels
            assert torch.equal(decoded * 255, torch.tensor(np.asarray(picture)).float().expand(3, -1, -1))
        else:  # alpha dropped, colour kept
            assert torch.equal(decoded[:, 0, 0] * 255, torch.tensor([10.0, 20.0, 30.0]))


def test_decode_refuses_what_is_not_an_image_with_a_clear_message():
    with pytest.raises(ValueError, match="expected an image file that Pillow can read, got 13 bytes"):
        zoo.decode(b"not an image!")
    truncated = _encoded(torch.rand(3, 32, 32), "PNG")[:60]
    with pytest.raises(ValueError, match="Pillow can read"):
        zoo.decode(truncated)
    with pytest.raises(ValueError, match="1 to 100 bytes, got 0 bytes"):
        zoo.decode(b"", max_bytes=100)
    with pytest.raises(ValueError, match="1 to 100 bytes, got 101 bytes"):
        zoo.decode(bytes(101), max_bytes=100)
    with pytest.raises(TypeError, match="data: expected the bytes of an image file"):
        zoo.decode("photo.png")
