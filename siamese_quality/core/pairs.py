"""Training examples: distorted copies of one image with known magnitudes.

The siamese pretext task (two copies of one image, which got more?) is trained in
RankIQA-style :class:`GroupedBatches`: K magnitudes of each of B images in one forward
pass give B * K * (K - 1) / 2 same-image pairs (plus cross-image pairs) for the ranking
loss, at a fraction of the cost of drawing the pairs one by one.

Copies are rendered through the model's view (:mod:`siamese_quality.views`), as
evaluation and scoring do. Sources are whole images (whole views) or native-resolution
tiles, a patch with its margin (patch views).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from .distortions import Distortion, jpeg_compress
from .views import PatchView, View, WholeView, apply_distortion, apply_distortion_many


def render(
    source: torch.Tensor,
    distortion: Distortion,
    magnitude: float,
    view: View,
    size: int | None = None,
    implementation: str = "reference",
) -> torch.Tensor:
    """One distorted copy as the model sees it.

    Args:
        source: uint8 (3, S, S): a whole view's source square (``S = size *
            supersample``) or a patch view's tile (the patch with its margin)
        size: whole views: the working size of ``source`` (default: the resolution)
        implementation: ``"reference"`` (training) or ``"alternative"`` (the
            independent implementation, for evaluation)
    """
    return view.finish(apply_distortion(source, distortion, magnitude, implementation), size)


def render_many(
    source: torch.Tensor,
    distortion: Distortion,
    magnitudes: Sequence[float],
    view: View,
    size: int | None = None,
) -> list[torch.Tensor]:
    """:func:`render` at each of ``magnitudes``, as training renders them (the
    distortion's ``train_many`` where it has one, else its reference implementation)."""
    if distortion.train_many is not None:
        copies = distortion.train_many(source, [float(m) for m in magnitudes])
    else:
        copies = apply_distortion_many(source, distortion, magnitudes)
    return [view.finish(c, size) for c in copies]


def draw_source(source: torch.Tensor, view: View, rng: np.random.Generator) -> torch.Tensor:
    """A patch view's tile from a larger native image (a tile already is one); any other
    source as it is (whole views crop it in the augmentation)."""
    if isinstance(view, PatchView) and max(source.shape[-2:]) > view.tile_size:
        return view.random_tile(source, rng)
    return source


def source_crop(view: View, patch_size: int) -> int:
    """Side of the source square a training copy is rendered from."""
    if isinstance(view, PatchView):
        return view.tile_size
    return patch_size * view.supersample


def stratified_magnitudes(
    distortion: Distortion, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` magnitudes spread over the range: one uniform draw per equal slice (of
    the distortion's spacing: linear, or log for equal ratios)."""
    edges = np.linspace(0.0, 1.0, count + 1)
    return rng.permutation(distortion.spread(rng.uniform(edges[:-1], edges[1:])))


@dataclass
class Augmentation:
    """Label-preserving augmentation of a source image before it is distorted.

    Always a random ``crop_size`` crop of the image resized so its short side is 1 to
    ``max_scale`` times ``crop_size`` (content seen at several sizes; a patch smaller
    than the working resolution is a smaller view of most of the photo: cropping at the
    working scale instead measured no better, brightness worse, benchmarks/RESULTS.md)
    and a random horizontal flip. A tile of a patch view is exactly ``crop_size``, so
    it keeps the scale of the stored image, which its magnitudes are measured in.
    Depending on the distortion (its ``invariances``) also vertical flips and
    90-degree turns (``"turns"``), a random channel order (``"channels"``) and a
    random gamma (``"tone"``): more kinds of content from the same few photos. It is
    applied to the source *before* the distortion, so the magnitude stays the label:
    flipping after a rotation by theta would give a rotation by -theta.
    """

    max_scale: float = 1.4
    flip: bool = True
    turns: bool = False
    channels: bool = False
    tone: bool = False
    gamma_range: tuple[float, float] = (0.7, 1.4)
    # damage the model must not read as its own: noise added after the distortion, the
    # same noise in each copy of a source (as a sensor adds it after the lens blurred),
    # so that only the distortion tells the copies apart
    noise: bool = False
    noise_range: tuple[float, float] = (0.0, 10.0)
    # a reader of JPEG files (Distortion.jpeg_file_reader): half the sources' copies are
    # saved as a JPEG, all at one quality, as a camera saves its noise
    jpeg_saves: bool = False
    jpeg_quality_range: tuple[int, int] = (80, 98)

    @classmethod
    def for_distortion(cls, distortion: Distortion, **overrides) -> Augmentation:
        invariances = distortion.invariances
        options = {name: name in invariances for name in ("turns", "channels", "tone", "noise")}
        if distortion.reads_stored_levels:
            options["max_scale"] = 1.0  # a resize would average the levels the view keeps
        options.update(overrides)
        return cls(**options)

    def after(self, copies: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
        """The distorted copies of one source with the nuisance damage that follows it."""
        if self.jpeg_saves and rng.random() < 0.5:
            quality = int(rng.integers(self.jpeg_quality_range[0], self.jpeg_quality_range[1] + 1))
            copies = [jpeg_compress(c, quality) for c in copies]
        if not self.noise or rng.random() < 0.5:
            return copies
        sigma = float(rng.uniform(*self.noise_range))
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = sigma * torch.randn(copies[0].shape, generator=generator)
        return [(c.float() + noise).round().clamp(0, 255).to(torch.uint8) for c in copies]

    def source_short_side(self, view: WholeView) -> int:
        """The short side at which training images of a whole view are kept in memory."""
        return math.ceil(view.source_size * self.max_scale)

    def __call__(
        self, image: torch.Tensor, crop_size: int, rng: np.random.Generator
    ) -> torch.Tensor:
        short = min(image.shape[-2:])
        scale = rng.uniform(1.0, max(1.0, min(self.max_scale, short / crop_size)))
        target = max(crop_size, round(crop_size * scale))
        if target != short:
            image = F.resize(image, [target], antialias=True)
        height, width = image.shape[-2:]
        top = int(rng.integers(0, height - crop_size + 1))
        left = int(rng.integers(0, width - crop_size + 1))
        image = image[:, top : top + crop_size, left : left + crop_size]
        if self.flip and rng.random() < 0.5:
            image = image.flip(-1)
        if self.turns:
            if rng.random() < 0.5:
                image = image.flip(-2)
            image = torch.rot90(image, int(rng.integers(0, 4)), dims=(-2, -1))
        if self.channels:
            image = image[torch.from_numpy(rng.permutation(3))]
        if self.tone:
            gamma = float(np.exp(rng.uniform(*np.log(self.gamma_range))))
            image = (255.0 * (image.float() / 255.0) ** gamma).round().to(torch.uint8)
        return image.contiguous()


@dataclass
class GroupedBatch:
    images: torch.Tensor  # uint8 (B * K, 3, r, r)
    magnitudes: torch.Tensor  # float (B * K,), in the distortion's unit
    groups: torch.Tensor  # long (B * K,), which source image each copy comes from
    epoch: int = 0  # passes over the sources begun when the batch was drawn


class GroupedBatches:
    """Endless RankIQA-style batches: K distorted copies of each of B source images.

    Sources are visited in a fresh random order each epoch.
    """

    def __init__(
        self,
        sources: Sequence[torch.Tensor],
        distortion: Distortion,
        view: View,
        images_per_batch: int = 8,
        magnitudes_per_image: int = 6,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        patch_size: int | None = None,
    ):
        if not sources:
            raise ValueError("GroupedBatches needs at least one image")
        if magnitudes_per_image < 2:
            raise ValueError("magnitudes_per_image must be at least 2 to form pairs")
        self.sources = list(sources)
        self.distortion = distortion
        self.view = view
        self.patch_size = patch_size or view.input_size
        self.images_per_batch = min(images_per_batch, len(self.sources))
        self.magnitudes_per_image = magnitudes_per_image
        self.augmentation = augmentation or Augmentation.for_distortion(distortion)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self._order: list[int] = []

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.sources) / self.images_per_batch)

    def _next_indices(self) -> list[int]:
        picked: list[int] = []
        while len(picked) < self.images_per_batch:
            if not self._order:
                self._order = list(self.rng.permutation(len(self.sources)))
                self.epoch += 1
            index = self._order.pop()
            if index not in picked:
                picked.append(index)
        return picked

    def __iter__(self) -> Iterator[GroupedBatch]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> GroupedBatch:
        crop = source_crop(self.view, self.patch_size)
        images, magnitudes, groups = [], [], []
        for group, index in enumerate(self._next_indices()):
            source = draw_source(self.sources[index], self.view, self.rng)
            patch = self.augmentation(source, crop, self.rng)
            drawn = stratified_magnitudes(self.distortion, self.magnitudes_per_image, self.rng)
            copies = render_many(patch, self.distortion, drawn, self.view, self.patch_size)
            images += self.augmentation.after(copies, self.rng)
            magnitudes += [float(m) for m in drawn]
            groups += [group] * len(drawn)
        return GroupedBatch(
            images=torch.stack(images),
            magnitudes=torch.tensor(magnitudes, dtype=torch.float32),
            groups=torch.tensor(groups),
            epoch=self.epoch,
        )
