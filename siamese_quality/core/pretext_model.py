"""A trained pretext model: one branch + its distortion, view and calibration.

Saved as a single torch file holding only tensors and plain Python values, loaded
with ``torch.load(..., weights_only=True)``: a model file can never run code.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from .calibration import MonotoneCalibration
from .cepstrum import combined_width
from .distortions import Distortion, get_distortion
from .encoding import encoded_or_seen, jpeg_quality
from .images import ImageFile, ImageSource
from .model import QualityBranch, get_backbone
from .views import View, patch_structure, view_from_dict

FORMAT = "siamese_quality.pretext_model"
# 2: local tasks read native-resolution patches, magnitudes in the stored image's pixels
FORMAT_VERSION = 2


class ModelFileError(ValueError):
    """A model file is not a valid siamese_quality model (or fails its checksum)."""


class DistortionChangedError(ValueError):
    """A model's task now means another unit than the one it was trained in."""


def plain(value):
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists.

    Model files are loaded with ``weights_only=True``, which (rightly) refuses any
    object that is not a tensor or a plain Python value.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PretextModel:
    """Scores single images for one distortion; calibrated scores are in its unit.

    A task whose distortion has a ``jpeg_file_reader`` (noise) holds a second model,
    ``jpeg_reader`` (the same view and unit, its own weights and calibration), that
    scores the images whose file is a JPEG: the file's tables choose the reader.
    """

    def __init__(
        self,
        branch: QualityBranch,
        distortion: Distortion | dict,
        view: View | dict,
        calibration: MonotoneCalibration | None = None,
        training: dict | None = None,
        evaluation: dict | None = None,
        jpeg_reader: PretextModel | None = None,
    ):
        self.branch = branch
        self.distortion_info = (
            distortion.to_dict() if isinstance(distortion, Distortion) else dict(distortion)
        )
        self.view = view_from_dict(view) if isinstance(view, dict) else view
        self.calibration = calibration
        self.training = training or {}
        self.evaluation = evaluation or {}
        self.jpeg_reader = jpeg_reader
        self._scoring_branch: QualityBranch | None = None

    @property
    def task(self) -> str:
        return self.distortion_info["name"]

    @property
    def unit(self) -> str:
        return self.distortion_info["unit"]

    @property
    def distortion(self) -> Distortion:
        """The registered distortion (needed to render training or evaluation copies);
        a custom one is imported from the module the model records.

        Raises:
            DistortionChangedError: the task's unit changed since the model was trained
                (brightness: an HSV value offset before bundled models v6): new copies would
                be rendered in a unit its calibration does not speak
        """
        registered = get_distortion(self.task, self.distortion_info.get("module"))
        if registered.unit != self.unit:
            raise DistortionChangedError(
                f"this {self.task!r} model was trained when {self.task!r} meant "
                f"{self.unit!r}; it now means {registered.unit!r}. Its fields and scores "
                f"still read in its own unit, but it cannot be evaluated or trained "
                f"further: train a new {self.task!r} model (or assess with the bundled one)"
            )
        return registered

    @property
    def working_resolution(self) -> int:
        """Local tasks: the side of a native-resolution patch; global: the downscaled side."""
        return self.view.size if self.view.kind == "patches" else self.view.resolution

    def prepare(self, image: ImageFile) -> torch.Tensor:
        """What the branch sees of one image: uint8 (count, 3, r, r)."""
        return self.view.prepare(image)

    def in_jpeg_files(self, encoded_quality: np.ndarray | None, count: int) -> np.ndarray:
        """Which of ``count`` images the JPEG-file reader scores: those whose file says a
        JPEG quality (``encoding.jpeg_quality``; NaN for none). All False without one."""
        if self.jpeg_reader is None or encoded_quality is None:
            return np.zeros(count, dtype=bool)
        return np.isfinite(np.asarray(encoded_quality, dtype=np.float64))

    def raw_scores(
        self,
        images: torch.Tensor,
        batch_size: int = 256,
        encoded_quality: np.ndarray | None = None,
    ) -> np.ndarray:
        """Branch scores of prepared images (N, count, 3, r, r), aggregated per image as
        batch scoring aggregates them (each by its reader, see :meth:`in_jpeg_files`)."""
        scores = torch.from_numpy(self.patch_scores(images, batch_size, encoded_quality))
        return self.view.aggregate(scores, patch_structure(images)).numpy()

    def patch_scores(
        self,
        images: torch.Tensor,
        batch_size: int = 256,
        encoded_quality: np.ndarray | None = None,
    ) -> np.ndarray:
        """Branch scores of every patch of prepared images: (N, count), each image's by
        its reader (see :meth:`in_jpeg_files`)."""
        jpeg_files = self.in_jpeg_files(encoded_quality, len(images))
        if not jpeg_files.any():
            return _patch_scores(self, images, batch_size)
        chosen = torch.from_numpy(jpeg_files)
        scores = np.empty(images.shape[:2])
        scores[jpeg_files] = _patch_scores(self.jpeg_reader, images[chosen], batch_size)
        if not jpeg_files.all():
            scores[~jpeg_files] = _patch_scores(self, images[~chosen], batch_size)
        return scores

    @property
    def reports_confidence(self) -> bool:
        """Whether the branch tells how sure it is of each score (see :meth:`confidences`)."""
        return get_backbone(self.branch.backbone).confidence

    def confidences(self, images: torch.Tensor) -> np.ndarray | None:
        """How sure the branch is of each prepared image's score (N,), 0-1 (the mean
        over an image's patches), or None when its backbone does not say."""
        n, count = images.shape[:2]
        values = self.branch.confidence(images.flatten(0, 1))
        return None if values is None else values.view(n, count).mean(1).numpy().astype(float)

    def calibrated(
        self,
        raw: Sequence[float] | np.ndarray,
        spectral_widths: np.ndarray | None = None,
        encoded_quality: np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw scores -> magnitudes in the distortion's unit. Where the view reads them,
        combined with the images' spectral blur widths ((N, 2),
        ``PatchView.spectral_blur_widths``; ``cepstrum.combined_width``) and with the
        quality their files were saved at ((N,), NaN for none, ``encoding.jpeg_quality``;
        ``encoding.encoded_or_seen``), which also chooses the JPEG-file reader's
        calibration (:meth:`in_jpeg_files`)."""
        if self.calibration is None or not self.calibration.is_fitted:
            raise RuntimeError(f"model {self.task!r} has no calibration")
        values = self.calibration.predict(raw)
        jpeg_files = self.in_jpeg_files(encoded_quality, len(values))
        if jpeg_files.any():
            values[jpeg_files] = self.jpeg_reader.calibration.predict(np.asarray(raw)[jpeg_files])
        if spectral_widths is not None and self.reads_spectral_blur:
            combined = combined_width(values, spectral_widths, self.view.spectral_blur)
            values = combined.astype(values.dtype)
        if encoded_quality is not None and self.view.encoded_quality:
            values = encoded_or_seen(values, encoded_quality).astype(values.dtype)
        return values

    def calibrated_patches(self, grid: np.ndarray, encoded_quality: float = math.nan) -> np.ndarray:
        """One image's patch scores -> magnitudes, by the calibration of the reader that
        scored them: what its pixels show where (a file's tables name the whole file)."""
        reader = self.jpeg_reader if self.in_jpeg_files(np.array([encoded_quality]), 1)[0] else self
        return reader.calibration.predict(grid)

    @property
    def reads_spectral_blur(self) -> bool:
        """Whether the view also reads blur from the whole image's spectrum (blur)."""
        return bool(self.view.spectral_blur)

    def score_images(self, sources: Sequence[ImageSource]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated magnitudes, raw scores) for image files or arrays."""
        prepared, spectral, encoded = [], [], []
        for source in sources:
            image = ImageFile(source)  # one decode for the patches and the cepstrum
            prepared.append(self.prepare(image))
            if self.reads_spectral_blur:
                spectral.append(self.view.spectral_blur_widths(image))
            encoded.append(jpeg_quality(image.source))
        encoded_quality = np.array(encoded, dtype=np.float64)
        raw = self.raw_scores(torch.stack(prepared), encoded_quality=encoded_quality)
        values = self.calibrated(raw, np.array(spectral) if spectral else None, encoded_quality)
        return values, raw

    # --- persistence -------------------------------------------------------------------

    def state(self) -> dict:
        metadata = plain(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "backbone": self.branch.backbone,
                "distortion": self.distortion_info,
                "view": self.view.to_dict(),
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "training": self.training,
                "evaluation": self.evaluation,
            }
        )
        state_dict = {k: v.detach().cpu() for k, v in self.branch.state_dict().items()}
        if self.jpeg_reader is not None:
            metadata["jpeg_reader"] = self.jpeg_reader.state()
        return {**metadata, "state_dict": state_dict}

    def save(self, path: str) -> str:
        """Writes the model to ``path`` atomically and returns the file's sha256."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = f"{path}.partial"
        torch.save(self.state(), partial)
        os.replace(partial, path)
        return sha256_of_file(path)

    @classmethod
    def load(
        cls, path: str, expected_sha256: str | None = None, device: str | torch.device = "cpu"
    ) -> PretextModel:
        """Loads a model file safely (no code execution) and validates it.

        Raises:
            ModelFileError: unreadable, not a model of this format, or a checksum mismatch
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        if expected_sha256 is not None and sha256_of_file(path) != expected_sha256:
            raise ModelFileError(
                f"{path}: sha256 differs from the recorded one; the file was changed or replaced"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or corrupt archive
            raise ModelFileError(f"{path}: not a safe siamese_quality model file ({e})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a siamese_quality model file")
        if state.get("format_version") == 1:
            raise ModelFileError(
                f"{path}: a model of siamese_quality 0.1 (format version 1), which measured a "
                "128-px thumbnail instead of the stored image; train it again"
            )
        if state.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: model format version {state.get('format_version')} is not supported "
                f"(this library reads version {FORMAT_VERSION})"
            )
        model = cls._from_state(state, path, device)
        if state.get("jpeg_reader") is not None:
            model.jpeg_reader = cls._from_state(
                state["jpeg_reader"], f"{path} (JPEG files)", device
            )
        return model

    @classmethod
    def _from_state(cls, state: dict, path: str, device: str | torch.device) -> PretextModel:
        """A model from a loaded file's state (one reader's keys)."""
        if not isinstance(state, dict):
            raise ModelFileError(f"{path}: not a siamese_quality model file")
        try:
            branch = QualityBranch(state["backbone"])
            branch.load_state_dict(state["state_dict"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise ModelFileError(
                f"{path}: weights do not fit a {state.get('backbone')!r} "
                f"branch of this library version ({e})"
            ) from None
        branch.to(device).eval()
        calibration = (
            MonotoneCalibration.from_dict(state["calibration"])
            if state.get("calibration")
            else None
        )
        try:
            view = view_from_dict(state["view"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: no valid view in the model file ({e})") from None
        return cls(
            branch,
            state["distortion"],
            view,
            calibration,
            state.get("training"),
            state.get("evaluation"),
        )


def _patch_scores(model: PretextModel, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """One reader's branch scores of every patch of prepared images: (N, count)."""
    n, count = images.shape[:2]
    if model._scoring_branch is None:  # the weights of a loaded model do not change
        model._scoring_branch = model.branch.for_inference()
    flat = model._scoring_branch.score(images.flatten(0, 1), batch_size)
    return flat.view(n, count).numpy().astype(np.float64)
