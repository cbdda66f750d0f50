"""Field locks in MongoDB: one scoring job per output field at a time.

Two jobs writing *different* fields of a dataset run side by side. A second job
on a field that another job is writing is refused with a clear message (rather
than queued: the user decides whether to wait or cancel). The shards of one
sharded job share a job id and hold the lock together.

A lock held by a process that died (killed worker, lost machine) does not block
forever: a holder whose process is gone (same host) or whose heartbeat is older
than :data:`STALE_AFTER_S` is dropped, and the next scoring job (even one with
nothing left to score) first removes every lock document whose holders are all
gone (all the locks a dead job held, not only the one it meets).

A sharded job holds its locks from the moment it queues its shards: the queued
operations are a holder, alive while any of them is queued, scheduled or running
(FiftyOne's ``delegated_ops``), and released when the last shard finishes.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

COLLECTION = "siamese_quality_locks"
STALE_AFTER_S = 15 * 60


class FieldLockedError(RuntimeError):
    """Another scoring job is writing this field."""


def _collection():
    import fiftyone.core.odm as foo_odm

    return foo_odm.get_db_conn()[COLLECTION]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": _now()}


def _operations_pending(operation_ids: list[str]) -> bool:
    """Whether any of these delegated operations is yet to finish."""
    import fiftyone.core.odm as foo_odm
    from bson import ObjectId
    from fiftyone.operators.executor import ExecutionRunState

    pending = foo_odm.get_db_conn()["delegated_ops"].count_documents(
        {
            "_id": {"$in": [ObjectId(i) for i in operation_ids]},
            "run_state": {"$nin": list(ExecutionRunState.TERMINAL_STATES)},
        }
    )
    return pending > 0


def _alive(holder: dict) -> bool:
    if "operations" in holder:  # queued shards: no process, no heartbeat
        return _operations_pending(holder["operations"])
    if _now() - holder["heartbeat"] > datetime.timedelta(seconds=STALE_AFTER_S):
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot check another machine's processes: trust the heartbeat
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _who(holder: dict) -> str:
    if "operations" in holder:
        return (
            f"{len(holder['operations'])} delegated shards queued "
            f"{holder['heartbeat']:%Y-%m-%d %H:%M:%S} UTC, not all finished"
        )
    return (
        f"pid {holder['pid']} on {holder['host']}, last seen "
        f"{holder['heartbeat']:%Y-%m-%d %H:%M:%S} UTC"
    )


def sweep_stale_locks() -> int:
    """Deletes every lock document whose holders are all gone; returns how many.

    Conditional on the holders seen: a document someone joined meanwhile stays.
    """
    collection = _collection()
    removed = 0
    for doc in collection.find():
        holders = doc.get("holders") or {}
        if not any(_alive(h) for h in holders.values()):
            removed += collection.delete_one({"_id": doc["_id"], "holders": holders}).deleted_count
    return removed


class FieldLock:
    """A held lock on ``field`` of a dataset; refresh it with :meth:`heartbeat`."""

    def __init__(self, dataset_id: str, field: str, job: str):
        self.lock_id = f"{dataset_id}:{field}"
        self.field = field
        self.job = job
        self.holder_id = uuid.uuid4().hex

    def acquire(self) -> FieldLock:
        collection = _collection()
        me = {f"holders.{self.holder_id}": _holder()}
        for _ in range(5):  # a handful of races at most
            try:
                collection.insert_one(
                    {"_id": self.lock_id, "job": self.job, "holders": {self.holder_id: _holder()}}
                )
                return self
            except DuplicateKeyError:
                pass
            joined = collection.update_one({"_id": self.lock_id, "job": self.job}, {"$set": me})
            if joined.matched_count:
                return self
            doc = collection.find_one({"_id": self.lock_id})
            if doc is None:
                continue
            alive = {k: h for k, h in (doc.get("holders") or {}).items() if _alive(h)}
            if alive:
                raise FieldLockedError(
                    f"field {self.field!r} is being written by another scoring job "
                    f"({_who(next(iter(alive.values())))}); wait for it to finish or score "
                    f"into another field"
                )
            # every holder is gone: take over, unless someone else just did
            collection.delete_one({"_id": self.lock_id, "holders": doc.get("holders")})
        raise FieldLockedError(f"could not lock field {self.field!r}; try again")

    def heartbeat(self) -> None:
        _collection().update_one(
            {"_id": self.lock_id, f"holders.{self.holder_id}": {"$exists": True}},
            {"$set": {f"holders.{self.holder_id}.heartbeat": _now()}},
        )

    def release(self) -> None:
        collection = _collection()
        collection.update_one({"_id": self.lock_id}, {"$unset": {f"holders.{self.holder_id}": ""}})
        collection.delete_one({"_id": self.lock_id, "holders": {}})

    def expect_shards(self, count: int) -> None:
        """Sharded jobs: the lock is freed once ``count`` shards called
        :func:`shard_finished` (set before queueing: a shard may finish first)."""
        _collection().update_one({"_id": self.lock_id}, {"$set": {"shards_left": count}})

    def hand_over_to_shards(self, operation_ids: list[str]) -> None:
        """Replaces this process as holder by the queued operations that run the shards
        of this lock's job: the lock lives on while any of them is yet to finish."""
        queued = {
            "operations": list(operation_ids),
            "heartbeat": _now(),
            "host": socket.gethostname(),
        }
        collection = _collection()
        collection.update_one(
            {"_id": self.lock_id, f"holders.{self.holder_id}": {"$exists": True}},
            {"$set": {f"holders.{self.holder_id}": queued}},
        )
        # every shard may have finished already
        collection.delete_one({"_id": self.lock_id, "shards_left": {"$lte": 0}})


def shard_finished(dataset_id: str, fields: list[str], job: str) -> None:
    """Counts one shard of sharded ``job`` done; the last one releases the queued
    operations' hold on ``fields``."""
    collection = _collection()
    for field in fields:
        lock_id = f"{dataset_id}:{field}"
        doc = collection.find_one_and_update(
            {"_id": lock_id, "job": job, "shards_left": {"$gt": 0}},
            {"$inc": {"shards_left": -1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None or doc["shards_left"] > 0:
            continue
        queued = {f"holders.{k}": "" for k, h in doc["holders"].items() if "operations" in h}
        if queued:
            collection.update_one({"_id": lock_id}, {"$unset": queued})
        collection.delete_one({"_id": lock_id, "holders": {}})


def acquire_all(dataset_id: str, fields: list[str], job: str) -> list[FieldLock]:
    """Locks on ``fields`` for ``job``, all or none (first removing stale locks)."""
    sweep_stale_locks()
    held: list[FieldLock] = []
    try:
        for field in sorted(fields):  # a fixed order: two jobs cannot deadlock
            held.append(FieldLock(dataset_id, field, job).acquire())
    except BaseException:
        for lock in held:
            lock.release()
        raise
    return held


@contextmanager
def field_locks(
    dataset_id: str, fields: list[str], job: str | None = None
) -> Iterator[list[FieldLock]]:
    """Holds locks on ``fields`` for the duration of the block (all or none)."""
    held = acquire_all(dataset_id, fields, job or uuid.uuid4().hex)
    try:
        yield held
    finally:
        for lock in held:
            lock.release()


class RunResultsBusyError(RuntimeError):
    """Another process kept a run's results locked for longer than the timeout."""


@contextmanager
def run_results_lock(dataset_id: str, key: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Serialises read-modify-write of one run's results across processes.

    The shards of a sharded job finish at nearly the same moment and each adds its
    summary to the same results: without this, one shard's write replaces the
    results file that another is reading or has just written. A :class:`FieldLock`
    with a job of its own (so no one joins it), waited for instead of refused: it is
    held for a fraction of a second.
    """
    lock = FieldLock(dataset_id, f"results:{key}", job=uuid.uuid4().hex)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            break
        except FieldLockedError:
            if time.monotonic() > deadline:
                raise RunResultsBusyError(
                    f"the results of model {key!r} stayed locked for {timeout_s:.0f} s "
                    f"by another process; try again"
                ) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()
