"""Degradations of full-size photos, for the native-resolution benchmark and the demo.

Each family damages a photo *as stored*, at its own resolution, before any resizing,
with an implementation that shares no code with ``siamese_quality`` (OpenCV, Pillow,
scikit-image, NumPy). Several families are kinds of damage the models never trained
on (defocus disks, camera-shake lines, shot noise, exposure by gain and gamma).

A family's magnitude is the quantity the matching model reports, in the file's own
pixels: Gaussian sigma, noise sigma on 0-255, JPEG quality, block size. Families
without such a unit (defocus radius, shake length, exposure) are ranked only.

It imports nothing from the rest of the library (a test checks): code shared with
training would hide that code's mistakes from the measurements.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageEnhance

Degrade = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Family:
    """One kind of damage at several magnitudes, read by the model of ``task``.

    Attributes:
        identity: the magnitude of the undamaged photo (it joins every family)
        units: whether the model's field should equal the magnitude (units error)
        sign: +1 when the model's field grows with the magnitude, -1 when it falls
        suffix: file format of the damaged copy (JPEG quality must be the file's own)
        saved_quality: for a ``.jpg`` suffix, the quality the damaged pixels are saved
            at (a camera saves its noise; a photo is saved again); None: the magnitude
            is the quality, and the save is the damage
    """

    name: str
    task: str
    magnitudes: tuple[float, ...]
    identity: float
    degrade: Degrade
    units: bool = False
    suffix: str = ".png"
    description: str = ""
    saved_quality: float | None = None


def _clip(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def defocus_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A uniform disk (an out-of-focus lens), drawn anti-aliased at 8x and reduced."""
    size = 2 * math.ceil(radius) + 3
    big = np.zeros((size * 8, size * 8), np.float32)
    centre = size * 4 - 0.5
    cv2.circle(
        big,
        (int(centre * 16), int(centre * 16)),
        int(radius * 8 * 16),
        1.0,
        -1,
        lineType=cv2.LINE_AA,
        shift=4,
    )
    kernel = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def motion_blur(image: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Camera shake: a straight line of ``length`` px at a random angle, anti-aliased."""
    angle = rng.uniform(0, math.pi)
    size = 2 * math.ceil(length / 2) + 3
    big = np.zeros((size * 8, size * 8), np.float32)
    c = size * 4
    dx, dy = math.cos(angle) * length * 4, math.sin(angle) * length * 4
    cv2.line(
        big,
        (int((c - dx) * 16), int((c - dy) * 16)),
        (int((c + dx) * 16), int((c + dy) * 16)),
        1.0,
        8,
        lineType=cv2.LINE_AA,
        shift=4,
    )
    kernel = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _clip(image.astype(np.float64) + rng.normal(0.0, sigma, image.shape))


def shot_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise plus Gaussian read noise, each half the variance at mid-grey,
    scaled so that the noise's RMS over the photo is ``sigma``."""
    level = image.astype(np.float64)
    # variance per pixel: a * level + b with a * 128 = b; choose a for the RMS
    a = sigma**2 / (level.mean() + 128.0)
    photons = rng.poisson(level / a) * a
    read = rng.normal(0.0, math.sqrt(a * 128.0), image.shape)
    return _clip(photons + read)


def _develop(mosaic: np.ndarray) -> np.ndarray:
    """A linear RGGB mosaic (0-1) -> sRGB levels (float, 0-255) by OpenCV's demosaicing."""
    raw = np.round(np.clip(mosaic, 0.0, 1.0) * 65535.0).astype(np.uint16)
    linear = cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB).astype(np.float64) / 65535.0
    return 255.0 * linear ** (1 / 2.2)


def demosaiced_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A camera's noise before its JPEG save: photon and read noise on a Bayer mosaic in
    linear light, demosaiced by OpenCV (which correlates it between neighbours and
    channels) and brought back to sRGB (which lifts it in the shadows). Scaled so that
    its RMS over the photo, against the same mosaic developed without noise, is
    ``sigma``; the undamaged photo is not developed (the identity is the photo as it is)."""
    linear = (image / 255.0) ** 2.2
    mosaic = np.empty(image.shape[:2])
    # RGGB: red top-left (OpenCV calls this layout BayerBG), green twice, blue bottom-right
    for (row, column), channel in {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}.items():
        mosaic[row::2, column::2] = linear[row::2, column::2, channel]
    unit = rng.standard_normal(mosaic.shape) * np.sqrt(mosaic + 0.002)  # shot + read
    clean = _develop(mosaic)
    scale = 0.01
    for _ in range(2):  # the tone curve bends the RMS: measure it, rescale, once more
        rms = np.sqrt(np.mean((_develop(mosaic + scale * unit) - clean) ** 2))
        scale *= sigma / max(rms, 1e-9)
    return _clip(_develop(mosaic + scale * unit))


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Encoded with OpenCV (:func:`jpeg_bytes`, which damaged files are written as)."""
    encoded = np.frombuffer(jpeg_bytes(image, quality), np.uint8)
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]


def jpeg_bytes(image: np.ndarray, quality: float) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return encoded.tobytes()


def pixelation(image: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    """Box average to 1/block of the size, nearest-neighbour back up (OpenCV)."""
    height, width = image.shape[:2]
    small = cv2.resize(
        image,
        (max(1, round(width / block)), max(1, round(height / block))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def exposure_gain(image: np.ndarray, stops: float, rng: np.random.Generator) -> np.ndarray:
    """Exposure by ``stops`` as a camera applies it: gain in linear light, then sRGB."""
    linear = (image / 255.0) ** 2.2
    return _clip(255.0 * np.clip(linear * 2.0**stops, 0, 1) ** (1 / 2.2))


def exposure_gamma(image: np.ndarray, log2_gamma: float, rng: np.random.Generator) -> np.ndarray:
    """A tone curve ``v**gamma`` with ``gamma = 2**-log2_gamma`` (positive: brighter)."""
    return _clip(255.0 * (image / 255.0) ** (2.0**-log2_gamma))


def contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(image)).enhance(factor))


def rotation(image: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Turned about the centre (scikit-image, counter-clockwise), cropped to the largest
    axis-aligned rectangle of the same shape inside it and resized back (OpenCV)."""
    from skimage.transform import rotate

    height, width = image.shape[:2]
    turned = rotate(image, degrees, resize=False, order=3, preserve_range=True)
    theta = math.radians(abs(degrees))
    # largest rectangle with the photo's aspect ratio inside the turned photo
    scale = 1.0 / (math.cos(theta) + max(width / height, height / width) * math.sin(theta))
    crop_w, crop_h = max(8, int(width * scale)), max(8, int(height * scale))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = turned[top : top + crop_h, left : left + crop_w]
    return _clip(cv2.resize(cropped, (width, height), interpolation=cv2.INTER_CUBIC))


FAMILIES: tuple[Family, ...] = (
    Family(
        "gaussian blur",
        "blur",
        (1, 1.5, 2, 3, 4, 6),
        0,
        gaussian_blur,
        units=True,
        description="sigma px (OpenCV)",
    ),
    Family(
        "defocus blur", "blur", (1.5, 2, 3, 4, 6, 8), 0, defocus_blur, description="disk radius px"
    ),
    Family(
        "motion blur",
        "blur",
        (3, 5, 8, 12, 16, 24),
        0,
        motion_blur,
        description="shake length px, one random direction per photo",
    ),
    Family(
        "gaussian noise",
        "noise",
        (2, 4, 8, 12, 20, 32),
        0,
        gaussian_noise,
        units=True,
        description="sigma 0-255 (NumPy)",
    ),
    Family(
        "shot noise",
        "noise",
        (2, 4, 8, 12, 20, 32),
        0,
        shot_noise,
        units=True,
        description="Poisson + read noise, RMS sigma 0-255",
    ),
    Family(
        "jpeg",
        "jpeg",
        (5, 10, 15, 25, 40, 60, 80, 95),
        100,
        jpeg,
        units=True,
        suffix=".jpg",
        description="OpenCV quality",
    ),
    Family(
        "jpeg saved again",
        "jpeg",
        (5, 10, 15, 25, 40, 60),
        100,
        jpeg,
        units=True,
        suffix=".jpg",
        saved_quality=95,
        description="OpenCV quality of a first save, then saved again at 95",
    ),
    Family(
        "noise saved as jpeg",
        "noise",
        (2, 4, 8, 12, 20, 32),
        0,
        gaussian_noise,
        units=True,
        suffix=".jpg",
        saved_quality=95,
        description="sigma 0-255 (NumPy), then saved by OpenCV at quality 95",
    ),
    Family(
        "camera noise",
        "noise",
        (2, 4, 8, 12, 20, 32),
        0,
        demosaiced_noise,
        units=True,
        suffix=".jpg",
        saved_quality=90,
        description="RMS sigma 0-255 of shot and read noise on a Bayer mosaic, demosaiced "
        "(OpenCV), then saved by OpenCV at quality 90",
    ),
    Family(
        "pixelation",
        "pixelation",
        (1.5, 2, 3, 4, 6, 8),
        1,
        pixelation,
        units=True,
        description="block px (OpenCV box)",
    ),
    Family(
        "exposure gain",
        "brightness",
        (-1.5, -1, -0.5, 0.5, 1, 1.5),
        0,
        exposure_gain,
        description="stops, linear-light gain",
    ),
    Family(
        "exposure gamma",
        "brightness",
        (-1.2, -0.8, -0.4, 0.4, 0.8, 1.2),
        0,
        exposure_gamma,
        description="-log2 gamma",
    ),
    Family(
        "contrast",
        "contrast",
        (0.4, 0.55, 0.7, 0.85, 1.2, 1.45, 1.7),
        1,
        contrast,
        description="factor (Pillow)",
    ),
    Family(
        "rotation",
        "rotation",
        (-12, -8, -4, -2, 2, 4, 8, 12),
        0,
        rotation,
        description="degrees CCW (scikit-image)",
    ),
)


def write_damaged_copy(
    pixels: np.ndarray, family: Family, magnitude: float, path: str, rng: np.random.Generator
) -> None:
    """Writes ``pixels`` (uint8 RGB) damaged by ``family`` at ``magnitude`` to ``path``,
    through a partial file. JPEG damage is the file's own encoding (its quality is the
    file's); a family with ``saved_quality`` is damaged, then saved as a JPEG at it;
    everything else is a PNG."""
    partial = f"{path}.partial"
    if family.suffix == ".jpg":
        if family.saved_quality is not None:
            pixels, magnitude = family.degrade(pixels, float(magnitude), rng), family.saved_quality
        with open(partial, "wb") as f:
            f.write(jpeg_bytes(pixels, magnitude))
    else:
        damaged = family.degrade(pixels, float(magnitude), rng)
        Image.fromarray(damaged).save(partial, format="PNG", compress_level=1)  # fast, lossless
    os.replace(partial, path)


def get_family(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)
