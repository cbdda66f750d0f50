"""Tilt from long straight lines: degrees a user can read, and a confidence that says
when a photo has no upright.

Photos are turned by the benchmark's rotation (scikit-image, cropped to the inscribed
rectangle and resized back by OpenCV), which shares no code with the library's own.
"""

import fiftyone as fo
import numpy as np
import pytest
import skimage.data
from PIL import Image

import siamese_quality as sq
from siamese_quality.core.degradations import rotation
from siamese_quality.core.tilt import read_tilt


def _grey(rgb: np.ndarray, short_side: int = 256) -> np.ndarray:
    """The centre square the rotation model reads (its view: 256 px, 71 % crop)."""
    image = Image.fromarray(rgb).convert("L")
    scale = short_side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BOX)
    side = round(short_side * 0.71)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))


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


@pytest.mark.slow
def test_line_rotation_models_write_a_confidence_field(dataset_factory, tmp_path, rocket):
    """sq.train (backbone="lines", step budget, fixed seed) on real photos, sq.score on
    turned copies: the value reads the angle in degrees, and ``rotation_confidence``
    separates the photo with an upright from a texture."""
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
        "grass_+10": rotation(grass, 10.0, rng),
    }.items():
        path = str(tmp_path / f"{case}.png")
        Image.fromarray(pixels).save(path)
        dataset.add_sample(fo.Sample(filepath=path, tags=["test"], case=case))
    sq.train(
        dataset.match_tags("train"),
        task="rotation",
        backbone="lines",
        working_resolution=256,
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
    assert min(sure["rocket_+15"], sure["rocket_-8"]) > 0.6 > 0.3 > sure["grass_+10"]
    description = dataset.get_field("rotation_confidence").description
    assert "how sure" in description and "0-1" in description
