"""Blur read from the whole image's spectrum: camera shake, defocus and round blur.

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
diameter: a width of ``sigma / 2``, under what the round blur (below) reads;
JPEG's 8-px block grid dips along the axes and is not taken for a shake, nor is a dip
along both axes at once. Pixelation's block lattice dips at many points ``(k b, l b)``
in many directions: a shake's dips lie along its one direction (``L``, ``2 L``, ...), so
a peak whose direction holds under ``SHAKE_CONCENTRATION`` of the cepstrum's deep dips is
not taken for one; and a ring dips all round its radius, a lattice only where its points
fall, so the defocus profile is each radius's median, not its mean. Before these two,
blocks of 2-8 px read 2.5-13 px of shake or ring. :func:`combined_width` also counts the
cepstrum only up to ``MOST_OVER_EDGES`` times the edges' reading (their edges are crisp).

A round (Gaussian) blur of sigma ``s`` has no zeros: it multiplies the power spectrum by
``exp(-4 pi^2 s^2 f^2)``. A photo's own spectrum falls as a power of the frequency,
``f^-alpha``, so the log of the radial power profile, where it stands a decade above its
floor (noise and quantisation), is fitted as ``a - alpha log f - 4 pi^2 s^2 f^2`` by least
squares (:func:`read_round_blur`): the curvature reads ``s^2``, less two standard errors
of it, so that a short or ragged profile (heavy noise leaves only a few bins above the
floor) reads little instead of a chance curvature. It reads Gaussian blur within 6 %
(median) on the native benchmark's photos, where the edges read it with a spread of
about 40 % across photos; a disk of radius ``R`` reads about ``0.7 R`` (its Gaussian
equivalent is ``R / 2``), a shake nothing much.
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
# a shake's peak must hold this share of the deep dips' depth (those at MIN_DEPTH and
# more), within SHAKE_SPREAD_DEGREES of its direction: pixelated copies (blocks of 2 px
# and up) found as shakes fell from 97-100 % to 0-23 %, shakes' rank 0.954 -> 0.952
# (docs/experiments.md)
SHAKE_CONCENTRATION = 0.5
SHAKE_SPREAD_DEGREES = 10.0
# the cepstrum's width counts up to this many times what the edges read: a block lattice
# (pixelation: crisp edges, 0.65 px) dips like a long shake, a real shake leaves the
# edges 1/4 of its width at most (24 px: edges 1.7, cepstrum 7.2; docs/experiments.md)
MOST_OVER_EDGES = 5.0
# round blur: the profile's bins from this one up (nearer, the window's leakage shapes it)
LOWEST_BIN = 2
FLOOR_MARGIN = 10.0  # bins fitted: those this many times above the profile's lowest
# fewer bins above it (heavy noise) leave only the lowest frequencies, whose curvature
# is the scene's: a sharp photo under noise of sigma 32 read 1.5 px from 5 of them
MIN_FITTED_BINS = 8
STANDARD_ERRORS = 2.0  # the curvature read: the fit's, less this many standard errors
# Where the spectrum reads a width, the edges' calibrated reading counts at this share of
# its value: it spreads about 40 % across photos at one magnitude, and a maximum with the
# spectrum's precise readings would otherwise take its upper errors (0.5-0.7 rank alike;
# benchmarks/blur_readings.py)
EDGE_WEIGHT = 0.6
# which spectral readers a view's value reads (``PatchView.spectral_blur``): 1 the
# cepstrum's shake and defocus (bundled models v4), 2 also the round blur
SPECTRAL_READERS = 2


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
    """What the whole image's spectrum shows: a camera shake and a defocus ring (from its
    cepstrum) and a round blur's width (from its power's fall-off).

    Attributes:
        round_blur: px, Gaussian sigma; None when the image is smaller than a tile
    """

    shake: ShakeReading
    defocus: DefocusReading
    round_blur: float | None = None

    @property
    def sigma(self) -> float:
        """The wider of the shake and the defocus as a Gaussian sigma (px); 0 when
        neither was found."""
        return max(self.shake.sigma, self.defocus.sigma)

    @property
    def widths(self) -> tuple[float, float]:
        """(:attr:`sigma`, :attr:`round_blur` or NaN), as :func:`combined_width` takes them."""
        return self.sigma, math.nan if self.round_blur is None else self.round_blur


# what an image under a tile shows, and a view that reads no spectrum passes on
NOTHING_READ = SpectralBlur(NO_SHAKE, NO_DEFOCUS)


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


def mean_power(native: torch.Tensor) -> torch.Tensor | None:
    """The grey level's mean power spectrum over Hann-windowed tiles of a uint8 (3, H, W)
    image (Welch): (TILE, TILE // 2 + 1), as ``rfft2`` lays it out; None under a tile."""
    height, width = native.shape[-2:]
    if height < TILE or width < TILE:
        return None
    # only the tiles become float: a whole 3-MP photo's conversion cost more than the FFTs.
    # Decoded photos lie in memory pixel by pixel (HWC): NumPy cuts and stacks their
    # tiles there, and adds the channels as planes, in a third of torch's time
    corners = tile_corners(height, width)
    pixels = native.permute(1, 2, 0).numpy()
    stacked = np.stack([pixels[t : t + TILE, c : c + TILE] for t, c in corners])
    planes = stacked.astype(np.float32)
    grey = planes[..., 0] + planes[..., 1] + planes[..., 2]  # exact: whole levels
    tiles = torch.from_numpy(grey).mul_(1 / 3)
    tiles = tiles - tiles.mean((1, 2), keepdim=True)
    spectra = torch.view_as_real(torch.fft.rfft2(tiles * _window()))
    # the mean power over the tiles, summed in the flat layout (8x faster than abs())
    flat = spectra.reshape(len(tiles), -1).square().sum(0) / len(tiles)
    return flat.view(TILE, TILE // 2 + 1, 2).sum(-1)


def cepstrum_of(power: torch.Tensor) -> torch.Tensor:
    """The cepstrum of a :func:`mean_power`: (TILE, TILE), origin at [0, 0]."""
    # the floor keeps flat images' empty bins finite (levels are quantised anyway)
    return torch.fft.irfft2(torch.log(power + 1e-3), s=(TILE, TILE))


@cache
def _radial_bins() -> tuple[torch.Tensor, torch.Tensor]:
    """Each ``rfft2`` bin's whole radius in bins (up to TILE // 2 kept), and how many bins
    each radius has."""
    fy = torch.fft.fftfreq(TILE)[:, None]
    fx = torch.fft.rfftfreq(TILE)[None, :]
    radius = (torch.hypot(fy, fx) * TILE).round().long().flatten()
    radius = torch.where(radius <= TILE // 2, radius, TILE // 2 + 1)  # the corners: dropped
    return radius, torch.bincount(radius, minlength=TILE // 2 + 2).clamp(min=1)


def read_round_blur(power: torch.Tensor) -> float:
    """The width (px, Gaussian sigma) of the round blur a :func:`mean_power` shows: the
    curvature of its log radial profile against the frequency squared, less
    ``STANDARD_ERRORS`` of it; 0 when it shows none or fewer than ``MIN_FITTED_BINS``
    bins stand above its floor."""
    radius, counts = _radial_bins()
    sums = torch.zeros(len(counts), dtype=torch.float64)
    sums.index_add_(0, radius, power.flatten().double())
    profile = (sums / counts).numpy()[LOWEST_BIN : TILE // 2 + 1] + 1e-3
    frequency = np.arange(LOWEST_BIN, TILE // 2 + 1) / TILE  # cycles per px
    fitted = profile > FLOOR_MARGIN * profile.min()
    if fitted.sum() < MIN_FITTED_BINS:
        return 0.0
    f = frequency[fitted]
    design = np.stack([np.ones_like(f), -np.log(f), -4 * math.pi**2 * f**2], axis=1)
    target = np.log(profile[fitted])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    variance = residual @ residual / (len(f) - 3) * np.linalg.inv(design.T @ design)[2, 2]
    curvature = coefficients[2] - STANDARD_ERRORS * math.sqrt(max(variance, 0.0))
    return math.sqrt(curvature) if curvature > 0 else 0.0


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


@cache
def _ring_members() -> torch.Tensor:
    """(TILE // 2, most): the flat indices of each whole radius's bins, padded with the
    index one past the cepstrum (a NaN)."""
    radius = _quefrencies()[2].round().long().flatten()
    rings = [torch.nonzero(radius == r).flatten() for r in range(TILE // 2)]
    most = max(len(ring) for ring in rings)
    padded = torch.full((len(rings), most), TILE * TILE, dtype=torch.long)
    for r, ring in enumerate(rings):
        padded[r, : len(ring)] = ring
    return padded


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
    if _share_along(depth, candidates & (depth >= MIN_DEPTH), angle) < SHAKE_CONCENTRATION:
        return NO_SHAKE  # dips in many directions: a block lattice or a ring
    return ShakeReading(float(radius.flatten()[best]), angle % 180.0, float(depth.flatten()[best]))


@cache
def _directions() -> torch.Tensor:
    """Every cepstrum bin's direction from the origin, degrees (as a shake's ``angle``)."""
    qy, qx, _ = _quefrencies()
    return torch.rad2deg(torch.atan2(-qy, qx))


def _share_along(depth: torch.Tensor, deep: torch.Tensor, angle: float) -> float:
    """The share of the ``deep`` bins' depth within ``SHAKE_SPREAD_DEGREES`` of ``angle``."""
    off = (_directions() - angle + 90.0) % 180.0 - 90.0
    weights = torch.where(deep, depth, torch.zeros_like(depth))
    return float(weights[off.abs() <= SHAKE_SPREAD_DEGREES].sum() / weights.sum())


def read_defocus(spectrum: torch.Tensor) -> DefocusReading:
    """The defocus ring a :func:`cepstrum` shows (its median over each whole radius), or
    ``NO_DEFOCUS``."""
    members = _ring_members()
    values = torch.cat([spectrum.flatten(), spectrum.new_full((1,), math.nan)])
    profile = values[members].nanmedian(dim=1).values  # a lattice's few points do not move it
    far = profile[FAR : TILE // 2 - 1]
    spread = (far - far.median()).abs().median() * 1.4826
    depth = -profile[SMALLEST_RING:WIDEST_RING] / spread.clamp(min=1e-12)
    best = int(torch.argmax(depth))
    if float(depth[best]) < MIN_RING_DEPTH:
        return NO_DEFOCUS
    return DefocusReading(float(best + SMALLEST_RING), float(depth[best]))


def combined_width(
    edge_widths: np.ndarray, spectral_widths: np.ndarray, readers: int = SPECTRAL_READERS
) -> np.ndarray:
    """A blur's width (px, Gaussian sigma) from the edges' calibrated reading and the
    spectrum's, per image.

    Args:
        edge_widths: (N,)
        spectral_widths: (N, 2): :attr:`SpectralBlur.widths` (the cepstrum's width, the
            round blur's or NaN where the image had no tile to read)
        readers: the view's ``spectral_blur``: 1, the larger of the edges' and the
            cepstrum's; 2, the largest of the round blur's, the cepstrum's and
            ``EDGE_WEIGHT`` times the edges' (all of the edges' where the round blur was
            not read). The cepstrum's counts up to ``MOST_OVER_EDGES`` times the edges'.
    """
    edges = np.asarray(edge_widths, dtype=np.float64)
    spectral = np.asarray(spectral_widths, dtype=np.float64).reshape(edges.size, 2)
    cepstral = np.minimum(spectral[:, 0], MOST_OVER_EDGES * edges)
    if readers < 2:
        return np.maximum(edges, cepstral)
    read = np.isfinite(spectral[:, 1])
    edges_share = np.where(read, EDGE_WEIGHT * edges, edges)
    return np.maximum.reduce([edges_share, cepstral, np.where(read, spectral[:, 1], 0.0)])


def read_spectral_blur(native: torch.Tensor) -> SpectralBlur:
    """The camera shake, the defocus ring and the round blur in a uint8 (3, H, W) image."""
    power = mean_power(native)
    if power is None:
        return NOTHING_READ
    spectrum = cepstrum_of(power)
    return SpectralBlur(read_shake(spectrum), read_defocus(spectrum), read_round_blur(power))


__all__ = [
    "NO_DEFOCUS",
    "NO_SHAKE",
    "NOTHING_READ",
    "SPECTRAL_READERS",
    "DefocusReading",
    "ShakeReading",
    "SpectralBlur",
    "cepstrum_of",
    "combined_width",
    "mean_power",
    "read_defocus",
    "read_round_blur",
    "read_shake",
    "read_spectral_blur",
    "tile_corners",
]
