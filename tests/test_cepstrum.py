"""Camera shake, defocus and round blur are read from the whole image's spectrum, in
stored pixels.

Shakes, defocus disks, Gaussian blur and noise are made here with OpenCV and NumPy
(anti-aliased kernels, not the library's code) on real photos from scikit-image, at
their own resolution.
"""

import math

import cv2
import fiftyone as fo
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import siamese_quality as sq
from siamese_quality.core.cepstrum import (
    EDGE_WEIGHT,
    MOST_OVER_EDGES,
    NO_DEFOCUS,
    NO_SHAKE,
    TILE,
    combined_width,
    read_spectral_blur,
)
from siamese_quality.core.defaults import load_default_model
from siamese_quality.core.views import PatchView, view_from_dict


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))


def _shaken(photo: np.ndarray, length: float, degrees: float) -> np.ndarray:
    """``photo`` blurred along a straight line of ``length`` px at ``degrees`` (counter-
    clockwise from the rows), drawn at 8x and area-reduced."""
    size = 2 * math.ceil(length / 2) + 3
    big = np.zeros((size * 8, size * 8), np.float32)
    centre, angle = size * 4, math.radians(degrees)
    dx, dy = math.cos(angle) * length * 4, -math.sin(angle) * length * 4
    ends = [(int((centre - dx) * 16), int((centre - dy) * 16))]
    ends.append((int((centre + dx) * 16), int((centre + dy) * 16)))
    cv2.line(big, *ends, 1.0, 8, lineType=cv2.LINE_AA, shift=4)
    kernel = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.filter2D(photo, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _defocused(photo: np.ndarray, radius: float) -> np.ndarray:
    """``photo`` blurred by an anti-aliased disk of ``radius`` px."""
    size = 2 * math.ceil(radius) + 3
    big = np.zeros((size * 8, size * 8), np.float32)
    cv2.circle(big, (size * 4 * 16, size * 4 * 16), int(radius * 8 * 16), 1.0, -1, cv2.LINE_AA, 4)
    kernel = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.filter2D(photo, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1)  # a writable copy


@pytest.mark.parametrize("length, degrees", [(6, 30), (12, 120), (20, 75)])
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_a_camera_shake_reads_its_length_and_direction(name, length, degrees):
    shake = read_spectral_blur(_tensor(_shaken(_photo(name), length, degrees))).shake
    # the anti-aliased line spans about a pixel more than its length
    assert length <= shake.length <= length * 1.15 + 1, shake
    assert abs((shake.angle - degrees + 90) % 180 - 90) <= 6, shake
    assert shake.sigma == pytest.approx(shake.length / math.sqrt(12))


@pytest.mark.parametrize("radius", [2, 4, 8])
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_a_defocus_disk_reads_its_diameter(name, radius):
    found = read_spectral_blur(_tensor(_defocused(_photo(name), radius)))
    assert found.defocus.diameter == pytest.approx(2 * radius, abs=1), found
    # the shake reading may find the ring too, a little wider: 0.56 of the radius
    assert found.sigma == pytest.approx(radius / 2, rel=0.15), found


def test_sharp_and_jpeg_photos_show_nothing_and_round_blur_reads_under_its_sigma():
    photo = _photo("astronaut")
    copies = {"sharp": photo}
    for quality in (10, 30):  # JPEG's 8-px block grid dips along both axes: not a shake
        ok, data = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        copies[f"jpeg {quality}"] = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    found = {name: read_spectral_blur(_tensor(pixels)) for name, pixels in copies.items()}
    assert all((r.shake, r.defocus) == (NO_SHAKE, NO_DEFOCUS) for r in found.values()), found
    # nor a round blur to speak of: JPEG's lost high frequencies sit in its 8-px blocks
    assert all(reading.round_blur < 0.6 for reading in found.values()), found
    # a Gaussian's spectrum has no zeros: at most a ring where it meets the quantisation
    # floor, read as half its width, so the edges (which read about sigma) decide
    for sigma in (1, 2, 3, 4, 6):
        round_blur = read_spectral_blur(_tensor(cv2.GaussianBlur(photo, (0, 0), sigma)))
        assert round_blur.sigma <= 0.6 * sigma, (sigma, round_blur)


@pytest.mark.parametrize("sigma", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_a_gaussian_blur_reads_its_sigma_from_the_power_spectrum(name, sigma):
    found = read_spectral_blur(_tensor(cv2.GaussianBlur(_photo(name), (0, 0), sigma)))
    # the curvature less two standard errors of it: a little under, never over
    assert 0.8 * sigma <= found.round_blur <= 1.05 * sigma, found


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "rocket"])
def test_noise_does_not_read_as_round_blur(name):
    photo, rng = _photo(name), np.random.default_rng(0)
    for sigma in (8, 16, 32, 48):  # heavy noise leaves few bins above the floor
        noisy = np.clip(photo + rng.normal(0, sigma, photo.shape), 0, 255).astype(np.uint8)
        assert read_spectral_blur(_tensor(noisy)).round_blur < 1.0, sigma


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_a_pixelated_photo_reads_no_shake_ring_or_round_blur(name):
    # integer blocks, as a downscale by a whole factor and a nearest-neighbour upscale
    # make them: the lattice dips at many points in many directions (before the test of
    # a shake's one direction and the ring's median, blocks of 2-8 px read 2.5-13 px)
    photo = _photo(name)
    height, width = photo.shape[:2]
    for block in (2, 3, 4, 6, 8):
        small = cv2.resize(photo, (width // block, height // block), interpolation=cv2.INTER_AREA)
        pixels = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
        found = read_spectral_blur(_tensor(pixels))
        assert (found.shake, found.defocus) == (NO_SHAKE, NO_DEFOCUS), (block, found)
        assert found.round_blur < 1.0, (block, found)


def test_an_image_smaller_than_a_tile_reads_nothing():
    small = _shaken(_photo("astronaut"), 12, 30)[: TILE - 1]
    found = read_spectral_blur(_tensor(small))
    assert found.sigma == 0.0 and found.round_blur is None
    assert found.widths[0] == 0.0 and math.isnan(found.widths[1])


def test_the_field_takes_the_spectrum_where_it_reads_and_the_edges_elsewhere():
    edges = np.array([2.0, 2.0, 2.0, 0.5, 2.0])
    # (cepstrum, round blur): nothing; a round blur; a long shake; a lattice under
    # crisp edges; an image under a tile (round blur not read)
    spectral = np.array([[0, 0.3], [0, 3.0], [4.5, 0.4], [6.0, 0], [0, np.nan]])
    combined = combined_width(edges, spectral)
    expected = [EDGE_WEIGHT * 2, 3.0, 4.5, MOST_OVER_EDGES * 0.5, 2.0]
    assert np.allclose(combined, expected), combined
    # a view of bundled models v4 (readers 1) combines as it did: edges and cepstrum
    assert np.allclose(combined_width(edges, spectral, readers=1), [2, 2, 4.5, 2.5, 2])


def test_models_of_views_without_spectral_blur_keep_their_values():
    # model files written before views read the cepstrum lack the key: they read as before
    old = {"kind": "patches", "size": 64, "count": 16, "quantile": 0.05, "min_structure": 3.0}
    assert view_from_dict(old) == PatchView(64, 16, 0.05, 3.0, spectral_blur=0)
    # bundled models v4 stored True: the cepstrum alone
    assert view_from_dict({**old, "spectral_blur": True}).spectral_blur == 1
    # and models that differ only there share one prepared copy of the patches
    assert PatchView(spectral_blur=2).pixels == PatchView().pixels


def test_shaken_and_defocused_photos_read_at_least_that_wide_in_the_blur_field(
    dataset_factory, tmp_path
):
    photo = _photo("coffee")  # kept out of the bundled models' training
    dataset = dataset_factory()
    cases = {"sharp": photo, "shake 16 px": _shaken(photo, 16, 150)}
    cases["defocus 6 px"] = _defocused(photo, 6)
    height, width = photo.shape[:2]
    small = cv2.resize(photo, (width // 8, height // 8), interpolation=cv2.INTER_AREA)
    cases["blocks of 8 px"] = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    for case, pixels in cases.items():
        path = str(tmp_path / f"{case}.png")
        Image.fromarray(pixels).save(path)
        dataset.add_sample(fo.Sample(filepath=path, case=case))
    assert load_default_model("blur").reads_spectral_blur
    sq.assess(dataset, tasks=["blur"], progress=False)
    blur = dict(zip(*dataset.values(["case", "blur"]), strict=True))
    assert blur["shake 16 px"] >= 16 / math.sqrt(12) > 2 * blur["sharp"], blur
    assert blur["defocus 6 px"] >= 6 / 2 - 0.25 > 2 * blur["sharp"], blur
    # a block lattice dips at many points in many directions: neither a shake (one
    # direction) nor a ring (all round a radius); it read 8.3 px before that was told
    blocks = read_spectral_blur(_tensor(cases["blocks of 8 px"]))
    assert (blocks.shake, blocks.defocus) == (NO_SHAKE, NO_DEFOCUS), blocks
    assert blur["blocks of 8 px"] < 8 / math.sqrt(12) < blur["shake 16 px"], blur
    # the SDK's single-image path reads the same
    values, _ = load_default_model("blur").score_images(dataset.values("filepath"))
    assert np.allclose(values, dataset.values("blur"), atol=1e-6)
