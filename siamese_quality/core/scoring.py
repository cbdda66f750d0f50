"""Batch scoring of image files with one or several models, decoding each image once.

No FiftyOne here: files in, scores out, in batches, so callers can write results
as they go (and keep them if the job is interrupted). Each model's input comes from
its view (:mod:`siamese_quality.views`), the same function whether the model scores
alone or with others: a file gets the same values either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .cepstrum import NOTHING_READ
from .encoding import jpeg_quality
from .images import ImageFile, ImageLoadError
from .pretext_model import PretextModel
from .views import View, patch_structure


@dataclass
class ScoredBatch:
    """Scores of one batch; ``indices`` point into the scored sequence of files."""

    indices: list[int]
    raw: dict[str, np.ndarray]  # model name -> raw branch scores, aligned with indices
    calibrated: dict[str, np.ndarray]  # model name -> magnitudes in the model's unit
    # model name -> each image's patch values in the model's unit, shaped like its grid
    # (rows, columns); local models only
    patches: dict[str, list[np.ndarray]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {"index", "kind", "message"}
    # model name -> how sure it is of each score, 0-1; models whose backbone says only
    confidence: dict[str, np.ndarray] = field(default_factory=dict)


class ImageFiles(torch.utils.data.Dataset):
    """Reads each file once per kind of decode and prepares it once for each distinct
    ``view.pixels`` (the loaded batch is keyed by those)."""

    def __init__(self, paths: Sequence[str], views: Sequence[View]):
        self.paths = list(paths)
        self.views = list(dict.fromkeys(view.pixels for view in views))
        # one cepstrum per image serves every view that reads it
        self.spectral_view = next((v for v in views if v.spectral_blur), None)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = ImageFile(self.paths[index])
        try:
            prepared = {view: view.prepare(image) for view in self.views}
            grids = {view: view.grid_of(image) for view in self.views if view.kind == "patches"}
            # per image, beside the decoding: a batch at once would hold a float copy of
            # every patch in the worker (50 MB at 64 images)
            structures = {
                view: patch_structure(pixels[None])[0] for view, pixels in prepared.items()
            }
            view = self.spectral_view
            spectral = view.spectral_blur_widths(image) if view else NOTHING_READ.widths
            # a JPEG's header: 0.1 ms a file, read for every file (it chooses readers)
            encoded = jpeg_quality(image.source)
            return index, (prepared, grids, structures, spectral, encoded), None
        except ImageLoadError as e:
            return index, None, {"kind": e.kind, "message": str(e)}
        except Exception as e:  # anything else a broken file can raise in a decoder
            return index, None, {"kind": "corrupt", "message": f"{self.paths[index]}: {e}"}


@dataclass
class _LoadedBatch:
    """A batch as the loader hands it over: each view's images stacked, with their
    patches' structure (in the loader's workers, beside the decoding)."""

    indices: list[int]  # of the readable files
    images: dict[View, torch.Tensor]  # view.pixels -> uint8 (n, count, 3, r, r)
    structures: dict[View, torch.Tensor]  # view.pixels -> (n, count), see patch_structure
    grids: list[dict[View, tuple[int, int]]]  # per readable file: patch views' grids
    failures: list[dict]  # {"index", "kind", "message"}
    # per readable file: its spectral blur widths, px (SpectralBlur.widths), (n, 2)
    spectral: np.ndarray
    # per readable file: the JPEG quality its tables say, NaN for none (n,)
    encoded: np.ndarray

    def __len__(self) -> int:
        return len(self.indices) + len(self.failures)


def collate_images(items, stack=torch.utils.data.default_collate) -> _LoadedBatch:
    """Loaded items -> a batch. The default collate stacks straight into shared memory in
    a loader worker, for batches that cross to the main process (a stacked copy on the
    worker's heap first made its RSS grow with the number of batches); batches scored
    where they are loaded pass ``torch.stack``."""
    ok = [item for _, item, failure in items if failure is None]
    views = list(ok[0][0]) if ok else []
    return _LoadedBatch(
        indices=[index for index, _, failure in items if failure is None],
        images={view: stack([prepared[view] for prepared, *_ in ok]) for view in views},
        structures={view: stack([s[view] for _, _, s, *_ in ok]) for view in views},
        grids=[grids for _, grids, *_ in ok],
        failures=[{"index": index, **failure} for index, _, failure in items if failure],
        spectral=np.array([s for *_, s, _ in ok], dtype=np.float64).reshape(-1, 2),
        encoded=np.array([quality for *_, quality in ok], dtype=np.float64),
    )


def default_num_workers(count: int) -> int:
    """Loader workers, each decoding and scoring its own batches: none for small jobs
    (starting processes costs more than they save), else one per CPU, up to 8."""
    if count < 200:
        return 0
    return max(1, min(8, os.cpu_count() or 1))


def score_loaded(batch: _LoadedBatch, models: dict[str, PretextModel]) -> ScoredBatch:
    """Every model's scores of a loaded batch: raw, calibrated and, for local models,
    each image's patch grid in the unit, and for models that tell it, their confidence."""
    raw, calibrated, patches, confidence = {}, {}, {}, {}
    for name, model in models.items() if batch.indices else ():
        pixels = model.view.pixels
        scores = model.patch_scores(batch.images[pixels], encoded_quality=batch.encoded)
        structure = batch.structures[pixels]
        raw[name] = model.view.aggregate(torch.from_numpy(scores), structure).numpy()
        calibrated[name] = model.calibrated(raw[name], batch.spectral, batch.encoded)
        if model.view.kind == "patches":
            patches[name] = [
                model.calibrated_patches(row.reshape(grids[pixels]), quality)
                for row, grids, quality in zip(scores, batch.grids, batch.encoded, strict=True)
            ]
        if model.reports_confidence:
            confidence[name] = model.confidences(batch.images[pixels])
    return ScoredBatch(batch.indices, raw, calibrated, patches, batch.failures, confidence)


class ScoredFiles(torch.utils.data.Dataset):
    """Item ``k``: the ``k``-th batch of files, decoded once and scored by every model
    in the process that loads it. In loader workers, decoding and inference then share
    every CPU, and only scores cross between processes (no pixels)."""

    def __init__(self, paths: Sequence[str], models: dict[str, PretextModel], batch_size: int):
        self.files = ImageFiles(paths, [m.view for m in models.values()])
        self.models, self.batch_size = models, batch_size

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def __getitem__(self, number: int) -> ScoredBatch:
        start = number * self.batch_size
        stop = min(start + self.batch_size, len(self.files))
        items = [self.files[index] for index in range(start, stop)]
        return score_loaded(collate_images(items, torch.stack), self.models)


def _as_is(batch: ScoredBatch) -> ScoredBatch:
    return batch


def iter_model_scores(
    paths: Sequence[str],
    models: dict[str, PretextModel],
    batch_size: int = 64,
    num_workers: int | None = None,
) -> Iterator[ScoredBatch]:
    """Scores ``paths`` with every model in ``models``, one batch at a time, in order.

    Unreadable files are reported in ``failures`` and get no score; the others are
    scored by every model from a single decode. With workers, each batch is decoded and
    scored in one of them (one thread each), several batches at once.
    """
    if not models:
        raise ValueError("no models to score with")
    workers = default_num_workers(len(paths)) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(
        ScoredFiles(paths, models, batch_size),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        persistent_workers=False,
    )
    # the caller's process only writes results meanwhile: OpenMP threads spinning on
    # the workers' cores would slow them down
    threads = torch.get_num_threads()
    if workers:
        torch.set_num_threads(1)
    try:
        yield from loader
    finally:
        torch.set_num_threads(threads)
