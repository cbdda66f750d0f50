"""The Python SDK on real FiftyOne datasets: train, score, evaluate, export/import, delete."""

import os

import fiftyone as fo
import numpy as np
import pytest
from conftest import TINY_TRAINING

import siamese_quality as sq
from siamese_quality import actions, runs


def test_train_records_a_run_with_weights_results_and_metrics(image_dataset):
    info = sq.train(image_dataset, task="blur", progress=False, **TINY_TRAINING)
    assert info.key == "blur" and info.task == "blur" and info.unit.startswith("px")
    assert image_dataset.list_runs() == ["blur"]
    config = runs.run_config(image_dataset, "blur")
    assert config["method"] == "siamese_quality"
    assert config["working_resolution"] == 48 and config["backbone"] == "edge_spread"
    assert config["training_options"]["max_steps"] == 12
    assert os.path.isfile(config["weights_path"])
    assert config["weights_path"].startswith(runs.models_dir())
    assert len(config["weights_sha256"]) == 64
    results = runs.load_results(image_dataset, "blur")
    assert results["calibration"]["x"] and results["training"]["history"]
    assert set(results["evaluation"]["points"]) >= {"score", "magnitude"}
    assert "spearman" in info.metrics and info.baseline["name"] == "variance of the Laplacian"
    assert [m.key for m in sq.list_models(image_dataset)] == ["blur"]

    with pytest.raises(ValueError, match="exists: choose another key, or overwrite"):
        sq.train(image_dataset, task="blur", progress=False, **TINY_TRAINING)
    again = sq.train(image_dataset, task="blur", overwrite=True, progress=False, **TINY_TRAINING)
    assert again.weights_path != info.weights_path
    assert not os.path.exists(info.weights_path)  # the replaced weights file is removed


def test_run_records_carry_a_version_and_records_without_one_still_load(
    image_dataset, tiny_model_files
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    config = runs.model_config(image_dataset, "blur")
    assert config.record_version == runs.RECORD_VERSION and config.view_kind == "patches"
    assert runs.load_results(image_dataset, "blur")["record_version"] == runs.RECORD_VERSION
    # records as 0.1.0 wrote them: no version, no distortion description
    runs.update_config(image_dataset, "blur", record_version=None, distortion=None)
    results = runs.load_results(image_dataset, "blur")
    del results["record_version"]
    runs.save_results(image_dataset, "blur", results)
    old = runs.model_config(image_dataset, "blur")
    assert old.record_version == 1 and old.distortion == {} and old.task == "blur"
    assert runs.load_results(image_dataset, "blur")["record_version"] == 1
    info = sq.model_info(image_dataset, "blur")
    assert "spearman" in info.metrics and info.held_out_images > 0
    assert sq.score(image_dataset, key="blur", progress=False)["scored"] == len(image_dataset)


def test_score_writes_calibrated_and_raw_fields_matching_the_model(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    summary = sq.score(image_dataset, key="blur", progress=False)
    assert summary["scored"] == 12 and summary["failed"] == 0

    schema = image_dataset.get_field_schema()
    assert isinstance(schema["blur"], fo.FloatField) and isinstance(
        schema["blur_raw"], fo.FloatField
    )
    # the unit, and how it is read: patches of 48 px at the image's own resolution
    description = schema["blur"].description
    assert "px of the stored image" in description and "patches of 48 px" in description
    model = sq.load_model(image_dataset, "blur")
    paths, values, raw = image_dataset.values(["filepath", "blur", "blur_raw"])
    expected_values, expected_raw = model.score_images(paths)
    assert np.allclose(raw, expected_raw, atol=1e-5)
    assert np.allclose(values, expected_values, atol=1e-5)
    assert runs.run_config(image_dataset, "blur")["fields"] == [
        "blur",
        "blur_raw",
        "blur_fingerprint",
        "blur_patches",
    ]
    assert isinstance(schema["blur_fingerprint"], fo.StringField)
    # where the image is blurred: a grid of patch values in the unit; the image's value
    # is a low quantile of them (of the patches with any structure)
    grids = image_dataset.values("blur_patches")
    assert all(len(g) * len(g[0]) == 16 for g in grids)
    assert all(
        min(map(min, g)) - 1e-3 <= v <= max(map(max, g)) + 1e-3
        for g, v in zip(grids, values, strict=True)
    )
    # the fields work with FiftyOne's own views
    assert image_dataset.sort_by("blur").first().blur == min(values)


def test_several_models_score_in_one_pass_into_chosen_fields(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="tilt")
    sq.score(image_dataset, key=["blur", "tilt"], field=["q_blur", "q_tilt"], progress=False)
    assert image_dataset.count("q_blur") == 12 and image_dataset.count("q_tilt") == 12
    assert image_dataset.count("q_tilt_raw") == 12
    with pytest.raises(ValueError, match="one field per model key"):
        sq.score(image_dataset, key=["blur", "tilt"], field="only_one", progress=False)


def test_unreadable_images_get_null_and_a_reason(image_dataset, tiny_model_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    image_dataset.add_samples(
        [fo.Sample(filepath=str(broken)), fo.Sample(filepath=str(tmp_path / "gone.png"))]
    )
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    summary = sq.score(image_dataset, key="blur", progress=False)
    assert summary["scored"] == 12 and summary["failed"] == 2
    assert summary["failure_kinds"] == {"missing": 1, "not_an_image": 1}
    assert "2 could not be read" in summary["message"]
    assert image_dataset.count("blur") == 12  # nulls are not counted
    failures = runs.load_results(image_dataset, "blur")["scoring"]["failures"]
    assert {f["filepath"] for f in failures} == {str(broken), str(tmp_path / "gone.png")}


def test_a_users_field_is_never_overwritten_without_the_flag(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    image_dataset.set_values("blur", [7.0] * 12)
    with pytest.raises(ValueError, match="'blur' already exists and was written by you"):
        sq.score(image_dataset, key="blur", progress=False)
    assert image_dataset.values("blur") == [7.0] * 12
    assert not image_dataset.has_field("blur_raw")  # refused before any work


def test_a_field_created_after_the_plan_was_checked_is_refused_under_the_lock(
    image_dataset, tiny_model_files
):
    import fiftyone.core.odm as foo_odm

    from siamese_quality import sdk
    from siamese_quality.locks import COLLECTION

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    plan = sdk.plan_scoring(image_dataset, key="blur")  # checked: no field "blur_raw" yet
    image_dataset.set_values("blur_raw", [3.0] * 12)  # the user's, created in between
    with pytest.raises(ValueError, match="'blur_raw' already exists and was written by you"):
        list(sdk.run_scoring(plan))
    assert image_dataset.values("blur_raw") == [3.0] * 12
    assert not image_dataset.has_field("blur")
    assert foo_odm.get_db_conn()[COLLECTION].count_documents({}) == 0  # locks released
    sq.score(image_dataset, key="blur", overwrite=True, progress=False)
    assert image_dataset.values("blur") != [7.0] * 12


def test_export_then_import_into_another_dataset_gives_identical_scores(
    image_dataset, dataset_factory, tiny_model_files, tmp_path
):
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="rotation")
    sq.score(image_dataset, key="rotation", progress=False)
    exported = sq.export_model(image_dataset, "rotation", str(tmp_path / "export" / "r.pt"))

    other = dataset_factory()
    other.add_samples([fo.Sample(filepath=p) for p in image_dataset.values("filepath")])
    info = sq.import_model(other, exported, key="tilt")
    assert info.task == "rotation" and info.metrics
    sq.score(other, key="tilt", progress=False)
    assert other.values("tilt_raw") == image_dataset.values("rotation_raw")
    assert other.values("tilt") == image_dataset.values("rotation")


def test_delete_removes_the_run_weights_and_its_fields_only(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="rotation")
    sq.score(image_dataset, key=["blur", "rotation"], progress=False)
    image_dataset.set_values("my_notes", ["keep"] * 12)
    weights = runs.run_config(image_dataset, "blur")["weights_path"]

    deleted = sq.delete_model(image_dataset, "blur")
    assert sorted(deleted) == ["blur", "blur_fingerprint", "blur_patches", "blur_raw"]
    assert image_dataset.list_runs() == ["rotation"]
    assert not os.path.exists(weights)
    schema = image_dataset.get_field_schema()
    assert not {"blur", "blur_raw", "blur_fingerprint"} & set(schema)
    assert image_dataset.count("rotation") == 12 and image_dataset.values("my_notes")[0] == "keep"
    with pytest.raises(ValueError, match="Unknown model key 'blur'"):
        sq.score(image_dataset, key="blur", progress=False)


def test_evaluate_remeasures_on_a_view_and_stores_the_report(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    report = sq.evaluate(image_dataset.limit(5), key="blur")
    assert report["images"] == 5 and len(report["points"]["score"]) == 5 * 9
    assert report["baseline"]["name"] == "variance of the Laplacian"
    assert "jpeg_file_reader" not in report  # blur reads every file with one reader
    stored = runs.load_results(image_dataset, "blur")["evaluations"]
    assert len(stored) == 1 and stored[0]["metrics"] == report["metrics"]


def test_wrong_inputs_are_refused_before_any_work(image_dataset, dataset_factory, tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'haze'"):
        sq.train(image_dataset, task="haze", progress=False)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        sq.train(image_dataset, task="blur", max_seconds=0, progress=False)
    with pytest.raises(ValueError, match="working_resolution"):
        sq.train(image_dataset, task="blur", working_resolution=0, progress=False)
    with pytest.raises(ValueError, match="unknown training option"):
        sq.train(image_dataset, task="blur", learning_speed=3, progress=False)
    with pytest.raises(ValueError, match="key must be a valid identifier"):
        sq.train(image_dataset, task="blur", key="my model", progress=False)
    with pytest.raises(ValueError, match="Unknown model key 'blur'"):
        sq.score(image_dataset, key="blur", progress=False)
    assert image_dataset.list_runs() == []

    video = dataset_factory()
    video.add_sample(fo.Sample(filepath=str(tmp_path / "clip.mp4")))
    with pytest.raises(ValueError, match="media type is 'video'"):
        sq.train(video, task="blur", progress=False)


def test_worst_first_understands_each_distortion(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="rotation")
    sq.score(image_dataset, key="rotation", progress=False)
    ids = image_dataset.values("id")
    tilts = [-9.0, 4.0, 0.5, -1.0, 12.0, -3.0, 2.0, 0.0, -6.0, 7.0, 1.0, -0.2]
    image_dataset.set_values("rotation", dict(zip(ids, tilts, strict=True)), key_field="id")
    worst = actions.worst_first(image_dataset, "rotation").values("rotation")
    assert worst[:3] == [12.0, -9.0, 7.0]  # furthest from level, either way
    assert actions.worst_first(image_dataset, "rotation", best_first=True).first().rotation == 0
    assert actions.worst_percent(image_dataset, "rotation", 25).values("rotation") == worst[:3]
    assert actions.in_range(image_dataset, "rotation", -1.0, 1.0).count() == 5
    assert actions.tag_beyond(image_dataset, "rotation", 5.0, "tilted") == 4  # -9, 12, -6, 7
    assert image_dataset.count_sample_tags() == {"tilted": 4}
    assert actions.untag(image_dataset, "tilted") == 4


def test_actions_keep_to_tilts_read_surely_when_asked(image_dataset):
    """The default rotation model writes how sure it is: sorting, filtering and tagging
    by tilt among the sure samples leaves out tilts read off photos with no upright."""
    sq.assess(image_dataset, tasks=["rotation"], progress=False)
    ids = image_dataset.values("id")
    tilts = [-9.0, 4.0, 0.5, -1.0, 12.0, -3.0, 2.0, 0.0, -6.0, 7.0, 1.0, -0.2]
    sure = [0.9, 0.8, 0.7, 0.6, 0.1, 0.9, 0.2, 0.8, 0.3, 0.9, 0.6, 0.7]
    image_dataset.set_values("rotation", dict(zip(ids, tilts, strict=True)), key_field="id")
    image_dataset.set_values(
        "rotation_confidence", dict(zip(ids, sure, strict=True)), key_field="id"
    )
    worst = actions.worst_first(image_dataset, "rotation", min_confidence=0.5)
    assert worst.values("rotation")[:3] == [-9.0, 7.0, 4.0]  # 12 and -6 were unsure
    assert worst.count() == 9
    assert actions.worst_percent(image_dataset, "rotation", 25, min_confidence=0.5).values(
        "rotation"
    ) == [-9.0, 7.0]
    assert actions.in_range(image_dataset, "rotation", 1.5, None, min_confidence=0.5).values(
        "rotation"
    ) == [4.0, 7.0]
    assert actions.tag_beyond(image_dataset, "rotation", 5.0, "tilted", min_confidence=0.5) == 2
    assert actions.worst_first(image_dataset, "rotation").count() == 12  # unasked: all
    with pytest.raises(sq.InvalidOption, match="between 0 and 1"):
        actions.worst_first(image_dataset, "rotation", min_confidence=50)
    image_dataset.add_sample_field("sharpness", fo.FloatField)
    with pytest.raises(sq.InvalidOption, match="'sharpness' has no confidence"):
        actions.worst_first(image_dataset, "sharpness", min_confidence=0.5)


def test_importing_a_file_that_is_not_a_model_is_refused(image_dataset, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"PK\x03\x04 not a torch archive")
    with pytest.raises(ValueError, match="not a safe siamese_quality model file"):
        sq.import_model(image_dataset, str(bogus))
    assert image_dataset.list_runs() == []


def test_imported_model_weights_that_change_on_disk_are_refused(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    path = runs.run_config(image_dataset, "blur")["weights_path"]
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 differs"):
        sq.score(image_dataset, key="blur", progress=False)


def test_scoring_writes_in_chunks_so_partial_work_is_kept(image_dataset, tiny_model_files):
    from siamese_quality import sdk

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    plan = sdk.plan_scoring(image_dataset, "blur", batch_size=4, chunk_size=4, num_workers=0)
    steps = sdk.run_scoring(plan)
    next(steps)  # start
    next(steps)  # first batch of 4: a full chunk, written
    assert image_dataset.count("blur") == 4
    next(steps)  # second batch
    steps.close()  # the job stops here (like a killed worker)
    assert image_dataset.count("blur") == 8
    assert image_dataset.has_field("blur") and "blur" in runs.owned_fields(image_dataset)


def test_results_changed_by_another_process_are_read_not_a_crash(image_dataset, tiny_model_files):
    """A long-lived process (the App server, a worker) holds the dataset while another
    process scores or evaluates: FiftyOne then still points at the replaced results file."""
    import subprocess
    import sys

    image_dataset.persistent = True  # the other process must see it
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    assert sq.model_info(image_dataset, "blur").key == "blur"  # loads the run here
    other_process = (
        "import fiftyone as fo, siamese_quality as sq; "
        f"sq.evaluate(fo.load_dataset({image_dataset.name!r}).limit(4), key='blur')"
    )
    subprocess.run([sys.executable, "-c", other_process], check=True, timeout=300)

    (report,) = runs.load_results(image_dataset, "blur")["evaluations"]
    assert report["images"] == 4


def readme_example(heading: str) -> list[str]:
    """The Python code blocks of the README section under ``heading``, as written."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


OTHER_PROCESS = """
import sys
import fiftyone as fo
import siamese_quality as sq
from siamese_quality.core.distortions import list_distortions
dataset = fo.load_dataset(sys.argv[1])
assert "fade" not in list_distortions()  # this process never registered it
summary = sq.score(dataset, key="fade", field="fade_again", progress=False)
report = sq.evaluate(dataset, key="fade", grid_size=3)
print("SCORED", summary["scored"], "EVALUATED", sorted(report["metrics"]))
"""


def test_the_readme_distortion_trains_here_scores_in_another_process_and_sorts(
    dataset_factory, tmp_path
):
    import subprocess
    import sys

    import torch
    from conftest import write_dead_leaves_images
    from PIL import Image

    from siamese_quality.core import distortions

    module_code, usage = readme_example("### Add your own distortion")
    (tmp_path / "my_distortions.py").write_text(module_code)
    dataset = dataset_factory(persistent=True)  # the other process loads it by name
    paths = write_dead_leaves_images(tmp_path / "images", 6, size=(120, 96))
    # one more photo, faded by known amounts: what the sort must put in order
    (source,) = write_dead_leaves_images(tmp_path / "source", 1, size=(120, 96), seed=7)
    source = torch.from_numpy(np.array(Image.open(source))).permute(2, 0, 1)
    fades = (0.0, 0.2, 0.4, 0.6)
    sys.path.insert(0, str(tmp_path))
    try:
        import my_distortions

        for amount in fades:
            faded = my_distortions.fade(source, amount).permute(1, 2, 0).numpy()
            paths.append(str(tmp_path / f"faded_{amount}.png"))
            Image.fromarray(faded).save(paths[-1])
        dataset.add_samples([fo.Sample(filepath=p) for p in paths])
        # the README's lines, with a step budget instead of a minute of training
        options = ", ".join(f"{k}={v!r}" for k, v in {**TINY_TRAINING, "seed": 0}.items())
        assert "max_seconds=60" in usage
        exec(
            usage.replace("max_seconds=60", options),
            {"sq": sq, "actions": actions, "dataset": dataset},
        )
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_distortions", None)
        distortions._REGISTRY.pop("fade", None)

    def other_process(pythonpath: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": pythonpath}
        return subprocess.run(
            [sys.executable, "-c", OTHER_PROCESS, dataset.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    # importable there (on its path), never imported: found through the model's record
    found = other_process(os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    assert found.returncode == 0, found.stderr
    assert "SCORED 10 EVALUATED" in found.stdout
    dataset.reload()
    assert dataset.values("fade_again_raw") == pytest.approx(dataset.values("fade_raw"))
    faded_first = actions.worst_first(
        dataset.match(fo.ViewField("filepath").contains_str("faded_")), "fade_again"
    )
    assert [os.path.basename(p) for p in faded_first.values("filepath")] == [
        f"faded_{amount}.png" for amount in reversed(fades)
    ]
    # not importable there: a clear message naming the module
    lost = other_process(os.environ.get("PYTHONPATH", ""))
    assert lost.returncode != 0
    assert "its module 'my_distortions' could not be imported" in lost.stderr


def test_an_installed_package_names_its_distortions_in_an_entry_point(tmp_path):
    """The App lists them (train form) before any model of them exists."""
    import subprocess
    import sys
    import uuid

    suffix = uuid.uuid4().hex[:8]
    module, name = f"sq_test_fade_{suffix}", f"test_fade_{suffix}"
    module_code = readme_example("### Add your own distortion")[0]
    (tmp_path / f"{module}.py").write_text(module_code.replace('name="fade"', f'name="{name}"'))
    # what pip leaves for an installed package that declares the entry point
    info = tmp_path / f"sq_fade_{suffix}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sq-fade-{suffix}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[siamese_quality.distortions]\nfade = {module}\n")
    code = (
        "from siamese_quality.core.distortions import list_distortions; print(list_distortions())"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert name in out.stdout and "blur" in out.stdout


def test_one_sided_fields_sort_by_name_so_the_view_bar_can_show_it(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    values = sorted(image_dataset.values("blur"))
    for view, expected in (
        (actions.worst_first(image_dataset, "blur"), values[::-1]),
        (actions.worst_first(image_dataset, "blur", best_first=True), values),
        (actions.worst_percent(image_dataset, "blur", 25), values[::-1][:3]),
    ):
        assert view.values("blur") == expected
        (sort,) = [s for s in view._stages if type(s).__name__ == "SortBy"]
        assert sort.field_or_expr == "blur"  # a name, not an expression ("···" in the App)


def test_one_severity_rule_gives_the_python_value_and_the_database_expression(
    dataset_factory,
):
    from fiftyone import ViewField as F

    from siamese_quality.core.distortions import get_distortion, list_distortions
    from siamese_quality.core.severity import severity_rule

    dataset = dataset_factory()
    values = [-20.0, -1.5, 0.0, 0.5, 3.0, 7.0, 95.0, 100.0]
    dataset.add_samples([fo.Sample(filepath=f"/no/{i}.png", v=v) for i, v in enumerate(values)])
    for name in list_distortions():
        description = get_distortion(name).to_dict()
        in_python = [severity_rule(description, v) for v in values]
        assert dataset.values(severity_rule(description, F("v"))) == pytest.approx(in_python)
        undistorted = severity_rule(description, description["identity"])
        assert (
            undistorted == 0
            and min(
                severity_rule(description, m) for m in (description["low"], description["high"])
            )
            >= 0
        ), name


def test_a_model_trained_in_an_earlier_unit_still_scores_but_is_not_evaluated_in_the_new(
    image_dataset, tmp_path
):
    """Brightness meant an HSV value offset before bundled models v6 and means stops now:
    a model file from before keeps scoring in its own unit, and evaluating it (which
    renders copies in today's unit) says why it cannot, instead of reporting nonsense."""
    from siamese_quality.core.defaults import load_default_model
    from siamese_quality.core.pretext_model import DistortionChangedError

    model = load_default_model("brightness")
    model.distortion_info["unit"] = "HSV value offset (0-255 scale)"
    path = str(tmp_path / "brightness_before.pt")
    model.save(path)
    sq.import_model(image_dataset, path, key="brightness")
    summary = sq.score(image_dataset, key="brightness", progress=False)
    assert summary["scored"] == len(image_dataset)
    description = image_dataset.get_field("brightness").description
    assert "HSV value offset" in description
    with pytest.raises(DistortionChangedError, match=r"meant 'HSV value offset.*now means"):
        sq.evaluate(image_dataset, key="brightness")
    assert sq.list_models(image_dataset)[0].key == "brightness"  # nothing lost
