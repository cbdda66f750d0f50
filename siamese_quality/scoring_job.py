"""A scoring job: which models write which fields of which samples, and its run.

:func:`plan_scoring` validates everything before any work; :func:`run_scoring` writes
values in chunks under field locks, so an interrupted job keeps what it finished, and
records a summary in each model's run results.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import fiftyone as fo
import numpy as np

from . import runs
from .core.texts import describe
from .registry import confidence_field, load_model, require_images, root_dataset

if TYPE_CHECKING:
    from .core.pretext_model import PretextModel

Samples = fo.core.collections.SampleCollection


def field_suffixes(
    view_kind: str, heatmaps: bool = False, confidence: bool = False
) -> tuple[str, ...]:
    """Suffixes of the fields a model whose view is of ``view_kind`` writes ("" is the
    value; models that read patches add their grid, ``_patches``, and on request the
    same grid as a heat map the App overlays, ``_heatmap``; models that tell how sure
    they are add ``_confidence``)."""
    suffixes = FIELD_SUFFIXES + (("_confidence",) if confidence else ())
    if view_kind != "patches":
        return suffixes
    return (*suffixes, "_patches", *(("_heatmap",) if heatmaps else ()))


def _field_descriptions(key: str, model: PretextModel) -> dict[str, str]:
    """``{suffix: description}`` of the fields a model writes (suffix "" is the value)."""
    from .core.defaults import default_version

    version = default_version(model)
    name = f"siamese_quality model '{key}'" + (
        f" (bundled default model v{version})" if version else ""
    )
    how = describe(model.view, model.jpeg_reader is not None)
    raw = f"raw branch score of {name} (larger: larger {model.task} magnitude"
    if model.jpeg_reader is not None:  # two readers' scores are on two scales
        raw += "; a JPEG file's from its own reader: compare within one kind of file"
    return {
        "": f"{model.task} in {model.unit}, {how}; {name}",
        "_raw": raw + ")",
        "_fingerprint": "size and modification time of the image file, and the sha256 of "
        f"the weights, when {name} scored it (finds files changed since, and values "
        "written by another model)",
        "_confidence": f"how sure {name} is of the {model.task} value, 0-1 (the share of "
        "the image's long straight lines that agree with it; low: no upright to read)",
        "_patches": f"{model.task} in {model.unit} of each patch, rows of the grid over the "
        f"image (top to bottom, left to right); {name}",
        "_heatmap": f"where the image shows {model.task}: each patch's value in {model.unit}, "
        f"drawn over the image; range {_heatmap_range(model)}; {name}",
    }


def _heatmap_range(model: PretextModel) -> list[float]:
    """A heat map's range: the model's trained range of magnitudes, in its unit (as the
    model file records it: the task's registered range may have changed since)."""
    return [float(model.distortion_info["low"]), float(model.distortion_info["high"])]


FIELD_SUFFIXES = ("", "_raw", "_fingerprint")
# (type, subfield) of each field
_FIELD_TYPES = {
    "": (fo.FloatField, None),
    "_raw": (fo.FloatField, None),
    "_fingerprint": (fo.StringField, None),
    "_confidence": (fo.FloatField, None),
    "_patches": (fo.ListField, fo.ListField),  # rows of values
    "_heatmap": (fo.EmbeddedDocumentField, fo.Heatmap),
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
    return runs.model_config(samples, key).weights_sha256


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
    heatmaps: bool = False  # local models also write ``<field>_heatmap``

    def targets(self) -> list[str]:
        return [
            f"{name}{suffix}" for key, name in self.fields.items() for suffix in self.suffixes(key)
        ]

    def suffixes(self, key: str) -> tuple[str, ...]:
        model = self.models[key]
        return field_suffixes(model.view.kind, self.heatmaps, model.reports_confidence)


def check_scoring_request(
    samples: Samples,
    key: str | Sequence[str] = "blur",
    field: str | Sequence[str] | None = None,
    overwrite: bool = False,
    heatmaps: bool = False,
) -> dict[str, str]:
    """Validates model keys and output fields; returns ``{key: field}``.

    Raises:
        ValueError: naming the parameter, e.g. a field that exists and was not
            written by this model (unless ``overwrite``)
    """
    dataset = root_dataset(samples)
    require_images(samples)
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
        config = runs.model_config(dataset, k)
        suffixes = field_suffixes(config.view_kind, heatmaps, config.confidence)
        for target in (f"{name}{suffix}" for suffix in suffixes):
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
    heatmaps: bool = False,
) -> ScoringPlan:
    """Validates a scoring request and loads its models, without writing anything."""
    fields = check_scoring_request(samples, key, field, overwrite, heatmaps)
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be at least 1")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    models = {k: load_model(samples, k) for k in fields}
    return ScoringPlan(
        samples,
        models,
        fields,
        batch_size,
        num_workers,
        chunk_size,
        skip_unchanged,
        job,
        overwrite,
        heatmaps,
    )


def prepare_fields(plan: ScoringPlan) -> None:
    """Creates the output fields (with descriptions) and records them on the runs.

    Recording first means a model deletion cleans up even after an interrupted job.
    """
    dataset = root_dataset(plan.samples)
    for key, name in plan.fields.items():
        descriptions = _field_descriptions(key, plan.models[key])
        suffixes = plan.suffixes(key)
        for suffix in suffixes:
            target = f"{name}{suffix}"
            if dataset.has_field(target):
                # new weights (a retrained or upgraded model) are named where they write
                existing = dataset.get_field(target)
                ours = (existing.info or {}).get("siamese_quality_model") == key
                if ours and existing.description != descriptions[suffix]:
                    existing.description = descriptions[suffix]
                    existing.save()
            else:
                ftype, inner = _FIELD_TYPES[suffix]
                inner_kind = "embedded_doc_type" if suffix == "_heatmap" else "subfield"
                dataset.add_sample_field(
                    target,
                    ftype,
                    description=descriptions[suffix],
                    info={"siamese_quality_model": key},
                    **{inner_kind: inner},
                )
        recorded = runs.model_config(dataset, key).fields
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
    dataset = root_dataset(plan.samples)
    done = [True] * len(ids)
    for key, name in plan.fields.items():
        if not dataset.has_field(f"{name}_fingerprint"):
            done = [False] * len(ids)
            break
        values, stored = plan.samples.values([name, f"{name}_fingerprint"])
        done = [
            d and v is not None and s == f
            for d, v, s, f in zip(done, values, stored, fingerprints[name], strict=True)
        ]
        if "_heatmap" in plan.suffixes(key):
            # heat maps asked for now: a sample scored without one is not done (the ids of
            # those that have one, not the maps themselves, are read)
            heatmap = f"{name}_heatmap"
            drawn = (
                set(plan.samples.exists(heatmap).values("id"))
                if dataset.has_field(heatmap)
                else set()
            )
            done = [d and i in drawn for d, i in zip(done, ids, strict=True)]
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
            shard_finished(str(root_dataset(plan.samples)._doc.id), plan.targets(), plan.job)


def _score_plan(plan: ScoringPlan):
    from .core.scoring import iter_model_scores
    from .locks import field_locks, sweep_stale_locks

    dataset = root_dataset(plan.samples)
    ids, paths, fingerprints = _samples_to_score(plan)
    skipped = len(plan.samples) - len(ids) if plan.skip_unchanged else 0
    yield 0.0
    if not ids:
        # taking the locks removes dead jobs' ones; a job with nothing left to do takes
        # none, and must still tidy up (a job killed after its last write left its locks)
        sweep_stale_locks()
        return _summary(plan, [], 0, [], skipped, seconds=None)

    started = time.monotonic()
    with field_locks(str(dataset._doc.id), plan.targets(), plan.job) as locks:
        # again, under the locks: a field created since the plan was checked (by the
        # user or another process) is not ours to write
        dataset.reload()
        check_scoring_request(
            plan.samples,
            list(plan.fields),
            list(plan.fields.values()),
            plan.overwrite,
            plan.heatmaps,
        )
        prepare_fields(plan)
        writes = _ChunkedWrites(dataset, plan, ids, fingerprints, locks)
        failures: list[dict] = []
        scored = 0
        for batch in iter_model_scores(paths, plan.models, plan.batch_size, plan.num_workers):
            for position, index in enumerate(batch.indices):
                writes.stage(index, _sample_values(plan, batch, position))
            for failure in batch.failures:
                index = failure["index"]
                reason = {"kind": failure["kind"], "message": failure["message"]}
                failures.append({"id": ids[index], "filepath": paths[index], **reason})
                writes.stage(index, _null_values(plan))
            scored += len(batch.indices)
            writes.flush_if_full()
            yield (scored + len(failures)) / len(ids)
        writes.flush()

    summary = _summary(plan, ids, scored, failures, skipped, time.monotonic() - started)
    for key in plan.fields:
        runs.update_results(dataset, key, _recorder(summary, failures, plan.job))
    return summary


class _ChunkedWrites:
    """Values staged per target field, written every ``plan.chunk_size`` samples, so an
    interrupted job keeps what it finished; each write renews the field locks."""

    def __init__(self, dataset, plan: ScoringPlan, ids: list, fingerprints: dict, locks):
        self.dataset, self.plan, self.ids = dataset, plan, ids
        self.fingerprints, self.locks = fingerprints, locks
        self.pending: dict[str, dict] = {}

    def stage(self, index: int, values: dict[str, object]) -> None:
        for name in self.plan.fields.values():
            values[f"{name}_fingerprint"] = self.fingerprints[name][index]
        for target, value in values.items():
            self.pending.setdefault(target, {})[self.ids[index]] = value

    def flush_if_full(self) -> None:
        if len(next(iter(self.pending.values()), {})) >= self.plan.chunk_size:
            self.flush()

    def flush(self) -> None:
        for target, values in self.pending.items():
            self.dataset.set_values(target, values, key_field="id")
        self.pending = {}
        for lock in self.locks:
            lock.heartbeat()


def _sample_values(plan: ScoringPlan, batch, position: int) -> dict[str, object]:
    """The values every model of the plan writes for one scored image of a batch."""
    values: dict[str, object] = {}
    for key, name in plan.fields.items():
        values[name] = float(batch.calibrated[key][position])
        values[f"{name}_raw"] = float(batch.raw[key][position])
        if key in batch.confidence:
            values[confidence_field(name)] = round(float(batch.confidence[key][position]), 4)
        if key in batch.patches:
            grid = batch.patches[key][position]
            values[f"{name}_patches"] = np.round(grid, 4).tolist()
            if plan.heatmaps:
                values[f"{name}_heatmap"] = fo.Heatmap(
                    map=grid.astype(np.float32), range=_heatmap_range(plan.models[key])
                )
    return values


def _summary(
    plan: ScoringPlan,
    ids: list,
    scored: int,
    failures: list[dict],
    skipped: int,
    seconds: float | None,
) -> dict:
    """A job's summary, as returned and as recorded in each model's run results."""
    kinds: dict[str, int] = {}
    for failure in failures:
        kinds[failure["kind"]] = kinds.get(failure["kind"], 0) + 1
    summary = {
        "samples": len(ids),
        "scored": scored,
        "failed": len(failures),
        "skipped_unchanged": skipped,
        "failure_kinds": kinds,
        "fields": dict(plan.fields),
    }
    if not ids:
        summary["message"] = "nothing to score" + (f" ({skipped} unchanged)" if skipped else "")
        return summary
    summary["message"] = _summary_message(len(ids), scored, kinds) + (
        f" ({skipped} more unchanged, skipped)" if skipped else ""
    )
    summary["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    # what the App's score form bases its expected duration on
    summary["seconds"] = round(seconds, 3)
    return summary


def _recorder(summary: dict, failures: list[dict], job: str | None):
    def record(results: dict) -> None:
        results["scoring"] = _merged_scoring(results.get("scoring"), summary, failures, job)

    return record


def _null_values(plan: ScoringPlan) -> dict[str, None]:
    """The values of a sample whose image could not be read."""
    return {
        f"{name}{suffix}": None
        for key, name in plan.fields.items()
        for suffix in plan.suffixes(key)
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
