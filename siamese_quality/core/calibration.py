"""Calibration: a monotone map from a branch score to a magnitude in real units.

Shaped like a scikit-learn estimator (``fit`` / ``predict``), fitted with isotonic
regression (or a straight line, when held-out images say that generalises better)
and stored as plain lists, so it serialises to JSON (for FiftyOne run results) and
predicts with NumPy alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


class MonotoneCalibration:
    """Non-decreasing, piecewise-linear score -> magnitude map with an error band.

    ``kind="isotonic"`` follows any monotone shape; ``kind="linear"`` is a straight
    line clipped to the magnitude range, which extrapolates sensibly when the points
    are few or noisy. ``kind="auto"`` (with ``groups``) picks the one whose
    predictions for each image, fitted without that image, are closer.

    The band gives, along the curve, the 10th and 90th percentiles of the true
    magnitudes of points with similar scores: 80 % of held-out points fell inside it.
    """

    BAND_QUANTILES = (0.1, 0.9)
    KINDS = ("isotonic", "linear")

    def __init__(self):
        self.kind = "isotonic"
        self.x: list[float] = []
        self.y: list[float] = []
        self.band_x: list[float] = []
        self.band_low: list[float] = []
        self.band_high: list[float] = []

    @property
    def is_fitted(self) -> bool:
        return bool(self.x)

    def fit(
        self,
        scores: Sequence[float],
        magnitudes: Sequence[float],
        kind: str = "isotonic",
        groups: Sequence[int] | None = None,
        band_bins: int = 12,
    ) -> MonotoneCalibration:
        """Fits the curve and band to (score, true magnitude) points.

        Args:
            kind: ``"isotonic"``, ``"linear"`` or ``"auto"`` (needs ``groups``)
            groups: the source image of each point, for ``kind="auto"``
        """
        scores = np.asarray(scores, dtype=np.float64)
        magnitudes = np.asarray(magnitudes, dtype=np.float64)
        if scores.shape != magnitudes.shape or scores.size < 2:
            raise ValueError("calibration needs at least two (score, magnitude) points")
        if not (np.isfinite(scores).all() and np.isfinite(magnitudes).all()):
            raise ValueError("calibration points must be finite")
        if kind == "auto":
            kind = _best_kind(scores, magnitudes, groups)
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS} or 'auto', got {kind!r}")
        self.kind = kind
        self.x, self.y = (_isotonic_curve if kind == "isotonic" else _linear_curve)(
            scores, magnitudes
        )
        return self._fit_band(scores, magnitudes, band_bins)

    @classmethod
    def identity(
        cls,
        span: tuple[float, float],
        scores: Sequence[float],
        magnitudes: Sequence[float],
        band_bins: int = 12,
    ) -> MonotoneCalibration:
        """The map ``value = score`` over ``span``, for a reader whose score already is
        the magnitude; only the band is fitted, to (score, magnitude) points."""
        calibration = cls()
        calibration.kind = "identity"
        calibration.x = [float(span[0]), float(span[1])]
        calibration.y = list(calibration.x)
        scores = np.asarray(scores, dtype=np.float64)
        magnitudes = np.asarray(magnitudes, dtype=np.float64)
        if scores.shape != magnitudes.shape or scores.size < 1:
            raise ValueError("the band needs at least one (score, magnitude) point")
        return calibration._fit_band(scores, magnitudes, band_bins)

    def _fit_band(
        self, scores: np.ndarray, magnitudes: np.ndarray, band_bins: int
    ) -> MonotoneCalibration:
        order = np.argsort(scores)
        bins = [b for b in np.array_split(order, min(band_bins, scores.size)) if b.size]
        residual_sets = [magnitudes[b] for b in bins]
        self.band_x = [float(np.median(scores[b])) for b in bins]
        self.band_low = [float(np.quantile(r, self.BAND_QUANTILES[0])) for r in residual_sets]
        self.band_high = [float(np.quantile(r, self.BAND_QUANTILES[1])) for r in residual_sets]
        return self

    def predict(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Magnitudes for ``scores``; scores outside the fitted range are clipped to it."""
        if not self.is_fitted:
            raise RuntimeError("calibration is not fitted")
        values = np.asarray(scores, dtype=np.float64)
        if len(self.x) == 1:
            return np.full(values.shape, self.y[0])
        return np.interp(values, self.x, self.y)

    def interval(self, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The band's (low, high) magnitudes at ``scores``."""
        values = np.asarray(scores, dtype=np.float64)
        return (
            np.interp(values, self.band_x, self.band_low),
            np.interp(values, self.band_x, self.band_high),
        )

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "x": list(self.x),
            "y": list(self.y),
            "band_x": list(self.band_x),
            "band_low": list(self.band_low),
            "band_high": list(self.band_high),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MonotoneCalibration:
        calibration = cls()
        calibration.kind = data.get("kind", "isotonic")
        for key in ("x", "y", "band_x", "band_low", "band_high"):
            setattr(calibration, key, [float(v) for v in data.get(key, [])])
        if len(calibration.x) != len(calibration.y):
            raise ValueError("calibration curve has mismatched x and y")
        return calibration


def _isotonic_curve(scores: np.ndarray, magnitudes: np.ndarray) -> tuple[list, list]:
    """Centred isotonic regression (Oron & Flournoy, 2017).

    Plain isotonic regression gives a staircase whose flat steps erase the ranking
    of every score on a step; joining the *centres* of its blocks instead gives a
    strictly increasing curve with the same fit, which generalises better.
    """
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(scores, kind="stable")
    x, y = scores[order], magnitudes[order]
    fitted = IsotonicRegression(increasing=True).fit_transform(x, y)
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
    ends = np.r_[starts[1:], len(x)]
    centres = [float(x[a:b].mean()) for a, b in zip(starts, ends, strict=True)]
    values = [float(fitted[a]) for a in starts]
    return centres, values


def _linear_curve(scores: np.ndarray, magnitudes: np.ndarray) -> tuple[list, list]:
    """Least-squares line, as the two points where it meets the magnitude range."""
    low, high = float(magnitudes.min()), float(magnitudes.max())
    slope, intercept = (
        np.polyfit(scores, magnitudes, 1) if np.ptp(scores) > 0 else (0.0, float(magnitudes.mean()))
    )
    if slope <= 0:  # no increasing relation: the best monotone line is flat
        return [float(np.median(scores))], [float(magnitudes.mean())]
    return [float((low - intercept) / slope), float((high - intercept) / slope)], [low, high]


def _best_kind(scores: np.ndarray, magnitudes: np.ndarray, groups: Sequence[int] | None) -> str:
    if groups is None or np.unique(np.asarray(groups)).size < 2:
        return "isotonic"
    errors = {
        kind: np.mean(
            (cross_fitted_predictions(scores, magnitudes, groups, kind=kind) - magnitudes) ** 2
        )
        for kind in MonotoneCalibration.KINDS
    }
    return min(errors, key=errors.get)


def cross_fitted_predictions(
    scores: Sequence[float],
    magnitudes: Sequence[float],
    groups: Sequence[int],
    folds: int = 2,
    kind: str = "isotonic",
) -> np.ndarray:
    """Calibrated predictions where no point's own image took part in its calibration.

    Images (``groups``) are split into ``folds``; each fold is predicted by a
    calibration fitted on the others. This keeps calibrated metrics honest when the
    same held-out images provide both the calibration and the evaluation.
    """
    scores = np.asarray(scores, dtype=np.float64)
    magnitudes = np.asarray(magnitudes, dtype=np.float64)
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if unique.size < 2:
        return MonotoneCalibration().fit(scores, magnitudes, kind=kind).predict(scores)
    predictions = np.empty_like(scores)
    for fold in range(min(folds, unique.size)):
        held = np.isin(groups, unique[fold :: min(folds, unique.size)])
        train_groups = groups[~held] if kind == "auto" else None
        fitted = MonotoneCalibration().fit(
            scores[~held], magnitudes[~held], kind=kind, groups=train_groups
        )
        predictions[held] = fitted.predict(scores[held])
    return predictions


def correlation_metrics(
    predicted: Sequence[float], true: Sequence[float], groups: Sequence[int] | None = None
) -> dict:
    """Pearson, Spearman, mean per-image Spearman and mean absolute error.

    ``predicted`` should be in the unit of ``true`` for the MAE to mean anything.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    metrics = {
        "pearson": _safe(stats.pearsonr, predicted, true),
        "spearman": spearman(predicted, true),
        "mae": float(np.mean(np.abs(predicted - true))),
    }
    if groups is not None:
        groups = np.asarray(groups)
        per_image = [spearman(predicted[groups == g], true[groups == g]) for g in np.unique(groups)]
        metrics["per_image_spearman"] = float(np.mean(per_image))
    return metrics


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation; 0 where either side is constant or shorter than 2
    (no ranking: scipy would warn and give NaN)."""
    return _safe(stats.spearmanr, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _safe(correlation, a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or not (_varies(a) and _varies(b)):
        return 0.0
    return float(correlation(a, b)[0])


def _varies(values: np.ndarray) -> bool:
    """More than rounding apart: scipy's Pearson warns on spreads near float precision
    (a calibration that maps every score to one value, up to the last bits)."""
    return bool(np.ptp(values) > 1e-9 * max(1.0, float(np.abs(values).max())))
