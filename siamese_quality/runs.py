"""Model records on FiftyOne datasets: one run per model, weights in a folder on disk.

The run is the single source of truth about a model: its config holds what
produced it (task, backbone, working resolution, training options, weights path
and sha256, library version) and which fields it wrote; its results hold the
calibration curve, held-out points, metrics and training curve.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import fiftyone as fo
import fiftyone.constants as foc
import fiftyone.core.runs as fors
import gridfs.errors
from bson import json_util

from . import __version__

if TYPE_CHECKING:  # the model code imports torch: run records do not need it
    from .core.pretext_model import PretextModel

RUN_METHOD = "siamese_quality"
MODELS_DIR_ENV = "SIAMESE_QUALITY_MODELS_DIR"


def models_dir() -> str:
    """Where model weights live: ``$SIAMESE_QUALITY_MODELS_DIR`` or
    ``~/.fiftyone/siamese_quality/models``."""
    return os.environ.get(MODELS_DIR_ENV) or os.path.join(
        foc.FIFTYONE_CONFIG_DIR, "siamese_quality", "models"
    )


def weights_path(dataset: fo.Dataset, key: str) -> str:
    """The weights file of model ``key`` on ``dataset``.

    Keyed by the dataset's id, which survives renaming.
    """
    return os.path.join(models_dir(), str(dataset._doc.id), key, "model.pt")


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(
            f"key must be a valid identifier (letters, digits and underscores only), got {key!r}"
        )
    return key


def list_model_keys(
    samples: fo.core.collections.SampleCollection, include_incomplete: bool = False
) -> list[str]:
    """Keys of the siamese_quality models on the dataset of ``samples``.

    A model is *complete* once its weights, run and results are all stored; a job
    killed in between leaves an incomplete run, which is hidden and replaced by
    the next training with that key.
    """
    dataset = samples._root_dataset
    if include_incomplete:
        return dataset.list_runs(method=RUN_METHOD)
    return dataset.list_runs(method=RUN_METHOD, complete=True)


def require_model(samples, key: str) -> None:
    keys = list_model_keys(samples)
    if key not in keys:
        available = ", ".join(keys) or "none yet; train one with siamese_quality.train()"
        raise ValueError(f"Unknown model key {key!r}; models on this dataset: {available}")


# 1: records of 0.1.0 (no version recorded); 2: the version is recorded. A loader reads both.
RECORD_VERSION = 2


@dataclass(frozen=True)
class ModelConfig:
    """A model's run config, typed: what produced the model and which fields it wrote."""

    task: str
    unit: str
    backbone: str
    working_resolution: int
    weights_path: str
    weights_sha256: str
    # Distortion.to_dict() when trained, and views.View.to_dict(): what the model reads
    distortion: dict = dataclasses.field(default_factory=dict)
    view: dict = dataclasses.field(default_factory=dict)
    training_options: dict = dataclasses.field(default_factory=dict)
    library_version: str = ""
    fields: list[str] = dataclasses.field(default_factory=list)
    record_version: int = 1
    # the model tells how sure it is of each value (writes ``<field>_confidence``)
    confidence: bool = False

    @property
    def view_kind(self) -> str:
        """``"patches"`` (native-resolution patches) or ``"whole"`` (the downscaled image)."""
        return self.view.get("kind", "whole")

    @classmethod
    def from_record(cls, record: dict) -> ModelConfig:
        """Reads a stored config of any :data:`RECORD_VERSION` (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        values["fields"] = list(values.get("fields") or [])
        return cls(**values)


def model_config(samples, key: str) -> ModelConfig:
    """The typed run config of model ``key``."""
    return ModelConfig.from_record(run_config(samples, key))


def run_config(samples, key: str) -> dict:
    """The run config of model ``key`` as a plain dict (this module's raw record; other
    modules read :func:`model_config`)."""
    require_model(samples, key)
    config = samples._root_dataset.get_run_info(key).config
    return {k: v for k, v in config.serialize().items() if k not in ("cls", "type")}


def register_model(
    samples,
    key: str,
    model: PretextModel,
    path: str,
    sha256: str,
    fields: list[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Records ``model`` (already saved at ``path``) as run ``key``, with its results."""
    dataset = samples._root_dataset
    config = dataset.init_run(
        method=RUN_METHOD,
        task=model.task,
        unit=model.unit,
        distortion=model.distortion_info,
        backbone=model.branch.backbone,
        working_resolution=model.working_resolution,
        view=model.view.to_dict(),
        training_options=model.training.get("config", {}),
        weights_path=path,
        weights_sha256=sha256,
        library_version=__version__,
        fields=list(fields or []),
        record_version=RECORD_VERSION,
        confidence=model.reports_confidence,
        complete=False,
    )
    samples.register_run(key, config, overwrite=overwrite, cleanup=False)
    save_results(dataset, key, model_results(model))
    update_config(dataset, key, complete=True)  # last: only now does the model appear


def model_results(model: PretextModel) -> dict:
    """What a run stores as results: calibration, held-out evaluation, training curve."""
    training = {k: v for k, v in model.training.items() if k != "config"}
    return {
        "calibration": model.calibration.to_dict() if model.calibration else None,
        "evaluation": model.evaluation,
        "training": training,
        "evaluations": [],
        "record_version": RECORD_VERSION,
    }


def save_results(dataset: fo.Dataset, key: str, results: dict) -> None:
    """Replaces the results of run ``key`` (a new run; later changes: :func:`update_results`).

    The new results file is written, and the run pointed at it, before the old file is
    deleted: a process killed at any moment leaves the run with complete results, old or
    new. (FiftyOne's ``save_run_results(overwrite=True)`` deletes the old file first; a
    kill before its run document is saved left the run pointing at no file, and every
    later read of the model failed.)
    """
    run_results = dataset.init_run_results(key, **results)
    run_doc = fors.Run._get_run_doc(dataset, key)
    stored = run_doc.results  # a GridFS proxy, empty (falsy) for a new run
    previous = stored.grid_id if stored else None
    data = json_util.dumps(run_results.serialize()).encode()
    stored.grid_id = stored.fs.put(data, content_type="application/json")
    stored.gridout = None  # the proxy's cached reader of the previous file
    stored._mark_as_changed()
    run_doc.results_meta = dict(run_results.get_meta() or {})
    run_doc.save()
    if previous is not None:
        stored.fs.delete(previous)


def update_results(dataset: fo.Dataset, key: str, change: Callable[[dict], None]) -> dict:
    """Applies ``change`` to the stored results of ``key``, one process at a time.

    Returns:
        the results as stored
    """
    from .locks import run_results_lock

    with run_results_lock(str(dataset._doc.id), key):
        # fresh run records: replacing a results file that another process already
        # replaced would leave its file behind, unreferenced
        dataset.reload()
        results = load_results(dataset, key)
        change(results)
        save_results(dataset, key, results)
    return results


def load_results(samples, key: str, attempts: int = 20) -> dict:
    """The stored results of model ``key`` as a plain dict."""
    require_model(samples, key)
    dataset = samples._root_dataset
    for attempt in range(attempts):
        try:
            results = dataset.load_run_results(key, cache=False, load_view=False)
            break
        except (AttributeError, gridfs.errors.NoFile):
            # Another process replaced the results file since this process loaded the
            # dataset (or is replacing it now): FiftyOne then still points at the
            # deleted file. Reload the dataset's run records and read again.
            if attempt == attempts - 1:
                raise
            dataset.reload()
            time.sleep(0.05 * attempt)
    loaded = {
        name: getattr(results, name, None)
        for name in ("calibration", "evaluation", "training", "evaluations", "scoring")
    }
    loaded["record_version"] = getattr(results, "record_version", None) or 1  # 0.1.0: none
    return loaded


def update_config(samples, key: str, **changes) -> None:
    dataset = samples._root_dataset
    config = dataset.get_run_info(key).config
    for name, value in changes.items():
        setattr(config, name, value)
    dataset.update_run_config(key, config)


def owned_fields(dataset: fo.Dataset) -> dict[str, str]:
    """Fields written by any siamese_quality model on ``dataset``, mapped to its key."""
    owners = {}
    for key in list_model_keys(dataset, include_incomplete=True):
        for field in getattr(dataset.get_run_info(key).config, "fields", None) or []:
            owners[field] = key
    return owners


def delete_model_record(dataset: fo.Dataset, key: str) -> list[str]:
    """Deletes run ``key``, its weights folder and the fields it wrote; returns the fields."""
    if key not in list_model_keys(dataset, include_incomplete=True):
        require_model(dataset, key)  # raises the usual message
    config = dataset.get_run_info(key).config.serialize()
    fields = [f for f in config.get("fields") or [] if dataset.has_field(f)]
    for field in fields:
        dataset.delete_sample_field(field)
    dataset.delete_run(key)
    folder = os.path.dirname(config.get("weights_path") or "")
    # only our own folder layout is removed, never an arbitrary recorded path
    if folder and os.path.realpath(folder).startswith(os.path.realpath(models_dir()) + os.sep):
        shutil.rmtree(folder, ignore_errors=True)
    return fields
