"""Killed jobs and concurrent jobs, with real processes: nothing lost, nothing doubled."""

import os
import random
import signal
import subprocess
import sys
import time

import fiftyone as fo
import fiftyone.core.odm as foo_odm
import numpy as np
import pytest
from conftest import TINY_TRAINING, write_dead_leaves_images

import siamese_quality as sq
from siamese_quality import runs
from siamese_quality.locks import COLLECTION, FieldLockedError

SCORE_SCRIPT = """
import sys
import fiftyone as fo
import siamese_quality as sq
# torch and the model code before "STARTED", so that kills land in scoring
from siamese_quality.core import pretext_model, scoring
dataset = fo.load_dataset(sys.argv[1])
print("STARTED", flush=True)
sq.score(dataset, key="blur", field=sys.argv[2], skip_unchanged=True, batch_size=2,
         chunk_size=2, num_workers=0, progress=False)
print("DONE", flush=True)
"""

TRAIN_SCRIPT = """
import sys
import fiftyone as fo
import siamese_quality as sq
dataset = fo.load_dataset(sys.argv[1])
print("STARTED", flush=True)
sq.train(dataset, task="blur", max_seconds=None, max_steps=400, working_resolution=48,
         validation_every=4, images_per_batch=3, magnitudes_per_image=3, progress=False)
print("DONE", flush=True)
"""


RESULTS_SCRIPT = """
import sys
import fiftyone as fo
from siamese_quality import runs
dataset = fo.load_dataset(sys.argv[1])
print("STARTED", flush=True)
for count in range(100000):  # replace the results over and over, until killed
    runs.update_results(dataset, "blur", lambda results: results.update(evaluations=[count]))
"""

DIE_HOLDING_LOCKS_SCRIPT = """
import os
import sys
import fiftyone as fo
from siamese_quality import locks
dataset = fo.load_dataset(sys.argv[1])
locks.acquire_all(str(dataset._doc.id), [sys.argv[2], "results:blur"], job="dead")
print("STARTED", flush=True)
os._exit(0)  # gone without releasing, as a kill after the last write leaves it
"""


def _start(script: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # FiftyOne may print warnings first
        if line.strip() == "STARTED":
            return process
    raise AssertionError(process.stderr.read())


@pytest.fixture
def scoring_dataset(dataset_factory, tmp_path, tiny_model_files):
    dataset = dataset_factory(persistent=True)  # other processes must see it
    paths = write_dead_leaves_images(tmp_path / "images", 60, size=(120, 96), seed=11)
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    model = sq.load_model(dataset, "blur")
    expected = dict(zip(paths, model.score_images(paths)[1], strict=True))
    return dataset, expected


def _check_values(dataset, field: str, expected: dict) -> int:
    """Every written value is the right one; returns how many samples have one."""
    if not dataset.has_field(f"{field}_raw"):
        return 0  # killed before it created its fields
    paths, raw = dataset.values(["filepath", f"{field}_raw"])
    written = 0
    for path, value in zip(paths, raw, strict=True):
        if value is not None:
            assert value == pytest.approx(expected[path], rel=1e-4, abs=1e-5), path
            written += 1
    return written


@pytest.mark.slow
def test_scoring_killed_at_random_moments_resumes_to_exactly_one_correct_value(scoring_dataset):
    dataset, expected = scoring_dataset
    rng = random.Random(7)
    progress = []
    for _ in range(6):  # each kill costs a process start (about 5 s): CI's time budget
        process = _start(SCORE_SCRIPT, dataset.name, "quality")
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        dataset.reload()
        progress.append(_check_values(dataset, "quality", expected))
        # the run record stays consistent: the model, its fields and results are intact
        assert runs.list_model_keys(dataset) == ["blur"]
        assert runs.load_results(dataset, "blur")["calibration"]
    assert max(progress) > 0, "no kill landed while scoring"
    process = _start(SCORE_SCRIPT, dataset.name, "quality")
    assert process.wait(timeout=120) == 0, process.stderr.read()
    dataset.reload()
    assert _check_values(dataset, "quality", expected) == len(dataset)
    assert dataset.count("quality") == len(dataset)
    config = runs.run_config(dataset, "blur")
    assert set(config["fields"]) == {
        "quality",
        "quality_raw",
        "quality_fingerprint",
        "quality_patches",
    }
    # no lock of this dataset left (the killed jobs' ones included)
    mine = {"_id": {"$regex": f"^{dataset._doc.id}:"}}
    assert foo_odm.get_db_conn()[COLLECTION].count_documents(mine) == 0


def test_a_process_killed_while_replacing_a_models_results_leaves_them_readable(
    dataset_factory, tiny_model_files
):
    """Scoring, evaluation and the App replace a model's results file; a kill at any
    moment must leave the model with complete results, old or new."""
    dataset = dataset_factory(persistent=True)
    dataset.add_sample(fo.Sample(filepath="/no/image.png"))
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    calibration = runs.load_results(dataset, "blur")["calibration"]
    rng = random.Random(3)
    for _ in range(5):
        process = _start(RESULTS_SCRIPT, dataset.name)
        time.sleep(rng.uniform(0.2, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        dataset.reload()
        results = runs.load_results(dataset, "blur", attempts=1)  # no retry: it must be there
        assert results["calibration"] == calibration
        assert len(results["evaluations"]) == 1


def test_a_job_with_nothing_left_to_score_removes_the_locks_of_dead_jobs(scoring_dataset):
    dataset, expected = scoring_dataset
    sq.score(dataset, key="blur", field="quality", progress=False)
    process = _start(DIE_HOLDING_LOCKS_SCRIPT, dataset.name, "quality")
    assert process.wait(timeout=60) == 0
    mine = {"_id": {"$regex": f"^{dataset._doc.id}:"}}
    assert foo_odm.get_db_conn()[COLLECTION].count_documents(mine) == 2
    summary = sq.score(dataset, key="blur", field="quality", skip_unchanged=True, progress=False)
    assert summary["skipped_unchanged"] == len(dataset)
    assert foo_odm.get_db_conn()[COLLECTION].count_documents(mine) == 0
    assert _check_values(dataset, "quality", expected) == len(dataset)


@pytest.mark.slow
def test_two_jobs_on_different_fields_both_finish(scoring_dataset):
    dataset, expected = scoring_dataset
    first = _start(SCORE_SCRIPT, dataset.name, "first")
    second = _start(SCORE_SCRIPT, dataset.name, "second")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    dataset.reload()
    assert _check_values(dataset, "first", expected) == len(dataset)
    assert _check_values(dataset, "second", expected) == len(dataset)


@pytest.mark.slow
def test_a_second_job_on_the_same_field_is_refused_while_the_first_runs(scoring_dataset):
    dataset, expected = scoring_dataset
    locks = foo_odm.get_db_conn()[COLLECTION]
    first = _start(SCORE_SCRIPT, dataset.name, "shared")
    deadline = time.time() + 60
    while not locks.find_one({"_id": {"$regex": ":shared$"}}) and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(
        FieldLockedError,
        match=r"'shared.*' is being written by another "
        r"scoring job \(pid \d+",
    ):
        sq.score(dataset, key="blur", field="shared", progress=False)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    dataset.reload()
    assert _check_values(dataset, "shared", expected) == len(dataset)
    # once the first job is done, the field is free again
    sq.score(dataset, key="blur", field="shared", progress=False)


@pytest.mark.slow
def test_killed_training_leaves_no_model_and_training_again_starts_clean(dataset_factory, tmp_path):
    dataset = dataset_factory(persistent=True)
    paths = write_dead_leaves_images(tmp_path / "images", 8, size=(120, 96), seed=3)
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    process = _start(TRAIN_SCRIPT, dataset.name)
    time.sleep(2.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    dataset.reload()
    assert sq.list_models(dataset) == []
    info = sq.train(dataset, task="blur", progress=False, **TINY_TRAINING)  # no overwrite
    assert info.key == "blur" and sq.load_model(dataset, "blur")


def test_an_incomplete_run_is_hidden_and_replaced(image_dataset, tiny_model_files):
    """What a process killed between registering a run and saving its results leaves."""
    import json

    import fiftyone.operators as foo

    config = image_dataset.init_run(method=runs.RUN_METHOD, task="blur", complete=False, fields=[])
    image_dataset.register_run("blur", config)
    assert sq.list_models(image_dataset) == []
    panel = foo.execute_operator(
        f"{sq.PLUGIN_NAME}/quality_panel",
        ctx={
            "dataset": image_dataset,
            "params": {"__method__": "on_load", "panel_id": "p", "panel_state": {}},
        },
    )
    assert panel.error is None
    assert "No quality model yet" in json.dumps(panel.executor.to_json())
    info = sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    assert [m.key for m in sq.list_models(image_dataset)] == [info.key]
    assert np.isfinite(info.metrics["spearman"])
