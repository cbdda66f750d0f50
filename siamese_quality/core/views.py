"""What a model sees of an image: one preparation path per view.

Training, checkpoint choice, calibration, evaluation and scoring (one model or
several) all prepare images here, so a magnitude means the same thing in each.

- :class:`WholeView`, for *global* distortions (brightness, contrast, tilt): the whole
  image, shorter side resized to the working resolution, centre square; or, for
  readers of the tones alone (brightness, contrast), a sample of the stored pixels from
  every part of the image (``stored_levels``), whose levels a resize would average.
  Magnitudes are whole-image quantities, the same at any size.
- :class:`PatchView`, for *local* distortions (blur, noise, JPEG, pixelation):
  ``count`` squares of ``size`` px at the image's own resolution, spread over the whole
  image on a grid whose corners sit on multiples of 16 px (JPEG's block grid).
  Magnitudes are in the stored image's pixels. The branch scores every patch and a
  quantile of the patch scores is the image's score: flat patches (sky, walls) show
  no blur, JPEG blocks or pixelation, and a low quantile keeps them from voting.
  A view with ``spectral_blur`` (blur) also reads camera shake, defocus and round blur
  from the whole image's spectrum (:mod:`~siamese_quality.core.cepstrum`), fixed
  measurements beside the branch's, combined into the image's value
  (``cepstrum.combined_width``).
  It needs the whole image, so it reads stored images only; training and held-out copies
  (rendered patches) measure the branch alone. A view with ``encoded_quality`` (JPEG)
  likewise reads the quality a JPEG file's tables say (:mod:`~siamese_quality.core.encoding`).

A view renders a distortion the way the image itself would get it: a patch view
distorts each patch with ``margin`` px of its surroundings and keeps the centre, so a
blur or a JPEG block sees the same neighbourhood as in the full photo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as nnf

from .cepstrum import NOTHING_READ, SPECTRAL_READERS, read_spectral_blur
from .distortions import Distortion
from .images import ImageFile, center_crop

# JPEG's largest block (a 4:2:0 colour block covers 16 x 16 px): patch corners sit on it
ALIGN = 16


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return image.round().clamp(0, 255).to(torch.uint8)


def apply_distortion(
    image: torch.Tensor, distortion: Distortion, magnitude: float, implementation: str
) -> torch.Tensor:
    """``distortion`` at ``magnitude`` on a uint8 (3, H, W) image.

    Args:
        implementation: ``"reference"`` (training) or ``"alternative"`` (the independent
            implementation, for evaluation only)
    """
    apply = distortion.apply
    if implementation == "alternative":
        if distortion.alternative is None:
            raise ValueError(f"{distortion.name} has no alternative implementation")
        apply = distortion.alternative
    elif implementation != "reference":
        raise ValueError(
            f"implementation must be 'reference' or 'alternative', got {implementation!r}"
        )
    return apply(image, float(magnitude))


def apply_distortion_many(
    image: torch.Tensor,
    distortion: Distortion,
    magnitudes: Sequence[float],
    implementation: str = "reference",
) -> torch.Tensor:
    """``distortion`` at each of ``magnitudes``: uint8 (M, 3, H, W) (one pass if it can)."""
    if implementation == "reference" and distortion.apply_many is not None:
        return distortion.apply_many(image, [float(m) for m in magnitudes])
    return torch.stack([apply_distortion(image, distortion, m, implementation) for m in magnitudes])


@dataclass(frozen=True)
class WholeView:
    """The whole image, downscaled: shorter side ``resolution`` px, centre square.

    Attributes:
        supersample: distortions are rendered at this multiple of ``resolution`` and
            area-reduced (rotation: resampling leaves no trace); scoring reduces the same way
        crop: the centre fraction the branch sees (rotation: no empty corners)
        stored_levels: the source is ``resolution`` x ``resolution`` of the stored levels
            from every part of the image (``ImageFile.level_sample``: the median of the
            3 x 3 pixels at each cell's centre), not a resize: the darkest and brightest
            tones stay as stored, for readers of the levels alone, which need no geometry
    """

    resolution: int
    supersample: int = 1
    crop: float = 1.0
    stored_levels: bool = False
    kind = "whole"
    spectral_blur = 0  # needs the stored image's pixels: patch views only
    encoded_quality = False  # a quality of compression: patch views only

    @property
    def input_size(self) -> int:
        return max(8, round(self.resolution * self.crop))

    @property
    def source_size(self) -> int:
        return self.resolution * self.supersample

    @property
    def pixels(self) -> WholeView:
        """What decides the pixels a branch sees: every field of a whole view."""
        return self

    @property
    def reads_native(self) -> bool:
        """Whether the view reads the image's native decode (else the reduced one)."""
        return self.stored_levels

    def source(self, image: ImageFile, size: int | None = None) -> torch.Tensor:
        """The square a distortion is applied to: uint8 (3, S, S), ``S = source_size``
        (or ``size``: training keeps larger sources to crop from)."""
        size = size or self.source_size
        if self.stored_levels:
            return image.level_sample(size)
        return center_crop(image.whole(size), size)

    def finish(self, rendered: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A (possibly distorted) source square -> what the branch sees (3, r, r).

        Args:
            size: the working size of ``rendered`` (default: the resolution); training
                patches smaller than the image pass theirs
        """
        size = size or self.resolution
        if self.supersample > 1:
            reduced = nnf.interpolate(rendered[None].float(), size=(size, size), mode="area")
            rendered = _uint8(reduced[0])
        return center_crop(rendered, max(8, round(size * self.crop)))

    def prepare(self, image: ImageFile) -> torch.Tensor:
        """What the branch sees of an image: uint8 (1, 3, r, r)."""
        return self.finish(self.source(image))[None]

    def render(
        self,
        image: ImageFile,
        distortion: Distortion,
        magnitudes: Sequence[float],
        implementation: str = "reference",
    ) -> torch.Tensor:
        """The image distorted at each magnitude, as the branch sees it: (M, 1, 3, r, r)."""
        copies = apply_distortion_many(self.source(image), distortion, magnitudes, implementation)
        return torch.stack([self.finish(copy) for copy in copies])[:, None]

    def aggregate(
        self, scores: torch.Tensor, structure: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, 1) scores -> (N,)."""
        return scores[:, 0]

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PatchView:
    """``count`` patches of ``size`` px at native resolution, spread over the image.

    Attributes:
        quantile: the image's score is this quantile of its patch scores
        min_structure: patches whose grey levels vary less than this (standard
            deviation, 0-255) carry no evidence of the distortion (a blurred, blocked or
            pixelated flat sky looks like a sharp one): they do not vote, and training
            does not use them. 0: every patch votes (noise shows best on flat patches)
        margin: px of context a patch is distorted with (a multiple of ``ALIGN``)
        spectral_blur: which of the whole image's spectral blur readings its value
            also reads (:meth:`spectral_blur_widths`, ``cepstrum.combined_width``): 0
            none, 1 the cepstrum's camera shake and defocus, 2 also the round blur
        encoded_quality: its value also reads how the stored file was compressed
            (``encoding.jpeg_quality``: a JPEG's quantization tables)
    """

    size: int = 64
    count: int = 16
    quantile: float = 0.5
    min_structure: float = 0.0
    margin: int = 32
    spectral_blur: int = 0
    encoded_quality: bool = False
    kind = "patches"

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def pixels(self) -> PatchView:
        """The view without how it aggregates: models that differ only there (blur,
        noise, JPEG) share one prepared copy of each image's patches."""
        return replace(
            self, quantile=0.5, min_structure=0.0, spectral_blur=0, encoded_quality=False
        )

    @property
    def reads_native(self) -> bool:
        """Whether the view reads the image's native decode: patches always do."""
        return True

    @property
    def tile_size(self) -> int:
        """A patch with its margin on every side."""
        return self.size + 2 * self.margin

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) with ``rows * columns == count``, shaped like the image."""
        pairs = [(r, self.count // r) for r in range(1, self.count + 1) if self.count % r == 0]
        aspect = height / width
        return min(pairs, key=lambda rc: abs(math.log(rc[0] / rc[1] / aspect)))

    def padded(self, native: torch.Tensor) -> torch.Tensor:
        """``native``, edge-padded where it is smaller than a tile (tiny images only)."""
        height, width = native.shape[-2:]
        extra_h, extra_w = max(0, self.tile_size - height), max(0, self.tile_size - width)
        if not extra_h and not extra_w:
            return native
        pad = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
        return nnf.pad(native[None].float(), pad, mode="replicate")[0].to(torch.uint8)

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners of the patches (row-major), on multiples of ``ALIGN`` where the
        image allows, at least ``margin`` px from every edge."""
        rows, columns = self.grid(height, width)

        def spread(length: int, n: int) -> list[int]:
            low, high = self.margin, length - self.size - self.margin
            return [
                max(low, int(v) // ALIGN * ALIGN) if high >= low + ALIGN else int(v)
                for v in np.linspace(low, max(low, high), n)
            ]

        return [(top, left) for top in spread(height, rows) for left in spread(width, columns)]

    def tiles(self, native: torch.Tensor, margin: int) -> torch.Tensor:
        """The patches with ``margin`` px of context: uint8 (count, 3, s, s)."""
        native = self.padded(native)
        corners = self.positions(*native.shape[-2:])
        side = self.size + 2 * margin
        return torch.stack(
            [
                native[:, t - margin : t - margin + side, c - margin : c - margin + side]
                for t, c in corners
            ]
        )

    def prepare(self, image: ImageFile) -> torch.Tensor:
        """What the branch sees of an image: uint8 (count, 3, size, size)."""
        return self.tiles(image.native_tensor(), 0)

    def grid_of(self, image: ImageFile) -> tuple[int, int]:
        """(rows, columns) of the patches :meth:`prepare` takes from ``image``."""
        height, width = image.native_tensor().shape[-2:]
        return self.grid(max(height, self.tile_size), max(width, self.tile_size))

    def render(
        self,
        image: ImageFile,
        distortion: Distortion,
        magnitudes: Sequence[float],
        implementation: str = "reference",
    ) -> torch.Tensor:
        """The image distorted at each magnitude (each patch with its context), as the
        branch sees it: (M, count, 3, size, size)."""
        per_tile = [
            center_crop(
                apply_distortion_many(tile, distortion, magnitudes, implementation), self.size
            )
            for tile in self.tiles(image.native_tensor(), self.margin)
        ]
        return torch.stack(per_tile, dim=1)

    def finish(self, rendered_tile: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A (possibly distorted) tile -> the patch the branch sees (its centre)."""
        return center_crop(rendered_tile, self.size)

    def random_tile(
        self, native: torch.Tensor, rng: np.random.Generator, attempts: int = 8
    ) -> torch.Tensor:
        """A tile at a random position on the ``ALIGN`` grid, for training: the first of
        ``attempts`` whose patch has ``min_structure``, else the most structured."""
        native = self.padded(native)
        height, width = native.shape[-2:]

        def corner(length: int) -> int:
            slots = (length - self.tile_size) // ALIGN
            return int(rng.integers(0, slots + 1)) * ALIGN if slots >= 0 else 0

        best, best_structure = None, -1.0
        for _ in range(attempts):
            top, left = corner(height), corner(width)
            tile = native[:, top : top + self.tile_size, left : left + self.tile_size]
            structure = float(patch_structure(center_crop(tile, self.size)[None, None])[0, 0])
            if structure > best_structure:
                best, best_structure = tile, structure
            if structure >= self.min_structure:
                break
        return best.clone()

    def aggregate(
        self, scores: torch.Tensor, structure: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, count) patch scores -> (N,) image scores: the view's quantile over the
        patches that vote (see ``min_structure``; at least a quarter of them, the most
        structured, always do)."""
        scores = scores.float()
        if structure is None or self.min_structure <= 0:
            return torch.quantile(scores, self.quantile, dim=1)
        least = max(1, self.count // 4)
        aggregated = []
        for row, row_structure in zip(scores, structure, strict=True):
            voters = row_structure >= self.min_structure
            if int(voters.sum()) < least:
                voters = row_structure >= row_structure.topk(least).values[-1]
            aggregated.append(torch.quantile(row[voters], self.quantile))
        return torch.stack(aggregated) if aggregated else scores[:, 0]

    def spectral_blur_widths(self, image: ImageFile) -> tuple[float, float]:
        """The Gaussian-equivalent widths (px) the whole image's spectrum shows
        (``SpectralBlur.widths``: the cepstrum's shake or defocus, 0 when none, and the
        round blur, NaN when not read); (0, NaN) when the view does not read them."""
        if not self.spectral_blur:
            return NOTHING_READ.widths
        return read_spectral_blur(image.native_tensor()).widths

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


View = WholeView | PatchView


def view_from_dict(data: dict) -> View:
    """The inverse of ``to_dict``."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    if data.get("kind") == "patches":
        # files of bundled models v4 stored True: the cepstrum's readings only
        return PatchView(**{**fields, "spectral_blur": int(fields.get("spectral_blur", 0))})
    if data.get("kind") == "whole":
        return WholeView(**fields)
    raise ValueError(f"unknown view kind {data.get('kind')!r}")


def view_for(distortion: Distortion, working_resolution: int, patch_count: int) -> View:
    """The view a model of ``distortion`` reads.

    Args:
        working_resolution: local distortions: the side of a native-resolution patch;
            global ones: the shorter side of the downscaled image
        patch_count: local distortions: patches per image
    """
    if distortion.local:
        return PatchView(
            size=working_resolution,
            count=patch_count,
            quantile=distortion.patch_quantile,
            min_structure=distortion.min_patch_structure,
            spectral_blur=SPECTRAL_READERS if distortion.reads_spectral_blur else 0,
            encoded_quality=distortion.reads_encoded_quality,
        )
    return WholeView(
        resolution=working_resolution,
        supersample=distortion.supersample,
        crop=distortion.input_crop,
        stored_levels=distortion.reads_stored_levels,
    )


def patch_structure(images: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the grey level (0-255) of each patch: (N, count)."""
    grey = images.float().mean(dim=2)  # (N, count, r, r)
    return grey.flatten(2).std(dim=2)


def branch_scores(branch, images: torch.Tensor, view: View, batch_size: int = 256) -> torch.Tensor:
    """Image scores of prepared views (N, count, 3, r, r): branch per patch, then aggregated."""
    n, count = images.shape[:2]
    if n == 0:
        return torch.empty(0)
    patch_scores = branch.score(images.flatten(0, 1), batch_size).view(n, count)
    return view.aggregate(patch_scores, patch_structure(images))


__all__ = [
    "ALIGN",
    "PatchView",
    "View",
    "WholeView",
    "apply_distortion",
    "apply_distortion_many",
    "branch_scores",
    "patch_structure",
    "view_for",
    "view_from_dict",
]
