"""The models of a dataset: what they are, and loading, importing, exporting, deleting.

A model is a FiftyOne run (``runs.py``) plus a weights file; :class:`ModelInfo` is what
users and the App read about one.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import fiftyone as fo

from . import runs
from .core.errors import InvalidOption

if TYPE_CHECKING:  # the model code imports torch: listing models does not need it
    from .core.pretext_model import PretextModel

Samples = fo.core.collections.SampleCollection


@dataclass
class ModelInfo:
    """What a model is and how well it did on held-out images."""

    key: str
    task: str
    unit: str
    backbone: str
    working_resolution: int  # local tasks: native patch side; global: downscaled side
    view: dict  # what the model reads: native patches or the whole image (views.py)
    weights_path: str
    fields: list[str]
    metrics: dict
    baseline: dict | None
    trained_at: str
    library_version: str
    training_options: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # steps, seconds, stop reason, ...
    distortion: dict = field(default_factory=dict)  # Distortion.to_dict() when trained
    # the evidence behind the metrics: the calibration curve (x, y, band) and the
    # held-out points (score, magnitude, image), and how many images those are
    calibration: dict = field(default_factory=dict)
    held_out_points: dict = field(default_factory=dict)
    held_out_images: int = 0
    scoring: dict | None = None  # the last scoring job's summary

    def to_dict(self) -> dict:
        return asdict(self)


def confidence_field(field: str) -> str:
    """Where a model that tells how sure it is (rotation) writes that, beside ``field``."""
    return f"{field}_confidence"


def value_field(fields: list[str]) -> str | None:
    """The calibrated field among a model's recorded fields, or None."""
    suffixes = ("_raw", "_fingerprint", "_patches", "_heatmap")
    values = [f for f in fields if not f.endswith(suffixes)]
    return values[0] if values else None


def model_fields(samples: Samples, key: str) -> list[str]:
    """The fields model ``key`` wrote (its run config only: no results read)."""
    return runs.model_config(samples, key).fields


def root_dataset(samples: Samples) -> fo.Dataset:
    if not isinstance(samples, fo.core.collections.SampleCollection):
        raise ValueError(f"expected a FiftyOne dataset or view, got {type(samples).__name__}")
    return samples._root_dataset


def require_images(samples: Samples) -> None:
    if samples.media_type != "image":
        raise ValueError(
            f"siamese_quality works on images; this collection's media type is "
            f"{samples.media_type!r}"
        )


def model_info(samples: Samples, key: str) -> ModelInfo:
    """The :class:`ModelInfo` of model ``key``."""
    config = runs.model_config(samples, key)
    results = runs.load_results(samples, key)
    evaluation = results.get("evaluation") or {}
    points = evaluation.get("points") or {}
    info = root_dataset(samples).get_run_info(key)
    return ModelInfo(
        key=key,
        task=config.task,
        unit=config.unit,
        backbone=config.backbone,
        working_resolution=config.working_resolution,
        view=config.view,
        weights_path=config.weights_path,
        fields=config.fields,
        metrics=evaluation.get("metrics", {}),
        baseline=evaluation.get("baseline"),
        trained_at=str(info.timestamp),
        library_version=config.library_version,
        training_options=config.training_options,
        training={k: v for k, v in (results.get("training") or {}).items() if k != "history"},
        distortion=config.distortion,
        calibration=results.get("calibration") or {},
        held_out_points=points,
        held_out_images=len(set(points.get("image") or [])),
        scoring=results.get("scoring"),
    )


def list_models(samples: Samples) -> list[ModelInfo]:
    """The models trained on (or imported into) the dataset of ``samples``."""
    return [model_info(samples, key) for key in runs.list_model_keys(root_dataset(samples))]


def load_model(samples: Samples, key: str) -> PretextModel:
    """Loads model ``key``; its weights must match the sha256 in the run record."""
    from .core.pretext_model import PretextModel

    config = runs.model_config(samples, key)
    return PretextModel.load(config.weights_path, expected_sha256=config.weights_sha256)


def new_weights_path(dataset: fo.Dataset, key: str) -> str:
    # a fresh file per model: the previous one stays valid until the run points here
    folder = os.path.dirname(runs.weights_path(dataset, key))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join(folder, f"model-{stamp}-{uuid.uuid4().hex[:6]}.pt")


def check_new_key(dataset: fo.Dataset, key: str, overwrite: bool) -> bool:
    """Validates a key for a new model; returns whether a run is to be replaced."""
    try:
        runs.validate_key(key)
    except ValueError as e:
        raise InvalidOption("key", str(e)) from None
    if dataset.has_run(key) and key not in runs.list_model_keys(dataset, True):
        raise InvalidOption(
            "key", f"key {key!r} is already used by another kind of run on this dataset"
        )
    if key in runs.list_model_keys(dataset) and not overwrite:
        raise InvalidOption(
            "key", f"A model {key!r} exists: choose another key, or overwrite it (overwrite=True)"
        )
    # an incomplete run (a killed training) is replaced without asking
    return dataset.has_run(key)


def record_model(
    dataset: fo.Dataset, key: str, model: PretextModel, path: str, sha256: str, overwrite: bool
) -> ModelInfo:
    known = key in runs.list_model_keys(dataset, include_incomplete=True)
    previous = dataset.get_run_info(key).config.serialize() if known else None
    fields = previous.get("fields", []) if previous else []
    runs.register_model(dataset, key, model, path, sha256, fields, overwrite=overwrite)
    old_path = (previous or {}).get("weights_path")
    if old_path and os.path.realpath(old_path) != os.path.realpath(path):
        if os.path.isfile(old_path):
            os.remove(old_path)
    return model_info(dataset, key)


def delete_model(samples: Samples, key: str) -> list[str]:
    """Deletes model ``key``: its run, its weights and the fields it wrote; nothing else.

    Returns:
        the deleted fields
    """
    return runs.delete_model_record(root_dataset(samples), key)


def check_export_path(path: str, overwrite: bool = False) -> None:
    """Raises ``FileExistsError`` if ``path`` is a folder, or a file and not ``overwrite``."""
    if os.path.isdir(path):
        raise FileExistsError(f"path: {path} is a folder; give a file path")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"path: a file exists at {path}; choose another path, or replace it (overwrite=True)"
        )


def export_model(samples: Samples, key: str, path: str, overwrite: bool = False) -> str:
    """Writes model ``key`` to a standalone file (weights, calibration, metrics, format version).

    Raises:
        FileExistsError: something exists at ``path`` and ``overwrite`` is False
    """
    config = runs.model_config(samples, key)
    check_export_path(path, overwrite)
    load_model(samples, key)  # verifies format and checksum before copying
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # through a partial file: a failed copy leaves any previous file as it was
    partial = f"{path}.partial-{uuid.uuid4().hex[:6]}"
    try:
        shutil.copyfile(config.weights_path, partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def import_model(
    samples: Samples, path: str, key: str | None = None, overwrite: bool = False
) -> ModelInfo:
    """Adds an exported model file to the dataset of ``samples`` as model ``key``.

    The file is validated (format, version, safe loading) before anything is written.
    """
    from .core.pretext_model import PretextModel, sha256_of_file

    dataset = root_dataset(samples)
    require_images(samples)
    model = PretextModel.load(path)
    key = key or model.task
    replace = check_new_key(dataset, key, overwrite)
    target = new_weights_path(dataset, key)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(path, target)
    return record_model(dataset, key, model, target, sha256_of_file(target), replace)
