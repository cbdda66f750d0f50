"""Field locks in MongoDB: one scoring job per output field at a time.

Two jobs writing *different* fields of a dataset run side by side. A second job
on a field that another job is writing is refused with a clear message (rather
than queued: the user decides whether to wait or cancel). The shards of one
sharded job share a job id and hold the lock together.

A lock held by a process that died (killed worker, lost machine) does not block
forever: a holder whose process is gone (same host) or whose heartbeat is older
than :data:`STALE_AFTER_S` is dropped.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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


def _alive(holder: dict) -> bool:
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
                holder = next(iter(alive.values()))
                raise FieldLockedError(
                    f"field {self.field!r} is being written by another scoring job "
                    f"(pid {holder['pid']} on {holder['host']}, last seen "
                    f"{holder['heartbeat']:%Y-%m-%d %H:%M:%S} UTC); wait for it to finish "
                    f"or score into another field"
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


@contextmanager
def field_locks(
    dataset_id: str, fields: list[str], job: str | None = None
) -> Iterator[list[FieldLock]]:
    """Holds locks on ``fields`` for the duration of the block (all or none)."""
    job = job or uuid.uuid4().hex
    held: list[FieldLock] = []
    try:
        for field in sorted(fields):  # a fixed order: two jobs cannot deadlock
            held.append(FieldLock(dataset_id, field, job).acquire())
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
