"""The Python SDK: train, score and evaluate pretext models on FiftyOne datasets.

Every function validates all of its parameters before it starts any work, never
writes into a field it did not create (unless ``overwrite=True``), and writes
scores in chunks so that an interrupted job keeps what it finished.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import fiftyone as fo
import fiftyone.core.utils as fou
import numpy as np

# torch and the model code load on first use: listing models and drawing the panel
# need neither
from . import PLUGIN_NAME, runs
from .texts import describe

if TYPE_CHECKING:
    from .pretext_model import PretextModel

Samples = fo.core.collections.SampleCollection
ProgressArg = bool | None | Callable

SCORE_OPERATOR = f"{PLUGIN_NAME}/score_quality"


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

    def to_dict(self) -> dict:
        return asdict(self)


# --- helpers ------------------------------------------------------------------------


def _dataset(samples: Samples) -> fo.Dataset:
    if not isinstance(samples, fo.core.collections.SampleCollection):
        raise ValueError(f"expected a FiftyOne dataset or view, got {type(samples).__name__}")
    return samples._root_dataset


def _require_images(samples: Samples) -> None:
    if samples.media_type != "image":
        raise ValueError(
            f"siamese_quality works on images; this collection's media type is "
            f"{samples.media_type!r}"
        )


def _call(progress: ProgressArg, value) -> None:
    if callable(progress):
        progress(value)


def model_info(samples: Samples, key: str) -> ModelInfo:
    """The :class:`ModelInfo` of model ``key``."""
    config = runs.run_config(samples, key)
    results = runs.load_results(samples, key)
    evaluation = results.get("evaluation") or {}
    info = _dataset(samples).get_run_info(key)
    return ModelInfo(
        key=key,
        task=config["task"],
        unit=config["unit"],
        backbone=config["backbone"],
        working_resolution=config["working_resolution"],
        view=config.get("view") or {},
        weights_path=config["weights_path"],
        fields=list(config.get("fields") or []),
        metrics=evaluation.get("metrics", {}),
        baseline=evaluation.get("baseline"),
        trained_at=str(info.timestamp),
        library_version=config.get("library_version", ""),
        training_options=config.get("training_options") or {},
        training={k: v for k, v in (results.get("training") or {}).items() if k != "history"},
    )


def list_models(samples: Samples) -> list[ModelInfo]:
    """The models trained on (or imported into) the dataset of ``samples``."""
    return [model_info(samples, key) for key in runs.list_model_keys(_dataset(samples))]


def load_model(samples: Samples, key: str) -> PretextModel:
    """Loads model ``key``; its weights must match the sha256 in the run record."""
    from .pretext_model import PretextModel

    config = runs.run_config(samples, key)
    return PretextModel.load(config["weights_path"], expected_sha256=config["weights_sha256"])


def _new_weights_path(dataset: fo.Dataset, key: str) -> str:
    # a fresh file per model: the previous one stays valid until the run points here
    folder = os.path.dirname(runs.weights_path(dataset, key))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join(folder, f"model-{stamp}-{uuid.uuid4().hex[:6]}.pt")


def _check_new_key(dataset: fo.Dataset, key: str, overwrite: bool) -> bool:
    """Validates a key for a new model; returns whether a run is to be replaced."""
    runs.validate_key(key)
    if dataset.has_run(key) and key not in runs.list_model_keys(dataset, True):
        raise ValueError(f"key {key!r} is already used by another kind of run on this dataset")
    if key in runs.list_model_keys(dataset) and not overwrite:
        raise ValueError(f"A model with key {key!r} exists; pass overwrite=True to replace it")
    # an incomplete run (a killed training) is replaced without asking
    return dataset.has_run(key)


def _record(
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


# --- training ------------------------------------------------------------------------


def train(
    samples: Samples,
    task: str = "blur",
    key: str | None = None,
    max_seconds: float | None = 120.0,
    backbone: str | None = None,
    overwrite: bool = False,
    progress: ProgressArg = None,
    **training_options,
) -> ModelInfo:
    """Trains a pretext model on the images of ``samples`` and records it as a run.

    Args:
        samples: a dataset or view of images (no labels needed)
        task: the distortion, e.g. ``"blur"``, ``"rotation"``, ``"brightness"``
        key: the model's name on the dataset (default: the task)
        max_seconds: training time budget
        backbone: ``None`` for the task's default, or one of ``model.BACKBONES``
        overwrite: replace an existing model with this key
        progress: ``None``/``True`` for a progress bar, ``False`` for none, or a
            function called with training progress dicts (``fraction``, ``step``,
            ``loss``, ``val_spearman``, ...)
        **training_options: any other :class:`~siamese_quality.training.TrainingConfig`
            field (``epochs``, ``working_resolution``, ``seed``, ...)

    Returns:
        the :class:`ModelInfo`, including held-out metrics and the baseline's
    """
    from .training import TrainingConfig, train_pretext_model

    dataset = _dataset(samples)
    _require_images(samples)
    key = key or task
    replace = _check_new_key(dataset, key, overwrite)
    try:
        config = TrainingConfig(
            task=task, max_seconds=max_seconds, backbone=backbone, **training_options
        )
    except TypeError as e:
        raise ValueError(f"unknown training option: {e}") from None
    config.validate()
    ids, paths = samples.values(["id", "filepath"])
    if len(paths) < 4:
        raise ValueError(
            f"training needs at least 4 images (to train, choose the checkpoint, and "
            f"calibrate and report on two held out); this collection has {len(paths)}"
        )

    path = _new_weights_path(dataset, key)
    checkpoint = os.path.join(os.path.dirname(path), "checkpoint.pt")
    show_bar = progress is None or progress is True
    with fou.ProgressBar(total=100, progress=show_bar, iters_str="% of budget") as bar:

        def report(record: dict) -> None:
            bar.set_iteration(int(100 * min(1.0, record["fraction"])))
            _call(progress, record)

        model = train_pretext_model(paths, config, progress=report, checkpoint_path=checkpoint)
    # which samples trained, chose the checkpoint, and calibrated and reported
    roles = model.training.get("roles") or {}
    model.training["roles"] = {role: [ids[i] for i in found] for role, found in roles.items()}
    sha256 = model.save(path)
    info = _record(dataset, key, model, path, sha256, replace)
    if os.path.isfile(checkpoint):
        os.remove(checkpoint)
    return info


# --- scoring -------------------------------------------------------------------------


def field_suffixes(view_kind: str) -> tuple[str, ...]:
    """Suffixes of the fields a model whose view is of ``view_kind`` writes ("" is the
    value; models that read patches add their grid, ``_patches``)."""
    return (*FIELD_SUFFIXES, "_patches") if view_kind == "patches" else FIELD_SUFFIXES


def _field_descriptions(key: str, model: PretextModel) -> dict[str, str]:
    """``{suffix: description}`` of the fields a model writes (suffix "" is the value)."""
    return {
        "": f"{model.task} in {model.unit}, {describe(model.view)}; siamese_quality model '{key}'",
        "_raw": f"raw branch score of siamese_quality model '{key}' (larger: larger "
        f"{model.task} magnitude)",
        "_fingerprint": "size and modification time of the image file, and the sha256 of "
        f"the weights, when siamese_quality model '{key}' scored it (finds files changed "
        "since, and values written by another model)",
        "_patches": f"{model.task} in {model.unit} of each patch, rows of the grid over the "
        f"image (top to bottom, left to right); siamese_quality model '{key}'",
    }


FIELD_SUFFIXES = ("", "_raw", "_fingerprint")
# (type, subfield) of each field
_FIELD_TYPES = {
    "": (fo.FloatField, None),
    "_raw": (fo.FloatField, None),
    "_fingerprint": (fo.StringField, None),
    "_patches": (fo.ListField, fo.ListField),  # rows of values
}


def _file_state(path: str) -> str | None:
    """``"size:mtime_ns"`` of a file, or None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _fingerprint(file_state: str | None, model_sha256: str) -> str | None:
    return None if file_state is None else f"{file_state}:{model_sha256[:16]}"


def file_fingerprint(path: str, model_sha256: str) -> str | None:
    """``"size:mtime_ns:model"`` of a file scored by the model whose weights have
    ``model_sha256`` (its first 16 hex digits), or None if the file cannot be read.

    A value counts as unchanged only if both the file and the model are the ones that
    wrote it: a retrained or re-imported model rescores everything.
    """
    return _fingerprint(_file_state(path), model_sha256)


def _model_sha256(samples: Samples, key: str) -> str:
    return runs.run_config(samples, key)["weights_sha256"]


@dataclass
class ScoringPlan:
    """A validated scoring job: which models write which fields of which samples."""

    samples: Samples
    models: dict[str, PretextModel]  # key -> model
    fields: dict[str, str]  # key -> field; also f"{field}_raw" and f"{field}_fingerprint"
    batch_size: int
    num_workers: int | None
    chunk_size: int
    skip_unchanged: bool = False
    job: str | None = None  # shards of one sharded job share it (and their field locks)
    overwrite: bool = False  # may write fields that it did not create

    def targets(self) -> list[str]:
        return [
            f"{name}{suffix}"
            for key, name in self.fields.items()
            for suffix in field_suffixes(self.models[key].view.kind)
        ]


def check_scoring_request(
    samples: Samples,
    key: str | Sequence[str] = "blur",
    field: str | Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, str]:
    """Validates model keys and output fields; returns ``{key: field}``.

    Raises:
        ValueError: naming the parameter, e.g. a field that exists and was not
            written by this model (unless ``overwrite``)
    """
    dataset = _dataset(samples)
    _require_images(samples)
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ValueError("key: give at least one model key")
    if len(set(keys)) != len(keys):
        raise ValueError(f"key: duplicate model keys {keys}")
    if field is None:
        fields = list(keys)
    else:
        fields = [field] if isinstance(field, str) else list(field)
        if len(fields) != len(keys):
            raise ValueError(f"field: give one field per model key ({len(keys)}), got {fields}")
    for name in fields:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"field must be a valid identifier, got {name!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"field: two models cannot write the same field {fields}")
    for k in keys:
        runs.require_model(dataset, k)
    owners = runs.owned_fields(dataset)
    for k, name in zip(keys, fields, strict=True):
        view_kind = (runs.run_config(dataset, k).get("view") or {}).get("kind", "whole")
        for target in (f"{name}{suffix}" for suffix in field_suffixes(view_kind)):
            owner = owners.get(target)
            if dataset.has_field(target) and owner != k and not overwrite:
                who = f"model {owner!r}" if owner else "you (not siamese_quality)"
                raise ValueError(
                    f"field {target!r} already exists and was written by {who}; choose "
                    f"another field or pass overwrite=True to replace its values"
                )
    return dict(zip(keys, fields, strict=True))


def plan_scoring(
    samples: Samples,
    key: str | Sequence[str] = "blur",
    field: str | Sequence[str] | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    batch_size: int = 64,
    chunk_size: int = 1000,
    skip_unchanged: bool = False,
    job: str | None = None,
) -> ScoringPlan:
    """Validates a scoring request and loads its models, without writing anything."""
    fields = check_scoring_request(samples, key, field, overwrite)
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be at least 1")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    models = {k: load_model(samples, k) for k in fields}
    return ScoringPlan(
        samples, models, fields, batch_size, num_workers, chunk_size, skip_unchanged, job, overwrite
    )


def prepare_fields(plan: ScoringPlan) -> None:
    """Creates the output fields (with descriptions) and records them on the runs.

    Recording first means a model deletion cleans up even after an interrupted job.
    """
    dataset = _dataset(plan.samples)
    for key, name in plan.fields.items():
        descriptions = _field_descriptions(key, plan.models[key])
        suffixes = field_suffixes(plan.models[key].view.kind)
        for suffix in suffixes:
            target = f"{name}{suffix}"
            if not dataset.has_field(target):
                ftype, subfield = _FIELD_TYPES[suffix]
                dataset.add_sample_field(
                    target,
                    ftype,
                    subfield=subfield,
                    description=descriptions[suffix],
                    info={"siamese_quality_model": key},
                )
        recorded = runs.run_config(dataset, key).get("fields") or []
        new = [f"{name}{suffix}" for suffix in suffixes if f"{name}{suffix}" not in recorded]
        if new:
            runs.update_config(dataset, key, fields=[*recorded, *new])


def _samples_to_score(
    plan: ScoringPlan,
) -> tuple[list[str], list[str], dict[str, list[str | None]]]:
    """(ids, paths, {field: current fingerprints}) of the samples this run must score."""
    ids, paths = plan.samples.values(["id", "filepath"])
    states = [_file_state(p) for p in paths]  # one stat per file, whatever the models
    shas = {name: _model_sha256(plan.samples, key) for key, name in plan.fields.items()}
    fingerprints = {name: [_fingerprint(st, sha) for st in states] for name, sha in shas.items()}
    if not plan.skip_unchanged:
        return ids, paths, fingerprints
    dataset = _dataset(plan.samples)
    done = [True] * len(ids)
    for name in plan.fields.values():
        if not dataset.has_field(f"{name}_fingerprint"):
            done = [False] * len(ids)
            break
        values, stored = plan.samples.values([name, f"{name}_fingerprint"])
        done = [
            d and v is not None and s == f
            for d, v, s, f in zip(done, values, stored, fingerprints[name], strict=True)
        ]
    keep = [i for i, d in enumerate(done) if not d]
    return (
        [ids[i] for i in keep],
        [paths[i] for i in keep],
        {name: [column[i] for i in keep] for name, column in fingerprints.items()},
    )


def run_scoring(plan: ScoringPlan):
    """Scores the plan's samples; a generator of progress fractions in [0, 1].

    The output fields are locked against other scoring jobs for the duration.
    Values are written every ``chunk_size`` samples. Unreadable images get null
    values and a reason. With ``skip_unchanged``, samples that already have values
    for files that did not change are left as they are (resuming an interrupted
    job, or scoring only new and changed images). The summary is stored in each
    run's results and returned as the generator's value (``StopIteration.value``).
    A shard of a sharded job (``plan.job``) counts itself done when it ends, however
    it ends: the last one frees the fields.
    """
    from .locks import shard_finished

    try:
        return (yield from _score_plan(plan))
    finally:
        if plan.job is not None:
            shard_finished(str(_dataset(plan.samples)._doc.id), plan.targets(), plan.job)


def _score_plan(plan: ScoringPlan):
    from .locks import field_locks
    from .scoring import iter_model_scores

    dataset = _dataset(plan.samples)
    ids, paths, fingerprints = _samples_to_score(plan)
    total = len(ids)
    skipped = len(plan.samples) - total if plan.skip_unchanged else 0
    yield 0.0
    if not total:
        return {
            "samples": 0,
            "scored": 0,
            "failed": 0,
            "skipped_unchanged": skipped,
            "failure_kinds": {},
            "fields": dict(plan.fields),
            "message": "nothing to score" + (f" ({skipped} unchanged)" if skipped else ""),
        }

    started = time.monotonic()
    with field_locks(str(dataset._doc.id), plan.targets(), plan.job) as locks:
        # again, under the locks: a field created since the plan was checked (by the
        # user or another process) is not ours to write
        dataset.reload()
        check_scoring_request(
            plan.samples, list(plan.fields), list(plan.fields.values()), plan.overwrite
        )
        prepare_fields(plan)
        pending: dict[str, dict] = {}
        failures: list[dict] = []
        scored = 0

        def flush() -> None:
            nonlocal pending
            for target, values in pending.items():
                dataset.set_values(target, values, key_field="id")
            pending = {}
            for lock in locks:
                lock.heartbeat()

        def stage(index: int, values: dict[str, float | None]) -> None:
            for name in plan.fields.values():
                values[f"{name}_fingerprint"] = fingerprints[name][index]
            for target, value in values.items():
                pending.setdefault(target, {})[ids[index]] = value

        for batch in iter_model_scores(paths, plan.models, plan.batch_size, plan.num_workers):
            for position, index in enumerate(batch.indices):
                values = {}
                for key, name in plan.fields.items():
                    values[name] = float(batch.calibrated[key][position])
                    values[f"{name}_raw"] = float(batch.raw[key][position])
                    if key in batch.patches:
                        grid = plan.models[key].calibrated(batch.patches[key][position])
                        values[f"{name}_patches"] = np.round(grid, 4).tolist()
                stage(index, values)
            for failure in batch.failures:
                index = failure["index"]
                failures.append(
                    {
                        "id": ids[index],
                        "filepath": paths[index],
                        "kind": failure["kind"],
                        "message": failure["message"],
                    }
                )
                stage(index, _null_values(plan))
            scored += len(batch.indices)
            if len(next(iter(pending.values()), {})) >= plan.chunk_size:
                flush()
            yield (scored + len(failures)) / total
        flush()

    kinds: dict[str, int] = {}
    for failure in failures:
        kinds[failure["kind"]] = kinds.get(failure["kind"], 0) + 1
    summary = {
        "samples": total,
        "scored": scored,
        "failed": len(failures),
        "skipped_unchanged": skipped,
        "failure_kinds": kinds,
        "fields": dict(plan.fields),
        "message": _summary_message(total, scored, kinds),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        # what the App's score form bases its expected duration on
        "seconds": round(time.monotonic() - started, 3),
    }

    def record(results: dict) -> None:
        results["scoring"] = _merged_scoring(results.get("scoring"), summary, failures, plan.job)

    for key in plan.fields:
        runs.update_results(dataset, key, record)
    return summary


def _null_values(plan: ScoringPlan) -> dict[str, None]:
    """The values of a sample whose image could not be read."""
    return {
        f"{name}{suffix}": None
        for key, name in plan.fields.items()
        for suffix in field_suffixes(plan.models[key].view.kind)
        if suffix != "_fingerprint"
    }


MAX_STORED_FAILURES = 1000
_SUMMED = ("samples", "scored", "failed", "skipped_unchanged", "seconds")


def _merged_scoring(previous: dict | None, summary: dict, failures: list, job: str | None) -> dict:
    """The scoring record of a run: this job's summary, or, for the shards of one
    sharded job (same ``job``), the sum of the shards finished so far."""
    record = {**summary, "job": job, "shards": 1, "failures": failures[:MAX_STORED_FAILURES]}
    if job is None or not previous or previous.get("job") != job:
        return record
    for name in _SUMMED:
        record[name] = previous.get(name, 0) + summary.get(name, 0)
    kinds = dict(previous.get("failure_kinds") or {})
    for kind, count in summary["failure_kinds"].items():
        kinds[kind] = kinds.get(kind, 0) + count
    record["failure_kinds"] = kinds
    record["shards"] = previous.get("shards", 1) + 1
    record["failures"] = [*(previous.get("failures") or []), *failures][:MAX_STORED_FAILURES]
    record["message"] = _summary_message(record["samples"], record["scored"], kinds)
    return record


def changed_since_scoring(samples: Samples, key: str, field: str | None = None):
    """The scored samples whose value is stale: the image file changed (or vanished)
    after scoring, or the value was written by another model than ``key``'s current
    weights (a retrained or re-imported model)."""
    runs.require_model(samples, key)
    name = field or key
    if not samples._root_dataset.has_field(f"{name}_fingerprint"):
        return samples.limit(0)
    sha256 = _model_sha256(samples, key)
    ids, paths, stored = samples.exists(f"{name}_fingerprint").values(
        ["id", "filepath", f"{name}_fingerprint"]
    )
    changed = [
        i for i, p, s in zip(ids, paths, stored, strict=True) if file_fingerprint(p, sha256) != s
    ]
    return samples.select(changed)


def _summary_message(total: int, scored: int, kinds: dict[str, int]) -> str:
    if not kinds:
        return f"scored {scored} of {total} samples"
    detail = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    failed = sum(kinds.values())
    return (
        f"scored {scored} of {total} samples; {failed} could not be read ({detail}) and "
        f"have null values"
    )


def score(
    samples: Samples,
    key: str | Sequence[str] = "blur",
    field: str | Sequence[str] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    batch_size: int = 64,
    chunk_size: int = 1000,
    progress: ProgressArg = None,
    num_shards: int = 1,
    skip_unchanged: bool = False,
) -> dict:
    """Writes calibrated quality values (and raw scores) of ``samples`` to fields.

    Each model ``key`` writes its magnitude, in the distortion's unit, to ``field``
    (default: the key) and its raw branch score to ``<field>_raw``. Several keys
    are scored from one decode of each image. Unreadable images get null values;
    their reasons are stored in the run results (``scoring``).

    ``skip_unchanged=True`` leaves samples alone that already have values for an
    image file that has not changed since, written by the model's current weights
    (resume an interrupted job, score only new and changed images, or rescore
    everything after retraining); the file's size and modification time and the
    weights' sha256 are kept in ``<field>_fingerprint``. Only one job at a time
    writes a field: a second one is refused with a message naming the first.

    With ``num_shards > 1`` nothing is scored here: the fields are created and
    ``num_shards`` delegated operations over disjoint parts of ``samples`` are
    queued, for any number of ``fiftyone delegated launch`` workers to run.

    Returns:
        a summary dict (``scored``, ``failed``, ``failure_kinds``, ``message``, ...),
        or ``{"queued": [operation ids], ...}`` when sharded
    """
    if num_shards != 1:
        queued = queue_scoring_shards(samples, key, num_shards, field, overwrite, skip_unchanged)
        return {"queued": queued, "message": f"queued {len(queued)} delegated scoring operations"}
    plan = plan_scoring(
        samples, key, field, overwrite, num_workers, batch_size, chunk_size, skip_unchanged
    )
    show_bar = progress is None or progress is True
    steps = run_scoring(plan)
    with fou.ProgressBar(total=100, progress=show_bar, iters_str="%") as bar:
        try:
            while True:
                fraction = next(steps)
                bar.set_iteration(int(100 * fraction))
                _call(progress, fraction)
        except StopIteration as done:
            return done.value


def queue_scoring_shards(
    samples: Samples,
    key: str | Sequence[str],
    num_shards: int,
    field: str | Sequence[str] | None = None,
    overwrite: bool = False,
    skip_unchanged: bool = False,
) -> list[str]:
    """Creates the output fields, then queues one delegated scoring operation per shard.

    The shards are disjoint ranges of sample ids covering ``samples``. The job holds
    the output fields' locks from here until its last shard is done (no other job
    can start writing them in between). Returns the ids of the queued operations.
    """
    from .locks import acquire_all

    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    plan = plan_scoring(samples, key, field, overwrite)
    dataset = _dataset(samples)
    if not dataset.persistent:
        raise ValueError(
            "sharded scoring runs as delegated operations, which need a persistent dataset "
            "(set dataset.persistent = True)"
        )
    shards = id_range_shards(samples, num_shards)
    job = uuid.uuid4().hex
    locks = acquire_all(str(dataset._doc.id), plan.targets(), job)
    queued: list[str] = []
    try:
        check_scoring_request(samples, list(plan.fields), list(plan.fields.values()), overwrite)
        prepare_fields(plan)
        for lock in locks:
            lock.expect_shards(len(shards))
        queued = [_queue_shard(shard, plan, overwrite, skip_unchanged, job) for shard in shards]
    finally:
        for lock in locks:
            if queued:
                lock.hand_over_to_shards(queued)
            else:  # nothing queued (an empty view, or queueing failed): nothing to hold
                lock.release()
    return queued


def id_range_shards(samples: Samples, num_shards: int) -> list[Samples]:
    """``samples`` split into up to ``num_shards`` disjoint views by ranges of sample
    ids, whose union is ``samples``. Each view is ``samples`` plus one stage naming two
    ids at most, so a queued operation's size does not grow with the dataset."""
    from fiftyone import ViewField as F

    ids = sorted(samples.values("id"))
    count = min(num_shards, len(ids))
    starts = [ids[len(ids) * i // count] for i in range(count)]
    shards = []
    for i, first in enumerate(starts):
        in_range = F("_id").to_string() >= first
        if i + 1 < count:
            in_range &= F("_id").to_string() < starts[i + 1]
        shards.append(samples.match(in_range))
    return shards


def _queue_shard(
    shard: Samples, plan: ScoringPlan, overwrite: bool, skip_unchanged: bool, job: str
) -> str:
    import fiftyone.operators as foo

    result = foo.execute_operator(
        SCORE_OPERATOR,
        ctx={"view": shard},
        params={
            "keys": list(plan.fields),
            "fields": list(plan.fields.values()),
            "overwrite": overwrite,
            "skip_unchanged": skip_unchanged,
            "num_shards": 1,
            "job": job,
        },
        request_delegation=True,
    )
    return str(result.result["id"])


# --- evaluation and model files ------------------------------------------------------


def evaluate(
    samples: Samples, key: str = "blur", implementation: str = "reference", grid_size: int = 9
) -> dict:
    """Re-measures model ``key`` on the images of ``samples``, distorted at known magnitudes.

    Returns the report (metrics, baseline metrics, points) and appends it to the
    run's results (``evaluations``). Use images the model was not trained on.
    """
    _require_images(samples)
    model = load_model(samples, key)
    if implementation not in ("reference", "alternative"):
        raise ValueError(
            f"implementation must be 'reference' or 'alternative', got {implementation!r}"
        )
    from .evaluation import evaluate_model

    report = evaluate_model(
        model, samples.values("filepath"), implementation=implementation, grid_size=grid_size
    )
    report["implementation"] = implementation
    report["evaluated_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    dataset = _dataset(samples)
    runs.update_results(
        dataset,
        key,
        lambda results: results.update(evaluations=[*(results.get("evaluations") or []), report]),
    )
    return report


def delete_model(samples: Samples, key: str) -> list[str]:
    """Deletes model ``key``: its run, its weights and the fields it wrote; nothing else.

    Returns:
        the deleted fields
    """
    return runs.delete_model_record(_dataset(samples), key)


def export_model(samples: Samples, key: str, path: str, overwrite: bool = False) -> str:
    """Writes model ``key`` to a standalone file (weights, calibration, metrics, format version).

    Raises:
        FileExistsError: something exists at ``path`` and ``overwrite`` is False
    """
    config = runs.run_config(samples, key)
    if os.path.isdir(path):
        raise FileExistsError(f"path: {path} is a folder; give a file path")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"path: a file exists at {path}; choose another path or pass overwrite=True"
        )
    load_model(samples, key)  # verifies format and checksum before copying
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # through a partial file: a failed copy leaves any previous file as it was
    partial = f"{path}.partial-{uuid.uuid4().hex[:6]}"
    try:
        shutil.copyfile(config["weights_path"], partial)
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
    from .pretext_model import PretextModel, sha256_of_file

    dataset = _dataset(samples)
    _require_images(samples)
    model = PretextModel.load(path)
    key = key or model.task
    replace = _check_new_key(dataset, key, overwrite)
    target = _new_weights_path(dataset, key)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(path, target)
    return _record(dataset, key, model, target, sha256_of_file(target), replace)
