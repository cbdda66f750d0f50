"""A quality overview across models: each sample's worst issue, and how bad it is.

:func:`summarize` reads the values that the scored models wrote and writes three fields
on each sample of the collection (``field`` is their common prefix, ``"quality"``):

- ``quality_issue``: the key of the model that finds the sample worst *relative to the
  collection*: the model on which the sample's percentile is highest. Percentiles, not
  raw values, pick the issue, because one model's 0.3 is not another's: a dataset of
  phone JPEGs reads some compression on every photo, and that should not make
  compression every photo's issue.
- ``quality_severity``: how bad the sample is by that model, on the scale every model
  shares (:func:`~siamese_quality.core.severity.relative_severity`): 0 for an
  undistorted image, 1 at the worse end of the model's trained range (clipped to 1).
  A model that tells how sure it is (rotation: ``rotation_confidence``) has its
  severity weighted by that confidence: a tilt read off a photo with no upright is not
  an issue to act on.
- ``quality_percentile``: the sample's percentile by that model: the share of the
  summarized samples that are less bad (ties count half), from 0 to 1.

Only the samples of ``samples`` are written, and percentiles are relative to them: a
summary of a view ranks the view. Samples no model has a value for get nulls.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F
from scipy.stats import rankdata

from . import runs
from .core.errors import InvalidOption
from .core.severity import relative_severity
from .registry import confidence_field, model_fields, require_images, root_dataset, value_field

DEFAULT_FIELD = "quality"
# the field info that marks a field as this module's (written by summarize)
SUMMARY_INFO = "siamese_quality_summary"
_SUFFIXES = {
    "_issue": (
        fo.StringField,
        "the siamese_quality model that finds this sample worst, relative to the "
        "summarized samples (its highest percentile)",
    ),
    "_severity": (
        fo.FloatField,
        "how bad this sample is by its issue's model, 0 (undistorted) to 1 (the worse end "
        "of the model's trained range)",
    ),
    "_percentile": (
        fo.FloatField,
        "share of the summarized samples less bad than this one by its issue's model "
        "(ties count half), 0 to 1",
    ),
}


@dataclass(frozen=True)
class ScoredModel:
    """A model that has written its value field on the dataset."""

    key: str
    field: str
    distortion: dict
    confidence_field: str | None = None  # weighs the severity (see the module doc)


def summary_fields(field: str = DEFAULT_FIELD) -> dict[str, str]:
    """``{"issue": ..., "severity": ..., "percentile": ...}``: the field names."""
    return {suffix[1:]: f"{field}{suffix}" for suffix in _SUFFIXES}


def scored_models(samples, keys: Sequence[str] | None = None) -> list[ScoredModel]:
    """The models (all, or ``keys``) whose value field exists on the dataset.

    Raises:
        ValueError: if one of ``keys`` is not a model, or has not scored the dataset
    """
    dataset = root_dataset(samples)
    available = runs.list_model_keys(dataset)
    if keys is not None:
        for key in keys:
            runs.require_model(dataset, key)
    found = []
    for key in available if keys is None else list(keys):
        field = value_field(model_fields(dataset, key))
        config = runs.model_config(dataset, key)
        if field and dataset.has_field(field) and config.distortion:
            confidence = confidence_field(field)
            sure = confidence if config.confidence and dataset.has_field(confidence) else None
            found.append(ScoredModel(key, field, config.distortion, sure))
        elif keys is not None:
            raise ValueError(f"model {key!r} has not scored this dataset yet: score it first")
    return found


def summary_info(samples, field: str = DEFAULT_FIELD) -> dict | None:
    """What the last :func:`summarize` into ``field`` recorded (models, time), or None."""
    dataset = root_dataset(samples)
    issue = summary_fields(field)["issue"]
    if not dataset.has_field(issue):
        return None
    return (dataset.get_field(issue).info or {}).get(SUMMARY_INFO)


def worst_of_issue(samples, issue: str, field: str = DEFAULT_FIELD) -> fo.DatasetView:
    """The samples whose worst issue is model ``issue``, the worst first."""
    names = summary_fields(field)
    return samples.match(F(names["issue"]) == issue).sort_by(names["severity"], reverse=True)


def mid_rank_percentiles(values: np.ndarray) -> np.ndarray:
    """Per value, the share of the other non-NaN values below it, ties counting half;
    NaN stays NaN."""
    result = np.full(values.shape, np.nan)
    present = ~np.isnan(values)
    count = int(present.sum())
    if count:
        result[present] = (rankdata(values[present]) - 0.5) / count
    return result


def check_summary_fields(samples, field: str = DEFAULT_FIELD, overwrite: bool = False) -> None:
    """Raises, with the message the App's form shows, unless :func:`summarize` may write
    the fields of prefix ``field``."""
    _check_targets(root_dataset(samples), list(summary_fields(field).values()), overwrite)


def _check_targets(dataset: fo.Dataset, targets: list[str], overwrite: bool) -> None:
    if not all(target.isidentifier() for target in targets):
        raise InvalidOption("field", f"field must be a valid identifier, got {targets[0]!r}")
    models_fields = runs.owned_fields(dataset)
    for target in targets:
        if target in models_fields:
            raise ValueError(
                f"field {target!r} holds model {models_fields[target]!r}'s values: choose "
                "another summary field"
            )
        if dataset.has_field(target) and not overwrite:
            if SUMMARY_INFO not in (dataset.get_field(target).info or {}):
                raise ValueError(
                    f"field {target!r} exists and was not written by summarize: choose "
                    "another summary field, or pass overwrite=True to replace it"
                )


def _severities(model: ScoredModel, values: list, confidence: list | None) -> np.ndarray:
    """A model's 0-1 severity per sample, weighted by its confidence where it tells one."""
    severity = np.clip(relative_severity(model.distortion, np.array(values, dtype=float)), 0, 1)
    if confidence is None:
        return severity
    return severity * np.array([np.nan if c is None else c for c in confidence], dtype=float)


def _worst_issues(
    models: list[ScoredModel], columns: list[list], confidences: list[list | None]
) -> tuple[np.ndarray, ...]:
    """(index of the worst model or -1, severity, percentile) per sample."""
    severities = np.stack(
        [_severities(*item) for item in zip(models, columns, confidences, strict=True)],
        axis=1,
    )
    percentiles = np.stack([mid_rank_percentiles(s) for s in severities.T], axis=1)
    # mid-rank percentiles differ by at least 0.5 / count: the severity only breaks ties
    ranking = np.where(np.isnan(percentiles), -np.inf, percentiles + 1e-9 * severities)
    worst = np.argmax(ranking, axis=1)
    rows = np.arange(len(worst))
    missing = np.isneginf(ranking[rows, worst])
    return np.where(missing, -1, worst), severities[rows, worst], percentiles[rows, worst]


def _rounded(worst: np.ndarray, values: np.ndarray) -> list[float | None]:
    return [None if i < 0 else round(float(v), 4) for i, v in zip(worst, values, strict=True)]


def _write(dataset, ids, names, keys, issues, worst, severity, percentile) -> None:
    """Writes the three fields (created with their descriptions), and records which
    models and when in each field's info."""
    written = {
        "issue": issues,
        "severity": _rounded(worst, severity),
        "percentile": _rounded(worst, percentile),
    }
    info = {
        SUMMARY_INFO: {
            "models": keys,
            "summarized_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
    }
    for (ftype, description), (name, target) in zip(_SUFFIXES.values(), names.items(), strict=True):
        if dataset.has_field(target) and not isinstance(dataset.get_field(target), ftype):
            dataset.delete_sample_field(target)  # overwrite=True: another type was there
        if not dataset.has_field(target):
            dataset.add_sample_field(target, ftype, description=description)
        dataset.set_values(target, dict(zip(ids, written[name], strict=True)), key_field="id")
        stored = dataset.get_field(target)
        stored.info = info
        stored.save()


def summarize(
    samples: fo.core.collections.SampleCollection,
    keys: Sequence[str] | None = None,
    field: str = DEFAULT_FIELD,
    overwrite: bool = False,
) -> dict:
    """Writes each sample's worst issue across the scored models (see the module doc).

    Args:
        samples: a dataset or view; only its samples are written and ranked
        keys: the models to compare (default: every model that has scored the dataset)
        field: the prefix of the three fields written (``<field>_issue``, ...)
        overwrite: replace fields of these names that summarize did not write

    Returns:
        ``{"summarized", "without_values", "issues": {key: count}, "models", "fields",
        "message"}``
    """
    require_images(samples)
    dataset = root_dataset(samples)
    models = scored_models(samples, keys)
    if not models:
        raise ValueError("no model has scored this dataset yet: train and score one first")
    names = summary_fields(field)
    check_summary_fields(dataset, field, overwrite)
    sure = [m.confidence_field for m in models if m.confidence_field]
    ids, *columns = samples.values(["id", *(m.field for m in models), *sure])
    read = dict(zip(sure, columns[len(models) :], strict=True))
    confidences = [read.get(m.confidence_field) for m in models]
    worst, severity, percentile = _worst_issues(models, columns[: len(models)], confidences)
    issues = [models[i].key if i >= 0 else None for i in worst]
    _write(dataset, ids, names, [m.key for m in models], issues, worst, severity, percentile)
    counts = {m.key: issues.count(m.key) for m in models}
    without = issues.count(None)
    ranked = ", ".join(f"{key} {n}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return {
        "summarized": len(ids) - without,
        "without_values": without,
        "issues": counts,
        "models": [m.key for m in models],
        "fields": list(names.values()),
        "message": f"worst issue of {len(ids) - without} samples: {ranked}"
        + (f"; {without} have no value from any model" if without else ""),
    }
