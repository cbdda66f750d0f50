"""JPEG quality as encoded: read from the file's tables, the pixels where they show more.

Files are saved by OpenCV (not the library's encoder) and by Pillow; the model is
trained by the library and scores through the SDK into a real FiftyOne dataset.
"""

import math

import cv2
import fiftyone as fo
import numpy as np
import pytest
from conftest import TINY_TRAINING, dead_leaves_image
from PIL import Image

import siamese_quality as sq
from siamese_quality.core.encoding import SEEN_SHARE, encoded_or_seen, jpeg_quality
from siamese_quality.core.views import view_from_dict
from siamese_quality.registry import load_model


def _opencv_jpeg(path: str, pixels: np.ndarray, quality: int) -> str:
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data.tofile(path)
    return path


@pytest.mark.parametrize("quality", [5, 23, 50, 77, 100])
def test_a_file_saved_by_opencv_names_its_quality_exactly(tmp_path, quality):
    path = _opencv_jpeg(str(tmp_path / "photo.jpg"), dead_leaves_image(3, (96, 80)), quality)
    assert jpeg_quality(path) == quality


def test_greyscale_jpegs_read_their_quality_and_other_sources_read_none(tmp_path):
    pixels = dead_leaves_image(4, (96, 80))
    grey = str(tmp_path / "grey.jpg")
    Image.fromarray(pixels).convert("L").save(grey, quality=40)
    assert jpeg_quality(grey) == 40
    png = str(tmp_path / "photo.png")
    Image.fromarray(pixels).save(png)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    for source in (png, str(broken), str(tmp_path / "missing.jpg"), pixels):
        assert math.isnan(jpeg_quality(source)), source


def test_the_tables_win_unless_the_pixels_show_far_more_compression():
    seen = np.array([70.0, 30.0, 12.0, 85.0])
    encoded = np.array([95.0, 95.0, np.nan, 40.0])
    # a noisy photo saved at 95; a hard save re-saved at 95; a PNG; pixels that over-read
    np.testing.assert_array_equal(encoded_or_seen(seen, encoded), [95.0, 30.0, 12.0, 40.0])
    assert 30.0 < SEEN_SHARE * 95.0 < 70.0


def test_a_model_saved_before_the_tables_were_read_keeps_reading_pixels_alone():
    # models of bundled v7 and older stored no such key
    view = view_from_dict({"kind": "patches", "size": 64, "count": 16, "quantile": 0.25})
    assert view.encoded_quality is False


def test_score_writes_the_tables_quality_for_jpegs_and_the_pixels_reading_for_others(
    dataset_factory, tmp_path
):
    from siamese_quality.core.training import TrainingConfig, train_pretext_model

    images = [dead_leaves_image(200 + i, (120, 96)) for i in range(6)]
    config = TrainingConfig(task="jpeg", **TINY_TRAINING)
    model_file = str(tmp_path / "jpeg.pt")
    train_pretext_model(images, config).save(model_file)
    dataset = dataset_factory()
    pixels = dead_leaves_image(300, (160, 128))
    paths = {
        "q20": _opencv_jpeg(str(tmp_path / "q20.jpg"), pixels, 20),
        "q90": _opencv_jpeg(str(tmp_path / "q90.jpg"), pixels, 90),
        "png": str(tmp_path / "same.png"),
    }
    Image.fromarray(pixels).save(paths["png"])
    dataset.add_samples([fo.Sample(filepath=p, case=c) for c, p in paths.items()])
    sq.import_model(dataset, model_file, key="jpeg")
    sq.score(dataset, key="jpeg", progress=False)

    model = load_model(dataset, "jpeg")
    assert model.view.encoded_quality
    cases, values, raw = dataset.values(["case", "jpeg", "jpeg_raw"])
    seen = model.calibrated(np.array(raw))  # the pixels' reading alone
    by_case = dict(zip(cases, zip(values, seen, strict=True), strict=True))
    for case, quality in (("q20", 20.0), ("q90", 90.0)):
        value, pixels_say = by_case[case]
        expected = pixels_say if pixels_say < SEEN_SHARE * quality else quality
        assert value == pytest.approx(expected), (case, by_case)
    assert by_case["q90"][0] == 90.0, by_case  # this model reads it as a single save
    assert by_case["png"][0] == pytest.approx(by_case["png"][1])
    assert "quality its tables say" in dataset.get_field("jpeg").description
    # the patch grid stays the pixels' reading: where a photo is blocky
    grid = dataset.match(fo.ViewField("case") == "q90").first().jpeg_patches
    assert np.shape(grid) == model.view.grid(128, 160)
