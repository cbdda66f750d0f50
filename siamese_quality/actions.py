"""Quality views: sort, filter and tag samples by a quality field, worst first.

"Worst" depends on the distortion: a larger blur sigma is worse, a lower JPEG
quality is worse, and a tilt or an exposure error is worse the further it is from
zero in either direction. :func:`severity` turns a quality field into a
ViewExpression that grows with how bad a sample is, so every action below works
the same way for every model (and for your own numeric fields, taken as is).
"""

from __future__ import annotations

import fiftyone as fo
from fiftyone import ViewField as F

from . import runs
from .core.errors import InvalidOption
from .core.severity import severity_rule
from .registry import confidence_field


def _field_distortion(samples, field: str) -> dict | None:
    """The distortion description of the model that wrote ``field`` (None if not ours)."""
    dataset = samples._root_dataset
    owner = runs.owned_fields(dataset).get(field)
    if owner is None:
        return None
    return runs.model_config(dataset, owner).distortion or None


def _require_numeric_field(samples, field: str) -> None:
    schema = samples.get_field_schema(ftype=(fo.FloatField, fo.IntField))
    if field not in schema:
        numeric = ", ".join(sorted(schema)) or "none"
        raise ValueError(
            f"field {field!r} is not a numeric field of this collection (numeric fields: {numeric})"
        )


def severity(samples, field: str) -> fo.core.expressions.ViewExpression:
    """An expression that is larger the worse a sample is by ``field``."""
    _require_numeric_field(samples, field)
    info = _field_distortion(samples, field)
    if info is None or field.endswith("_raw"):
        return F(field)  # your own field, or a raw score: larger is taken as worse
    return severity_rule(info, F(field))


def _sorted_by_severity(samples, field: str, worst_first: bool = True) -> fo.DatasetView:
    """``samples`` sorted by :func:`severity`. Where severity grows or falls with the
    field itself (one-sided tasks, your own fields) the sort is on the field, which the
    App's view bar shows by name (an expression shows as "···")."""
    _require_numeric_field(samples, field)
    info = _field_distortion(samples, field)
    if info is None or field.endswith("_raw") or not info["two_sided"]:
        # one-sided: the rule is monotone in the value; which way, the rule says
        larger_is_worse = (
            info is None
            or field.endswith("_raw")
            or (severity_rule(info, 1.0) > severity_rule(info, 0.0))
        )
        return samples.sort_by(field, reverse=worst_first == larger_is_worse)
    return samples.sort_by(severity(samples, field), reverse=worst_first)


def check_min_confidence(samples, field: str, min_confidence: float | None) -> None:
    """Raises ``InvalidOption("min_confidence")`` unless it is None, or in 0-1 for a
    field whose model writes a confidence."""
    if min_confidence is None:
        return
    if not 0 <= min_confidence <= 1:
        raise InvalidOption(
            "min_confidence", f"min_confidence must be between 0 and 1, got {min_confidence!r}"
        )
    if not samples.has_field(confidence_field(field)):
        raise InvalidOption(
            "min_confidence",
            f"{field!r} has no confidence ({confidence_field(field)!r}): only models that "
            "tell how sure they are write one (rotation: how many long lines agree on the tilt)",
        )


def confident(samples, field: str, min_confidence: float | None = None):
    """``samples`` read by ``field``'s model with at least ``min_confidence`` (0-1), or
    all of them for None. A tilt read off a photo with no upright is arbitrary: sorting
    by tilt among the sure ones shows the tilted photos, not the textures."""
    check_min_confidence(samples, field, min_confidence)
    if min_confidence is None:
        return samples
    return samples.match(F(confidence_field(field)) >= min_confidence)


def worst_first(
    samples, field: str, best_first: bool = False, min_confidence: float | None = None
) -> fo.DatasetView:
    """``samples`` that have ``field`` (read with at least ``min_confidence``, see
    :func:`confident`), sorted from the worst sample (or the best)."""
    scored = confident(samples, field, min_confidence).exists(field)
    return _sorted_by_severity(scored, field, worst_first=not best_first)


def in_range(
    samples,
    field: str,
    low: float | None = None,
    high: float | None = None,
    min_confidence: float | None = None,
) -> fo.DatasetView:
    """Samples whose ``field`` value lies in ``[low, high]`` (either bound optional),
    read with at least ``min_confidence`` (see :func:`confident`)."""
    _require_numeric_field(samples, field)
    samples = confident(samples, field, min_confidence)
    condition = F(field).exists()
    if low is not None:
        condition &= F(field) >= low
    if high is not None:
        condition &= F(field) <= high
    return samples.match(condition)


def check_percent(percent: float) -> None:
    """Raises ``InvalidOption("percent")`` unless 0 < ``percent`` <= 100."""
    if not 0 < percent <= 100:
        raise InvalidOption("percent", f"percent must be above 0 and at most 100, got {percent!r}")


def check_tag(tag: str) -> None:
    """Raises ``InvalidOption("tag")`` unless ``tag`` is a non-blank string."""
    if not isinstance(tag, str) or not tag.strip():
        raise InvalidOption("tag", "tag must be a non-empty string")


def worst_percent(
    samples, field: str, percent: float, min_confidence: float | None = None
) -> fo.DatasetView:
    """The worst ``percent`` % of the samples that have a value (of those read with at
    least ``min_confidence``, see :func:`confident`), worst first."""
    check_percent(percent)
    scored = confident(samples, field, min_confidence).exists(field)
    count = scored.count()
    keep = max(1, round(count * percent / 100)) if count else 0
    return _sorted_by_severity(scored, field).limit(keep)


def severity_threshold(
    samples, field: str, threshold: float, min_confidence: float | None = None
) -> fo.DatasetView:
    """Samples worse than ``threshold`` (on the severity scale of :func:`severity`),
    read with at least ``min_confidence`` (see :func:`confident`)."""
    scored = confident(samples, field, min_confidence).exists(field)
    return scored.match(severity(samples, field) > threshold)


def tag_beyond(
    samples, field: str, threshold: float, tag: str, min_confidence: float | None = None
) -> int:
    """Tags the samples worse than ``threshold`` (read with at least ``min_confidence``)
    with ``tag``; returns how many."""
    check_tag(tag)
    view = severity_threshold(samples, field, threshold, min_confidence)
    view.tag_samples(tag)
    return view.count()


def untag(samples, tag: str) -> int:
    """Removes ``tag`` from the samples of ``samples``; returns how many had it."""
    tagged = samples.match_tags(tag)
    count = tagged.count()
    tagged.untag_samples(tag)
    return count
