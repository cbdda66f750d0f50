"""Tilt from long straight lines: an angle in degrees and how sure the lines are of it.

A level scene's long straight edges (horizons, walls, poles, tree trunks, frames) lie
along two perpendicular axes, and a tilt by ``theta`` turns every one of them by
``theta``. OpenCV's line-segment detector finds the segments; each votes, by its
length, for its angle away from the nearest axis (-45 to +45 degrees, positive:
counter-clockwise), vertical ones with more weight (perspective bends horizontals away
from level, verticals mostly stay upright). The tilt is the peak of those votes, and
the confidence is the share of the vote that agrees with it (within
``AGREEMENT_DEGREES``), discounted when the agreeing lines are short in all (one stray
line agrees with itself): a photo with no upright (a texture, sky, a macro) spreads its
votes and reads low. No torch and no FiftyOne here.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

# segments shorter than this share of the image's diagonal are texture, not structure
MIN_LINE_SHARE = 0.06
# a vertical segment's vote counts this many times a horizontal one's of equal length
VERTICAL_WEIGHT = 3.0
# votes are smoothed over this many degrees (circular, period 90) before the peak
VOTE_SMOOTHING_DEGREES = 1.5
AGREEMENT_DEGREES = 3.0
# agreeing lines this long in all (in diagonals of the image) make the share count ~63 %
SUPPORT_DIAGONALS = 0.3
# the lines' tilt is taken where they are at least this sure (the confidence written to
# ``rotation_confidence``; RESULTS.md's "confident"), and the App's actions start there
LINES_SURE = 0.5
_GRID = np.arange(-45.0, 45.0, 0.5)
_DETECTOR = None


def _detector():
    global _DETECTOR  # one per process: creating it is cheap, but not free per image
    if _DETECTOR is None:
        _DETECTOR = cv2.createLineSegmentDetector()
    return _DETECTOR


def line_segments(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angles in degrees counter-clockwise from horizontal, lengths in px) of the
    straight segments in a uint8 grey image."""
    found = _detector().detect(np.ascontiguousarray(grey))[0]
    if found is None:
        return np.zeros(0), np.zeros(0)
    x1, y1, x2, y2 = found[:, 0].astype(np.float64).T
    # image rows grow downwards: -dy makes counter-clockwise positive
    return np.degrees(np.arctan2(y1 - y2, x2 - x1)), np.hypot(x2 - x1, y2 - y1)


def _wrap(degrees: np.ndarray) -> np.ndarray:
    """Angles -> their offset from the nearest axis, in [-45, 45)."""
    return (degrees + 45.0) % 90.0 - 45.0


def tilt_from_lines(
    angles: np.ndarray, lengths: np.ndarray, diagonal: float
) -> tuple[float, float]:
    """(tilt in degrees, confidence in 0-1) from an image's segments; (0, 0) without
    any long one."""
    keep = lengths >= MIN_LINE_SHARE * diagonal
    angles, lengths = angles[keep], lengths[keep]
    if len(angles) == 0:
        return 0.0, 0.0
    offsets = _wrap(angles)
    vertical = np.abs((angles + 90.0) % 180.0 - 90.0) > 45.0
    votes = lengths * np.where(vertical, VERTICAL_WEIGHT, 1.0)
    distance = _wrap(_GRID[:, None] - offsets[None, :])
    density = (votes * np.exp(-0.5 * (distance / VOTE_SMOOTHING_DEGREES) ** 2)).sum(axis=1)
    peak = _GRID[int(np.argmax(density))]
    # the peak refined by the mean offset of the segments that agree with it
    near_offsets = _wrap(offsets - peak)
    agree = np.abs(near_offsets) < AGREEMENT_DEGREES
    agreeing = votes[agree].sum()
    tilt = peak + float((votes[agree] * near_offsets[agree]).sum() / agreeing)
    support = lengths[agree].sum() / diagonal
    confidence = agreeing / votes.sum() * (1.0 - np.exp(-support / SUPPORT_DIAGONALS))
    return float(_wrap(np.asarray(tilt))), float(confidence)


def read_tilt(grey: np.ndarray) -> tuple[float, float]:
    """(tilt in degrees counter-clockwise, confidence 0-1) of a uint8 grey image."""
    grey = np.ascontiguousarray(grey)
    return _read_tilt_of(grey.tobytes(), grey.shape)


# Scoring asks for a batch's tilts, then for their confidences: the second asks read
# the cache instead of detecting the segments again (a batch is well under this size)
@functools.lru_cache(maxsize=256)
def _read_tilt_of(pixels: bytes, shape: tuple[int, ...]) -> tuple[float, float]:
    grey = np.frombuffer(pixels, dtype=np.uint8).reshape(shape)
    angles, lengths = line_segments(grey)
    return tilt_from_lines(angles, lengths, float(np.hypot(*shape[:2])))


__all__ = ["LINES_SURE", "line_segments", "read_tilt", "tilt_from_lines"]
