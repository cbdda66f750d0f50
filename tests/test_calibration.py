"""Calibration is monotone, serialises to JSON, and its metrics mean what they say."""

import json
import warnings

import numpy as np
import pytest

from siamese_quality.core.calibration import (
    MonotoneCalibration,
    correlation_metrics,
    cross_fitted_predictions,
    spearman,
)


def _noisy_points(seed=0, n=200):
    rng = np.random.default_rng(seed)
    magnitudes = rng.uniform(0, 3, n)
    scores = np.tanh(magnitudes - 1.5) * 4 + rng.normal(0, 0.3, n)  # monotone, non-linear
    return scores, magnitudes


def test_calibration_is_monotone_and_close_on_a_nonlinear_score():
    scores, magnitudes = _noisy_points()
    calibration = MonotoneCalibration().fit(scores, magnitudes)
    grid = np.linspace(scores.min() - 1, scores.max() + 1, 500)
    predicted = calibration.predict(grid)
    assert np.all(np.diff(predicted) >= 0)
    assert np.mean(np.abs(calibration.predict(scores) - magnitudes)) < 0.35
    # outside the fitted range: clipped, never extrapolated past the seen magnitudes
    assert magnitudes.min() - 1e-9 <= predicted.min() and predicted.max() <= magnitudes.max() + 1e-9


def test_band_holds_about_its_share_of_points_it_was_not_fitted_on():
    scores, magnitudes = _noisy_points(seed=1, n=400)
    calibration = MonotoneCalibration().fit(scores, magnitudes)
    held_out_scores, held_out_magnitudes = _noisy_points(seed=11, n=2000)
    low, high = calibration.interval(held_out_scores)
    inside = np.mean((held_out_magnitudes >= low) & (held_out_magnitudes <= high))
    nominal = calibration.BAND_QUANTILES[1] - calibration.BAND_QUANTILES[0]
    assert abs(inside - nominal) < 0.1, (inside, nominal)
    assert np.all(high >= low)


def test_calibration_json_round_trip_predicts_identically():
    scores, magnitudes = _noisy_points(seed=2)
    calibration = MonotoneCalibration().fit(scores, magnitudes)
    restored = MonotoneCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    probe = np.linspace(-5, 5, 101)
    assert np.array_equal(restored.predict(probe), calibration.predict(probe))
    assert restored.interval(probe)[0].tolist() == calibration.interval(probe)[0].tolist()


def test_unfitted_or_degenerate_calibration_is_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        MonotoneCalibration().predict([1.0])
    with pytest.raises(ValueError, match="at least two"):
        MonotoneCalibration().fit([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        MonotoneCalibration().fit([1.0, np.nan], [2.0, 3.0])


def test_cross_fitting_never_lets_an_image_calibrate_itself():
    # image 0 has scores that map to magnitude 0, image 1 the same scores -> magnitude 3:
    # cross-fitting must predict each from the *other* image
    scores = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    magnitudes = np.array([0.0, 0.0, 0.0, 3.0, 3.0, 3.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    predicted = cross_fitted_predictions(scores, magnitudes, groups)
    assert np.allclose(predicted[:3], 3.0) and np.allclose(predicted[3:], 0.0)


def test_metrics_on_perfect_and_reversed_predictions():
    true = np.linspace(0, 3, 10)
    perfect = correlation_metrics(true, true, groups=np.zeros(10))
    assert perfect["pearson"] == pytest.approx(1) and perfect["spearman"] == pytest.approx(1)
    assert perfect["mae"] == 0 and perfect["per_image_spearman"] == pytest.approx(1)
    reversed_ = correlation_metrics(true[::-1], true)
    assert reversed_["spearman"] == pytest.approx(-1)
    assert correlation_metrics(np.ones(10), true)["pearson"] == 0.0  # constant: no NaN


def test_a_constant_reading_ranks_nothing_without_a_warning():
    """The demo's table and training's checkpoint choice rank fields that can be
    constant (a model trained for seconds): 0, not NaN and a scipy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spearman(np.ones(6), np.arange(6)) == 0.0
        assert spearman(np.arange(6), np.ones(6)) == 0.0
        assert spearman([1.0], [2.0]) == 0.0
        # constant up to rounding: scipy's Pearson warns that it is "nearly constant"
        nearly = np.full(6, 0.3) + np.arange(6) * 1e-17 + np.array([0, 1, 0, 1, 0, 1]) * 5e-17
        assert correlation_metrics(nearly, np.arange(6.0))["pearson"] == 0.0
    assert spearman(np.arange(6), np.arange(6) ** 2) == pytest.approx(1.0)


def test_an_identity_calibration_keeps_a_reading_in_its_unit_and_survives_saving():
    """A reader that already measures degrees: the value is the score over its whole
    span (no clipping to the magnitudes it was checked on), and only the band is fitted."""
    calibration = MonotoneCalibration.identity(
        (-45.0, 45.0), [-14.0, -2.0, 3.0, 15.0], [-15, 0, 5, 15]
    )
    restored = MonotoneCalibration.from_dict(calibration.to_dict())
    assert restored.kind == "identity"
    assert restored.predict([-30.0, 0.5, 25.0]).tolist() == [-30.0, 0.5, 25.0]
    assert restored.predict([60.0]).tolist() == [45.0]
    # the band comes from the points: the copy read -14 was turned by -15
    assert [bound[0] for bound in restored.interval([-14.0])] == [-15.0, -15.0]
