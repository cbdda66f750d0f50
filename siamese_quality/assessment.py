"""Quality out of the box: score a dataset with the bundled default models.

:func:`plan_assessment` checks everything before any write: which tasks, and for each
whether its bundled model must be added to the dataset, is there already (kept), or is
there in another bundled version. A dataset keeps the version that wrote its fields
until the user asks for the new one (``upgrade=True``): upgrading the package never
changes existing values by itself. A model of the same key that the user trained is
never replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import fiftyone as fo

from . import runs
from .core.errors import InvalidOption
from .overview import DEFAULT_FIELD, check_summary_fields
from .registry import check_new_key, import_model, model_info, require_images, root_dataset
from .scoring_job import check_scoring_request, field_suffixes

Samples = fo.core.collections.SampleCollection


@dataclass
class TaskPlan:
    task: str
    action: str  # "add", "keep" or "upgrade"
    version: str  # the bundled version the task's fields will come from
    bundled: str  # the version this package ships


def recorded_default_version(samples: Samples, key: str) -> str | None:
    """The bundled version of model ``key`` on the dataset, or None if a user trained it."""
    return (model_info(samples, key).training.get("default_model") or {}).get("version")


def _plan_task(dataset: fo.Dataset, task: str, bundled: str, upgrade: bool) -> TaskPlan:
    if task not in runs.list_model_keys(dataset):
        check_new_key(dataset, task, overwrite=False)  # e.g. another kind of run's key
        return TaskPlan(task, "add", bundled, bundled)
    recorded = recorded_default_version(dataset, task)
    if recorded is None:
        raise InvalidOption(
            "tasks",
            f"model {task!r} on this dataset was trained (or imported) by you; assess does "
            f"not replace it: leave {task!r} out of tasks, or delete that model first",
        )
    if recorded != bundled and upgrade:
        return TaskPlan(task, "upgrade", bundled, bundled)
    return TaskPlan(task, "keep", recorded, bundled)


def _check_new_fields(dataset: fo.Dataset, task: str, folder: str, heatmaps: bool) -> None:
    """A task's model is about to be added: none of its fields may exist yet."""
    from .core.defaults import default_architecture, default_view_kind
    from .core.model import get_backbone

    view_kind = default_view_kind(task, folder)
    confidence = get_backbone(default_architecture(task, folder)["backbone"]).confidence
    for target in (f"{task}{suffix}" for suffix in field_suffixes(view_kind, heatmaps, confidence)):
        if dataset.has_field(target):
            raise InvalidOption(
                "tasks",
                f"field {target!r} already exists and was not written by a siamese_quality "
                f"model {task!r}; assess would not replace it: rename or delete it, or "
                f"leave {task!r} out of tasks",
            )


def plan_assessment(
    samples: Samples,
    tasks: Sequence[str] | None = None,
    upgrade: bool = False,
    folder: str | None = None,
    heatmaps: bool = False,
) -> list[TaskPlan]:
    """What :func:`assess` would do for each task; checks every task's model and fields
    before any write.

    Raises:
        InvalidOption: an unknown task, a task whose key holds a user's own model, or a
            field in the way
    """
    from .core.defaults import DEFAULT_MODELS_DIR, default_tasks, manifest

    folder = folder or DEFAULT_MODELS_DIR
    require_images(samples)
    bundled = default_tasks(folder)
    tasks = list(dict.fromkeys(tasks or bundled))
    unknown = [t for t in tasks if t not in bundled]
    if unknown or not tasks:
        raise InvalidOption(
            "tasks",
            f"no bundled model for {', '.join(unknown) or 'no task'}; bundled: "
            f"{', '.join(bundled)}",
        )
    dataset = root_dataset(samples)
    version = manifest(folder)["version"]
    plans = [_plan_task(dataset, t, version, upgrade) for t in tasks]
    for plan in plans:
        if plan.action == "add":
            _check_new_fields(dataset, plan.task, folder, heatmaps)
    present = [p.task for p in plans if p.action != "add"]
    if present:
        check_scoring_request(samples, present, heatmaps=heatmaps)
    if len(plans) > 1:
        check_summary_fields(dataset, DEFAULT_FIELD, overwrite=False)
    return plans


def install_default_models(samples: Samples, plans: list[TaskPlan], folder: str | None) -> None:
    """Adds (or upgrades) each planned task's bundled model on the dataset of ``samples``,
    each file checked against the manifest's sha256 first."""
    from .core.defaults import DEFAULT_MODELS_DIR, default_model_file, load_default_model

    folder = folder or DEFAULT_MODELS_DIR
    for plan in plans:
        if plan.action == "keep":
            continue
        load_default_model(plan.task, folder)  # the checksum, before the copy
        path, _ = default_model_file(plan.task, folder)
        import_model(samples, path, key=plan.task, overwrite=plan.action == "upgrade")


def assessment_message(plans: list[TaskPlan], scored: dict) -> str:
    """One line a user reads: what was scored, with which versions, and what is newer."""
    versions = sorted({p.version for p in plans})
    text = (
        f"{scored.get('message', '')}; bundled default models v{', v'.join(versions)} "
        f"({', '.join(p.task for p in plans)})"
    )
    stale = [p for p in plans if p.version != p.bundled]
    if stale:
        text += (
            f"; {', '.join(p.task for p in stale)} kept v{stale[0].version}, which wrote "
            f"their fields: assess(..., upgrade=True) rescores them with v{stale[0].bundled}"
        )
    return text
