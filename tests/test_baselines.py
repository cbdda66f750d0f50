"""Classical baselines measure their distortion: the bar each benchmark row compares with."""

import numpy as np
import pytest
import skimage.data
from scipy.stats import spearmanr

from siamese_quality.core.baselines import rms_contrast, tonal_reach
from siamese_quality.core.distortions import get_distortion, list_distortions
from siamese_quality.core.images import load_image


@pytest.mark.parametrize("task", [t for t in list_distortions() if get_distortion(t).baseline])
def test_each_classical_baseline_rises_with_its_distortions_magnitude(task):
    """The bar in every benchmark row is only fair if the baseline measures its distortion."""
    distortion = get_distortion(task)
    photo = load_image(skimage.data.coffee(), 128)
    magnitudes = np.linspace(distortion.low, distortion.high, 7)
    measured = [distortion.baseline.measure(distortion.apply(photo, m)) for m in magnitudes]
    assert spearmanr(measured, magnitudes)[0] > 0.9, measured


def test_tonal_reach_tells_a_flattened_photo_from_a_naturally_flat_one():
    """Why contrast's baseline reads the tones' ends: RMS contrast mostly measures the scene."""
    contrast = get_distortion("contrast")
    flattened = contrast.apply(load_image(skimage.data.astronaut(), 128), 0.65)
    untouched_flat_scene = load_image(skimage.data.chelsea(), 128)
    assert tonal_reach(flattened) < tonal_reach(untouched_flat_scene)
    assert rms_contrast(flattened) > rms_contrast(untouched_flat_scene)


@pytest.mark.parametrize("factor", [0.4, 0.7])
def test_tonal_reach_reads_the_factor_of_a_photo_whose_tones_reach_black_or_white(factor):
    """Flattening about the mean grey scales each end's distance from it by the factor."""
    contrast = get_distortion("contrast")
    photo = load_image(skimage.data.coffee(), 256)
    assert tonal_reach(photo) > 0.95
    assert tonal_reach(contrast.apply(photo, factor)) == pytest.approx(factor, abs=0.03)
