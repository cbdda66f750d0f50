"""The Python SDK: train, score and evaluate pretext models on FiftyOne datasets.

Every function validates all of its parameters before it starts any work, never
writes into a field it did not create (unless ``overwrite=True``), and writes
scores in chunks so that an interrupted job keeps what it finished.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence

import fiftyone as fo
import fiftyone.core.utils as fou

# torch and the model code load on first use: listing models and drawing the panel
# need neither
from . import runs
from .core.errors import InvalidOption
from .overview import summarize
from .registry import (
    ModelInfo,
    check_new_key,
    delete_model,
    export_model,
    import_model,
    list_models,
    load_model,
    model_info,
    new_weights_path,
    record_model,
    require_images,
    root_dataset,
)
from .scoring_job import (
    FIELD_SUFFIXES,
    ScoringPlan,
    changed_since_scoring,
    check_scoring_request,
    field_suffixes,
    file_fingerprint,
    plan_scoring,
    prepare_fields,
    run_scoring,
)
from .shards import id_range_shards, queue_scoring_shards

__all__ = [
    "FIELD_SUFFIXES",
    "InvalidOption",
    "ModelInfo",
    "assess",
    "ScoringPlan",
    "changed_since_scoring",
    "check_scoring_request",
    "check_training_request",
    "delete_model",
    "evaluate",
    "export_model",
    "field_suffixes",
    "file_fingerprint",
    "id_range_shards",
    "import_model",
    "list_models",
    "load_model",
    "model_info",
    "plan_scoring",
    "prepare_fields",
    "queue_scoring_shards",
    "run_scoring",
    "score",
    "summarize",
    "train",
]

Samples = fo.core.collections.SampleCollection
ProgressArg = bool | None | Callable


def _call(progress: ProgressArg, value) -> None:
    if callable(progress):
        progress(value)


def check_training_request(
    samples: Samples,
    task: str = "blur",
    key: str | None = None,
    overwrite: bool = False,
    max_seconds: float | None = 120.0,
    backbone: str | None = None,
    **training_options,
):
    """Checks a training request before any work, as :func:`train` does; returns its
    validated :class:`~siamese_quality.core.training.TrainingConfig`.

    Raises:
        InvalidOption: naming the parameter at fault (``option``: ``"key"``,
            ``"max_seconds"``, ``"working_resolution"``, ``"samples"``, ...); the App's
            train form shows the message beside that field
    """
    from .core.training import TrainingConfig

    require_images(samples)
    check_new_key(root_dataset(samples), key or task, overwrite)
    try:
        config = TrainingConfig(
            task=task, max_seconds=max_seconds, backbone=backbone, **training_options
        )
    except TypeError as e:
        raise InvalidOption("training_options", f"unknown training option: {e}") from None
    config.validate()
    count = samples.count()
    if count < 4:
        raise InvalidOption(
            "samples",
            f"training needs at least 4 images (to train, choose the checkpoint, and "
            f"calibrate and report on two held out); this collection has {count}",
        )
    return config


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
        **training_options: any other :class:`~siamese_quality.core.training.TrainingConfig`
            field (``epochs``, ``working_resolution``, ``seed``, ...)

    Returns:
        the :class:`ModelInfo`, including held-out metrics and the baseline's
    """
    from .core.training import train_pretext_model

    dataset = root_dataset(samples)
    key = key or task
    config = check_training_request(
        samples, task, key, overwrite, max_seconds, backbone, **training_options
    )
    replace = dataset.has_run(key)  # the check allowed it: overwrite, or an unfinished run
    ids, paths = samples.values(["id", "filepath"])

    path = new_weights_path(dataset, key)
    checkpoint = os.path.join(os.path.dirname(path), "checkpoint.pt")
    # a fixed reader (rotation's default) trains nothing: no budget bar stuck at 0 %
    show_bar = (progress is None or progress is True) and not config.reads_units
    with fou.ProgressBar(total=100, progress=show_bar, iters_str="% of budget") as bar:

        def report(record: dict) -> None:
            bar.set_iteration(int(100 * min(1.0, record["fraction"])))
            _call(progress, record)

        model = train_pretext_model(paths, config, progress=report, checkpoint_path=checkpoint)
    # which samples trained, chose the checkpoint, and calibrated and reported
    roles = model.training.get("roles") or {}
    model.training["roles"] = {role: [ids[i] for i in found] for role, found in roles.items()}
    sha256 = model.save(path)
    info = record_model(dataset, key, model, path, sha256, replace)
    if os.path.isfile(checkpoint):
        os.remove(checkpoint)
    return info


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
    heatmaps: bool = False,
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

    ``heatmaps=True`` also writes, for models that read native-resolution patches
    (blur, noise, JPEG, pixelation), ``<field>_heatmap``: an ``fo.Heatmap`` of each
    patch's value in the model's unit, with the model's trained range of magnitudes as
    its ``range``, which the App draws over the image in its sample view.

    ``num_workers`` processes each decode and score whole batches of ``batch_size``
    images (default: none below 200 images, else one per CPU, up to 8).

    With ``num_shards > 1`` nothing is scored here: the fields are created and
    ``num_shards`` delegated operations over disjoint parts of ``samples`` are
    queued, for any number of ``fiftyone delegated launch`` workers to run.

    Returns:
        a summary dict (``scored``, ``failed``, ``failure_kinds``, ``message``, ...),
        or ``{"queued": [operation ids], ...}`` when sharded
    """
    if num_shards != 1:
        queued = queue_scoring_shards(
            samples, key, num_shards, field, overwrite, skip_unchanged, heatmaps
        )
        return {"queued": queued, "message": f"queued {len(queued)} delegated scoring operations"}
    plan = plan_scoring(
        samples,
        key,
        field,
        overwrite,
        num_workers,
        batch_size,
        chunk_size,
        skip_unchanged,
        heatmaps=heatmaps,
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


def assess(
    samples: Samples,
    tasks: Sequence[str] | None = None,
    upgrade: bool = False,
    heatmaps: bool = False,
    progress: ProgressArg = None,
    num_workers: int | None = None,
    models_dir: str | None = None,
) -> dict:
    """Scores ``samples`` with the bundled default models: quality with no training.

    Each task's bundled model is added to the dataset as model ``<task>`` (a run, as
    :func:`import_model` records one) and all of them score every image from one
    decode, into the usual fields (``blur``, ``noise``, ...); with two tasks or more,
    :func:`summarize` then writes each sample's worst issue. Samples already scored by
    the same weights are skipped (``skip_unchanged``).

    A dataset keeps the bundled version that wrote its fields: after a package upgrade
    ships new models, ``assess`` goes on with the recorded ones and says so, until
    ``upgrade=True`` replaces them and rescores. A model the user trained under a
    task's name is never replaced: ``assess`` refuses before any write.

    Args:
        tasks: the tasks to assess (default: every bundled one)
        upgrade: replace models of an older bundled version by this package's
        heatmaps: also write ``<field>_heatmap`` for the local tasks (see :func:`score`)
        progress, num_workers: as for :func:`score`
        models_dir: a folder of bundled models other than the package's own

    Returns:
        ``{"tasks": {task: {"action", "version"}}, "scoring": score's summary,
        "summary": summarize's (or None), "message"}``
    """
    from .assessment import assessment_message, install_default_models, plan_assessment

    plans = plan_assessment(samples, tasks, upgrade, models_dir, heatmaps)
    keys = [p.task for p in plans]
    install_default_models(samples, plans, models_dir)
    scored = score(
        samples,
        key=keys,
        skip_unchanged=True,
        heatmaps=heatmaps,
        progress=progress,
        num_workers=num_workers,
    )
    summary = summarize(samples, keys=keys) if len(keys) > 1 and scored.get("scored") else None
    return {
        "tasks": {p.task: {"action": p.action, "version": p.version} for p in plans},
        "scoring": scored,
        "summary": summary,
        "message": assessment_message(plans, scored),
    }


# --- evaluation and model files ------------------------------------------------------


def evaluate(
    samples: Samples, key: str = "blur", implementation: str = "reference", grid_size: int = 9
) -> dict:
    """Re-measures model ``key`` on the images of ``samples``, distorted at known magnitudes.

    Returns the report (metrics, baseline metrics, points) and appends it to the
    run's results (``evaluations``). Use images the model was not trained on. A noise
    model also reports its reader of JPEG files (``jpeg_file_reader``: the same copies
    saved as a JPEG at 95, read by the reader that writes the fields of JPEG files).
    """
    require_images(samples)
    model = load_model(samples, key)
    if implementation not in ("reference", "alternative"):
        raise ValueError(
            f"implementation must be 'reference' or 'alternative', got {implementation!r}"
        )
    from .core.evaluation import evaluate_model

    report = evaluate_model(
        model, samples.values("filepath"), implementation=implementation, grid_size=grid_size
    )
    report["implementation"] = implementation
    report["evaluated_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    dataset = root_dataset(samples)
    runs.update_results(
        dataset,
        key,
        lambda results: results.update(evaluations=[*(results.get("evaluations") or []), report]),
    )
    return report
