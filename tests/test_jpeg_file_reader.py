"""Noise in a JPEG file has its own reader, and the file's tables choose it.

A save at quality 95 smooths the finest detail the noise reader reads, so noise in a
JPEG file read at a quarter of its sigma. A noise model therefore holds a second reader,
trained with half its copies saved as a JPEG; the file's tables (``jpeg_quality``)
choose it. Files are written by OpenCV; the model is trained by the library and scores
through the SDK into a real FiftyOne dataset.
"""

import copy

import cv2
import fiftyone as fo
import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING, dead_leaves_image
from PIL import Image

import siamese_quality as sq
from siamese_quality.core.images import ImageFile
from siamese_quality.core.pretext_model import PretextModel


def _noisy(seed: int, sigma: float) -> np.ndarray:
    pixels = dead_leaves_image(seed, (160, 128)).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
    return np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8)


def _opencv_jpeg(path: str, pixels: np.ndarray, quality: int) -> str:
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data.tofile(path)
    return path


def _one_reader(model: PretextModel) -> PretextModel:
    """The same model without its JPEG-file reader (as models before it read every file)."""
    alone = copy.copy(model)
    alone.jpeg_reader = None
    return alone


def test_a_noise_model_trains_a_jpeg_file_reader_and_keeps_it_in_its_file(
    noise_model_and_progress, tmp_path
):
    model, fractions = noise_model_and_progress
    reader = model.jpeg_reader
    assert reader is not None and reader.calibration.is_fitted
    assert reader.task == "noise" and reader.view == model.view
    # a step budget is each reader's own; progress runs once from 0 to 1 over both
    assert model.training["steps"] == reader.training["steps"] == TINY_TRAINING["max_steps"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(f <= 0.5 for f in fractions) and any(f > 0.5 for f in fractions)
    summary = model.training["jpeg_file_reader"]
    assert summary["metrics"]["spearman"] == reader.evaluation["metrics"]["spearman"]
    # and on the same held-out copies saved as a JPEG at 95, as it reads users' files
    assert summary["saved_quality"] == 95
    assert summary["saved_metrics"]["raw_pearson"] != summary["metrics"]["raw_pearson"]
    # its own weights, not the first reader's
    first, second = model.branch.state_dict(), reader.branch.state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)

    path = str(tmp_path / "noise.pt")
    model.save(path)
    loaded = PretextModel.load(path)  # weights_only: the nested reader is plain tensors
    jpeg = _opencv_jpeg(str(tmp_path / "noisy.jpg"), _noisy(1, 12), 95)
    png = str(tmp_path / "noisy.png")
    Image.fromarray(_noisy(1, 12)).save(png)
    for source in (jpeg, png):
        assert np.array_equal(model.score_images([source])[1], loaded.score_images([source])[1])


def test_the_file_chooses_the_reader_through_the_sdk(
    noise_model_and_progress, dataset_factory, tmp_path
):
    model, _ = noise_model_and_progress
    model_file = str(tmp_path / "noise.pt")
    model.save(model_file)
    pixels = _noisy(2, 16)
    paths = {"jpeg": _opencv_jpeg(str(tmp_path / "noisy.jpg"), pixels, 95)}
    paths["png"] = str(tmp_path / "noisy.png")
    Image.fromarray(pixels).save(paths["png"])
    dataset = dataset_factory()
    dataset.add_samples([fo.Sample(filepath=p, case=c) for c, p in paths.items()])
    sq.import_model(dataset, model_file, key="noise")
    sq.score(dataset, key="noise", progress=False)

    written = dict(zip(*dataset.values(["case", "noise"]), strict=True))
    first_reader, jpeg_reader = _one_reader(model), model.jpeg_reader
    assert written["jpeg"] == pytest.approx(jpeg_reader.score_images([paths["jpeg"]])[0][0])
    assert written["png"] == pytest.approx(first_reader.score_images([paths["png"]])[0][0])
    # the choice matters: the other reader reads the JPEG file otherwise
    assert written["jpeg"] != pytest.approx(first_reader.score_images([paths["jpeg"]])[0][0])
    assert "trained on copies saved as JPEGs" in dataset.get_field("noise").description
    # the panel shows the second reader's held-out numbers beside the first's
    from siamese_quality.app.panel import QualityPanel

    shown = QualityPanel._summary_markdown(sq.model_info(dataset, "noise"))
    spearman = jpeg_reader.evaluation["metrics"]["spearman"]
    row = [line for line in shown.splitlines() if line.startswith("| its reader of JPEG")]
    assert len(row) == 1 and f"| {spearman:.3f} |" in row[0], shown
    saved = model.training["jpeg_file_reader"]["saved_metrics"]["spearman"]
    row = [line for line in shown.splitlines() if line.startswith("| its reader, copies saved")]
    assert len(row) == 1 and f"| {saved:.3f} |" in row[0], shown

    # the patch grid is the same reader's, in the unit
    sample = dataset.match(fo.ViewField("case") == "jpeg").first()
    image = ImageFile(paths["jpeg"])
    grid_shape = np.shape(sample.noise_patches)
    patches = jpeg_reader.patch_scores(jpeg_reader.prepare(image)[None])[0]
    expected = jpeg_reader.calibration.predict(patches.reshape(grid_shape))
    np.testing.assert_allclose(sample.noise_patches, expected, atol=1e-3)


def test_a_model_without_a_jpeg_file_reader_reads_every_file_with_its_one(
    noise_model_and_progress,
):
    model, _ = noise_model_and_progress
    encoded = np.array([95.0, np.nan, 40.0])
    assert model.in_jpeg_files(encoded, 3).tolist() == [True, False, True]
    assert model.in_jpeg_files(None, 3).tolist() == [False, False, False]
    assert _one_reader(model).in_jpeg_files(encoded, 3).tolist() == [False, False, False]


def test_evaluate_measures_the_jpeg_file_reader_on_copies_saved_as_jpegs(
    noise_model_and_progress, image_dataset, tmp_path
):
    """``sq.evaluate`` (and its operator) also measure the reader that writes the fields
    of JPEG files, on what it reads: the same copies saved as a JPEG at 95."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    from siamese_quality import PLUGIN_NAME
    from siamese_quality.core.evaluation import (
        JPEG_FILE_QUALITY,
        magnitude_grid,
        read_images,
        render_evaluation_set,
        saved_as_jpeg,
    )
    from siamese_quality.core.views import branch_scores

    model, _ = noise_model_and_progress
    model_file = str(tmp_path / "noise.pt")
    model.save(model_file)
    sq.import_model(image_dataset, model_file, key="noise")
    view = image_dataset.limit(4)
    report = sq.evaluate(view, key="noise", grid_size=5)

    reader = report["jpeg_file_reader"]
    assert reader["saved_quality"] == JPEG_FILE_QUALITY == 95
    assert reader["points"]["magnitude"] == report["points"]["magnitude"]
    assert reader["baseline"]["name"] == report["baseline"]["name"]
    # read by the second reader from the saved copies, not by the first or unsaved
    images, _ = read_images(view.values("filepath"))
    grid = magnitude_grid(model.distortion, 5)
    copies = render_evaluation_set(images, model.distortion, model.view, grid)
    saved = saved_as_jpeg(copies, JPEG_FILE_QUALITY)
    second = branch_scores(model.jpeg_reader.branch, saved.images, model.view).numpy()
    first = branch_scores(model.branch, saved.images, model.view).numpy()
    np.testing.assert_allclose(reader["points"]["score"], second, rtol=1e-5, atol=1e-5)
    assert not np.allclose(reader["points"]["score"], first)
    assert not np.allclose(reader["points"]["score"], report["points"]["score"])

    # the App's operator shows it beside the first reader's numbers
    result = foo.execute_operator(
        f"{PLUGIN_NAME}/evaluate_quality_model",
        ctx={"dataset": image_dataset, "view": view, "params": {"key": "noise"}},
    )
    assert result.error is None, result.error
    shown = result.result["jpeg_file_reader"]
    assert set(shown) == {"metrics", "baseline"} and "spearman" in shown["metrics"]
    operator = foo.get_operator(f"{PLUGIN_NAME}/evaluate_quality_model")

    def shown_fields(results: dict) -> set:
        request = {"dataset_name": image_dataset.name, "params": {}, "results": results}
        output = operator.resolve_output(ExecutionContext(request_params=request))
        return set(output.to_json()["type"]["properties"])

    assert "jpeg_file_reader" in shown_fields(result.result)
    assert "jpeg_file_reader" not in shown_fields({"metrics": {}, "baseline": None})
