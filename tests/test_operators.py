"""Operators through FiftyOne's own execution paths: immediate, delegated, sharded."""

import json
import os
import subprocess
import sys
import time

import fiftyone as fo
import fiftyone.core.odm as foo_odm
import fiftyone.operators as foo
import numpy as np
import pytest
from bson import ObjectId
from conftest import form_errors, resolved_form
from fiftyone.operators.delegated import DelegatedOperationService

import siamese_quality as sq
from siamese_quality import PLUGIN_NAME, runs
from siamese_quality.locks import COLLECTION, FieldLockedError, field_locks


def _uri(name: str) -> str:
    return f"{PLUGIN_NAME}/{name}"


def _triggered(result, operator: str) -> list[dict]:
    return [
        r for r in result.executor.to_json()["requests"] if r["operator_uri"].endswith(operator)
    ]


def _run_queued(dataset) -> None:
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=dataset.name, limit=100)


def test_train_operator_defaults_to_delegation_and_a_worker_records_the_model(image_dataset):
    from fiftyone.operators.executor import ExecutionContext

    image_dataset.persistent = True
    operator = foo.get_operator(_uri("train_quality_model"))
    ctx = ExecutionContext(request_params={"dataset_name": image_dataset.name, "params": {}})
    options = operator.resolve_execution_options(ctx)
    assert options.default_choice_to_delegated  # the App proposes "Schedule" first

    params = {
        "task": "blur",
        "key": "blur",
        "max_seconds": 60.0,
        "epochs": 2,
        "working_resolution": 48,
    }
    result = foo.execute_operator(
        _uri("train_quality_model"),
        ctx={"dataset": image_dataset, "view": image_dataset.view(), "params": params},
        request_delegation=True,
    )
    assert result.delegated
    assert image_dataset.list_runs() == []
    _run_queued(image_dataset)
    assert image_dataset.list_runs() == ["blur"]
    config = sq.model_info(image_dataset, "blur").training_options
    assert config["epochs"] == 2 and config["working_resolution"] == 48


def test_score_operator_immediate_writes_fields_and_reloads(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    result = foo.execute_operator(
        _uri("score_quality"),
        ctx={"dataset": image_dataset, "view": image_dataset.view(), "params": {"keys": ["blur"]}},
    )
    assert result.error is None, result.error
    assert image_dataset.count("blur") == 12
    assert _triggered(result, "reload_dataset")
    # the App's progress dialog would stay at "100 % Done" until closed by hand
    assert not _triggered(result, "set_progress")
    (toast,) = _triggered(result, "notify")
    assert toast["params"]["message"] == "blur: scored 12 of 12 samples"  # names the model


def form_json(dataset, name: str, params: dict) -> str:
    return json.dumps(resolved_form(name, dataset, params))


def test_forms_show_the_expected_duration(image_dataset, tiny_model_files):
    def form(name: str, params: dict) -> str:
        return form_json(image_dataset, name, params)

    assert "up to 30 s of training" in form("train_quality_model", {"max_seconds": 30.0})
    # the resolution left empty is the one the chosen backbone reads at
    assert "backbone (256 px)" in form("train_quality_model", {"task": "rotation"})
    trained = {"task": "rotation", "backbone": "orientation"}
    assert "backbone (128 px)" in form("train_quality_model", trained)
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    assert "for 12 samples (from a typical 2-core CPU)" in form("score_quality", {})
    sq.score(image_dataset, key="blur", progress=False)
    record = sq.runs.load_results(image_dataset, "blur")["scoring"]
    assert record["seconds"] > 0
    # once measured, the estimate follows this machine's own rate
    assert "for 12 samples (from the last scoring of these models)" in form("score_quality", {})


def test_quality_actions_offer_a_minimum_confidence_where_the_model_tells_one(image_dataset):
    sq.assess(image_dataset, tasks=["rotation"], progress=False)
    for name in ("sort_by_quality", "filter_by_quality", "tag_by_quality"):
        form = resolved_form(name, image_dataset, {"field": "rotation"})
        # it starts where the tilt is read surely; 0 keeps every sample
        assert form["type"]["properties"]["min_confidence"]["default"] == 0.5
        assert "min_confidence" not in form_json(image_dataset, name, {"field": "rotation_raw"})
    unsure = {"field": "rotation", "min_confidence": 2.0}
    assert "between 0 and 1" in form_errors("filter_by_quality", image_dataset, unsure)
    image_dataset.set_values("rotation_confidence", [0.9] * 6 + [0.1] * 6)
    result = foo.execute_operator(
        _uri("sort_by_quality"),
        ctx={"dataset": image_dataset, "params": {"field": "rotation", "min_confidence": 0.5}},
    )
    assert result.result == {"count": 6}


def test_score_operator_delegated_on_a_view(image_dataset, tiny_model_files):
    image_dataset.persistent = True
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    view = image_dataset.limit(5)
    result = foo.execute_operator(
        _uri("score_quality"),
        ctx={"dataset": image_dataset, "view": view, "params": {"keys": ["blur"]}},
        request_delegation=True,
    )
    assert result.delegated
    _run_queued(image_dataset)
    assert image_dataset.count("blur") == 5


def test_score_form_validates_and_guides(image_dataset, tiny_model_files):
    operator = foo.get_operator(_uri("score_quality"))
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": image_dataset.name, "params": {}})
    empty = operator.resolve_input(ctx).to_json()
    assert "no_models" in str(empty)  # no model yet: the form says what to do
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    form = operator.resolve_input(ctx).to_json()
    assert "keys" in str(form) and "num_shards" in str(form)


def test_clash_with_a_user_field_is_refused_by_the_operator(image_dataset, tiny_model_files):
    from fiftyone.operators.executor import ExecutionContext, ExecutionError

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    image_dataset.set_values("blur", [1.5] * 12)
    operator = foo.get_operator(_uri("score_quality"))
    ctx = ExecutionContext(
        request_params={"dataset_name": image_dataset.name, "params": {"keys": ["blur"]}}
    )
    form = str(operator.resolve_input(ctx).to_json())
    assert "already exists and was written by you" in form  # shown next to the field
    with pytest.raises(ExecutionError, match="already exists and was written by you"):
        foo.execute_operator(
            _uri("score_quality"),
            ctx={
                "dataset": image_dataset,
                "view": image_dataset.view(),
                "params": {"keys": ["blur"]},
            },
        )
    assert image_dataset.values("blur") == [1.5] * 12


@pytest.mark.parametrize(
    "operator, params, stage",
    [
        ("sort_by_quality", {"field": "blur", "order": "worst first"}, "SortBy"),
        ("filter_by_quality", {"field": "blur", "mode": "worst percent", "percent": 25.0}, "Limit"),
        ("filter_by_quality", {"field": "blur", "mode": "range", "low": 0.0, "high": 1.0}, "Match"),
    ],
)
def test_quality_actions_set_the_apps_view(
    image_dataset, tiny_model_files, operator, params, stage
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    result = foo.execute_operator(
        _uri(operator),
        ctx={"dataset": image_dataset, "view": image_dataset.view(), "params": params},
    )
    assert result.error is None, result.error
    (set_view,) = _triggered(result, "set_view")
    assert any(stage in s["_cls"] for s in set_view["params"]["view"])


def test_tag_and_clear_operators(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    threshold = sorted(image_dataset.values("blur"))[8]
    result = foo.execute_operator(
        _uri("tag_by_quality"),
        ctx={
            "dataset": image_dataset,
            "view": image_dataset.view(),
            "params": {"field": "blur", "threshold": threshold, "tag": "blurry"},
        },
    )
    assert result.result["tagged"] == image_dataset.match_tags("blurry").count() > 0
    result = foo.execute_operator(
        _uri("clear_quality_view"),
        ctx={"dataset": image_dataset, "view": image_dataset.view(), "params": {"tag": "blurry"}},
    )
    assert image_dataset.match_tags("blurry").count() == 0
    assert _triggered(result, "clear_view")


def test_delete_export_import_operators(image_dataset, dataset_factory, tiny_model_files, tmp_path):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    path = str(tmp_path / "blur_export.pt")
    foo.execute_operator(
        _uri("export_quality_model"),
        ctx={"dataset": image_dataset, "params": {"key": "blur", "path": path}},
    )
    other = dataset_factory()
    other.add_samples([fo.Sample(filepath=p) for p in image_dataset.values("filepath")])
    foo.execute_operator(
        _uri("import_quality_model"),
        ctx={"dataset": other, "params": {"path": path, "key": "imported"}},
    )
    assert other.list_runs() == ["imported"]
    foo.execute_operator(
        _uri("delete_quality_model"), ctx={"dataset": image_dataset, "params": {"key": "blur"}}
    )
    assert image_dataset.list_runs() == []


@pytest.mark.slow
def test_two_workers_share_a_sharded_scoring_job_like_one_run(image_dataset, tiny_model_files):
    image_dataset.persistent = True
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", field="unsharded", progress=False)

    summary = sq.score(image_dataset, key="blur", field="sharded", num_shards=4)
    assert len(summary["queued"]) == 4
    with pytest.raises(FieldLockedError, match="4 delegated shards queued"):
        sq.score(image_dataset, key="blur", field="sharded", progress=False)
    assert image_dataset.has_field("sharded")  # created before any shard runs
    fiftyone_cli = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    workers = [
        subprocess.Popen(
            [fiftyone_cli, "delegated", "launch"],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.time() + 240
        service = DelegatedOperationService()
        while time.time() < deadline:
            states = [service.get(ObjectId(op_id)).run_state for op_id in summary["queued"]]
            if all(s in ("completed", "failed") for s in states):
                break
            time.sleep(1)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    errors = [
        getattr(service.get(ObjectId(op_id)).result, "error", None) for op_id in summary["queued"]
    ]
    assert states == ["completed"] * 4, (states, errors)
    assert image_dataset.count("sharded") == 12
    # the run's record sums the four shards (each added its part, none overwrote another)
    record = runs.load_results(image_dataset, "blur")["scoring"]
    assert (record["shards"], record["samples"], record["scored"]) == (4, 12, 12), record
    # the last shard freed the fields the job held
    assert (
        foo_odm.get_db_conn()[COLLECTION].count_documents(
            {"_id": {"$regex": f"^{image_dataset._doc.id}:"}}
        )
        == 0
    )
    # equal up to float rounding (a shard's batches differ from one run's batches); a
    # steep calibration curve scales a 1e-5 raw difference up, hence the unit tolerance
    assert np.allclose(
        image_dataset.values("sharded_raw"),
        image_dataset.values("unsharded_raw"),
        rtol=1e-4,
        atol=1e-4,
    )
    assert np.allclose(
        image_dataset.values("sharded"), image_dataset.values("unsharded"), atol=0.01
    )


def test_shards_of_a_300k_sample_view_stay_small_and_cover_it_exactly(
    dataset_factory, tiny_model_files
):
    import bson

    dataset = dataset_factory(persistent=True)
    dataset.add_sample(fo.Sample(filepath="/nowhere/first.jpg", tags=["keep"]))
    # 300k copies of the sample document FiftyOne wrote (add_samples takes ~50 s here);
    # the files do not exist: nothing is scored
    template = dataset._sample_collection.find_one()
    for start in range(0, 300_000, 50_000):
        dataset._sample_collection.insert_many(
            [
                {
                    **template,
                    "_id": bson.ObjectId(),
                    "filepath": f"/nowhere/{i:06d}.jpg",
                    "tags": ["keep"] if i % 10 else [],
                }
                for i in range(start, start + 50_000)
            ]
        )
    view = dataset.match_tags("keep")  # the user's view: 270,001 samples
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    service = DelegatedOperationService()
    queued = sq.score(view, key="blur", num_shards=8)["queued"]
    try:
        assert len(queued) == 8
        operations = foo_odm.get_db_conn()["delegated_ops"]
        sizes = [len(bson.encode(operations.find_one({"_id": ObjectId(q)}))) for q in queued]
        assert max(sizes) < 16 * 1024, sizes
        shards = [service.get(ObjectId(q)).context.target_view().values("id") for q in queued]
        union = [sample_id for shard in shards for sample_id in shard]
        assert len(union) == len(set(union)) == view.count() == 270_001
        assert set(union) == set(view.values("id"))
        # the job holds its fields while its shards wait: no other job can take them
        with pytest.raises(FieldLockedError, match="8 delegated shards queued"):
            sq.score(view.limit(2), key="blur", progress=False)
    finally:
        for q in queued:
            service.delete_operation(ObjectId(q))
    # with its operations gone, the hold is stale: the next job takes the fields
    locks = foo_odm.get_db_conn()[COLLECTION]
    mine = {"_id": {"$regex": f"^{dataset._doc.id}:"}}
    assert locks.count_documents(mine) == 4
    with field_locks(str(dataset._doc.id), ["blur", "blur_raw"]):
        pass
    assert locks.count_documents(mine) == 0


def test_forms_offer_the_view_target_and_actions_use_the_selection(image_dataset, tiny_model_files):
    from fiftyone.operators.executor import ExecutionContext

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    filtered = image_dataset.limit(6)
    selected = filtered.take(2, seed=1).values("id")  # in the App one selects what is shown
    for name in ("train_quality_model", "score_quality", "tag_by_quality", "sort_by_quality"):
        ctx = ExecutionContext(
            request_params={
                "dataset_name": image_dataset.name,
                "view": filtered._serialize(),
                "selected": selected,
                "params": {"keys": ["blur"], "field": "blur"},
            }
        )
        form = json.dumps(foo.get_operator(_uri(name)).resolve_input(ctx).to_json())
        assert "view_target" in form and "SELECTED_SAMPLES" in form, name
    result = foo.execute_operator(
        _uri("tag_by_quality"),
        ctx={
            "dataset": image_dataset,
            "view": filtered,
            "selected": selected,
            "params": {
                "field": "blur",
                "threshold": -1.0,  # every sample is beyond it
                "tag": "picked",
                "view_target": "SELECTED_SAMPLES",
            },
        },
    )
    assert result.error is None, result.error
    assert set(image_dataset.match_tags("picked").values("id")) == set(selected)


def test_forms_follow_their_own_fields(image_dataset, tiny_model_files):
    from fiftyone.operators.executor import ExecutionContext

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="rotation")

    def form(name: str, params: dict) -> str:
        operator = foo.get_operator(_uri(name))
        assert operator.config.dynamic, name  # the App re-resolves it on every change
        ctx = ExecutionContext(
            request_params={"dataset_name": image_dataset.name, "params": params}
        )
        return json.dumps(operator.resolve_input(ctx).to_json())

    assert "Deletes model 'rotation'" in form("delete_quality_model", {"key": "rotation"})
    assert "Deletes model 'blur'" in form("delete_quality_model", {"key": "blur"})
    # the key follows the distortion until the user types one
    noise = form("train_quality_model", {"task": "noise"})
    assert "empty: 'noise'" in noise and '"default": "blur"' not in noise
    assert "A model 'blur' exists" in form("train_quality_model", {"task": "blur"})
    assert "A model 'blur' exists" not in form("train_quality_model", {"task": "noise"})
