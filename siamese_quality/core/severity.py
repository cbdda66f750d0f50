"""The one rule of how bad a quality value is, shared by Python and the database.

Imports nothing heavy (no torch, no FiftyOne): the panel and the quality actions use it
on the distortion descriptions that models store.
"""

from __future__ import annotations

from collections.abc import Mapping


def severity_rule(description: Mapping, value):
    """How bad ``value`` is, growing from 0 at the undistorted image: the one rule
    behind sorting, filtering and tagging by quality.

    ``description`` is a distortion's :meth:`Distortion.to_dict` (as models store it).
    ``value`` may be a number, a NumPy array or a FiftyOne ``ViewExpression``: the rule
    uses only subtraction and ``abs``, which all three provide, so the Python value and
    the database's expression come from this one definition.
    """
    identity = description["identity"]
    if description["two_sided"]:
        difference = value - identity
        return difference.abs() if hasattr(difference, "abs") else abs(difference)
    if description["higher_is_worse"]:
        return value - identity
    return identity - value


def largest_severity(description: Mapping) -> float:
    """The largest severity a calibrated value can have: the worse end of the trained
    range (two-sided tasks: the further of the two ends)."""
    ends = (description["low"], description["high"])
    return float(max(severity_rule(description, end) for end in ends))


def relative_severity(description: Mapping, value):
    """How bad ``value`` is on a scale common to every model: 0 for the undistorted
    image, 1 at the worse end of the model's trained range (not clipped: a
    NumPy array or an expression, like :func:`severity_rule`)."""
    return severity_rule(description, value) / max(largest_severity(description), 1e-12)
