"""JPEG quality as encoded: read from a JPEG file's quantization tables.

A JPEG file carries the tables its encoder divided every 8 x 8 block's frequencies by.
Encoders built on libjpeg (Pillow, OpenCV, ImageMagick, most software) scale the JPEG
standard's example tables by the quality setting, so the tables name the quality they
were saved at exactly; a camera's own tables read as the nearest such quality. No pixel
is decoded: the header is enough.

The tables say how the file was saved *last*. A photo compressed hard and saved again
at a high quality keeps the blocks of the first save under tables of the second, so the
JPEG model's value is the pixels' reading where they show far more compression than
the tables allow (:func:`encoded_or_seen`), and the tables' quality elsewhere. No torch
and no FiftyOne here.
"""

from __future__ import annotations

import functools
import io
import math
import os

import numpy as np
from PIL import Image

QUALITIES = np.arange(1, 101)
# the pixels' reading wins where it is below this share of the tables' quality: a file
# saved at quality 95 whose blocks read 40 was compressed harder before. The JPEG
# model's readings of single saves stay above it (a noisy photo saved at 95 reads
# 70-90 from its pixels; benchmarks/RESULTS.md)
SEEN_SHARE = 0.5


@functools.lru_cache(maxsize=1)
def _reference_tables() -> np.ndarray:
    """log of libjpeg's luma and chroma tables at qualities 1-100: (100, 2, 64)."""
    tables = []
    blank = Image.new("RGB", (8, 8))
    for quality in QUALITIES:
        buffer = io.BytesIO()
        blank.save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as saved:
            tables.append([saved.quantization[0], saved.quantization[1]])
    return np.log(np.asarray(tables, dtype=np.float64))


def quality_of_tables(tables: dict[int, list[int]]) -> float:
    """The libjpeg quality (1-100) whose tables are nearest ``tables`` (Pillow's
    ``Image.quantization``: table number -> 64 steps), in log steps; the first two
    tables (luma, chroma) count, one for a greyscale file."""
    reference = _reference_tables()
    used = [k for k in sorted(tables)[:2] if len(tables[k]) == 64]
    if not used:
        return math.nan
    steps = np.log(np.maximum(np.asarray([tables[k] for k in used], dtype=np.float64), 1.0))
    # a greyscale file's one table is the luma table
    distance = ((reference[:, : len(used)] - steps[None]) ** 2).sum(axis=(1, 2))
    return float(QUALITIES[int(np.argmin(distance))])


def jpeg_quality(source: object) -> float:
    """The quality a JPEG file was saved at, from its tables; NaN for anything else (an
    array, another format, a file that cannot be read: the decode reports why)."""
    if not isinstance(source, str | os.PathLike):
        return math.nan
    try:
        with Image.open(source) as image:
            if image.format != "JPEG":
                return math.nan
            tables = getattr(image, "quantization", None) or {}
    except Exception:  # the decode that follows says what is wrong with the file
        return math.nan
    return quality_of_tables(tables)


def encoded_or_seen(seen: np.ndarray, encoded: np.ndarray) -> np.ndarray:
    """Each image's JPEG quality: the tables' (``encoded``, NaN where the file has none)
    unless the pixels' reading (``seen``) is below ``SEEN_SHARE`` of it."""
    seen = np.asarray(seen, dtype=np.float64)
    encoded = np.asarray(encoded, dtype=np.float64)
    trust_tables = np.isfinite(encoded) & ~(seen < SEEN_SHARE * encoded)
    return np.where(trust_tables, encoded, seen)
