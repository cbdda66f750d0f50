"""Distortions with a magnitude in real units.

*Local* distortions (blur, noise, JPEG, pixelation) have magnitudes in the pixels of
the image as stored, and their models read native-resolution patches; *global* ones
(brightness, contrast, rotation) are whole-image quantities read from the whole image,
downscaled (see :mod:`siamese_quality.views`).

Each distortion is a small pure function ``f(image, magnitude) -> image`` on uint8
tensors shaped ``(3, H, W)``, in the style of ``torchvision.transforms.v2.functional``,
plus a :class:`Distortion` record that describes it (unit, range, sidedness) for
training, calibration and the App. Outputs are rounded back to uint8 because real
photos are stored with 8 bits: a model must not tell distorted copies apart by
sub-quantisation values that no real image has.

Every distortion also has an *independent implementation* (OpenCV or Pillow instead
of torchvision) used only in evaluation, to check that a model learned the
distortion and not our code's fingerprint.

Add your own with :func:`register_distortion`::

    def vignette(image, strength):
        ...

    register_distortion(Distortion(
        name="vignette", apply=vignette, unit="strength", low=0.0, high=1.0,
        identity=0.0, description="darkened corners"))
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageEnhance

from .baselines import (
    Baseline,
    flat_neighbour_share,
    mean_hsv_value,
    negative_blockiness,
    negative_log_laplacian_variance,
    tonal_reach,
    wavelet_noise_sigma,
)
from .severity import severity_rule

DistortionFn = Callable[[torch.Tensor, float], torch.Tensor]
BatchDistortionFn = Callable[[torch.Tensor, Sequence[float]], torch.Tensor]


@dataclass(frozen=True)
class Distortion:
    """A distortion and the range of magnitudes a model learns to rank.

    Attributes:
        name: registry key, also the default model key and field name
        apply: ``f(uint8 image (3, H, W), magnitude) -> uint8 image``
        unit: what the magnitude measures, e.g. ``"px (Gaussian sigma)"``
        low, high: the magnitude range used in training and calibration
        identity: the magnitude at which ``apply`` returns the image unchanged
        two_sided: True when magnitudes on both sides of ``identity`` are
            distortions (rotation left/right, darker/brighter)
        higher_is_worse: for one-sided distortions, whether larger magnitudes
            are worse (blur sigma) or better (JPEG quality)
        description: one line for people, formula in the function's docstring
        alternative: an independent implementation, for evaluation only
        apply_many: optional ``f(image, magnitudes) -> (M, 3, H, W)``, the same as
            ``apply`` at each magnitude but faster (training renders thousands of copies)
        train_many: optional ``f(image, magnitudes) -> (M, 3, H, W)`` for training copies
            only, where they should vary more than the unit's definition: blur's unit is
            the sigma of a round Gaussian (``apply``, which the held-out copies that
            choose the checkpoint and fit the calibration get), and it also trains on
            camera shake. Default: ``apply_many``, else ``apply``
        local: True when the damage is local and its magnitude is in the stored image's
            pixels: the model reads native-resolution patches (see ``views.PatchView``)
        patch_quantile: local only: the image's score is this quantile of its patch
            scores (see ``views.PatchView``)
        min_patch_structure: local only: patches whose grey levels vary less than this
            (standard deviation, 0-255) carry no evidence and do not vote
        reads_spectral_blur: local only: an image's value also reads the camera shake,
            defocus and round blur its whole spectrum shows (blur;
            :mod:`~siamese_quality.core.cepstrum`)
        reads_encoded_quality: local only: where the stored file says how it was
            compressed (a JPEG's quantization tables), an image's value reads that
            (JPEG; :mod:`~siamese_quality.core.encoding`)
        jpeg_file_reader: local only: a second reader scores the images whose file is a
            JPEG (its tables say so), trained with half its copies saved as a JPEG (noise:
            a save at 95 smooths the finest detail the first reader reads, so a noisy
            JPEG read at a quarter of its sigma; trained so throughout, the first reader
            lost the weak noise of lossless files)
        reads_stored_levels: global only: the model reads a sample of the stored
            pixels from the whole image, not a resize of it (``views.WholeView``'s
            ``stored_levels``): readers of the tones (brightness, contrast), whose darkest
            and brightest levels a resize would average away
        supersample: global only: the distortion is rendered at this multiple of the
            working resolution and downsampled, so resampling itself leaves no trace
        input_crop: global only: the centre fraction of the working-resolution image
            the model sees, in training and scoring alike (rotation: no empty corners)
        invariances: changes of an undistorted source that leave it undistorted
            for this task, used as training augmentation: ``"turns"`` (vertical
            flips, 90-degree turns), ``"channels"`` (colour channel order),
            ``"tone"`` (gamma); and ``"noise"``, damage the model must not read as
            its own (the same noise added to every copy after the distortion)
        calibration_kind: the calibration curve (``MonotoneCalibration`` kinds):
            ``"auto"`` picks isotonic or a straight line by which predicts other images
            better (squared error, which large magnitudes dominate); blur fixes
            ``"isotonic"``: a line through its log edge widths read 2 px as 3
        spacing: how training and calibration magnitudes spread over the range:
            ``"linear"``, or ``"log"`` (equal ratios; ``low`` must be positive) where a
            step from 1.5 to 2 matters as much as one from 6 to 8
        training_defaults: :class:`~siamese_quality.training.TrainingConfig` values
            that suit this task (``backbone``, ``learning_rate``, ``patch_fraction``,
            ``working_resolution``, ``patch_count``, ``images_per_batch``)
        baseline: the classical, training-free measure a model must beat
            (:class:`~siamese_quality.baselines.Baseline`: its name and function), or None
        module: the importable module whose import registers this distortion
            (default: the module that defines ``apply``). Models record it, so that
            other processes (the App server, delegated workers) import it to find the
            distortion; see :func:`get_distortion`
    """

    name: str
    apply: DistortionFn
    unit: str
    low: float
    high: float
    identity: float
    description: str
    two_sided: bool = False
    higher_is_worse: bool = True
    alternative: DistortionFn | None = None
    apply_many: BatchDistortionFn | None = None
    train_many: BatchDistortionFn | None = None
    local: bool = False
    patch_quantile: float = 0.5
    min_patch_structure: float = 0.0
    reads_spectral_blur: bool = False
    reads_encoded_quality: bool = False
    jpeg_file_reader: bool = False
    reads_stored_levels: bool = False
    supersample: int = 1
    input_crop: float = 1.0
    invariances: frozenset[str] = frozenset({"turns", "channels", "tone"})
    spacing: str = "linear"
    calibration_kind: str = "auto"
    # local evidence: half-size crops train ~4x more examples per second
    training_defaults: Mapping[str, object] = field(
        default_factory=lambda: {"backbone": "small_cnn", "patch_fraction": 0.5}
    )

    baseline: Baseline | None = None
    module: str | None = None

    @property
    def home(self) -> str | None:
        """The module another process imports to find this distortion, or None
        (defined in ``__main__``: a script or notebook)."""
        home = self.module or getattr(self.apply, "__module__", None)
        return None if home in (None, "__main__") else home

    def __post_init__(self):
        if self.spacing not in ("linear", "log"):
            raise ValueError(f"spacing must be 'linear' or 'log', got {self.spacing!r}")
        if self.spacing == "log" and not self.low > 0:
            raise ValueError(f"{self.name}: log spacing needs a positive low end")
        if self.calibration_kind not in ("auto", "isotonic", "linear"):
            raise ValueError(
                f"{self.name}: calibration_kind must be 'auto', 'isotonic' or 'linear', "
                f"got {self.calibration_kind!r}"
            )

    def spread(self, fractions: np.ndarray) -> np.ndarray:
        """Positions in [0, 1] along the range -> magnitudes, by the distortion's spacing."""
        fractions = np.asarray(fractions, dtype=float)
        if self.spacing == "log":
            return self.low * (self.high / self.low) ** fractions
        return self.low + (self.high - self.low) * fractions

    def position(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Magnitudes -> positions in [0, 1] along the range (the inverse of :meth:`spread`)."""
        magnitudes = magnitudes.double()
        if self.spacing == "log":
            return torch.log(magnitudes.clamp(min=self.low) / self.low) / math.log(
                self.high / self.low
            )
        return (magnitudes - self.low) / (self.high - self.low)

    def severity(self, magnitude):
        """How far ``magnitude`` is from the undistorted image, in the unit: see
        :func:`severity_rule` (numbers, arrays and FiftyOne expressions alike)."""
        return severity_rule(self.to_dict(), magnitude)

    def to_dict(self) -> dict:
        """JSON-serialisable description (without the functions)."""
        return {
            "name": self.name,
            "unit": self.unit,
            "low": self.low,
            "high": self.high,
            "identity": self.identity,
            "two_sided": self.two_sided,
            "higher_is_worse": self.higher_is_worse,
            "description": self.description,
            "local": self.local,
            "patch_quantile": self.patch_quantile,
            "module": self.home,
            "min_patch_structure": self.min_patch_structure,
            "reads_spectral_blur": self.reads_spectral_blur,
            "reads_encoded_quality": self.reads_encoded_quality,
            "jpeg_file_reader": self.jpeg_file_reader,
            "reads_stored_levels": self.reads_stored_levels,
            "supersample": self.supersample,
            "input_crop": self.input_crop,
            "spacing": self.spacing,
            "baseline": self.baseline.name if self.baseline else None,
        }


_REGISTRY: dict[str, Distortion] = {}


ENTRY_POINT_GROUP = "siamese_quality.distortions"
_entry_points_loaded = False


def register_distortion(distortion: Distortion, overwrite: bool = False) -> Distortion:
    """Adds ``distortion`` to the registry under its name.

    To use it beyond this process (the App, ``fiftyone delegated launch`` workers),
    register it at the import of a module those processes can import: models record
    that module (:attr:`Distortion.home`). A package can also name the module in an
    entry point of the group ``siamese_quality.distortions``, so that the App lists
    the distortion before any model of it exists.
    """
    if distortion.name in _REGISTRY and not overwrite:
        raise ValueError(f"A distortion named {distortion.name!r} is already registered")
    if not distortion.low < distortion.high:
        raise ValueError(f"{distortion.name}: low must be below high")
    if not distortion.low <= distortion.identity <= distortion.high:
        raise ValueError(f"{distortion.name}: identity must lie within [low, high]")
    if not 0 <= distortion.patch_quantile <= 1:
        raise ValueError(f"{distortion.name}: patch_quantile must lie within [0, 1]")
    if distortion.reads_spectral_blur and not distortion.local:
        raise ValueError(f"{distortion.name}: only a local distortion reads spectral blur")
    if (distortion.reads_encoded_quality or distortion.jpeg_file_reader) and not distortion.local:
        raise ValueError(f"{distortion.name}: only a local distortion reads how a file is encoded")
    if distortion.home is None:
        warnings.warn(
            f"distortion {distortion.name!r} is defined in __main__: only this process can "
            "use it. Define it in an importable module for the App and delegated workers",
            stacklevel=2,
        )
    _REGISTRY[distortion.name] = distortion
    return distortion


def _load_entry_points() -> None:
    """Imports the modules that installed packages name for their distortions (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as e:  # one broken package must not hide the others
            warnings.warn(f"distortions of entry point {entry_point.value!r}: {e}", stacklevel=2)


def get_distortion(name: str, module: str | None = None) -> Distortion:
    """Returns the registered distortion ``name``.

    Unknown here, it is looked for in the distortion entry points and then in
    ``module`` (what a model records: the module whose import registers it).

    Raises:
        ValueError: unknown, naming the available ones (and the module that failed)
    """
    if name not in _REGISTRY:
        _load_entry_points()
    problem = ""
    if name not in _REGISTRY and module:
        try:
            importlib.import_module(module)
        except Exception as e:  # the user's module: any error means "not found"
            problem = f"; its module {module!r} could not be imported ({type(e).__name__}: {e})"
        else:
            if name not in _REGISTRY:
                problem = f"; importing its module {module!r} did not register it"
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown task {name!r}{problem}; available: {', '.join(list_distortions())}"
        ) from None


def list_distortions() -> list[str]:
    """Names of the registered distortions (the entry points' included)."""
    _load_entry_points()
    return list(_REGISTRY)


# --- helpers ------------------------------------------------------------------------


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0, 255).round().to(torch.uint8)


def _check_uint8(image: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"expected a uint8 image tensor (3, H, W), got {image.dtype} {tuple(image.shape)}"
        )


def _to_numpy_hwc(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _from_numpy_hwc(array: np.ndarray) -> torch.Tensor:
    writable = np.require(array, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    return torch.from_numpy(writable).permute(2, 0, 1).contiguous()


def _blur_kernel_size(sigma: float) -> int:
    # +-4 sigma keeps the truncation error below 1/255
    return 2 * max(1, math.ceil(4 * sigma)) + 1


# --- blur ----------------------------------------------------------------------------


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur: ``I * G_sigma``, sigma in pixels of the image it is applied to."""
    _check_uint8(image)
    if sigma <= 0:
        return image.clone()
    k = _blur_kernel_size(sigma)
    return F.gaussian_blur(image, [k, k], [float(sigma), float(sigma)])


def gaussian_blur_many(image: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """:func:`gaussian_blur` at every sigma in one pass: uint8 (len(sigmas), 3, H, W).

    Separable convolutions with each sigma's own truncated kernel (zero-padded to the
    largest) and the same reflect borders: the result equals :func:`gaussian_blur`
    at each sigma up to float rounding.
    """
    _check_uint8(image)
    sigmas = [float(s) for s in sigmas]
    count = len(sigmas)
    radius = max(_blur_kernel_size(s) // 2 if s > 0 else 0 for s in sigmas)
    if radius == 0:
        return image[None].repeat(count, 1, 1, 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.zeros(count, 2 * radius + 1)
    for i, sigma in enumerate(sigmas):
        if sigma <= 0:
            kernels[i, radius] = 1.0
            continue
        half = _blur_kernel_size(sigma) // 2
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2) * (offsets.abs() <= half)
        kernels[i] = weights / weights.sum()
    channels = image.shape[0]
    padded = torch.nn.functional.pad(image[None].float(), [radius] * 4, mode="reflect")
    # channel c, sigma m -> output channel c * count + m
    horizontal = kernels.repeat(channels, 1)[:, None, None, :]
    rows = torch.nn.functional.conv2d(padded, horizontal, groups=channels)
    vertical = kernels.repeat(channels, 1)[:, None, :, None]
    blurred = torch.nn.functional.conv2d(rows, vertical, groups=channels * count)
    height, width = image.shape[1:]
    blurred = blurred[0].view(channels, count, height, width).transpose(0, 1)
    return _to_uint8(blurred)


def gaussian_kernel_2d(sigma_major: float, sigma_minor: float, angle: float) -> torch.Tensor:
    """A normalised, point-symmetric Gaussian point spread: ``sigma_major`` px along
    ``angle`` (radians), ``sigma_minor`` across, truncated at 4 ``sigma_major``."""
    radius = _blur_kernel_size(sigma_major) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    kernel = torch.exp(-0.5 * ((along / sigma_major) ** 2 + (across / sigma_minor) ** 2))
    kernel = kernel * (x**2 + y**2 <= radius**2)
    return (kernel / kernel.sum()).float()


def _convolve_many(image: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    """``image`` (3, H, W) convolved with each point-symmetric kernel, reflect borders,
    in one FFT: float (len(kernels), 3, H, W)."""
    radius = max(k.shape[-1] // 2 for k in kernels)
    height, width = image.shape[1:]
    padded = torch.nn.functional.pad(image[None].float(), [radius] * 4, mode="reflect")[0]
    size = padded.shape[1:]
    stack = torch.zeros(len(kernels), *size)
    for i, kernel in enumerate(kernels):
        r = kernel.shape[-1] // 2
        stack[i, : 2 * r + 1, : 2 * r + 1] = kernel
        stack[i] = torch.roll(stack[i], shifts=(-r, -r), dims=(0, 1))
    spectrum = torch.fft.rfft2(padded, s=size)[None] * torch.fft.rfft2(stack, s=size)[:, None]
    blurred = torch.fft.irfft2(spectrum, s=size)
    return blurred[..., radius : radius + height, radius : radius + width]


# the smallest blur across the long axis of a point spread (sampling a thinner line aliases)
_MIN_SIGMA_ACROSS = 0.5


def camera_blur_many(
    image: torch.Tensor, sigmas: Sequence[float], seed: int | None = None
) -> torch.Tensor:
    """Blur as lenses and shaking cameras make it, at each ``sigma``: (M, 3, H, W) uint8.

    ``sigma`` is the standard deviation of the point spread along its longest axis, in
    px (for a round blur, the Gaussian sigma). Half of the images (chosen by the seed,
    default: derived from the image, so every sigma of one image has the same shape)
    get a round Gaussian; the others an elongated one, as camera shake makes, turned
    by a random angle and 0.15 to 1 times as wide across.
    """
    _check_uint8(image)
    generator = torch.Generator().manual_seed(_noise_seed(image, 0) if seed is None else seed)
    elongated, ratio, turn = torch.rand(3, generator=generator).tolist()
    ratio = 1.0 if elongated < 0.5 else 0.15 + 0.85 * ratio
    kernels = []
    for sigma in (float(s) for s in sigmas):
        if sigma <= 0:
            kernels.append(torch.ones(1, 1))
            continue
        across = min(sigma, max(_MIN_SIGMA_ACROSS, ratio * sigma))
        kernels.append(gaussian_kernel_2d(sigma, across, math.pi * turn))
    return _to_uint8(_convolve_many(image, kernels))


def camera_blur(image: torch.Tensor, sigma: float, seed: int | None = None) -> torch.Tensor:
    """:func:`camera_blur_many` at one sigma."""
    return camera_blur_many(image, [sigma], seed)[0]


def gaussian_blur_opencv(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same blur through OpenCV (reflect-101 borders, its own kernel code)."""
    _check_uint8(image)
    if sigma <= 0:
        return image.clone()
    blurred = cv2.GaussianBlur(_to_numpy_hwc(image), (0, 0), sigmaX=float(sigma))
    return _from_numpy_hwc(blurred)


# --- rotation ------------------------------------------------------------------------


def rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotation about the centre by ``degrees`` (positive: counter-clockwise), bilinear.

    Corners left empty by the rotation are cut away by the task's ``input_crop``.
    """
    _check_uint8(image)
    if degrees == 0:
        return image.clone()
    return F.rotate(image, float(degrees), interpolation=F.InterpolationMode.BILINEAR)


def rotate_pillow(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """The same rotation through Pillow's affine resampler (bicubic)."""
    _check_uint8(image)
    if degrees == 0:
        return image.clone()
    pil = Image.fromarray(_to_numpy_hwc(image)).rotate(float(degrees), resample=Image.BICUBIC)
    return _from_numpy_hwc(np.asarray(pil))


def inscribed_crop_fraction(max_degrees: float) -> float:
    """Side of the largest centred square inside a square rotated by up to ``max_degrees``.

    A square of side 1 rotated by theta contains an axis-aligned centred square of side
    ``1 / (|cos theta| + |sin theta|)``; cropping every image to it (rotated or not) hides
    the empty corners, so the angle cannot be read off the border.
    """
    theta = math.radians(abs(max_degrees))
    return 1.0 / (math.cos(theta) + math.sin(theta))


# --- brightness: exposure ------------------------------------------------------------

# sRGB's display gamma: a level v on 0-255 is (v / 255) ** 2.2 in linear light
SRGB_GAMMA = 2.2


def exposure(image: torch.Tensor, stops: float) -> torch.Tensor:
    """Exposure changed by ``stops`` as a camera changes it: a gain of ``2 ** stops`` in
    linear light, clipped at white. Under-exposure darkens every tone and keeps the hue;
    over-exposure brightens and clips the highlights first. Positive brightens.

    An earlier unit, an additive shift of HSV value, is not how exposure goes wrong: it
    lifts the blacks and leaves the highlights' share of the range to the scene, and a
    model trained on it learned to read the mean level, which mixes exposure with how
    dark a scene is (docs/experiments.md).
    """
    _check_uint8(image)
    if stops == 0:
        return image.clone()
    linear = (image.float() / 255.0).pow(SRGB_GAMMA)
    return _to_uint8(255.0 * (linear * 2.0**stops).clamp(0, 1).pow(1 / SRGB_GAMMA))


def exposure_lookup(image: torch.Tensor, stops: float) -> torch.Tensor:
    """The same exposure through a 256-entry table that Pillow applies per channel."""
    _check_uint8(image)
    if stops == 0:
        return image.clone()
    gain = 2.0**stops
    table = [
        round(255.0 * min(1.0, (level / 255.0) ** SRGB_GAMMA * gain) ** (1 / SRGB_GAMMA))
        for level in range(256)
    ]
    moved = Image.fromarray(_to_numpy_hwc(image)).point(table * 3)
    return _from_numpy_hwc(np.asarray(moved))


# --- noise ---------------------------------------------------------------------------


def _noise_seed(image: torch.Tensor, sigma: float) -> int:
    # Deterministic per (image, sigma): pure function, reproducible datasets
    return (int(image[:, ::7, ::7].sum()) * 1_000_003 + int(sigma * 1000)) % (2**31)


def gaussian_noise(image: torch.Tensor, sigma: float, seed: int | None = None) -> torch.Tensor:
    """Additive white Gaussian noise: ``clip(I + N(0, sigma^2))``, sigma on the 0-255 scale.

    The noise is drawn from a generator seeded by ``seed`` (default: derived from the
    image and sigma), so the function is pure.
    """
    _check_uint8(image)
    if sigma <= 0:
        return image.clone()
    generator = torch.Generator().manual_seed(_noise_seed(image, sigma) if seed is None else seed)
    noise = torch.randn(image.shape, generator=generator) * float(sigma)
    return _to_uint8(image.float() + noise)


def camera_noise(image: torch.Tensor, sigma: float, seed: int | None = None) -> torch.Tensor:
    """Sensor-like noise whose RMS over the image is ``sigma`` (0-255 scale).

    Camera noise is not white Gaussian: photon (shot) noise grows with the signal, and
    demosaicing correlates neighbouring pixels. Each call draws, from its seed, the
    share of the variance that is proportional to the signal (0: white Gaussian, 1: pure
    shot noise), half of the time a spatial correlation (the noise field blurred by
    sigma 0.3-0.8 px, then rescaled) and the noise field. The RMS stays ``sigma`` in
    every case. The default seed is derived from the image alone, so the function is
    pure and every sigma of one image gets the same noise, scaled.
    """
    _check_uint8(image)
    if sigma <= 0:
        return image.clone()
    generator = torch.Generator().manual_seed(_noise_seed(image, 0) if seed is None else seed)
    shot_share, correlated, spread = torch.rand(3, generator=generator).tolist()
    level = image.float()
    variance = shot_share * level / level.mean().clamp(min=1.0) + (1.0 - shot_share)
    noise = torch.randn(image.shape, generator=generator) * variance.sqrt()
    if correlated < 0.5:
        sigma_px = 0.3 + 0.5 * spread
        k = _blur_kernel_size(sigma_px)
        noise = F.gaussian_blur(noise[None], [k, k], [sigma_px, sigma_px])[0]
    noise = noise * (float(sigma) / noise.pow(2).mean().sqrt().clamp(min=1e-6))
    return _to_uint8(level + noise)


def gaussian_noise_numpy(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same noise from NumPy's generator (another random stream and code path)."""
    _check_uint8(image)
    if sigma <= 0:
        return image.clone()
    rng = np.random.default_rng(_noise_seed(image, sigma) + 1)
    noisy = _to_numpy_hwc(image).astype(np.float64) + rng.normal(
        0.0, sigma, (image.shape[1], image.shape[2], 3)
    )
    return _from_numpy_hwc(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


# --- JPEG ----------------------------------------------------------------------------


def jpeg_compress(image: torch.Tensor, quality: float) -> torch.Tensor:
    """JPEG encode and decode at ``quality`` (1-100) with Pillow's libjpeg, 4:2:0 chroma.

    ``quality >= 100`` is taken as "not compressed" and returns the image unchanged.
    """
    _check_uint8(image)
    if quality >= 100:
        return image.clone()
    buffer = io.BytesIO()
    Image.fromarray(_to_numpy_hwc(image)).save(
        buffer, format="JPEG", quality=int(round(max(1.0, quality)))
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _from_numpy_hwc(np.asarray(decoded.convert("RGB")))


def jpeg_compress_opencv(image: torch.Tensor, quality: float) -> torch.Tensor:
    """The same compression through OpenCV's encoder and decoder."""
    _check_uint8(image)
    if quality >= 100:
        return image.clone()
    bgr = cv2.cvtColor(_to_numpy_hwc(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    decoded = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return _from_numpy_hwc(decoded)


# --- contrast ------------------------------------------------------------------------


def contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Contrast scaling about the mean grey level: ``clip(m + factor * (I - m))``."""
    _check_uint8(image)
    if factor == 1:
        return image.clone()
    return F.adjust_contrast(image, float(factor))


def contrast_pillow(image: torch.Tensor, factor: float) -> torch.Tensor:
    """The same through Pillow's ``ImageEnhance.Contrast``."""
    _check_uint8(image)
    if factor == 1:
        return image.clone()
    pil = ImageEnhance.Contrast(Image.fromarray(_to_numpy_hwc(image))).enhance(float(factor))
    return _from_numpy_hwc(np.asarray(pil))


# --- pixelation ----------------------------------------------------------------------


def _pixelated_size(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, round(height / factor)), max(1, round(width / factor))


def pixelate(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Pixelation: area-downscale by ``factor``, then nearest-neighbour upscale back.

    ``factor`` is the block size in pixels of the image it is applied to (1: unchanged).
    """
    _check_uint8(image)
    if factor <= 1:
        return image.clone()
    height, width = image.shape[1:]
    small_size = _pixelated_size(height, width, factor)
    small = torch.nn.functional.interpolate(image[None].float(), size=small_size, mode="area")
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="nearest")
    return _to_uint8(big[0])


def pixelate_pillow(image: torch.Tensor, factor: float) -> torch.Tensor:
    """The same through Pillow (box downscale, nearest upscale)."""
    _check_uint8(image)
    if factor <= 1:
        return image.clone()
    height, width = image.shape[1:]
    small_h, small_w = _pixelated_size(height, width, factor)
    pil = Image.fromarray(_to_numpy_hwc(image))
    pil = pil.resize((small_w, small_h), Image.BOX).resize((width, height), Image.NEAREST)
    return _from_numpy_hwc(np.asarray(pil))


# --- the built-in registry -----------------------------------------------------------

# Scans, phone photos and drone frames are tilted by more than 15 degrees (issue 26), but
# trained on -30..+30 the default reader found 1 of the demo's 10 tilts where it finds 5:
# the range widens when a reader that uses it is the default
ROTATION_MAX_DEGREES = 15.0

# A patch whose grey levels vary less than this (standard deviation, 0-255) is flat:
# no blur, JPEG block or pixel block shows on it
FLAT_PATCH_STD = 2.0

# Local tasks read 64-px patches at native resolution, 16 per image, and train on
# 16 patches (each at 6 magnitudes) per step
_LOCAL_DEFAULTS = {
    "backbone": "small_cnn",
    "working_resolution": 64,
    "patch_count": 16,
    "patch_fraction": 1.0,
    "images_per_batch": 16,
}

register_distortion(
    Distortion(
        name="blur",
        baseline=Baseline("variance of the Laplacian", negative_log_laplacian_variance),
        apply=gaussian_blur,
        apply_many=gaussian_blur_many,
        # its unit is a round Gaussian's sigma; shake's elongated blur is trained on too
        train_many=camera_blur_many,
        alternative=gaussian_blur_opencv,
        unit="px of the stored image (Gaussian sigma)",
        low=0.0,
        high=8.0,
        identity=0.0,
        local=True,
        # the sharpest parts tell the blur of a photo (focus, bokeh): a low quantile
        patch_quantile=0.05,
        calibration_kind="isotonic",
        min_patch_structure=FLAT_PATCH_STD,
        # a long shake leaves patches too few edges across its path; the whole image's
        # cepstrum still shows it, and a defocus disk's rings (benchmarks/RESULTS.md)
        reads_spectral_blur=True,
        # without it a noisy photo reads sharper (|Spearman| 0.37 against noise, 0.05
        # with it: benchmarks/RESULTS.md)
        invariances=frozenset({"turns", "channels", "tone", "noise"}),
        training_defaults={**_LOCAL_DEFAULTS, "backbone": "edge_spread"},
        description="Gaussian blur: sigma of a round Gaussian, in pixels of the image as "
        "stored (training also sees camera shake's elongated blur)",
    )
)
register_distortion(
    Distortion(
        name="rotation",
        apply=rotate,
        alternative=rotate_pillow,
        unit="degrees (counter-clockwise)",
        low=-ROTATION_MAX_DEGREES,
        high=ROTATION_MAX_DEGREES,
        identity=0.0,
        two_sided=True,
        supersample=2,
        # 3 % inside the inscribed square: its corners touch the border, where bilinear
        # interpolation already mixes in the empty fill
        input_crop=0.97 * inscribed_crop_fraction(ROTATION_MAX_DEGREES),
        # a level source turned by 90 degrees is still level: its edges stay at 0 and 90
        invariances=frozenset({"turns", "channels", "tone"}),
        # a fixed reader in degrees (nothing trains) that writes rotation_confidence:
        # on the tilt benchmark it ranks -30..+30 degrees above the trained edge
        # histogram (backbone="orientation", 128 px), with no seed lottery (RESULTS.md)
        training_defaults={
            "backbone": "lines_or_edges",
            "learning_rate": 3e-3,
            "patch_fraction": 1.0,
        },
        description="Tilt about the image centre; positive is counter-clockwise",
    )
)
register_distortion(
    Distortion(
        name="brightness",
        baseline=Baseline("mean HSV value", mean_hsv_value),
        apply=exposure,
        alternative=exposure_lookup,
        unit="stops of exposure (EV)",
        low=-2.0,
        high=2.0,
        identity=0.0,
        two_sided=True,
        invariances=frozenset({"turns", "channels"}),
        # The mean grey beside the highlights, as the start of a linear reader
        # (model.ExposureLevelsNet): the highlights carry exposure, not the scene. The
        # stored pixels of the whole image: a highlight may be anywhere, and is small
        reads_stored_levels=True,
        training_defaults={
            "backbone": "exposure_levels",
            "working_resolution": 128,
            "patch_fraction": 1.0,
        },
        description="Exposure in stops (gain in linear light); negative is darker",
    )
)
register_distortion(
    Distortion(
        name="noise",
        baseline=Baseline("wavelet noise estimate", wavelet_noise_sigma),
        apply=camera_noise,
        alternative=gaussian_noise_numpy,
        unit="sigma on 0-255 (native resolution)",
        low=0.0,
        high=48.0,
        identity=0.0,
        local=True,
        patch_quantile=0.25,
        # JPEG files get their own reader (benchmarks/RESULTS.md: noise saved as a JPEG)
        jpeg_file_reader=True,
        # a learned reader of the finest wavelet detail: 0.99 where a CNN read 0.93 and
        # the wavelet estimate 0.96 (benchmarks/RESULTS.md)
        training_defaults={**_LOCAL_DEFAULTS, "backbone": "noise_residual"},
        description="Sensor-like noise (white to signal-dependent); RMS sigma at native resolution",
    )
)
register_distortion(
    Distortion(
        name="jpeg",
        baseline=Baseline("8x8 blockiness", negative_blockiness),
        apply=jpeg_compress,
        alternative=jpeg_compress_opencv,
        unit="JPEG quality (as encoded)",
        low=5.0,
        high=100.0,
        identity=100.0,
        higher_is_worse=False,
        local=True,
        patch_quantile=0.25,
        min_patch_structure=FLAT_PATCH_STD,
        # a JPEG file's tables say its quality exactly (the pixels where they show more)
        reads_encoded_quality=True,
        training_defaults=_LOCAL_DEFAULTS,
        description="JPEG compression as encoded in the file; 100 means uncompressed",
    )
)
register_distortion(
    Distortion(
        name="contrast",
        baseline=Baseline("tonal reach", tonal_reach),
        apply=contrast,
        alternative=contrast_pillow,
        unit="contrast factor",
        low=0.3,
        high=1.7,
        identity=1.0,
        two_sided=True,
        invariances=frozenset({"turns", "channels"}),
        # The classical tonal reach as the start of a linear reader of how far the tones
        # reach from the mean grey (model.TonalReachStartNet): on photos as stored 0.917
        # where the MLP head over the same tails read 0.880 (benchmarks/RESULTS.md). It
        # reads the stored pixels of the whole image, where the darkest and brightest
        # tones are: from a 256-px resize it ranked contrast at 0.918, from them 0.929.
        reads_stored_levels=True,
        training_defaults={
            "backbone": "tonal_reach",
            "working_resolution": 256,
            "patch_fraction": 1.0,
        },
        description="Contrast scaled about the mean grey; below 1 is flatter",
    )
)
register_distortion(
    Distortion(
        name="pixelation",
        baseline=Baseline("equal-neighbour share", flat_neighbour_share),
        apply=pixelate,
        alternative=pixelate_pillow,
        unit="block size (px of the stored image)",
        low=1.0,
        high=10.0,
        identity=1.0,
        local=True,
        patch_quantile=0.5,
        min_patch_structure=FLAT_PATCH_STD,
        # a learned reader of how often neighbours are equal (model.PixelGridNet)
        training_defaults={**_LOCAL_DEFAULTS, "backbone": "pixel_grid"},
        # blocks of 1.5 and 2 px differ as much as 6 and 8: linear spacing left the
        # small blocks almost unranked (read as no pixelation)
        spacing="log",
        description="Downscale by the block size and upscale with nearest neighbour; "
        "block size in pixels of the image as stored",
    )
)

__all__ = [
    "Distortion",
    "register_distortion",
    "get_distortion",
    "list_distortions",
    "inscribed_crop_fraction",
    "gaussian_blur",
    "camera_blur",
    "rotate",
    "exposure",
    "gaussian_noise",
    "camera_noise",
    "jpeg_compress",
    "contrast",
    "pixelate",
]
