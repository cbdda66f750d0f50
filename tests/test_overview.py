"""The quality overview across models (sq.summarize and its operator) and heat maps."""

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest

import siamese_quality as sq
from siamese_quality import PLUGIN_NAME
from siamese_quality.overview import summary_info

COUNT = 12


@pytest.fixture
def two_models(image_dataset, tiny_model_files):
    """The 12 images scored by a blur and a rotation model, their values then set by hand
    to a known story: sample 0 is very blurred, sample 1 much tilted, the rest mild."""
    return image_dataset, _tell_story(image_dataset, tiny_model_files)


def _tell_story(dataset, model_files: dict[str, str]) -> list:
    """Scores ``dataset`` with the blur and rotation files, then sets the story's values."""
    for task in ("blur", "rotation"):
        sq.import_model(dataset, model_files[task], key=task)
    sq.score(dataset, key=["blur", "rotation"], progress=False)
    ids = dataset.values("id")
    blur = [6.0, 0.2] + [0.1 + 0.05 * i for i in range(COUNT - 2)]
    rotation = [0.5, -12.0] + [0.3 - 0.1 * i for i in range(COUNT - 2)]
    dataset.set_values("blur", dict(zip(ids, blur, strict=True)), key_field="id")
    dataset.set_values("rotation", dict(zip(ids, rotation, strict=True)), key_field="id")
    return ids


def test_each_sample_gets_the_model_that_finds_it_worst_and_how_bad(two_models):
    dataset, ids = two_models
    summary = sq.summarize(dataset)
    assert summary["models"] == ["blur", "rotation"] and summary["summarized"] == COUNT
    issue, severity, percentile = dataset.values(
        ["quality_issue", "quality_severity", "quality_percentile"]
    )
    assert issue[0] == "blur" and issue[1] == "rotation"
    blur_high = sq.model_info(dataset, "blur").distortion["high"]
    assert severity[0] == pytest.approx(min(1.0, 6.0 / blur_high), abs=1e-4)
    tilt_high = sq.model_info(dataset, "rotation").distortion["high"]  # degrees either way
    assert severity[1] == pytest.approx(12.0 / tilt_high, abs=1e-4)
    # the worst of 12 by its issue: 11.5 of the 12 are less bad (itself counts half)
    assert percentile[0] == pytest.approx(11.5 / COUNT, abs=1e-4) == percentile[1]
    assert all(0.0 <= s <= 1.0 for s in severity) and all(0.0 < p < 1.0 for p in percentile)
    assert sum(summary["issues"].values()) == COUNT
    assert "0 to 1" in dataset.get_field("quality_percentile").description


def test_a_tilt_read_off_no_upright_is_not_the_worst_issue(
    image_dataset, tiny_model_files, tmp_path
):
    """The same story told by a rotation model that writes its confidence (lines): sure
    of every reading, the tilt is sample 1's issue; with no confidence in sample 1 (no
    straight line), its severity is weighted down and blur is the issue."""
    from conftest import TINY_TRAINING, dead_leaves_image

    from siamese_quality.core.training import TrainingConfig, train_pretext_model

    images = [dead_leaves_image(100 + i, (120, 96)) for i in range(6)]
    config = TrainingConfig(task="rotation", backbone="lines", **TINY_TRAINING)
    path = str(tmp_path / "lines.pt")
    train_pretext_model(images, config).save(path)
    ids = _tell_story(image_dataset, {"blur": tiny_model_files["blur"], "rotation": path})
    image_dataset.set_values("rotation_confidence", [1.0] * COUNT)
    sq.summarize(image_dataset)
    assert image_dataset.values("quality_issue")[1] == "rotation"

    image_dataset.set_values("rotation_confidence", {ids[1]: 0.0}, key_field="id")
    sq.summarize(image_dataset)
    assert image_dataset.values("quality_issue")[1] == "blur"


def test_a_view_is_ranked_and_written_alone(two_models):
    dataset, ids = two_models
    view = dataset.select(ids[1:6])
    sq.summarize(view)
    issue = dataset.values("quality_issue")
    assert issue[0] is None and issue[6:] == [None] * (COUNT - 6)
    assert view.values("quality_percentile")[0] == pytest.approx(4.5 / 5, abs=1e-4)
    assert summary_info(dataset)["models"] == ["blur", "rotation"]


def test_a_sample_no_model_has_a_value_for_gets_nulls(two_models):
    dataset, ids = two_models
    dataset.set_values("blur", {ids[3]: None}, key_field="id")
    dataset.set_values("rotation", {ids[3]: None}, key_field="id")
    summary = sq.summarize(dataset)
    assert summary["without_values"] == 1 and "1 have no value" in summary["message"]
    assert dataset[ids[3]].quality_issue is None and dataset[ids[3]].quality_severity is None


def test_a_field_of_the_users_is_never_overwritten_unless_asked(two_models, tmp_path):
    dataset, ids = two_models
    dataset.set_values("quality_issue", {ids[0]: "mine"}, key_field="id")
    with pytest.raises(ValueError, match="'quality_issue' exists and was not written by"):
        sq.summarize(dataset)
    assert dataset[ids[0]].quality_issue == "mine"
    assert not dataset.has_field("quality_severity")  # checked before any write
    sq.summarize(dataset, overwrite=True)
    assert dataset[ids[0]].quality_issue == "blur"
    sq.summarize(dataset)  # its own fields: written again without asking
    sq.score(dataset, key="rotation", field="tilt_issue", progress=False)
    with pytest.raises(ValueError, match="'tilt_issue' holds model 'rotation'"):
        sq.summarize(dataset, field="tilt", overwrite=True)  # never a model's field
    sq.import_model(dataset, sq.export_model(dataset, "blur", str(tmp_path / "b.pt")), key="b2")
    with pytest.raises(ValueError, match="model 'b2' has not scored this dataset yet"):
        sq.summarize(dataset, keys=["blur", "b2"])


def test_the_operator_summarizes_the_target_view_and_its_form_checks_the_fields(two_models):
    import json

    from fiftyone.operators.executor import ExecutionContext

    dataset, ids = two_models
    uri = f"{PLUGIN_NAME}/summarize_quality"
    dataset.add_sample_field("mine_issue", fo.StringField)
    ctx = ExecutionContext(
        request_params={"dataset_name": dataset.name, "params": {"field": "mine"}}
    )
    form = json.dumps(foo.get_operator(uri).resolve_input(ctx).to_json())
    with pytest.raises(ValueError) as raised:
        sq.summarize(dataset, field="mine")
    assert str(raised.value) in form  # beside the field: the SDK's own message
    result = foo.execute_operator(
        uri,
        ctx={
            "dataset": dataset,
            "view": dataset.select(ids[:4]),
            "params": {"keys": ["blur"], "view_target": "CURRENT_VIEW"},
        },
    )
    assert result.error is None, result.error
    assert result.result["summarized"] == 4 and result.result["issues"] == {"blur": 4}
    assert dataset.count("quality_issue") == 4


def test_heat_maps_are_the_patch_values_in_the_models_unit_on_request(two_models):
    dataset, ids = two_models
    assert not dataset.has_field("blur_heatmap")  # opt-in
    sq.score(dataset, key=["blur", "rotation"], heatmaps=True, progress=False)
    assert not dataset.has_field("rotation_heatmap")  # a global model has no patches
    sample = dataset.first()
    heatmap = sample.blur_heatmap
    assert isinstance(heatmap, fo.Heatmap)
    np.testing.assert_allclose(heatmap.map, np.array(sample.blur_patches), atol=1e-3)
    distortion = sq.model_info(dataset, "blur").distortion
    assert list(heatmap.range) == [distortion["low"], distortion["high"]]
    assert "blur_heatmap" in sq.model_info(dataset, "blur").fields
    # asked for later: skip_unchanged still draws the maps it lacks
    dataset.set_values("blur_heatmap", {ids[2]: None}, key_field="id")
    summary = sq.score(dataset, key="blur", heatmaps=True, skip_unchanged=True, progress=False)
    assert summary["scored"] == 1 and dataset.count("blur_heatmap") == COUNT
    assert "blur_heatmap" in sq.delete_model(dataset, "blur")
    assert not dataset.has_field("blur_heatmap")
