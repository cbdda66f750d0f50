"""Held-out evaluation: images x a grid of known magnitudes -> points -> metrics.

The same points give the calibration curve, the correlation charts and the
comparison with the classical baseline, all JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .calibration import MonotoneCalibration, correlation_metrics, cross_fitted_predictions
from .distortions import Distortion, get_distortion, jpeg_compress
from .images import ImageFile, ImageLoadError, ImageSource
from .views import View, branch_scores

if TYPE_CHECKING:
    from .pretext_model import PretextModel

# A model's reader of JPEG files is measured on copies saved at this quality, as a
# camera saves them (its training saved half its copies at 80-98)
JPEG_FILE_QUALITY = 95


def magnitude_grid(distortion: Distortion, count: int = 9) -> np.ndarray:
    """``count`` magnitudes covering the distortion's range, evenly by its spacing."""
    return distortion.spread(np.linspace(0.0, 1.0, count))


@dataclass
class EvaluationSet:
    """Distorted copies of held-out images with their true magnitudes."""

    images: torch.Tensor  # uint8 (N, count, 3, r, r): each copy as the view shows it
    magnitudes: np.ndarray  # (N,)
    groups: np.ndarray  # (N,) index of the source image

    def __len__(self) -> int:
        return len(self.magnitudes)


def render_evaluation_set(
    images: Sequence[ImageFile],
    distortion: Distortion,
    view: View,
    magnitudes: Sequence[float],
    implementation: str = "reference",
) -> EvaluationSet:
    """Every image at every magnitude, through ``view``.

    Args:
        implementation: ``"reference"`` or ``"alternative"`` (see :func:`views.apply_distortion`)
    """
    copies, true, groups = [], [], []
    for index, image in enumerate(images):
        copies.append(view.render(image, distortion, magnitudes, implementation))
        true += [float(m) for m in magnitudes]
        groups += [index] * len(magnitudes)
    return EvaluationSet(torch.cat(copies), np.asarray(true), np.asarray(groups))


def saved_as_jpeg(evaluation: EvaluationSet, quality: int) -> EvaluationSet:
    """The same copies, each saved as a JPEG at ``quality`` and decoded (a patch view's
    patches sit on JPEG's 8-px grid, as in the stored file)."""
    saved = [torch.stack([jpeg_compress(p, quality) for p in copy]) for copy in evaluation.images]
    return EvaluationSet(torch.stack(saved), evaluation.magnitudes, evaluation.groups)


def read_images(sources: Sequence[ImageSource]) -> tuple[list[ImageFile], list[dict]]:
    """The readable sources as :class:`ImageFile`, and why the others could not be read.

    Each readable image is decoded once here (its native pixels), so a broken file
    is found before any work is done with it.
    """
    images, skipped = [], []
    for index, source in enumerate(sources):
        image = ImageFile(source)
        try:
            image.native_tensor()
        except ImageLoadError as e:
            skipped.append({"index": index, "kind": e.kind, "message": str(e)})
            continue
        images.append(image)
    return images, skipped


def score_metrics(
    scores: np.ndarray,
    evaluation: EvaluationSet,
    calibration: MonotoneCalibration | None = None,
    kind: str = "auto",
) -> tuple[dict, np.ndarray]:
    """Metrics of raw ``scores`` against the true magnitudes, and the predictions used.

    Spearman (pooled and mean per image) is computed on the raw scores: a monotone
    calibration cannot improve a ranking, only flatten it. Pearson and MAE use
    calibrated predictions: from
    ``calibration`` when given (fitted on other images), else cross-fitted across
    the held-out images so no image calibrates its own prediction (a curve of ``kind``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if calibration is not None:
        predicted = calibration.predict(scores)
    else:
        predicted = cross_fitted_predictions(
            scores, evaluation.magnitudes, evaluation.groups, kind=kind
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
    magnitudes (cross-fitted, the distortion's kind of curve), so Pearson and MAE are
    comparable.
    """
    distortion = get_distortion(task)
    baseline = distortion.baseline
    if baseline is None:
        return None
    # per patch, then the median over the patches of a copy (one patch: the image)
    values = np.array(
        [np.median([baseline.measure(patch) for patch in copy]) for copy in evaluation.images]
    )
    metrics, _ = score_metrics(values, evaluation, kind=distortion.calibration_kind)
    return {"name": baseline.name, **metrics}


def evaluation_report(
    scores: np.ndarray,
    evaluation: EvaluationSet,
    task: str,
    calibration: MonotoneCalibration | None = None,
    include_baseline: bool = True,
) -> dict:
    """Metrics, baseline metrics and the (score, magnitude) points, ready for JSON."""
    kind = get_distortion(task).calibration_kind
    metrics, predicted = score_metrics(scores, evaluation, calibration, kind)
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
    model: PretextModel,
    sources: Sequence,
    implementation: str = "reference",
    grid_size: int = 9,
    use_model_calibration: bool = True,
) -> dict:
    """Evaluates a :class:`~siamese_quality.pretext_model.PretextModel` on held-out images.

    Each image is distorted at every magnitude of the grid through the model's view
    (native-resolution patches or the whole image downscaled) and scored.

    Args:
        sources: image paths, PIL images or uint8 arrays the model never saw
        implementation: ``"alternative"`` uses the independent implementation of the
            distortion, to check that the model did not learn our code's fingerprint
        use_model_calibration: calibrate with the model's own calibration (fitted on
            other images); if False, calibrate cross-fitted on these images

    A model with a reader of JPEG files (noise) also reports that reader, under
    ``jpeg_file_reader``, on the same copies saved as a JPEG at
    :data:`JPEG_FILE_QUALITY`: the reader that writes the fields of JPEG files.
    """
    images, skipped = read_images(sources)
    if not images:
        raise ValueError(f"none of the {len(skipped)} images could be read for evaluation")
    evaluation = render_evaluation_set(
        images,
        model.distortion,
        model.view,
        magnitude_grid(model.distortion, grid_size),
        implementation,
    )
    scores = branch_scores(model.branch, evaluation.images, model.view).numpy().astype(np.float64)
    calibration = model.calibration if use_model_calibration else None
    report = evaluation_report(scores, evaluation, model.task, calibration)
    if model.jpeg_reader is not None:
        report["jpeg_file_reader"] = jpeg_reader_report(
            model.jpeg_reader, evaluation, use_model_calibration
        )
    report["images"] = len(images)
    report["skipped_images"] = [{k: v for k, v in s.items() if k != "index"} for s in skipped]
    return report


def jpeg_reader_report(
    reader: PretextModel,
    evaluation: EvaluationSet,
    use_model_calibration: bool,
    include_baseline: bool = True,
) -> dict:
    """A model's reader of JPEG files (``PretextModel.jpeg_reader``) measured on what it
    reads: the evaluation's copies saved as a JPEG at :data:`JPEG_FILE_QUALITY`, with the
    classical baseline on the same saved copies (``include_baseline``)."""
    saved = saved_as_jpeg(evaluation, JPEG_FILE_QUALITY)
    scores = branch_scores(reader.branch, saved.images, reader.view).numpy().astype(np.float64)
    calibration = reader.calibration if use_model_calibration else None
    return {
        "saved_quality": JPEG_FILE_QUALITY,
        **evaluation_report(scores, saved, reader.task, calibration, include_baseline),
    }
