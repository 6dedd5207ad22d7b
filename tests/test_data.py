"""data: the synthetic course images, their ground truth, and the shipped-file registry."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from xai_course import data, inversion


def test_shapes_types_and_ranges():
    d = data.shapes(300, seed=1)
    assert d.images.shape == (300, 3, 64, 64) and d.images.dtype == torch.float32
    assert d.labels.shape == (300,) and d.labels.dtype == torch.int64
    assert d.masks.shape == (300, 64, 64) and d.masks.dtype == torch.bool
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    assert len(d.classes) >= 4 and set(d.labels.tolist()) == set(range(len(d.classes)))
    assert d.masks.flatten(1).any(1).all(), "every image has a class-defining shape"


def test_shapes_is_deterministic_and_prefix_stable():
    a, b = data.shapes(600, seed=3), data.shapes(600, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    short = data.shapes(10, seed=3)
    assert torch.equal(short.images, a.images[:10])
    assert not torch.equal(data.shapes(10, seed=4).images, short.images)


def _hashes(images):
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images}


def test_train_and_test_splits_share_no_image():
    train = _hashes(data.shapes(2000, split="train", seed=0).images)
    for seed in (0, 1):
        assert not train & _hashes(data.shapes(1000, split="test", seed=seed).images)


def test_masks_cover_the_shape():
    """Inside the mask the image has the shape's single colour; the mask is a solid, plausible area."""
    d = data.shapes(200, seed=5)
    area = d.masks.flatten(1).float().mean(1)
    assert (area > 0.02).all() and (area < 0.35).all()
    for image, mask in zip(d.images, d.masks):
        inner = mask.clone()
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        pixels = image[:, inner]
        assert (pixels.std(dim=1) < 0.02).all(), "interior of the mask is one flat colour"
        outside = image[:, ~mask]
        assert (outside.mean(1) - pixels.mean(1)).abs().max() > 0.05 or outside.std() > 0.05


def test_colour_does_not_predict_the_class():
    d = data.shapes(4000, seed=7)
    mean_colour = torch.stack([image[:, mask].mean(1) for image, mask in zip(d.images, d.masks)])
    per_class = torch.stack([mean_colour[d.labels == k].mean(0) for k in range(len(d.classes))])
    assert (per_class - mean_colour.mean(0)).abs().max() < 0.05


def test_clever_hans_training_data():
    d = data.shapes(3000, split="train", seed=0, clever_hans=True)
    assert d.tag_class == data.TAG_CLASS
    has_tag = d.tag_masks.flatten(1).any(1)
    tagged_share = has_tag[d.labels == d.tag_class].float().mean()
    other_share = has_tag[d.labels != d.tag_class].float().mean()
    assert abs(tagged_share - data.TAG_RATE) < 0.04 and other_share <= data.TAG_RATE_OTHERS + 0.01
    assert not (d.masks & d.tag_masks).any(), "the tag is not part of the class-defining shape"
    test = data.shapes(500, split="test", seed=0, clever_hans=True)
    assert not test.tag_masks.any(), "the test split is clean"


def test_add_tag_pastes_the_tag_on_copies():
    d = data.shapes(4, seed=0)
    original = d.images.clone()
    tagged, mask = data.add_tag(d.images)
    assert torch.equal(d.images, original)
    assert mask.shape == (4, 64, 64) and mask[0].sum() == data.TAG_SIZE**2
    assert torch.equal(tagged[:, :, ~mask[0]], original[:, :, ~mask[0]])
    assert set(tagged[:, :, mask[0]].unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="images"):
        data.add_tag(torch.rand(3, 64, 64))


def test_canonical_images_hold_every_class_and_stay_fixed():
    c = data.canonical()
    assert len(c) == 8 and set(c.labels.tolist()) == set(range(len(c.classes)))
    assert torch.equal(c.images, data.canonical().images)
    assert torch.equal(data.canonical(4).images, c.images[:4])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"n": 0}, ValueError, "n"), ({"n": 2.5}, TypeError, "n"), ({"n": 2, "split": "val"}, ValueError, "split"),
     ({"n": 2, "seed": -1}, ValueError, "seed")],
)  # fmt: skip
def test_shapes_bad_input(kwargs, error, name):
    with pytest.raises(error, match=f"{name}:"):
        data.shapes(**kwargs)


def test_verify_checks_every_shipped_file():
    names = data.verify()
    assert set(names) == set(data.manifest())
    assert {"shapes_cnn.pt", "shapes_resnet.pt", "shapes_cnn_clever_hans.pt"} <= set(names)
    assert {"timeseries_cnn.pt", "shapes_cnn_occlusion.pt", "loan_mlp.pt"} <= set(names)
    assert {f"{name}.pt" for name in [*inversion.DECODERS, *inversion.ATTACKS]} <= set(names)  # chapter 04


def test_verify_names_a_corrupt_file(tmp_path, monkeypatch):
    shutil.copytree(data.data_dir(), tmp_path / "data")
    name = sorted(data.manifest())[0]
    with open(tmp_path / "data" / name, "ab") as f:
        f.write(b"x")
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path / "data"))
    with pytest.raises(OSError, match=name):
        data.verify()
    entries = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert all(len(entry["sha256"]) == 64 and entry["command"] for entry in entries.values())


def test_ship_saves_hashes_and_records_a_file(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path))
    state = {"weight": torch.arange(6.0).view(2, 3)}
    entry = data.ship("w.pt", state, "python -m xai_course train w")
    file = tmp_path / "w.pt"
    assert entry == {
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "size": file.stat().st_size,
        "command": "python -m xai_course train w",
    }
    assert data.manifest() == {"w.pt": entry} and data.verify() == ["w.pt"]
    assert torch.equal(torch.load(data.path("w.pt"), weights_only=True)["weight"], state["weight"])
    data.ship("v.pt", {"weight": torch.zeros(1)}, "other")  # a second file joins the first
    assert sorted(data.manifest()) == ["v.pt", "w.pt"] and data.manifest()["w.pt"] == entry
    assert data.ship("w.pt", {"weight": torch.arange(6.0).view(2, 3)}, "python -m xai_course train w") == entry


def test_command_line_verify(capsys):
    from xai_course.__main__ import main

    main(["verify"])
    assert "ok  shapes_cnn.pt" in capsys.readouterr().out


def _data_folder(tmp_path, monkeypatch, manifest_text: str) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(manifest_text)
    monkeypatch.setenv("XAI_COURSE_DATA", str(folder))
    return folder


_HASH = "0" * 64


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "expected JSON"), ('["w.pt"]', "expected an object name -> entry, got a JSON list"),
     ('{"w.pt": 3}', "entry 'w.pt': expected an object"),
     ('{"w.pt": {"size": 3, "command": "c"}}', "entry 'w.pt' has no key 'sha256'"),
     (json.dumps({"w.pt": {"sha256": _HASH, "command": "c"}}), "entry 'w.pt' has no key 'size'"),
     ('{"w.pt": {"sha256": "abc", "size": 3}}', "entry 'w.pt', key 'sha256'"),
     (json.dumps({"w.pt": {"sha256": _HASH, "size": "3"}}), "entry 'w.pt', key 'size'")],
)  # fmt: skip
def test_a_broken_manifest_gets_a_value_error_that_names_it(tmp_path, monkeypatch, text, message):
    folder = _data_folder(tmp_path, monkeypatch, text)
    match = re.escape(f"manifest {folder / 'manifest.json'}") + ".*" + re.escape(message)
    for call in (data.manifest, data.verify, lambda: data.path("w.pt")):
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize(
    "name", ["../../../etc/hostname", "../outside.pt", "sub/w.pt", "sub\\w.pt", "/etc/hostname", "C:w.pt", "..",
             ".", "", "manifest.json"],
)  # fmt: skip
def test_path_and_ship_refuse_a_name_outside_the_data_folder(tmp_path, monkeypatch, name):
    """Even listed in the manifest with the true size and hash of the file it reaches, such a name is refused."""
    folder = tmp_path / "a" / "b" / "data"  # so that ../../../etc/hostname reaches tmp_path/etc/hostname
    reached = (folder / name).resolve() if name else folder
    for file in (tmp_path / "etc" / "hostname", tmp_path / "a" / "b" / "outside.pt", folder / "sub" / "w.pt"):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"not a course file")
    entries = {}
    if reached.is_file() and name != "manifest.json":
        entries[name] = {"sha256": data.sha256(reached), "size": reached.stat().st_size, "command": "c"}
    assert entries or not name.startswith("../"), "the traversal names are listed with their true hash"
    _data_folder(tmp_path / "a" / "b", monkeypatch, json.dumps(entries))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=f"name: .*got {re.escape(repr(name))}"):
        data.path(name)
    if entries:
        with pytest.raises(ValueError, match=f"name: .*got {re.escape(repr(name))}"):
            data.verify()
    with pytest.raises(ValueError, match=f"name: .*got {re.escape(repr(name))}"):
        data.ship(name, {"weight": torch.zeros(1)}, "c")
    assert sorted(tmp_path.rglob("*")) == before and data.manifest() == entries, "nothing was written"


def test_path_checks_the_size_before_the_hash(tmp_path, monkeypatch):
    folder = _data_folder(tmp_path, monkeypatch, "{}")
    data.ship("w.pt", {"weight": torch.arange(6.0)}, "python -m xai_course train w")
    file, original = folder / "w.pt", (folder / "w.pt").read_bytes()
    hashed, real_sha256 = [], data.sha256
    monkeypatch.setattr(data, "sha256", lambda path: hashed.append(path) or real_sha256(path))
    file.write_bytes(original + b"x")
    with pytest.raises(OSError, match=f"w.pt .*{len(original) + 1} bytes, the manifest says {len(original)}"):
        data.path("w.pt")
    assert hashed == [], "a wrong size is caught without reading the file"
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    file.write_bytes(bytes(flipped))
    with pytest.raises(OSError, match="w.pt .*SHA-256 .* does not match.*python -m xai_course train w"):
        data.path("w.pt")
    assert hashed == [file]
    file.write_bytes(original)
    assert data.path("w.pt") == file


def test_data_dir_takes_only_the_course_s_own_files(tmp_path, monkeypatch):
    """A ``data/manifest.json`` of another project beside the installed package is never taken."""
    monkeypatch.delenv("XAI_COURSE_DATA", raising=False)
    course = data.data_dir()
    site = tmp_path / "site-packages"
    package, foreign = site / "xai_course", site / "data"
    package.mkdir(parents=True)
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"other.pt": {"sha256": _HASH, "size": 1}}))
    monkeypatch.setattr(data, "_PACKAGE", package)
    with pytest.raises(FileNotFoundError, match=f"no manifest.json .*{re.escape(str(package / 'shipped'))}"):
        data.data_dir()
    (site / "pyproject.toml").write_text('[project]\nname = "other-project"\n')
    with pytest.raises(FileNotFoundError, match="no pyproject.toml of xai-course"):
        data.data_dir()
    (site / "pyproject.toml").write_text('[project]\nname = "xai-course"\n')  # now the package runs from a clone
    assert data.data_dir() == foreign
    shutil.copytree(course, package / "shipped")
    assert data.data_dir() == package / "shipped", "the package's own copy comes first"
    (site / "pyproject.toml").unlink()
    assert data.data_dir() == package / "shipped" and data.verify() == sorted(data.manifest())


def test_a_data_folder_set_by_the_environment_must_hold_a_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"XAI_COURSE_DATA: .*{re.escape(repr(str(tmp_path)))}"):
        data.data_dir()


# ----------------------------------------------------------------------------- installs carry the shipped files

_REPOSITORY = Path(__file__).resolve().parent.parent
_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
_OFFLINE_BUILD = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The files a build reads, copied, so that building leaves the working tree alone."""
    copy = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(_REPOSITORY / name, copy / name)
    for name in ("xai_course", "data"):
        shutil.copytree(_REPOSITORY / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _run(command: list, **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_target_install_loads_models_from_its_own_copy(source, tmp_path):
    target, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([*_PIP, "install", *_OFFLINE_BUILD, "--target", str(target), str(source)], cwd=elsewhere)
    (target / "data").mkdir()  # another project's files under the generic name, beside the package
    (target / "data" / "manifest.json").write_text("{}")
    env = {key: value for key, value in os.environ.items() if key != "XAI_COURSE_DATA"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    script = "from xai_course import data, models; models.load('shapes_cnn'); print(models.__file__, data.data_dir())"
    module, folder = map(Path, _run([sys.executable, "-c", script], cwd=elsewhere, env=env).split())
    assert module == target.resolve() / "xai_course" / "models.py"
    assert folder == target.resolve() / "xai_course" / "shipped"
    shipped = json.loads((source / "data" / "manifest.json").read_text())
    assert json.loads((folder / "manifest.json").read_text()) == shipped
    assert sorted(file.name for file in folder.iterdir()) == sorted([*shipped, "manifest.json"])


def test_the_wheel_carries_every_shipped_file_inside_the_package(source, tmp_path):
    _run([*_PIP, "wheel", *_OFFLINE_BUILD, "--wheel-dir", str(tmp_path), str(source)], cwd=tmp_path)
    (wheel,) = tmp_path.glob("xai_course-*.whl")
    shipped = json.loads((source / "data" / "manifest.json").read_text())
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert json.loads(archive.read("xai_course/shipped/manifest.json")) == shipped
        for name, entry in shipped.items():
            content = archive.read(f"xai_course/shipped/{name}")
            assert len(content) == entry["size"] and hashlib.sha256(content).hexdigest() == entry["sha256"], name
    assert {name for name in names if name.startswith("xai_course/shipped/")} == {
        f"xai_course/shipped/{name}" for name in [*shipped, "manifest.json"]
    }
    assert not [name for name in names if ".data/" in name], "nothing goes to <prefix>/share any more"


# ----------------------------------------------------------------------------- time series (chapter 03)


def test_timeseries_types_and_ground_truth():
    d = data.timeseries(400, seed=1)
    assert d.series.shape == (400, 1, data.SERIES_LENGTH) and d.series.dtype == torch.float32
    assert d.labels.shape == (400,) and d.labels.dtype == torch.int64 and d.masks.dtype == torch.bool
    assert d.classes == data.SERIES_CLASSES and set(d.labels.tolist()) == set(range(4))
    length = d.masks.sum(1)
    assert (length >= 24).all() and (length <= 40).all()
    starts = d.masks.float().diff(dim=1).eq(1).sum(1) + d.masks[:, 0]
    assert (starts == 1).all(), "the pattern is one contiguous run"
    energy = d.series[:, 0] ** 2
    inside = (energy * d.masks).sum(1) / d.masks.sum(1)
    outside = (energy * ~d.masks).sum(1) / (~d.masks).sum(1)
    assert (inside > outside).float().mean() > 0.95, "the pattern stands out of the noise"
    assert len(d[:3]) == 3 and torch.equal(d[5].series, d.series[5:6])


def _crossings(r: torch.Tensor) -> float:
    return float((r[1:] * r[:-1] < 0).sum())


def test_timeseries_classes_differ_in_shape():
    """Squares are flat, triangles peak in the middle, sine bursts oscillate evenly, chirps faster at the end."""
    d = data.timeseries(400, seed=2)
    for k, name in enumerate(d.classes):
        rows = [s[0, m] * torch.sign(s[0, m].mean()) for s, m in zip(d.series[d.labels == k], d.masks[d.labels == k])]
        early = torch.tensor([_crossings(r[: len(r) // 2]) for r in rows]).mean()
        late = torch.tensor([_crossings(r[len(r) // 2 :]) for r in rows]).mean()
        middle = torch.tensor([float(r[len(r) // 3 : 2 * len(r) // 3].mean() - r[: len(r) // 6].mean()) for r in rows])
        if name == "square":
            assert early + late < 3 and middle.abs().mean() < 0.3
        if name == "triangle":
            assert middle.mean() > 0.5
        if name == "sine":
            assert early + late > 4.5 and abs(late - early) < 1
        if name == "chirp":
            assert early + late > 4.5 and late > early + 2


def test_timeseries_is_deterministic_and_prefix_stable():
    a, b = data.timeseries(700, seed=3), data.timeseries(700, seed=3)
    assert torch.equal(a.series, b.series) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    assert torch.equal(data.timeseries(10, seed=3).series, a.series[:10])
    assert not torch.equal(data.timeseries(10, seed=4).series, a.series[:10])
    train = _hashes(data.timeseries(1000, split="train").series)
    assert not train & _hashes(data.timeseries(1000, split="test").series)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"n": 0}, ValueError, "n"), ({"n": 2, "split": "val"}, ValueError, "split"),
     ({"n": 2, "seed": 1.0}, ValueError, "seed")],
)  # fmt: skip
def test_timeseries_bad_input(kwargs, error, name):
    with pytest.raises(error, match=f"{name}:"):
        data.timeseries(**kwargs)


def test_occlude_hides_one_square_per_chosen_image():
    x = data.shapes(60, seed=0).images
    occluded, masks = data.occlude(x, p=1.0, sizes=(8, 24), values=(0.0, 0.5), seed=1)
    assert occluded.shape == x.shape and masks.shape == (60, 64, 64) and masks.dtype == torch.bool
    assert torch.equal(occluded.permute(1, 0, 2, 3)[:, ~masks], x.permute(1, 0, 2, 3)[:, ~masks])
    side = masks.any(1).sum(1)
    assert torch.equal(side, masks.any(2).sum(1)) and torch.equal(side**2, masks.sum((1, 2)))
    assert side.min() >= 8 and side.max() <= 24
    fills = {tuple(image[:, mask].unique().tolist()) for image, mask in zip(occluded, masks)}
    assert fills == {(0.0,), (0.5,)}
    again, _ = data.occlude(x, p=1.0, seed=torch.Generator().manual_seed(1))
    assert torch.equal(again, occluded)
    _, half = data.occlude(data.shapes(1000, seed=0).images, p=0.5, seed=2)
    assert abs(half.flatten(1).any(1).float().mean() - 0.5) < 0.05
    unchanged, none = data.occlude(x, p=0.0)
    assert torch.equal(unchanged, x) and not none.any()


def test_occlude_series_and_bad_input():
    s = data.timeseries(20).series
    occluded, masks = data.occlude(s, p=1.0, sizes=(10, 10), values=0.0)
    assert masks.shape == (20, 128) and (masks.sum(1) == 10).all() and (occluded[:, 0][masks] == 0).all()
    with pytest.raises(ValueError, match="p:"):
        data.occlude(s, p=1.5)
    with pytest.raises(ValueError, match="sizes:"):
        data.occlude(s, sizes=(0, 4))
    with pytest.raises(TypeError, match="x:"):
        data.occlude(s[0, 0])


# ----------------------------------------------------------------------------- loan applications (chapter 05)


def _deny_by_loop(row) -> bool:
    age, job, income, amount, duration, car = row[:6].tolist()
    none = data.LOAN_CATEGORICAL["job"][int(job)] == "none"
    no_car = data.LOAN_CATEGORICAL["car"][int(car)] == "no"
    return bool(
        (age <= 25 and none and amount > 5000)
        or amount / duration > income / 3
        or (age > 60 and duration > 48)
        or (none and no_car and amount > 8000)
    )


def test_loans_table_and_its_rule():
    d = data.loans(600, seed=1)
    assert d.features.shape == (600, len(data.LOAN_FEATURES)) and d.features.dtype == torch.float32
    assert d.labels.dtype == torch.int64 and d.noisy.dtype == torch.bool and d.classes == ("grant", "deny")
    assert d.feature_names == data.LOAN_FEATURES and set(d.categorical) == {"job", "car", "housing"}
    for name, codes in d.categorical.items():
        column = d.features[:, d.feature_names.index(name)]
        assert set(column.tolist()) == set(range(len(codes))), name
    truth = torch.tensor([_deny_by_loop(row) for row in d.features])
    assert torch.equal(data.loan_decision(d.features), truth)
    assert torch.equal(d.labels.bool(), truth ^ d.noisy)
    age, income, amount = (d.features[:, d.feature_names.index(n)] for n in ("age", "income", "amount"))
    assert age.min() >= 18 and age.max() <= 75 and amount.min() >= 500 and amount.max() <= 20000
    assert (income > 0).all() and "age <= 25 and job = none and amount > 5000" in d.rule
    assert "housing" not in d.rule and "children" not in d.rule
    assert len(d[:5]) == 5 and torch.equal(d[3].features, d.features[3:4])


def test_loans_noise_share_and_balance():
    d = data.loans(20000, "train", seed=0)
    assert abs(d.noisy.float().mean() - data.LOAN_NOISE) < 0.005
    assert 0.15 < d.labels.float().mean() < 0.5


def test_loans_is_deterministic_and_prefix_stable():
    a = data.loans(1200, seed=3)
    assert torch.equal(a.features, data.loans(1200, seed=3).features) and torch.equal(
        a.labels, data.loans(1200, seed=3).labels
    )
    assert torch.equal(data.loans(7, seed=3).features, a.features[:7])
    assert not torch.equal(data.loans(7, seed=4).features, a.features[:7])
    assert not torch.equal(data.loans(7, "train", seed=3).features, a.features[:7])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"n": 0}, ValueError, "n"), ({"n": 2, "split": "val"}, ValueError, "split"),
     ({"n": 2, "seed": -3}, ValueError, "seed")],
)  # fmt: skip
def test_loans_bad_input(kwargs, error, name):
    with pytest.raises(error, match=f"{name}:"):
        data.loans(**kwargs)


def test_occlude_seed_and_values_and_loan_decision_inputs():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="seed:"):
        data.occlude(x, seed=-1)
    with pytest.raises(TypeError, match="seed:"):
        data.occlude(x, seed=1.5)
    with pytest.raises(ValueError, match="values:"):
        data.occlude(x, values=float("nan"))
    rows = data.loans(5, seed=2).features
    assert data.loan_decision(rows[0]).item() == _deny_by_loop(rows[0])
    assert torch.equal(data.loan_decision(rows.numpy()), data.loan_decision(rows))
    with pytest.raises(ValueError, match="features:"):
        data.loan_decision(rows[:, :3])
