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
