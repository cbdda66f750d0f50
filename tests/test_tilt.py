"""Tilt from long straight lines: degrees a user can read, and a confidence that says
when a photo has no upright.

Photos are turned by the benchmark's rotation (scikit-image, cropped to the inscribed
rectangle and resized back by OpenCV), which shares no code with the library's own.
"""

import fiftyone as fo
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import siamese_quality as sq
from siamese_quality.core.degradations import rotation
from siamese_quality.core.model import QualityBranch
from siamese_quality.core.tilt import read_tilt


def _centre_square(image: Image.Image, short_side: int = 256) -> Image.Image:
    """The centre square the rotation model reads (its view: 256 px, 71 % crop)."""
    scale = short_side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BOX)
    side = round(short_side * 0.71)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(_centre_square(Image.fromarray(rgb).convert("L")))


def _square(rgb: np.ndarray) -> torch.Tensor:
    """The same square in colour, (3, S, S), as the rotation model's branch takes it."""
    square = np.array(_centre_square(Image.fromarray(rgb).convert("RGB")))
    return torch.from_numpy(square).permute(2, 0, 1)


@pytest.fixture(scope="module")
def rocket() -> np.ndarray:
    return np.asarray(skimage.data.rocket())  # a launch tower: long verticals


@pytest.mark.parametrize("degrees", [-25.0, -12.0, -3.0, 0.0, 7.0, 20.0])
def test_lines_read_the_tilt_of_a_photo_with_an_upright(rocket, degrees):
    turned = rocket if degrees == 0 else rotation(rocket, degrees, np.random.default_rng(0))
    tilt, confidence = read_tilt(_grey(turned))
    assert tilt == pytest.approx(degrees, abs=1.5)
    assert confidence > 0.6


def test_a_mirrored_photo_reads_the_opposite_tilt(rocket):
    turned = _grey(rotation(rocket, 9.0, np.random.default_rng(0)))
    tilt, _ = read_tilt(turned)
    mirrored, _ = read_tilt(np.ascontiguousarray(turned[:, ::-1]))
    assert mirrored == pytest.approx(-tilt, abs=0.5)


def test_a_photo_with_no_upright_reads_low_confidence():
    """Smooth random texture (no straight structure) and an empty frame."""
    rng = np.random.default_rng(3)
    noise = rng.normal(128, 40, (46, 46)).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(noise).resize((182, 182), Image.BICUBIC))
    assert read_tilt(texture)[1] < 0.2
    assert read_tilt(np.full((182, 182), 90, np.uint8)) == (0.0, 0.0)


def test_the_default_reader_takes_the_lines_where_sure_and_the_edges_elsewhere(rocket):
    """The rocket's tower: the lines are sure, and read degrees. A photographer on a
    street (few long lines: the lines are unsure) still reads in the order of the turn,
    from the edges. Grass (nothing straight) leans toward level instead of reading an
    arbitrary angle."""
    branch = QualityBranch("lines_or_edges")
    angles = (-20.0, -10.0, 0.0, 10.0, 20.0)

    def turned(pixels: np.ndarray) -> torch.Tensor:
        rng = np.random.default_rng(0)
        return torch.stack([_square(rotation(pixels, a, rng) if a else pixels) for a in angles])

    tower = turned(np.asarray(skimage.data.rocket()))
    assert branch.score(tower).numpy() == pytest.approx(angles, abs=1.5)
    assert branch.confidence(tower).min() > 0.6
    street = turned(np.asarray(Image.fromarray(skimage.data.camera()).convert("RGB")))
    assert branch.confidence(street).max() < 0.5
    assert np.all(np.diff(branch.score(street).numpy()) > 0)
    grass = turned(np.asarray(Image.fromarray(skimage.data.grass()).convert("RGB")))
    assert np.abs(branch.score(grass).numpy()).max() < 2.0


@pytest.mark.slow
def test_default_rotation_models_read_degrees_and_write_a_confidence_field(
    dataset_factory, tmp_path, rocket
):
    """sq.train (the default reader: lines, or edges) on real photos, sq.score on
    turned copies: the value reads the angle in degrees, beyond the +-15 that trained
    rotation models learn (a fitted calibration clipped +25 to about +15), nothing
    trains, and ``rotation_confidence`` separates the photo with an upright from a
    texture."""
    dataset = dataset_factory()
    for name in ("astronaut", "coffee", "chelsea", "camera", "brick", "grass", "gravel"):
        path = str(tmp_path / f"{name}.png")
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB").save(path)
        dataset.add_sample(fo.Sample(filepath=path, tags=["train"]))
    rng = np.random.default_rng(0)
    grass = np.asarray(Image.fromarray(skimage.data.grass()).convert("RGB"))
    for case, pixels in {
        "rocket_+15": rotation(rocket, 15.0, rng),
        "rocket_-8": rotation(rocket, -8.0, rng),
        "rocket_+25": rotation(rocket, 25.0, rng),
        "grass_+10": rotation(grass, 10.0, rng),
    }.items():
        path = str(tmp_path / f"{case}.png")
        Image.fromarray(pixels).save(path)
        dataset.add_sample(fo.Sample(filepath=path, tags=["test"], case=case))
    info = sq.train(
        dataset.match_tags("train"),
        task="rotation",
        max_steps=30,
        max_seconds=None,
        seed=0,
        progress=False,
    )
    test = dataset.match_tags("test")
    sq.score(test, key="rotation", progress=False)

    read = dict(zip(*test.values(["case", "rotation"]), strict=True))
    sure = dict(zip(*test.values(["case", "rotation_confidence"]), strict=True))
    assert read["rocket_+15"] == pytest.approx(15.0, abs=2.5)
    assert read["rocket_-8"] == pytest.approx(-8.0, abs=2.5)
    assert read["rocket_+25"] == pytest.approx(25.0, abs=2.5)
    assert (info.training["steps"], info.training["stop_reason"]) == (0, "reads_units")
    assert min(sure["rocket_+15"], sure["rocket_-8"]) > 0.6 > 0.3 > sure["grass_+10"]
    description = dataset.get_field("rotation_confidence").description
    assert "how sure" in description and "0-1" in description


def test_rotation_starts_from_torchvision_weights_from_torch_cache_or_a_local_file(
    dataset_factory, tmp_path, monkeypatch
):
    """``pretrained=True`` reads torchvision's weights from torch's cache (an offline
    machine copies the file there), a path reads that file; a broken cached file says
    what to do. The weights here are a random init saved by the test."""
    import torch
    import torchvision.models as tvm

    from siamese_quality.core.model import QualityBranch
    from siamese_quality.core.pretext_model import PretextModel
    from siamese_quality.runs import run_config

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(7)
    reference = tvm.mobilenet_v3_small(weights=None).state_dict()
    url = tvm.get_model_weights("mobilenet_v3_small").DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(reference, cached)
    first_conv = next(k for k in reference if k.endswith("weight"))
    from_cache = QualityBranch("mobilenet_v3_small", pretrained=True)
    assert torch.equal(from_cache.encoder.state_dict()[first_conv], reference[first_conv])

    dataset = dataset_factory()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick"):
        path = str(tmp_path / f"{name}.png")
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
        dataset.add_sample(fo.Sample(filepath=path))
    sq.train(
        dataset,
        task="rotation",
        backbone="mobilenet_v3_small",
        pretrained=str(cached),
        max_seconds=None,
        max_steps=2,
        validation_every=1,
        images_per_batch=2,
        learning_rate=1e-4,
        progress=False,
    )
    config = run_config(dataset, "rotation")
    trained = PretextModel.load(config["weights_path"]).branch.encoder.state_dict()[first_conv]
    # two small steps from the file: near its weights, far from any other start
    other_start = tvm.mobilenet_v3_small(weights=None).state_dict()[first_conv]
    assert (trained - reference[first_conv]).abs().max() < 0.01
    assert (other_start - reference[first_conv]).abs().max() > 0.1

    cached.write_bytes(b"an interrupted download")
    with pytest.raises(RuntimeError, match="copy the file there, or pass its path"):
        QualityBranch("mobilenet_v3_small", pretrained=True)


def test_a_quarter_turn_is_not_a_tilt(rocket):
    """Tilt is read modulo 90 degrees: a portrait stored on its side (with no EXIF tag
    to turn it back) reads its small tilt, not 90 degrees; orientation is another
    question, and EXIF orientation is applied when the image is decoded."""
    turned = _grey(rotation(rocket, 7.0, np.random.default_rng(0)))
    for quarter_turns in (1, 3):
        tilt, confidence = read_tilt(np.ascontiguousarray(np.rot90(turned, quarter_turns)))
        assert tilt == pytest.approx(7.0, abs=1.5)
        assert confidence > 0.6


def test_the_edge_histogram_applies_the_sobel_taps_its_files_hold():
    """Gradients are sliced for speed; they must be what the saved taps say."""
    from siamese_quality.core.model import OrientationHistogramNet, _sobel

    image = torch.from_numpy(np.asarray(skimage.data.camera(), dtype=np.float32))[None, None]
    taps = OrientationHistogramNet().sobel
    expected = torch.nn.functional.conv2d(image, taps)
    assert torch.allclose(_sobel(image), expected, atol=1e-3)
