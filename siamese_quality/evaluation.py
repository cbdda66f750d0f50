"""Held-out evaluation: images x a grid of known magnitudes -> points -> metrics.

The same points give the calibration curve, the correlation charts and the
comparison with the classical baseline, all JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .baselines import get_baseline
from .calibration import MonotoneCalibration, correlation_metrics, cross_fitted_predictions
from .distortions import Distortion
from .pairs import render

# Correlation between model output and true magnitude reported by the public write-up
# of this method (under 100 training photos): the bar our models must clear
PUBLISHED_CORRELATIONS = {"blur": 0.955, "brightness": 0.775, "rotation": 0.37}


def magnitude_grid(distortion: Distortion, count: int = 9) -> np.ndarray:
    """``count`` evenly spaced magnitudes covering the distortion's range."""
    return np.linspace(distortion.low, distortion.high, count)


@dataclass
class EvaluationSet:
    """Distorted copies of held-out images with their true magnitudes."""

    images: torch.Tensor  # uint8 (N, 3, r, r), as the model sees them
    magnitudes: np.ndarray  # (N,)
    groups: np.ndarray  # (N,) index of the source image


def render_evaluation_set(
    sources: Sequence[torch.Tensor],
    distortion: Distortion,
    working_resolution: int,
    magnitudes: Sequence[float],
    implementation: str = "reference",
) -> EvaluationSet:
    """Every source at every magnitude.

    Args:
        sources: uint8 squares at ``working_resolution * distortion.supersample``
        implementation: ``"reference"`` or ``"alternative"`` (see :func:`pairs.render`)
    """
    images, true, groups = [], [], []
    for index, source in enumerate(sources):
        for m in magnitudes:
            images.append(render(source, distortion, m, working_resolution, implementation))
            true.append(float(m))
            groups.append(index)
    return EvaluationSet(torch.stack(images), np.asarray(true), np.asarray(groups))


def score_metrics(
    scores: np.ndarray, evaluation: EvaluationSet, calibration: MonotoneCalibration | None = None
) -> tuple[dict, np.ndarray]:
    """Metrics of raw ``scores`` against the true magnitudes, and the predictions used.

    Spearman (pooled and mean per image) is computed on the raw scores: a monotone
    calibration cannot improve a ranking, only flatten it. Pearson and MAE use
    calibrated predictions: from
    ``calibration`` when given (fitted on other images), else cross-fitted across
    the held-out images so no image calibrates its own prediction.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if calibration is not None:
        predicted = calibration.predict(scores)
    else:
        predicted = cross_fitted_predictions(
            scores, evaluation.magnitudes, evaluation.groups, kind="auto"
        )
    metrics = correlation_metrics(predicted, evaluation.magnitudes)
    raw = correlation_metrics(scores, evaluation.magnitudes, evaluation.groups)
    metrics["spearman"] = raw["spearman"]
    metrics["per_image_spearman"] = raw["per_image_spearman"]
    metrics["raw_pearson"] = raw["pearson"]
    return metrics, predicted


def baseline_metrics(task: str, evaluation: EvaluationSet) -> dict | None:
    """The classical baseline's metrics on the same points (None if the task has none).

    The baseline gets the same treatment as a model: its values are calibrated to
    magnitudes (cross-fitted isotonic), so Pearson and MAE are comparable.
    """
    baseline = get_baseline(task)
    if baseline is None:
        return None
    values = np.array([baseline.measure(image) for image in evaluation.images])
    metrics, _ = score_metrics(values, evaluation)
    return {"name": baseline.name, **metrics}


def evaluation_report(
    scores: np.ndarray,
    evaluation: EvaluationSet,
    task: str,
    calibration: MonotoneCalibration | None = None,
    include_baseline: bool = True,
) -> dict:
    """Metrics, baseline metrics and the (score, magnitude) points, ready for JSON."""
    metrics, predicted = score_metrics(scores, evaluation, calibration)
    return {
        "metrics": metrics,
        "baseline": baseline_metrics(task, evaluation) if include_baseline else None,
        "points": {
            "score": [float(s) for s in scores],
            "magnitude": evaluation.magnitudes.tolist(),
            "predicted": predicted.tolist(),
            "image": evaluation.groups.tolist(),
        },
    }


def evaluate_model(
    model,
    sources: Sequence,
    implementation: str = "reference",
    grid_size: int = 9,
    use_model_calibration: bool = True,
) -> dict:
    """Evaluates a :class:`~siamese_quality.pretext_model.PretextModel` on held-out images.

    Each image is loaded at the working resolution (times the distortion's
    supersampling), distorted at every magnitude of the grid, and scored.

    Args:
        sources: image paths, PIL images or uint8 arrays the model never saw
        implementation: ``"alternative"`` uses the independent implementation of the
            distortion, to check that the model did not learn our code's fingerprint
        use_model_calibration: calibrate with the model's own calibration (fitted on
            other images); if False, calibrate cross-fitted on these images
    """
    from .images import ImageLoadError, load_image

    distortion = model.distortion
    square = model.working_resolution * distortion.supersample
    images, skipped = [], []
    for source in sources:
        try:
            images.append(load_image(source, square))
        except ImageLoadError as e:
            skipped.append({"kind": e.kind, "message": str(e)})
    if not images:
        raise ValueError(f"none of the {len(skipped)} images could be read for evaluation")
    evaluation = render_evaluation_set(
        images,
        distortion,
        model.working_resolution,
        magnitude_grid(distortion, grid_size),
        implementation,
    )
    scores = model.branch.score(evaluation.images).numpy().astype(np.float64)
    calibration = model.calibration if use_model_calibration else None
    report = evaluation_report(scores, evaluation, model.task, calibration)
    report["images"] = len(images)
    report["skipped_images"] = skipped
    return report
