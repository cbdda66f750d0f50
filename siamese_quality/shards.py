"""Sharded scoring: one job split into delegated operations over ranges of sample ids,
for any number of ``fiftyone delegated launch`` workers.

Each shard is the plugin's score operator, queued with the job's fields and id; the job
holds its fields' locks until its last shard ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import fiftyone as fo

from . import PLUGIN_NAME
from .registry import root_dataset
from .scoring_job import ScoringPlan, check_scoring_request, plan_scoring, prepare_fields

Samples = fo.core.collections.SampleCollection
SCORE_OPERATOR = f"{PLUGIN_NAME}/score_quality"


def queue_scoring_shards(
    samples: Samples,
    key: str | Sequence[str],
    num_shards: int,
    field: str | Sequence[str] | None = None,
    overwrite: bool = False,
    skip_unchanged: bool = False,
    heatmaps: bool = False,
) -> list[str]:
    """Creates the output fields, then queues one delegated scoring operation per shard.

    The shards are disjoint ranges of sample ids covering ``samples``. The job holds
    the output fields' locks from here until its last shard is done (no other job
    can start writing them in between). Returns the ids of the queued operations.
    """
    from .locks import acquire_all

    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    plan = plan_scoring(samples, key, field, overwrite, heatmaps=heatmaps)
    dataset = root_dataset(samples)
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
        check_scoring_request(
            samples, list(plan.fields), list(plan.fields.values()), overwrite, heatmaps
        )
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
            "heatmaps": plan.heatmaps,
            "num_shards": 1,
            "job": job,
        },
        request_delegation=True,
    )
    return str(result.result["id"])
