"""The bundled default models and sq.assess: quality with no training, versions kept.

Real bundled files, a real FiftyOne dataset in the local MongoDB, real torch.
"""

import json
import os
import shutil

import fiftyone as fo
import numpy as np
import pytest
import torch
from conftest import form_errors

import siamese_quality as sq
from siamese_quality.core.defaults import (
    DEFAULT_MODELS_DIR,
    DEFAULT_MODELS_VERSION,
    default_version,
    load_default_model,
    manifest,
)
from siamese_quality.core.pretext_model import ModelFileError, PretextModel, sha256_of_file
from siamese_quality.core.training import FINE_TUNING_CONFIDENCE

TASKS = ("blur", "noise", "jpeg", "pixelation", "brightness", "contrast", "rotation")


def test_every_task_is_bundled_loads_safely_and_matches_its_sha256():
    bundled = manifest()
    assert bundled["version"] == DEFAULT_MODELS_VERSION
    assert set(bundled["models"]) == set(TASKS)
    # the benchmark's kept-out photos trained none of them
    assert not set(bundled["kept_out_photos"]) & set(bundled["training_photos"])
    total = 0
    for task, entry in bundled["models"].items():
        path = os.path.join(DEFAULT_MODELS_DIR, entry["file"])
        assert sha256_of_file(path) == entry["sha256"], task
        torch.load(path, weights_only=True)  # no pickled code in the file
        model = load_default_model(task)
        assert model.task == task and default_version(model) == DEFAULT_MODELS_VERSION
        # its held-out evidence: photos the model never trained on
        assert entry["metrics"]["spearman"] > 0.5 and entry["held_out_images"] >= 2, task
        total += os.path.getsize(path)
    assert total < 5e6


def test_a_changed_bundled_file_is_refused(tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(DEFAULT_MODELS_DIR, folder)
    with open(folder / "blur.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="sha256"):
        load_default_model("blur", str(folder))


def test_assess_scores_every_task_in_one_call_and_records_a_run_per_model(image_dataset):
    result = sq.assess(image_dataset, progress=False)
    count = len(image_dataset)
    assert result["scoring"]["scored"] == count
    assert sorted(m.key for m in sq.list_models(image_dataset)) == sorted(TASKS)
    for task in TASKS:
        values = image_dataset.values(task)
        assert all(isinstance(v, float) and np.isfinite(v) for v in values), task
        description = image_dataset.get_field(task).description
        assert f"bundled default model v{DEFAULT_MODELS_VERSION}" in description
        assert result["tasks"][task] == {"action": "add", "version": DEFAULT_MODELS_VERSION}
    issues = image_dataset.values("quality_issue")
    assert set(issues) <= set(TASKS) and None not in issues
    # again: the same weights, the same files: nothing to do, nothing changed
    before = image_dataset.values("blur_raw")
    again = sq.assess(image_dataset, progress=False)
    assert again["scoring"]["scored"] == 0 and again["tasks"]["blur"]["action"] == "keep"
    assert image_dataset.values("blur_raw") == before


NEXT_VERSION = str(int(DEFAULT_MODELS_VERSION) + 1)


def _next_bundle(tmp_path, shift: float) -> str:
    """The package's bundle as its next version would ship it: blur's last bias moved by
    ``shift`` (its raw scores move by exactly that), noise only re-stamped."""
    folder = str(tmp_path / "next_bundle")
    shutil.copytree(DEFAULT_MODELS_DIR, folder)
    bundled = manifest(folder)
    for task in ("blur", "noise"):
        path = os.path.join(folder, bundled["models"][task]["file"])
        model = PretextModel.load(path)
        model.training["default_model"]["version"] = NEXT_VERSION
        if task == "blur":
            last = [p for name, p in model.branch.named_parameters() if name.endswith("bias")]
            with torch.no_grad():
                last[-1] += shift
        bundled["models"][task]["sha256"] = model.save(path)
    bundled["version"] = NEXT_VERSION
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(bundled, f)
    return folder


def test_a_new_bundled_version_leaves_old_fields_alone_until_upgrade(image_dataset, tmp_path):
    tasks = ["blur", "noise"]
    sq.assess(image_dataset, tasks=tasks, progress=False)
    before = {f: image_dataset.values(f) for f in ("blur_raw", "noise", "noise_fingerprint")}
    newer = _next_bundle(tmp_path, shift=0.5)

    kept = sq.assess(image_dataset, tasks=tasks, models_dir=newer, progress=False)
    assert kept["tasks"]["blur"] == {"action": "keep", "version": DEFAULT_MODELS_VERSION}
    assert "upgrade=True" in kept["message"] and kept["scoring"]["scored"] == 0
    assert {f: image_dataset.values(f) for f in before} == before

    upgraded = sq.assess(image_dataset, tasks=tasks, models_dir=newer, upgrade=True, progress=False)
    assert upgraded["tasks"]["blur"] == {"action": "upgrade", "version": NEXT_VERSION}
    assert upgraded["scoring"]["scored"] == len(image_dataset)  # new weights: rescored
    moved = np.array(image_dataset.values("blur_raw")) - np.array(before["blur_raw"])
    assert np.allclose(moved, 0.5, atol=1e-4)
    assert image_dataset.values("noise_fingerprint") != before["noise_fingerprint"]
    assert f"bundled default model v{NEXT_VERSION}" in image_dataset.get_field("blur").description
    assert sq.model_info(image_dataset, "blur").training["default_model"]["version"] == NEXT_VERSION


def test_assess_never_replaces_a_users_model_or_field(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")  # the user's own
    with pytest.raises(sq.InvalidOption, match=r"'blur' on this dataset was trained \(or imp"):
        sq.assess(image_dataset, progress=False)
    image_dataset.add_sample_field("noise", fo.FloatField)
    image_dataset.set_values("noise", [1.0] * len(image_dataset))
    with pytest.raises(sq.InvalidOption, match="field 'noise' already exists"):
        sq.assess(image_dataset, tasks=["noise", "jpeg"], progress=False)
    # refused before any write: no model added, the user's values intact
    assert [m.key for m in sq.list_models(image_dataset)] == ["blur"]
    assert image_dataset.values("noise") == [1.0] * len(image_dataset)
    assert not image_dataset.has_field("jpeg")
    # the App's form says the SDK's own words, before anything runs
    form = form_errors("assess_quality", image_dataset, {"tasks": ["noise", "jpeg"]})
    assert form.startswith("field 'noise' already exists")


def test_fine_tuning_from_the_default_model_reports_both_on_the_same_held_out_images(
    image_dataset,
):
    with pytest.raises(sq.InvalidOption, match="keeps the bundled blur model's working_res"):
        sq.train(image_dataset, task="blur", init="default", working_resolution=48)
    # a learning rate too small to move the weights: fine-tuning cannot beat the start,
    # so the start must be what is kept (never worse than where it began)
    info = sq.train(
        image_dataset,
        task="blur",
        key="blur_tuned",
        init="default",
        max_seconds=None,
        max_steps=8,
        validation_every=4,
        images_per_batch=3,
        magnitudes_per_image=3,
        learning_rate=1e-12,
        progress=False,
    )
    start = info.training["init"]
    assert start["from"] == f"bundled default model v{DEFAULT_MODELS_VERSION}"
    history = sq.runs.load_results(image_dataset, "blur_tuned")["training"]["history"]
    assert history[0]["step"] == 0  # the start was a checkpoint candidate
    assert start["kept"] == "start" and info.training["best_step"] == 0
    # batch-norm statistics still move, so a later check can tie the start on Spearman
    # with a lower loss and be weighed against it; it must not win
    assert start["confidence"] is None or start["confidence"] < FINE_TUNING_CONFIDENCE
    assert start["start_metrics"] == start["metrics"] == info.metrics  # the same images
    tuned, bundled = sq.load_model(image_dataset, "blur_tuned"), load_default_model("blur")
    for name, value in bundled.branch.state_dict().items():
        assert torch.equal(tuned.branch.state_dict()[name], value), name
    assert "default_model" not in info.training  # the user's model now: assess keeps off it
    # the panel shows the comparison: the start's row beside the kept model's
    from siamese_quality.app.panel import QualityPanel

    shown = QualityPanel._summary_markdown(sq.model_info(image_dataset, "blur_tuned"))
    assert f"bundled default model v{DEFAULT_MODELS_VERSION}, before fine-tuning" in shown
    assert "the same held-out images of this dataset" in shown


def test_fine_tuning_a_fixed_reader_keeps_it_and_says_why(image_dataset):
    """The bundled rotation model reads degrees itself (lines, or edges): fine-tuning has
    nothing to learn, and a learned scale would stop reading degrees. It keeps the start
    and says so, rather than that fine-tuning lost to it."""
    info = sq.train(
        image_dataset, task="rotation", key="rotation_tuned", init="default", progress=False
    )
    start = info.training["init"]
    assert (info.training["steps"], info.training["stop_reason"]) == (0, "reads_units")
    assert start["kept"] == "start" and "the bundled reader is fixed" in start["message"]
    tuned, bundled = sq.load_model(image_dataset, "rotation_tuned"), load_default_model("rotation")
    for name, value in bundled.branch.state_dict().items():
        assert torch.equal(tuned.branch.state_dict()[name], value), name
