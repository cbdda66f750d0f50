"""The bundled default models: one per built-in task, shipped inside the package.

They are trained by this library's own training code on real photos
(``benchmarks/build_default_models.py`` rebuilds them, deterministically) and listed in
``default_models/manifest.json`` with their version, sha256 and held-out evidence. They
load through the same safe loader as a user's model, checksum checked. No FiftyOne here.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # reading the manifest needs no torch (the App's forms read it)
    from .pretext_model import PretextModel

# Bumped whenever the bundled files change: fields written by one version are never
# silently replaced by another's values (see sdk.assess)
# 3: blur reads edge widths (backbone "edge_spread"), contrast starts from the tonal reach
# ("tonal_reach"); the other five carried over from 2
# 4: blur also reads camera shake and defocus from the whole image's cepstrum (its view's
# "spectral_blur"; the same weights); the other six carried over from 3
# 5: blur also reads round blur from the power spectrum's fall-off, and its edges count
# at EDGE_WEIGHT where that reads (its view's "spectral_blur": 2; the same weights; the
# cepstrum no longer reads a pixelated photo's block lattice as a shake or a ring); the
# other six carried over from 4
# 6: brightness reads the mean grey beside the highlights (backbone "exposure_levels"),
# retrained; the other six carried over from 5
# 7: rotation reads degrees without training: the lines where they are sure, the edge
# histogram's classical reading elsewhere (backbone "lines_or_edges"); writes
# rotation_confidence; the other six carried over from 6
# 8: JPEG reads the quality a JPEG file's tables say, unless its pixels show far more
# compression (its view's "encoded_quality"; the same weights); all seven carried over
# from 7
# 9: noise reads JPEG files with a second reader, trained with half its copies saved as
# a JPEG (PretextModel.jpeg_reader), retrained; the other six carried over from 8
# 10: brightness and contrast read a sample of the stored pixels from the whole frame
# (their view's "stored_levels"), retrained; the other five carried over from 9
DEFAULT_MODELS_VERSION = "10"
DEFAULT_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "default_models")


class DefaultModelError(Exception):
    """The bundled models are missing, incomplete or changed since they were built."""


@lru_cache(maxsize=8)
def _manifest(folder: str) -> dict:
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        raise DefaultModelError(f"no bundled models: {path} not found")
    with open(path) as f:
        return json.load(f)


def manifest(folder: str = DEFAULT_MODELS_DIR) -> dict:
    """The manifest of the bundled models in ``folder`` (version, files, evidence)."""
    return _manifest(os.path.abspath(folder))


def default_tasks(folder: str = DEFAULT_MODELS_DIR) -> list[str]:
    """The tasks that have a bundled model, in the manifest's order."""
    return list(manifest(folder)["models"])


def default_model_file(task: str, folder: str = DEFAULT_MODELS_DIR) -> tuple[str, str]:
    """(path, sha256) of the bundled model of ``task``."""
    models = manifest(folder)["models"]
    if task not in models:
        raise DefaultModelError(
            f"no bundled model for task {task!r}; bundled: {', '.join(models) or 'none'}"
        )
    entry = models[task]
    return os.path.join(folder, entry["file"]), entry["sha256"]


def default_view_kind(task: str, folder: str = DEFAULT_MODELS_DIR) -> str:
    """``"patches"`` or ``"whole"``: what the bundled model of ``task`` reads."""
    default_model_file(task, folder)  # names the bundled tasks if this is not one
    return manifest(folder)["models"][task]["view"]["kind"]


def load_default_model(task: str, folder: str = DEFAULT_MODELS_DIR) -> PretextModel:
    """The bundled model of ``task``, loaded safely and checked against its sha256."""
    from .pretext_model import PretextModel

    path, sha256 = default_model_file(task, folder)
    return PretextModel.load(path, expected_sha256=sha256)


# what decides a branch's architecture and input: a model that starts from a bundled
# one (TrainingConfig.init="default") must keep these
ARCHITECTURE_OPTIONS = ("backbone", "working_resolution", "patch_count")


@lru_cache(maxsize=16)
def default_architecture(task: str, folder: str = DEFAULT_MODELS_DIR) -> dict:
    """The bundled model's ``ARCHITECTURE_OPTIONS`` (read once per process)."""
    config = load_default_model(task, folder).training.get("config", {})
    return {name: config[name] for name in ARCHITECTURE_OPTIONS}


def default_version(model: PretextModel) -> str | None:
    """The bundled version a model was built as, or None for a model trained by a user."""
    return (model.training.get("default_model") or {}).get("version")


__all__ = [
    "ARCHITECTURE_OPTIONS",
    "DEFAULT_MODELS_DIR",
    "DEFAULT_MODELS_VERSION",
    "DefaultModelError",
    "default_architecture",
    "default_model_file",
    "default_tasks",
    "default_version",
    "default_view_kind",
    "load_default_model",
    "manifest",
]
