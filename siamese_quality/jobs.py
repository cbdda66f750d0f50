"""This plugin's delegated operations on a dataset: what is queued or running, and how far.

FiftyOne keeps delegated operations in its ``delegated_ops`` collection; a worker
(``fiftyone delegated launch``) updates their state and progress. The panel reads
them to show progress and to redraw when a job ends.
"""

from __future__ import annotations

from . import PLUGIN_NAME

# run states of an operation that has not ended (FiftyOne's ExecutionRunState values)
ACTIVE_STATES = ("queued", "scheduled", "running")


def _plugin_operations(dataset, run_state: dict | str, fields: list[str], **query):
    """This plugin's delegated-operation documents on ``dataset`` in ``run_state``,
    each with its ``operator`` name (no plugin prefix) and ``label`` in words."""
    import fiftyone.core.odm as foo_odm

    selector = {
        "dataset_id": dataset._doc.id,
        "operator": {"$regex": f"^{PLUGIN_NAME}/"},
        "run_state": run_state,
        **query,
    }
    fields = ["operator", "context.request_params.params", *fields]
    documents = foo_odm.get_db_conn()["delegated_ops"].find(selector, fields)
    for document in documents.sort("queued_at", 1):
        operator = document["operator"].split("/")[-1]
        params = ((document.get("context") or {}).get("request_params") or {}).get("params") or {}
        yield {**document, "operator": operator, "label": _job_label(operator, params)}


def active_jobs(dataset) -> list[dict]:
    """This plugin's operations on ``dataset`` that have not ended, oldest first.

    Each is ``{"id", "operator", "label", "state", "progress"}``; ``progress`` is a
    fraction in [0, 1] or None before the worker reports one.
    """
    states = {"$in": list(ACTIVE_STATES)}
    jobs = []
    for document in _plugin_operations(dataset, states, ["run_state", "status"]):
        status = document.get("status") or {}
        jobs.append(
            {
                "id": str(document["_id"]),
                "operator": document["operator"],
                "label": document["label"],
                "state": document["run_state"],
                "progress": status.get("progress"),
                "progress_label": status.get("label"),
            }
        )
    return jobs


def _job_label(operator: str, params: dict) -> str:
    """What a job does, in words: ``training 'contrast'``, ``scoring with blur, noise``."""
    if operator == "train_quality_model":
        return f"training '{params.get('key') or params.get('task')}'"
    if operator == "score_quality":
        return f"scoring with {', '.join(params.get('keys') or []) or 'every model'}"
    return operator.replace("_", " ")


def describe_jobs(jobs: list[dict]) -> str:
    """One line per job, e.g. ``Siamese quality: train model: running, 40 % (step 80)``."""
    lines = []
    for job in jobs:
        text = f"{job['label']}: {job['state']}"
        if job["progress"] is not None:
            text += f", {100 * job['progress']:.0f} %"
        if job.get("progress_label"):
            text += f" ({job['progress_label']})"
        if job["state"] == "queued":
            text += " (waiting for a worker: `make worker` or `fiftyone delegated launch`)"
        lines.append(text)
    return "\n".join(f"- {line}" for line in lines)


def failed_jobs(dataset, since) -> list[dict]:
    """This plugin's operations on ``dataset`` that failed after ``since`` (a UTC
    datetime), each ``{"id", "label", "error"}`` with the error's last line."""
    failures = []
    for document in _plugin_operations(dataset, "failed", ["result"], failed_at={"$gte": since}):
        error = ((document.get("result") or {}).get("error") or "unknown error").strip()
        failures.append(
            {
                "id": str(document["_id"]),
                "label": document["label"],
                "error": error.splitlines()[-1][:300],
            }
        )
    return failures
