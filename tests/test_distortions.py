"""Each distortion does what its description says, by a measure independent of its code."""

import cv2
import numpy as np
import pytest
import torch

from siamese_quality.core import distortions as D
from siamese_quality.core.baselines import wavelet_noise_sigma
from siamese_quality.core.pairs import render
from siamese_quality.core.views import WholeView


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photo at 128 x 128, mid-toned, as a uint8 (3, H, W) tensor."""
    import skimage.data

    from siamese_quality.core.images import load_image

    image = load_image(skimage.data.astronaut(), 128).float()
    return (image * 0.5 + 64).round().to(torch.uint8)  # V well inside (0, 255): no clipping


def _gray(image: torch.Tensor) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2GRAY)


def _strictly_increasing(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("name", D.list_distortions())
def test_identity_magnitude_returns_the_image_unchanged(name, photo):
    distortion = D.get_distortion(name)
    assert torch.equal(distortion.apply(photo, distortion.identity), photo)
    assert torch.equal(distortion.alternative(photo, distortion.identity), photo)


@pytest.mark.parametrize("name", D.list_distortions())
def test_outputs_are_uint8_images_of_the_same_shape(name, photo):
    distortion = D.get_distortion(name)
    for magnitude in (distortion.low, distortion.high):
        for apply in (distortion.apply, distortion.alternative):
            out = apply(photo, magnitude)
            assert out.dtype == torch.uint8 and out.shape == photo.shape


@pytest.mark.parametrize("name", D.list_distortions())
def test_the_alternative_implementation_is_the_same_distortion(name, photo):
    """Reference and alternative differ far less than either differs from the original."""
    distortion = D.get_distortion(name)
    magnitude = distortion.identity + 0.6 * (
        (distortion.high if distortion.identity < distortion.high else distortion.low)
        - distortion.identity
    )
    if name == "pixelation":  # fractional block grids are implementation-defined
        magnitude = 4.0
    reference = distortion.apply(photo, magnitude).float()
    alternative = distortion.alternative(photo, magnitude).float()
    between = (reference - alternative).abs().mean()
    change = (reference - photo.float()).abs().mean()
    if name == "noise":  # independent noise draws: compare the noise level instead
        assert abs((reference - photo.float()).std() - (alternative - photo.float()).std()) < 1
    else:
        assert between < 0.35 * change, (float(between), float(change))


def test_blur_lowers_laplacian_variance_monotonically(photo):
    variances = [
        cv2.Laplacian(_gray(D.gaussian_blur(photo, s)), cv2.CV_64F).var()
        for s in np.linspace(0, 3, 7)
    ]
    assert _strictly_increasing(variances[::-1])


def test_brightness_is_exposure_in_stops_as_a_camera_applies_it(photo):
    """A stop halves or doubles linear light (sRGB's 2.2 gamma), keeps the hue, clips
    only at white; the independent lookup-table implementation agrees."""
    linear = (photo.float() / 255) ** D.SRGB_GAMMA
    unclipped = linear.amax(0) < 0.4  # stays below white when doubled
    for stops in (-1.0, 1.0):
        moved = (D.exposure(photo, stops).float() / 255) ** D.SRGB_GAMMA
        ratio = moved.sum(0)[unclipped].sum() / linear.sum(0)[unclipped].sum()
        assert ratio == pytest.approx(2.0**stops, rel=0.03), stops
        difference = D.exposure(photo, stops).int() - D.exposure_lookup(photo, stops).int()
        assert difference.abs().max() <= 1, stops
    pixel = linear[:, 64, 64]
    darker = (D.exposure(photo, -1.0)[:, 64, 64].float() / 255) ** D.SRGB_GAMMA
    assert torch.allclose(darker / darker.sum(), pixel / pixel.sum(), atol=0.02)
    # over-exposure clips at white; under-exposure darkens every tone, none to black
    assert (D.exposure(photo, 2.0) == 255).float().mean() > 0.05
    assert D.exposure(photo, -2.0).amin() > 0 and D.exposure(photo, -2.0).amax() < 200


def test_noise_has_the_requested_sigma_and_raises_a_noise_estimate(photo):
    for sigma in (5.0, 10.0, 20.0):
        residual = D.gaussian_noise(photo, sigma).float() - photo.float()
        assert abs(float(residual.std()) - sigma) < 0.05 * sigma + 0.3  # mid-tones: no clipping
    smooth = D.gaussian_blur(photo, 2.0)
    estimates = [wavelet_noise_sigma(D.gaussian_noise(smooth, s)) for s in (0, 5, 10, 20, 40)]
    assert _strictly_increasing(estimates)


def test_rotation_angle_is_recovered_by_correlation_search(photo):
    """Rotate with our code; find the angle by rotating the original with OpenCV."""
    crop = D.get_distortion("rotation").input_crop
    size = round(128 * crop)
    lo = (128 - size) // 2

    def centre(a):
        return a[lo : lo + size, lo : lo + size].astype(np.float64).ravel()

    gray = _gray(photo)
    for angle in (-12.0, -4.5, 3.0, 10.0):
        target = centre(_gray(D.rotate(photo, angle)))
        candidates = np.arange(-15, 15.01, 0.25)
        scores = []
        for phi in candidates:
            matrix = cv2.getRotationMatrix2D((63.5, 63.5), phi, 1.0)
            turned = cv2.warpAffine(gray, matrix, (128, 128), flags=cv2.INTER_LINEAR)
            scores.append(np.corrcoef(centre(turned), target)[0, 1])
        assert abs(candidates[int(np.argmax(scores))] - angle) <= 1.0


def test_rotation_leaves_no_empty_corner_in_what_the_model_sees():
    white = torch.full((3, 256, 256), 255, dtype=torch.uint8)
    distortion = D.get_distortion("rotation")
    for angle in (distortion.low, -7.0, 7.0, distortion.high):
        seen = render(white, distortion, angle, WholeView(128, 2, distortion.input_crop))
        assert seen.shape[-1] == round(128 * distortion.input_crop)
        assert int(seen.min()) >= 250, angle


def test_a_flip_after_rotation_negates_the_angle(photo):
    """Why augmentation flips the source before distorting it: the label must not change."""
    flipped_then_rotated = D.rotate(photo.flip(-1), 8.0).float()
    rotated_then_flipped = D.rotate(photo, -8.0).flip(-1).float()
    wrong_sign = D.rotate(photo, 8.0).flip(-1).float()
    inner = slice(20, 108)
    close = (flipped_then_rotated - rotated_then_flipped)[:, inner, inner].abs().mean()
    far = (flipped_then_rotated - wrong_sign)[:, inner, inner].abs().mean()
    assert close < 2 and far > 10 * close


def test_jpeg_error_grows_as_quality_drops(photo):
    errors = [
        (D.jpeg_compress(photo, q).float() - photo.float()).pow(2).mean()
        for q in (95, 70, 40, 15, 5)
    ]
    assert _strictly_increasing(errors)


def test_contrast_scales_the_grey_level_spread(photo):
    spreads = [_gray(D.contrast(photo, f)).std() for f in (0.3, 0.6, 1.0, 1.3)]
    assert _strictly_increasing(spreads)
    assert abs(spreads[1] / spreads[2] - 0.6) < 0.05


def test_pixelation_makes_blocks_of_the_given_size(photo):
    out = D.pixelate(photo, 8.0)
    blocks = out.reshape(3, 16, 8, 16, 8)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))
    shares = [
        (np.diff(_gray(D.pixelate(photo, f)).astype(int), axis=1) == 0).mean() for f in (1, 2, 4, 8)
    ]
    assert _strictly_increasing(shares)


def test_a_user_distortion_registers_in_a_few_lines(photo):
    def invert_partly(image, amount):
        return (image.float() * (1 - amount) + (255 - image.float()) * amount).round().byte()

    custom = D.Distortion(
        name="test_invert",
        apply=invert_partly,
        unit="fraction",
        low=0.0,
        high=1.0,
        identity=0.0,
        description="partial inversion",
    )
    try:
        D.register_distortion(custom)
        assert D.get_distortion("test_invert") is custom
        assert "test_invert" in D.list_distortions()
        with pytest.raises(ValueError, match="already registered"):
            D.register_distortion(custom)
        assert custom.to_dict()["module"] == __name__  # where other processes find it
        invert_partly.__module__ = "__main__"  # as defined in a script or notebook
        with pytest.warns(UserWarning, match="only this process can use it"):
            D.register_distortion(custom, overwrite=True)
    finally:
        D._REGISTRY.pop("test_invert", None)


def test_a_distortion_with_an_unknown_calibration_kind_is_refused_naming_it():
    with pytest.raises(ValueError, match="calibration_kind must be 'auto', 'isotonic' or"):
        D.Distortion(
            name="fade",
            apply=lambda image, amount: image,
            unit="fraction",
            low=0.0,
            high=1.0,
            identity=0.0,
            description="faded",
            calibration_kind="spline",
        )


def test_unknown_task_names_the_available_ones():
    with pytest.raises(ValueError, match="Unknown task 'sharpness'.*blur"):
        D.get_distortion("sharpness")


@pytest.mark.parametrize("name", D.list_distortions())
def test_descriptions_are_json_ready(name):
    import json

    info = D.get_distortion(name).to_dict()
    assert json.loads(json.dumps(info)) == info
    assert info["low"] <= info["identity"] <= info["high"]
