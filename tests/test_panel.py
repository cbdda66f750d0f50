"""The Quality panel through FiftyOne's panel execution path (no browser)."""

import json

import fiftyone as fo
import fiftyone.operators as foo
import pytest

import siamese_quality as sq
from siamese_quality import PLUGIN_NAME
from siamese_quality.core.distortions import ROTATION_MAX_DEGREES

PANEL_URI = f"{PLUGIN_NAME}/quality_panel"


def _call(
    dataset,
    method: str,
    state: dict | None = None,
    params: dict | None = None,
    view=None,
    sample: str | None = None,
) -> dict:
    """Runs a panel method (``sample``: the id the App's sample view shows); returns the
    new state, data patches, output and triggers."""
    result = foo.execute_operator(
        PANEL_URI,
        ctx={
            "dataset": dataset,
            "view": view if view is not None else dataset.view(),
            "current_sample": sample,
            "params": {
                "__method__": method,
                "panel_id": "p1",
                "panel_state": state or {},
                **(params or {}),
            },
        },
    )
    assert result.error is None, result.error
    out = {"state": dict(state or {}), "data": {}, "render": None, "triggers": [], "data_ops": []}
    out["sent"], out["patches"] = [], []  # every request's name; the state patches
    for request in result.executor.to_json()["requests"]:
        name, p = request["operator_uri"].split("/")[-1], request["params"]
        out["sent"].append(name)
        if name == "set_panel_state":
            out["state"].update(p["state"])
        elif name == "patch_panel_state":
            out["state"].update(p["state"])
            out["patches"].append(p["state"])
        elif name == "set_panel_data":  # replaces everything the browser holds
            out["data"] = dict(p["data"])
            out["data_ops"].append(name)
        elif name == "patch_panel_data":  # merges into it
            out["data"].update(p["data"])
            out["data_ops"].append(name)
        elif name == "show_panel_output":
            out["render"] = p["output"]
        else:
            out["triggers"].append(request)
    return out


@pytest.fixture
def scored_dataset(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    return image_dataset


def test_empty_dataset_offers_the_default_models_first_then_training(image_dataset):
    out = _call(image_dataset, "on_load")
    rendered = json.dumps(out["render"])
    assert "No quality model yet" in rendered
    assert 0 < rendered.index("Assess with the default models") < rendered.index("Train a model")


def test_charts_hold_the_models_evidence_and_the_views_distribution(scored_dataset):
    out = _call(scored_dataset, "on_load")
    assert out["state"]["model"] == "blur" and out["state"]["field"] == "blur"
    results = sq.runs.load_results(scored_dataset, "blur")
    points, calibration = results["evaluation"]["points"], results["calibration"]

    band_low, band_high, scatter, curve = out["data"]["calibration"]
    assert scatter["x"] == points["score"] and scatter["y"] == points["magnitude"]
    assert curve["x"] == calibration["x"] and curve["y"] == calibration["y"]
    assert band_high["fill"] == "tonexty"
    held_out, perfect = out["data"]["correlation"]
    assert held_out["x"] == points["magnitude"] and held_out["y"] == points["predicted"]
    bars, clipped = out["data"]["distribution"]
    assert sum(bars["y"]) == 12 == out["state"]["scored"]
    assert len(clipped["y"]) == 2  # a fixed length: view changes patch it in place

    rendered = json.dumps(out["render"])
    for text in (
        "Calibration",
        "Magnitude correlation",
        "true magnitude: px of the stored image (Gaussian sigma)",
        "Held-out numbers rest on 2 image(s). **Too few to mean much**",
        "variance of the Laplacian",
        "0.955",
        "Worst first",
    ):
        assert text in rendered, text


def test_distribution_follows_the_current_view(scored_dataset):
    state = _call(scored_dataset, "on_load")["state"]
    out = _call(scored_dataset, "on_change_view", state, view=scored_dataset.limit(5))
    assert sum(out["data"]["distribution"][0]["y"]) == 5


@pytest.mark.parametrize(
    "method, stage",
    [
        ("worst_first", "SortBy"),
        ("best_first", "SortBy"),
        ("show_worst_percent", "Limit"),
    ],
)
def test_actions_set_the_apps_view(scored_dataset, method, stage):
    state = _call(scored_dataset, "on_load")["state"]
    out = _call(scored_dataset, method, state)
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    assert any(stage in s["_cls"] for s in set_view["params"]["view"])


def test_clicking_a_bar_filters_to_its_range(scored_dataset):
    state = _call(scored_dataset, "on_load")["state"]
    out = _call(scored_dataset, "on_bar_click", state, params={"idx": 0})
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    assert any("Match" in s["_cls"] for s in set_view["params"]["view"])


def test_tag_beyond_threshold_tags_only_samples_in_the_view(scored_dataset):
    # distinct values (the tiny model reads most samples as 0 px): 6 are beyond 5.5
    scored_dataset.set_values("blur", [float(i) for i in range(len(scored_dataset))])
    state = _call(scored_dataset, "on_load")["state"]
    state["threshold"] = 5.5
    shown = scored_dataset.sort_by("blur", reverse=True).limit(3)  # what the user looks at
    _call(scored_dataset, "tag_beyond", state, view=shown)
    assert set(scored_dataset.match_tags("worst_blur").values("id")) == set(shown.values("id"))


def test_actions_keep_the_users_filter(scored_dataset):
    state = _call(scored_dataset, "on_load")["state"]
    edges = state["edges"]
    shown = scored_dataset.match(fo.ViewField("blur") <= edges[len(edges) // 2])
    out = _call(scored_dataset, "worst_first", state, view=shown)
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    sorted_view = fo.DatasetView._build(scored_dataset, set_view["params"]["view"])
    assert sorted_view.values("blur") == sorted(shown.values("blur"), reverse=True)


def test_switching_models_replaces_every_chart_with_the_chosen_models_points(
    scored_dataset, tiny_model_files
):
    sq.import_model(scored_dataset, tiny_model_files["rotation"], key="rotation")
    state = _call(scored_dataset, "on_load")["state"]
    out = _call(scored_dataset, "on_change_model", state, params={"value": "rotation"})
    assert out["data_ops"] == ["set_panel_data"]  # a patch would keep blur's extra points
    # the App draws merge(state, data): the browser's copy of blur's traces is dropped
    stale = _call(
        scored_dataset,
        "on_change_model",
        {**state, "calibration": [{"x": [0] * 40}]},
        params={"value": "rotation"},
    )
    assert stale["state"]["calibration"] is None
    replaced = out["data"]
    calibration = sq.runs.load_results(scored_dataset, "rotation")["calibration"]
    curve = replaced["calibration"][3]
    assert curve["x"] == calibration["x"]  # exactly the stored points, none left over
    assert replaced["distribution"] == []  # rotation has not scored this dataset
    # two-sided: the largest severity is the range's half, not its width
    assert out["state"]["severity_max"] == ROTATION_MAX_DEGREES


def test_a_model_that_tells_its_confidence_gets_a_slider_the_actions_follow(image_dataset):
    sq.assess(image_dataset, tasks=["rotation"], progress=False)
    tilts = [-9.0, 4.0, 0.5, -1.0, 12.0, -3.0, 2.0, 0.0, -6.0, 7.0, 1.0, -0.2]
    image_dataset.set_values("rotation", tilts)
    image_dataset.set_values("rotation_confidence", [0.9, 0.8, 0.7, 0.6, 0.1, 0.9] * 2)
    out = _call(image_dataset, "on_load")
    assert out["state"]["sure"] and "min_confidence" in json.dumps(out["render"])
    # the actions start among the samples read surely: the App stores the slider's
    # default in the state (tests/browser checks that), so a user's first "worst first"
    # keeps to them
    (slider,) = _rendered_property(out["render"], "min_confidence")
    assert slider["default"] == 0.5
    state = {**out["state"], "min_confidence": slider["default"]}
    shown = _set_view_of(image_dataset, _call(image_dataset, "worst_first", state))
    assert shown.values("rotation")[:2] == [-9.0, 7.0]  # 12 was read unsure
    assert shown.count() == 10
    # the slider at 0 keeps every sample
    every = {**state, "min_confidence": 0.0}
    shown = _set_view_of(image_dataset, _call(image_dataset, "worst_first", every))
    assert shown.values("rotation")[0] == 12.0 and shown.count() == 12
    tagged = _call(image_dataset, "tag_beyond", {**state, "threshold": 5.0})
    (note,) = [t for t in tagged["triggers"] if t["operator_uri"].endswith("notify")]
    assert "Tagged 3 samples" in note["params"]["message"]  # of -9, 12, -6, 7: not 12
    assert "confidence ≥ 0.5" in note["params"]["message"]


def test_model_not_scored_yet_offers_scoring(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["rotation"], key="rotation")
    out = _call(image_dataset, "on_load")
    rendered = json.dumps(out["render"])
    assert "Not scored yet" in rendered and "Score the dataset" in rendered
    assert out["data"]["calibration"]  # the evidence is shown before scoring too


def test_drawing_the_panel_and_listing_models_do_not_import_torch(
    dataset_factory, tmp_path, tiny_model_files
):
    import fiftyone as fo
    from conftest import imports_torch_in_a_fresh_process, write_dead_leaves_images

    dataset = dataset_factory(persistent=True)  # the subprocess loads it by name
    paths = write_dead_leaves_images(tmp_path / "images", 4, size=(120, 96))
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    sq.score(dataset, key="blur", progress=False)
    code = (
        "import json\n"
        "import fiftyone as fo, fiftyone.operators as foo\n"
        "import siamese_quality as sq\n"
        f"dataset = fo.load_dataset({dataset.name!r})\n"
        "assert [m.key for m in sq.list_models(dataset)] == ['blur']\n"
        f"result = foo.execute_operator({PANEL_URI!r}, ctx={{'dataset': dataset, "
        "'view': dataset.view(), 'params': {'__method__': 'on_load', 'panel_id': 'p1', "
        "'panel_state': {}}})\n"
        "assert result.error is None, result.error\n"
        "assert 'Calibration' in json.dumps(result.executor.to_json())\n"
    )
    assert not imports_torch_in_a_fresh_process(code)


def test_the_state_line_says_what_the_grid_shows(scored_dataset):
    state = _call(scored_dataset, "on_load")["state"]
    assert (
        "**Grid:** the whole dataset: 12 of 12 samples, 12 with a value of `blur`"
        in (state["grid"])
    )
    shown = scored_dataset.limit(5)
    out = _call(scored_dataset, "worst_first", state, view=shown)
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    sorted_view = fo.DatasetView._build(scored_dataset, set_view["params"]["view"])
    # the App sends the view it was given back with the next event
    state = _call(scored_dataset, "on_change_view", out["state"], view=sorted_view)["state"]
    assert "worst first by `blur`: 5 of 12 samples, 5 with a value" in state["grid"]
    # a view the panel did not set is not described as the panel's
    state = _call(scored_dataset, "on_change_view", state, view=sorted_view.skip(1))["state"]
    assert "a view of your own: 4 of 12 samples" in state["grid"]


def test_values_at_a_clipped_end_of_the_calibration_are_marked(scored_dataset):
    calibration = sq.runs.load_results(scored_dataset, "blur")["calibration"]
    top = max(calibration["y"])  # blur's calibration ends there; 0 px is a true floor
    sample = scored_dataset.first()
    sample["blur"] = top
    sample.save()
    state = _call(scored_dataset, "on_load")["state"]
    assert state["clipped_at"] == [top]
    bars, clipped = _call(scored_dataset, "on_load")["data"]["distribution"]
    assert clipped["x"][0] == top and clipped["y"] == [1, 0]
    assert f"**1 read exactly {top:.3g} px of the stored image" in state["grid"]


def test_polling_picks_up_new_models_and_shows_queued_jobs(scored_dataset, tiny_model_files):
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    scored_dataset.persistent = True  # delegated operations name a stored dataset
    state = _call(scored_dataset, "on_load")["state"]
    state = _call(scored_dataset, "poll", state)["state"]  # notes when the panel opened
    quiet = _call(scored_dataset, "poll", state)
    assert quiet["sent"] == []  # nothing changed: nothing sent, so the App redraws nothing

    sq.import_model(scored_dataset, tiny_model_files["rotation"], key="rotation")
    out = _call(scored_dataset, "poll", state)
    assert out["state"]["models"] == ["blur", "rotation"] and out["data_ops"] == ["set_panel_data"]
    assert "rotation" in json.dumps(out["render"])  # the dropdown offers it

    queued = sq.score(scored_dataset, key="rotation", num_shards=2)["queued"]
    try:
        out = _call(scored_dataset, "poll", out["state"])
        assert out["state"]["jobs"].count(": queued") == 2, out["state"]["jobs"]
        assert "waiting for a worker" in json.dumps(out["render"])
    finally:
        for operation in queued:
            DelegatedOperationService().delete_operation(ObjectId(operation))
    out = _call(scored_dataset, "poll", out["state"])
    assert out["state"]["jobs"] == "" and out["data_ops"] == ["set_panel_data"]


def test_an_event_sends_one_state_patch_of_what_changed_then_its_layout(scored_dataset):
    """Each state patch made the App redraw every chart: one per event, of changes only."""
    first = _call(scored_dataset, "on_load")
    assert first["sent"].count("patch_panel_state") == 1, first["sent"]
    assert first["sent"][-1] == "show_panel_output"
    again = _call(scored_dataset, "on_load", first["state"])
    assert again["patches"] == [] and again["render"] is not None  # nothing new to patch
    # the browser writes what a chart shows back into the state: a view change drops it
    drawn = {**first["state"], "distribution": [{"x": [1.0], "y": [3]}]}
    moved = _call(scored_dataset, "on_change_view", drawn, view=scored_dataset.limit(3))
    (patch,) = moved["patches"]
    assert patch["distribution"] is None and "model" not in patch  # unchanged: not sent
    assert moved["sent"].count("patch_panel_data") == 1  # both of its charts at once


def _rendered_property(render, name: str) -> list[dict]:
    """Every property called ``name`` in a rendered panel (its JSON, any depth)."""
    found = []
    if isinstance(render, dict):
        properties = render.get("properties")
        if isinstance(properties, dict) and name in properties:
            found.append(properties[name])
        for value in render.values():
            found += _rendered_property(value, name)
    elif isinstance(render, list):
        for value in render:
            found += _rendered_property(value, name)
    return found


def _shown(dataset, out) -> fo.DatasetView:
    """The view the App shows after a panel action (what it sends back next time)."""
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    return fo.DatasetView._build(dataset, set_view["params"]["view"])


def test_a_second_worst_percent_replaces_the_first_and_a_bar_filter_stays(scored_dataset):
    state = _call(scored_dataset, "on_load")["state"]
    out = _call(scored_dataset, "show_worst_percent", {**state, "percent": 50.0})
    half = _shown(scored_dataset, out)
    assert half.count() == 6
    out = _call(scored_dataset, "show_worst_percent", {**out["state"], "percent": 25.0}, view=half)
    assert _shown(scored_dataset, out).count() == 3  # 25 % of 12, not of the 6 shown

    # a bar click filters; the order actions then keep that filter
    state = _call(scored_dataset, "on_load")["state"]
    index = max(range(len(state["edges"]) - 1), key=lambda i: state["edges"][i])  # last bar
    out = _call(scored_dataset, "on_bar_click", state, params={"idx": index})
    in_bar = _shown(scored_dataset, out)
    out = _call(scored_dataset, "worst_first", out["state"], view=in_bar)
    assert set(_shown(scored_dataset, out).values("id")) == set(in_bar.values("id"))


# --- the Overview, heat maps, a field the view leaves out ------------------------------


@pytest.fixture
def summarized_dataset(scored_dataset, tiny_model_files):
    sq.import_model(scored_dataset, tiny_model_files["rotation"], key="rotation")
    sq.score(scored_dataset, key="rotation", progress=False)
    sq.summarize(scored_dataset)
    return scored_dataset


def _set_view_of(dataset, out) -> fo.DatasetView:
    (set_view,) = [t for t in out["triggers"] if t["operator_uri"].endswith("set_view")]
    return fo.DatasetView._build(dataset, set_view["params"]["view"])


def test_the_overview_tables_every_model_and_an_issue_bar_shows_its_samples_worst_first(
    summarized_dataset,
):
    dataset = summarized_dataset
    out = _call(dataset, "on_load")
    overview = out["state"]["overview"]
    assert "| blur | px of the stored image (Gaussian sigma) |" in overview
    assert "| rotation | degrees" in overview and overview.count("| 12 |") == 2
    (bars,) = out["data"]["issues"]
    assert dict(zip(bars["x"], bars["y"], strict=True)) == dataset.count_values("quality_issue")
    assert "Summarize again" in json.dumps(out["render"]) and out["state"]["summarized"]

    clicked = _call(dataset, "on_issue_click", out["state"], params={"idx": 0})
    shown = _set_view_of(dataset, clicked)
    assert set(shown.values("quality_issue")) == {bars["x"][0]}
    assert shown.count() == bars["y"][0]
    assert shown.values("quality_severity") == sorted(shown.values("quality_severity"))[::-1]
    # the bars follow the view: on a view of 5, they count those 5
    narrowed = _call(dataset, "on_change_view", out["state"], view=dataset.limit(5))
    assert sum(narrowed["data"]["issues"][0]["y"]) == 5
    assert narrowed["state"]["overview"].count("| 5 |") == 2


def test_before_a_summary_the_overview_offers_one(scored_dataset):
    out = _call(scored_dataset, "on_load")
    rendered = json.dumps(out["render"])
    assert "Summarize issues" in rendered and "| blur |" in out["state"]["overview"]
    assert out["data"]["issues"] == []


def test_the_panel_says_plainly_when_the_models_field_is_not_in_the_view(scored_dataset):
    view = scored_dataset.exclude_fields("blur")
    out = _call(scored_dataset, "on_load", view=view)
    rendered = json.dumps(out["render"])
    assert "`blur` is not in the current view" in rendered
    assert "Worst first" not in rendered and out["data"]["distribution"] == []
    assert "field not in this view" in out["state"]["overview"]
    empty = _call(scored_dataset, "on_load", view=scored_dataset.match(fo.ViewField("blur") < -1))
    assert "None of the 0 samples of the current view has a value of `blur`" in json.dumps(
        empty["render"]
    )


def test_the_panel_offers_the_heat_maps_and_shows_them_worst_first(scored_dataset):
    before = json.dumps(_call(scored_dataset, "on_load")["render"])
    assert "score again with *Heat maps of where*" in before
    sq.score(scored_dataset, key="blur", heatmaps=True, progress=False)
    out = _call(scored_dataset, "on_load")
    assert out["state"]["heatmap"] == "blur_heatmap"
    assert "Worst first, with heat maps" in json.dumps(out["render"])
    shown = _call(scored_dataset, "show_heatmaps", out["state"])
    triggers = {t["operator_uri"].split("/")[-1]: t["params"] for t in shown["triggers"]}
    assert triggers["set_active_fields"] == {"fields": ["blur_heatmap"]}
    worst_first = sq.actions.worst_first(scored_dataset, "blur").values("id")
    assert _set_view_of(scored_dataset, shown).values("id") == worst_first

    # a sample opened from that view shows its heat map; one opened elsewhere, the App's
    # own choice; a move to the next sample keeps what the user turned on or off
    view, sample = _set_view_of(scored_dataset, shown), worst_first[0]
    for grid, fields in ((view, ["blur_heatmap"]), (scored_dataset.view(), None)):
        opened = _call(
            scored_dataset, "on_change_current_sample", shown["state"], view=grid, sample=sample
        )
        sent = [
            t["params"]
            for t in opened["triggers"]
            if t["operator_uri"].endswith("set_active_fields")
        ]
        assert sent == ([{"fields": fields}] if fields else []), sent
    moved = _call(
        scored_dataset,
        "on_change_current_sample",
        opened["state"],
        view=view,
        sample=worst_first[1],
    )
    assert moved["sent"] == []
    closed = _call(scored_dataset, "on_change_current_sample", moved["state"], view=view)
    assert closed["state"]["sample_open"] is False


def test_models_that_appear_before_a_poll_are_shown_by_the_view_change(
    image_dataset, tiny_model_files
):
    """An App-side assess ends with a view change (the grid's new fields), which can
    reach the panel before its next poll: the panel leaves its empty state then, and
    the poll after it has nothing left to redraw."""
    state = _call(image_dataset, "on_load")["state"]
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    out = _call(image_dataset, "on_change_view", state)
    assert out["state"]["model"] == "blur" and out["state"]["models"] == ["blur"]
    assert "No quality model yet" not in json.dumps(out["render"])
    assert _call(image_dataset, "poll", out["state"])["data_ops"] == []
