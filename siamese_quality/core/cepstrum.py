"""Camera shake and defocus read from the whole image's cepstrum: blur's second reading.

A shake of length ``L`` px along one direction multiplies the image's spectrum by a sinc
whose zeros repeat every ``1 / L`` cycles per px along that direction. In the log power
spectrum, averaged over tiles of the whole image (Welch), the zeros are a ripple of that
period, which the cepstrum (the inverse FFT of the log spectrum) gathers into one
negative peak at distance ``L`` from its origin, in the shake's direction (the classical
motion-blur estimate of Rom, 1975, and Cannon, 1976). The patch-by-patch edge reader
misses long shakes: edges across the shake's path fade under its noise margin, and a
box kernel's width reads short by an amount that depends on the content
(docs/experiments.md, "why camera shake reads low"). This reading pools every tile, in
the one direction a shake has.

A defocus disk of radius ``R`` has rings of zeros instead, which leave a ring of
negative cepstrum at about its diameter ``2 R`` in every direction: averaged over each
radius, it stands out of the profile's far part (:func:`read_defocus`).

What else dips: a Gaussian blur has no zeros, but where its spectrum meets the
quantisation floor the cepstrum rings at about ``2 sigma``, read as a disk of that
diameter: a width of ``sigma / 2``, under what the edges read, so the edges decide;
JPEG's 8-px block grid dips along the axes and is not taken for a shake, nor is a dip
along both axes at once. Pixelation's block lattice (dips at every ``(k b, l b)``) reads
as a long shake or a wide ring, 2.5-13 px for blocks of 2-8 px; but its edges are crisp,
and :func:`combined_width` counts the cepstrum only up to ``MOST_OVER_EDGES`` times the
edges' reading (telling a lattice, deep at ``(b, b)`` too, from a ring is the next step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

TILE = 128  # px: a 24-px shake's ripple spans 5 frequency bins
# tiles spread over the image, so the cost stays flat above 0.5 MP: 48 ranked shake
# 0.01 higher for half as much again of the time (docs/experiments.md)
MOST_TILES = 32
SHORTEST = 2.5  # px: nearer the origin a Gaussian's smooth log spectrum dips too
# robust standard deviations of the cepstrum a shake's peak must reach: the lowest at
# which no undamaged photo of OpenCV's 21 samples (not the native benchmark's) reads a
# shake; camera shake of 3 px and more passes it in most photos (blur_readings.py)
MIN_DEPTH = 30.0
# a defocus ring: robust standard deviations of the radial profile's far part (radii
# FAR and up). On OpenCV's samples, 16 already lets Gaussian blur read wider than its
# edges (docs/experiments.md); 25 leaves it alone there and on the headline's photos
MIN_RING_DEPTH = 25.0
# px of quefrency where the profile is mostly noise: beyond the rings of the disks
# photos show (radius under 12 px); wider rings, up to WIDEST_RING, read shallower
FAR = 24
SMALLEST_RING, WIDEST_RING = 3, 40
JPEG_BLOCK = 8  # px: JPEG's block grid dips at multiples of it along the axes
# the cepstrum's width counts up to this many times what the edges read: a block lattice
# (pixelation: crisp edges, 0.65 px) dips like a long shake, a real shake leaves the
# edges 1/4 of its width at most (24 px: edges 1.7, cepstrum 7.2; docs/experiments.md)
MOST_OVER_EDGES = 5.0


@dataclass(frozen=True)
class ShakeReading:
    """A camera shake found in an image.

    Attributes:
        length: px of the stored image the shake spans; 0 when none was found
        angle: its direction in degrees (0: along the rows; 0-180)
        depth: how far its cepstral peak stands out, in robust standard deviations
    """

    length: float
    angle: float
    depth: float

    @property
    def sigma(self) -> float:
        """The shake's width as a Gaussian sigma (px): a box's standard deviation."""
        return self.length / math.sqrt(12.0)


NO_SHAKE = ShakeReading(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class DefocusReading:
    """A defocus ring found in an image.

    Attributes:
        diameter: px of the stored image; 0 when none was found
        depth: how far the ring stands out, in robust standard deviations
    """

    diameter: float
    depth: float

    @property
    def sigma(self) -> float:
        """The disk's width as a Gaussian sigma (px): its radius over 2."""
        return self.diameter / 4.0


NO_DEFOCUS = DefocusReading(0.0, 0.0)


@dataclass(frozen=True)
class SpectralBlur:
    """What the whole image's cepstrum shows: a camera shake and a defocus ring."""

    shake: ShakeReading
    defocus: DefocusReading

    @property
    def sigma(self) -> float:
        """The wider of the two as a Gaussian sigma (px); 0 when neither was found."""
        return max(self.shake.sigma, self.defocus.sigma)


def tile_corners(height: int, width: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``MOST_TILES`` tiles of ``TILE`` px spread over an image."""
    rows, columns = max(1, height // TILE), max(1, width // TILE)
    while rows * columns > MOST_TILES:
        if rows >= columns:
            rows -= 1
        else:
            columns -= 1

    def spread(length: int, n: int) -> list[int]:
        return [round(i * (length - TILE) / (n - 1)) for i in range(n)] if n > 1 else [0]

    return [(top, left) for top in spread(height, rows) for left in spread(width, columns)]


def cepstrum(native: torch.Tensor) -> torch.Tensor | None:
    """The grey level's cepstrum, from the mean power spectrum of Hann-windowed tiles of
    a uint8 (3, H, W) image: (TILE, TILE), origin at [0, 0]; None under a tile's size."""
    height, width = native.shape[-2:]
    if height < TILE or width < TILE:
        return None
    # only the tiles become float: a whole 3-MP photo's conversion cost more than the FFTs
    corners = tile_corners(height, width)
    tiles = torch.stack([native[:, t : t + TILE, c : c + TILE] for t, c in corners])
    tiles = tiles.sum(1, dtype=torch.float32).mul_(1 / 3)  # the grey level, in one pass
    tiles = tiles - tiles.mean((1, 2), keepdim=True)
    spectra = torch.view_as_real(torch.fft.rfft2(tiles * _window()))
    # the mean power over the tiles, summed in the flat layout (8x faster than abs())
    flat = spectra.reshape(len(tiles), -1).square().sum(0) / len(tiles)
    power = flat.view(TILE, TILE // 2 + 1, 2).sum(-1)
    # the floor keeps flat images' empty bins finite (levels are quantised anyway)
    return torch.fft.irfft2(torch.log(power + 1e-3), s=(TILE, TILE))


@cache
def _window() -> torch.Tensor:
    window = torch.hann_window(TILE, periodic=False)
    return window[:, None] * window[None, :]


@cache
def _quefrencies() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qy, qx, radius) of every cepstrum bin, origin at [0, 0]."""
    q = torch.fft.fftfreq(TILE) * TILE
    qy, qx = torch.meshgrid(q, q, indexing="ij")
    return qy, qx, torch.hypot(qx, qy)


@cache
def _axis_masks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bins within a bin of an axis; those of them at multiples of JPEG's block; every
    bin's whole radius (clamped to the profile's length)."""
    qy, qx, radius = _quefrencies()
    near_axis = (qx.abs() <= 1) | (qy.abs() <= 1)
    jpeg = (radius / JPEG_BLOCK - (radius / JPEG_BLOCK).round()).abs() * JPEG_BLOCK <= 0.75
    return near_axis, near_axis & jpeg, radius.round().long().clamp(max=TILE // 2 - 1)


def _grid_dips(depth: torch.Tensor) -> torch.Tensor:
    """Where a dip near an axis belongs to a block grid, not a shake: radii at which both
    axes dip (pixelation), and multiples of JPEG's block along them."""
    near_axis, jpeg, whole_radius = _axis_masks()
    band, lengths = torch.arange(-1, 2) % TILE, torch.arange(TILE // 2)
    along_columns = depth[band[:, None], lengths[None, :]].amax(0)
    along_rows = depth[lengths[None, :], band[:, None]].amax(0)
    both_axes = torch.minimum(along_columns, along_rows) > MIN_DEPTH / 2
    return (near_axis & both_axes[whole_radius]) | jpeg


def read_shake(spectrum: torch.Tensor) -> ShakeReading:
    """The camera shake a :func:`cepstrum` shows, or ``NO_SHAKE``."""
    qy, qx, radius = _quefrencies()
    ring = (radius >= SHORTEST) & (radius <= TILE // 2 - 1)
    values = spectrum[ring]
    spread = (values - values.median()).abs().median() * 1.4826
    depth = -spectrum / spread.clamp(min=1e-12)
    candidates = ring & ~_grid_dips(depth)
    best = int(torch.argmax(torch.where(candidates, depth, -math.inf)))
    if float(depth.flatten()[best]) < MIN_DEPTH:
        return NO_SHAKE
    angle = math.degrees(math.atan2(-float(qy.flatten()[best]), float(qx.flatten()[best])))
    return ShakeReading(float(radius.flatten()[best]), angle % 180.0, float(depth.flatten()[best]))


def read_defocus(spectrum: torch.Tensor) -> DefocusReading:
    """The defocus ring a :func:`cepstrum` shows (its mean over each whole radius), or
    ``NO_DEFOCUS``."""
    radius = _quefrencies()[2].round().long().flatten()
    inside = radius < TILE // 2
    sums = torch.zeros(TILE // 2).index_add_(0, radius[inside], spectrum.flatten()[inside])
    counts = torch.bincount(radius[inside], minlength=TILE // 2).float()
    profile = sums / counts
    far = profile[FAR : TILE // 2 - 1]
    spread = (far - far.median()).abs().median() * 1.4826
    depth = -profile[SMALLEST_RING:WIDEST_RING] / spread.clamp(min=1e-12)
    best = int(torch.argmax(depth))
    if float(depth[best]) < MIN_RING_DEPTH:
        return NO_DEFOCUS
    return DefocusReading(float(best + SMALLEST_RING), float(depth[best]))


def combined_width(edge_widths: np.ndarray, spectral_widths: np.ndarray) -> np.ndarray:
    """A blur's width from the edges' reading and the cepstrum's (px, Gaussian sigma):
    the larger, the cepstrum's counting up to ``MOST_OVER_EDGES`` times the edges'."""
    edges = np.asarray(edge_widths, dtype=np.float64)
    spectral = np.minimum(np.asarray(spectral_widths, dtype=np.float64), MOST_OVER_EDGES * edges)
    return np.maximum(edges, spectral)


def read_spectral_blur(native: torch.Tensor) -> SpectralBlur:
    """The camera shake and the defocus ring in a uint8 (3, H, W) image."""
    spectrum = cepstrum(native)
    if spectrum is None:
        return SpectralBlur(NO_SHAKE, NO_DEFOCUS)
    return SpectralBlur(read_shake(spectrum), read_defocus(spectrum))


__all__ = [
    "NO_DEFOCUS",
    "NO_SHAKE",
    "DefocusReading",
    "ShakeReading",
    "SpectralBlur",
    "cepstrum",
    "combined_width",
    "read_defocus",
    "read_shake",
    "read_spectral_blur",
    "tile_corners",
]
