"""Image loading: decode, honour EXIF orientation, convert odd modes, resize.

:class:`ImageFile` is the one way the library reads an image: it decodes every pixel
(for models that read native-resolution patches) or lets libjpeg decode a reduced
copy (for models that read the whole image downscaled), each at most once. Pillow is
the authority on every file; torchvision's decoder is only a faster road to the same
pixels for plain JPEGs (its image decoding is deprecated from torchvision 0.29: when it
goes, or fails, Pillow decodes).
:mod:`siamese_quality.views` turns those into what a model sees.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchvision.io as tvio
import torchvision.transforms.v2.functional as tvf
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | Image.Image | np.ndarray

# Below this the working-resolution image would be mostly invented by upscaling
MIN_SIDE = 16


class ImageLoadError(Exception):
    """An image could not be read; ``kind`` names the reason (e.g. ``"missing"``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            raise ImageLoadError("mode", f"expected a uint8 array, got {array.dtype}")
        return Image.fromarray(array)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ImageLoadError("missing", f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ImageLoadError("empty", f"empty file: {path}")
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageLoadError("too_large", f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageLoadError("not_an_image", f"{path}: not a readable image ({e})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: rescale to 8 bits instead of letting convert() clip at 255
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") else max(float(array.max()), 1.0)
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert(
            "RGB"
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels hold arbitrary colours: show them over white, as viewers do
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_upright(source: ImageSource, draft_short_side: int | None = None) -> Image.Image:
    """Decodes ``source`` to an upright RGB image at its own resolution.

    Args:
        draft_short_side: for JPEG files, let libjpeg decode at the smallest of 1/1, 1/2,
            1/4, 1/8 scale whose shorter side is still at least this (several times
            faster); None decodes every pixel

    Raises:
        ImageLoadError: the source is missing, empty, not an image, unreadable, too
            small (under ``MIN_SIDE`` px) or over Pillow's decompression-bomb limit
    """
    image = _open(source)
    try:
        if draft_short_side is not None and image.format == "JPEG":
            image.draft("RGB", (draft_short_side, draft_short_side))
        image = _to_rgb(ImageOps.exif_transpose(image))
        image.load()
        width, height = image.size
        if min(width, height) < MIN_SIDE:
            raise ImageLoadError(
                "too_small",
                f"{_name(source)}: {width}x{height} px is below the {MIN_SIDE} px "
                "minimum for a quality score",
            )
        return image
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError("too_large", f"{_name(source)}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError("corrupt", f"{_name(source)}: {e}") from None


def resize_short_side(pixels: torch.Tensor, short_side: int) -> torch.Tensor:
    """A uint8 (3, H, W) image resized so that its shorter side is ``short_side``:
    bicubic, antialiased, by torchvision's uint8 kernel (within 0.2 levels of Pillow's
    bicubic on average, and about six times faster on a 3-MP photo)."""
    height, width = pixels.shape[-2:]
    scale = short_side / min(height, width)
    size = [max(short_side, round(height * scale)), max(short_side, round(width * scale))]
    if size == [height, width]:
        return pixels
    return tvf.resize(pixels, size, interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)


def grid_centres(length: int, size: int) -> torch.Tensor:
    """The index of the centre of each of ``size`` equal cells along ``length`` pixels."""
    return ((torch.arange(size) + 0.5) * length / size).long()


def sample_levels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The median of the 3 x 3 stored pixels at the centre of each cell of a ``size`` x
    ``size`` grid over a (3, H, W) image (H, W >= 3): uint8 (3, size, size).

    Every level is one the image holds, not an average of neighbours; the median drops a
    single pixel's extreme, which is noise rather than tone (read from single pixels,
    contrast followed added noise at |Spearman| 0.49, from the medians 0.29).
    """
    height, width = pixels.shape[-2:]
    offsets = torch.tensor([-1, 0, 1])
    # a block's centre one pixel in from the border, so that all 9 pixels exist
    rows = grid_centres(height, size).clamp(1, height - 2)
    columns = grid_centres(width, size).clamp(1, width - 2)
    rows, columns = (rows[:, None] + offsets).flatten(), (columns[:, None] + offsets).flatten()
    # rows, then columns, of the channels-last pixels a decode gives: (3 size, 3 size, C)
    blocks = pixels.permute(1, 2, 0)[rows][:, columns]
    blocks = blocks.reshape(size, 3, size, 3, -1).permute(1, 3, 4, 0, 2).reshape(9, -1, size, size)
    return _median_of_nine(list(blocks))


# Devillard's 19 exchanges that leave the median of nine values in the middle: several
# times faster than torch.median over a last dimension of 9
_MEDIAN_OF_NINE = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def _median_of_nine(values: list[torch.Tensor]) -> torch.Tensor:
    for low, high in _MEDIAN_OF_NINE:
        values[low], values[high] = (
            torch.minimum(values[low], values[high]),
            torch.maximum(values[low], values[high]),
        )
    return values[4]


def _name(source: ImageSource) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return type(source).__name__


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor shaped (3, H, W)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size`` x ``size`` square of a (C, H, W) tensor."""
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def load_image(source: ImageSource, size: int) -> torch.Tensor:
    """An image at working resolution: uint8 tensor (3, size, size).

    The shorter side is resized to ``size`` (as whole-image views are) and the centre
    square kept.
    """
    return center_crop(ImageFile(source).whole(size), size)


# Whole-image views are downscaled from a decode whose shorter side is at least this
# (JPEG: libjpeg's reduced-scale decode). A constant, so that a view's pixels never
# depend on which other models score the same file.
REDUCED_DECODE_SHORT_SIDE = 768


class ImageFile:
    """One image, decoded lazily: at native resolution, and reduced for whole views.

    Decodes and resized copies are cached, so several models (or views) read the file
    once each way. For a source that is not a large JPEG file the reduced decode is the
    native one.
    """

    def __init__(self, source: ImageSource):
        self.source = source
        self._native_tensor: torch.Tensor | None = None
        self._reduced: torch.Tensor | None = None
        self._whole: dict[int, torch.Tensor] = {}
        self._level_samples: dict[int, torch.Tensor] = {}

    def native(self) -> Image.Image:
        """Every pixel, upright RGB (the pixels of :meth:`native_tensor`)."""
        return Image.fromarray(self.native_tensor().permute(1, 2, 0).numpy())

    def native_tensor(self) -> torch.Tensor:
        """Every pixel, upright RGB, as a uint8 tensor (3, H, W), possibly a channels-first
        *view* (not contiguous): only patches are copied out of it, and making a whole
        photo contiguous took longer than decoding it."""
        if self._native_tensor is None:
            pixels = _decode_jpeg_pixels(self.source)
            if pixels is None:
                array = np.array(open_upright(self.source), dtype=np.uint8)
                pixels = torch.from_numpy(array).permute(2, 0, 1)
            self._native_tensor = pixels
        return self._native_tensor

    def reduced(self) -> torch.Tensor:
        """Upright RGB (3, h, w) uint8, for whole-image views: a JPEG file of shorter side
        at least twice ``REDUCED_DECODE_SHORT_SIDE`` is decoded by libjpeg at a reduced
        scale (shorter side still at least that); anything else is the native decode."""
        if self._reduced is None:
            if _reducible_jpeg(self.source):
                self._reduced = to_tensor(open_upright(self.source, REDUCED_DECODE_SHORT_SIDE))
            else:
                self._reduced = self.native_tensor()
        return self._reduced

    def whole(self, short_side: int) -> torch.Tensor:
        """The whole image with its shorter side resized to ``short_side``: uint8 (3, h, w)
        (cached: views of one size, e.g. contrast's and rotation's sources, share it)."""
        if short_side not in self._whole:
            self._whole[short_side] = resize_short_side(self.reduced(), short_side)
        return self._whole[short_side]

    def level_sample(self, size: int) -> torch.Tensor:
        """``size`` x ``size`` of the stored levels from every part of the image
        (:func:`sample_levels`): uint8 (3, size, size), cached. A resize would average
        the darkest and brightest tones into their neighbours (contrast read from a
        256-px resize ranked at 0.918, from this sample at 0.929, benchmarks/RESULTS.md)."""
        if size not in self._level_samples:
            self._level_samples[size] = sample_levels(self.native_tensor(), size)
        return self._level_samples[size]


def _reducible_jpeg(source: ImageSource) -> bool:
    if not isinstance(source, str | os.PathLike):
        return False
    try:
        with Image.open(source) as image:
            return image.format == "JPEG" and min(image.size) >= 2 * REDUCED_DECODE_SHORT_SIDE
    except Exception:  # the native decode reports what is wrong with the file
        return False


# Pillow's exif_transpose, on a (3, H, W) tensor: EXIF orientation -> the same transform
_ORIENT = {
    2: lambda x: x.flip(2),
    3: lambda x: x.flip(1, 2),
    4: lambda x: x.flip(1),
    5: lambda x: x.transpose(1, 2),
    6: lambda x: torch.rot90(x, -1, (1, 2)),
    7: lambda x: x.transpose(1, 2).flip(1, 2),
    8: lambda x: torch.rot90(x, 1, (1, 2)),
}


def _decode_jpeg_pixels(source: ImageSource) -> torch.Tensor | None:
    """Every pixel of an RGB or grey JPEG file, upright, as (3, H, W) uint8: torchvision's
    libjpeg-turbo decodes straight into a tensor, the same pixels as Pillow's (tested)
    in about two thirds of the time, and with no copy out of a PIL image.

    None for anything else, and for any file torchvision cannot decode: Pillow's decode
    then reads it, or says what is wrong with it, as for every other file.
    """
    if not isinstance(source, str | os.PathLike):
        return None
    try:
        with Image.open(source) as image:  # the header: Pillow still vets size and mode
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            if min(image.size) < MIN_SIDE:
                return None
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        data = tvio.read_file(os.fspath(source))
        pixels = tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB)
    except Exception:  # Pillow's decode reports it
        return None
    transform = _ORIENT.get(orientation)
    return transform(pixels) if transform else pixels
