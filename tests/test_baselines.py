"""Classical baselines measure their distortion: the bar each benchmark row compares with."""

import numpy as np
import pytest
import skimage.data
from scipy.stats import spearmanr

from siamese_quality.baselines import BASELINES, rms_contrast, tonal_range
from siamese_quality.distortions import get_distortion
from siamese_quality.images import load_image


@pytest.mark.parametrize("task", sorted(BASELINES))
def test_each_classical_baseline_rises_with_its_distortions_magnitude(task):
    """The bar in every benchmark row is only fair if the baseline measures its distortion."""
    distortion = get_distortion(task)
    photo = load_image(skimage.data.coffee(), 128)
    magnitudes = np.linspace(distortion.low, distortion.high, 7)
    measured = [BASELINES[task].measure(distortion.apply(photo, m)) for m in magnitudes]
    assert spearmanr(measured, magnitudes)[0] > 0.9, measured


def test_tonal_range_tells_a_flattened_photo_from_a_naturally_flat_one():
    """Why contrast's baseline is the tonal range: RMS contrast mostly measures the scene."""
    contrast = get_distortion("contrast")
    flattened = contrast.apply(load_image(skimage.data.astronaut(), 128), 0.65)
    untouched_flat_scene = load_image(skimage.data.chelsea(), 128)
    assert tonal_range(flattened) < tonal_range(untouched_flat_scene)
    assert rms_contrast(flattened) > rms_contrast(untouched_flat_scene)
