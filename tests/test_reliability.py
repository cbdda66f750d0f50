"""Messy inputs, wrong parameters and unsafe files: clear errors, nothing lost.

Every bad input is generated here, on disk, and goes through the real loader,
scorer and FiftyOne dataset.
"""

import io
import os
import struct
import zlib

import fiftyone as fo
import numpy as np
import pytest
import torch
from conftest import dead_leaves_image, form_errors
from PIL import Image

import siamese_quality as sq
from siamese_quality import runs
from siamese_quality.core.images import (
    ImageFile,
    ImageLoadError,
    _decode_jpeg_pixels,
    load_image,
    open_upright,
    to_tensor,
)
from siamese_quality.core.pretext_model import ModelFileError, PretextModel


def _photo(seed: int = 1, size=(160, 120)) -> Image.Image:
    return Image.fromarray(dead_leaves_image(seed, size))


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG (1x1 pixel of data) whose header claims ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # "IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def write_bad_inputs(folder) -> dict[str, str]:
    """Writes one file per awkward case; returns {case: path}."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    paths = {}

    def path(name):
        paths[name.split(".")[0]] = p = os.path.join(folder, name)
        return p

    good = io.BytesIO()
    _photo(2).save(good, format="JPEG", quality=90)
    with open(path("truncated.jpg"), "wb") as f:
        f.write(good.getvalue()[: len(good.getvalue()) // 2])
    open(path("zero_bytes.jpg"), "wb").close()
    with open(path("random_bytes.jpg"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(5000))
    paths["missing"] = os.path.join(folder, "missing.png")
    _photo(3).convert("CMYK").save(path("cmyk.jpg"), quality=95)
    gradient = (np.linspace(0, 65535, 160)[None, :].repeat(120, 0)).astype(np.uint16)
    Image.fromarray(gradient).save(path("sixteen_bit.png"))
    rgba = _photo(4).convert("RGBA")
    rgba.putalpha(
        Image.fromarray((np.arange(160)[None, :].repeat(120, 0) > 80).astype(np.uint8) * 255)
    )
    rgba.save(path("rgba.png"))
    _photo(5).convert("P", palette=Image.ADAPTIVE, colors=32).save(path("palette.png"))
    _photo(6).convert("L").save(path("grayscale.png"))
    Image.new("RGB", (1, 1), (90, 120, 200)).save(path("one_pixel.png"))
    with open(path("bomb.png"), "wb") as f:
        f.write(_png_claiming(20000, 20000))
    upright = _photo(7)
    with open(path("exif6.jpg"), "wb") as f:  # stored turned; EXIF 6 turns it back
        f.write(_with_exif_orientation(upright.transpose(Image.Transpose.ROTATE_90), 6))
    with open(path("exif8.jpg"), "wb") as f:  # stored turned the other way; EXIF 8
        f.write(_with_exif_orientation(upright.transpose(Image.Transpose.ROTATE_270), 8))
    upright.save(path("upright.jpg"), quality=95)
    frames = [_photo(8 + i).convert("P") for i in range(3)]
    frames[0].save(path("animated.gif"), save_all=True, append_images=frames[1:], duration=100)
    return paths


UNREADABLE = {
    "truncated": "corrupt",
    "zero_bytes": "empty",
    "random_bytes": "not_an_image",
    "missing": "missing",
    "one_pixel": "too_small",
    "bomb": "too_large",
}
READABLE = [
    "cmyk",
    "sixteen_bit",
    "rgba",
    "palette",
    "grayscale",
    "exif6",
    "exif8",
    "upright",
    "animated",
]


def test_each_awkward_file_is_read_or_refused_with_its_reason(tmp_path):
    paths = write_bad_inputs(tmp_path)
    for case, kind in UNREADABLE.items():
        with pytest.raises(ImageLoadError) as error:
            load_image(paths[case], 64)
        assert error.value.kind == kind, case
        assert paths[case] in str(error.value)  # the message names the file
    for case in READABLE:
        image = load_image(paths[case], 64)
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8, case


def test_native_pixels_are_pillows_whichever_decoder_reads_the_file(tmp_path):
    # JPEG files are decoded by torchvision's libjpeg-turbo for speed; every file must
    # still give exactly Pillow's upright RGB pixels, or Pillow's reason it is unreadable
    paths = write_bad_inputs(tmp_path)
    stored = _photo(9, size=(97, 61))  # odd sides: a wrong turn or flip changes the shape
    for orientation in range(1, 9):
        paths[f"orientation{orientation}"] = path = str(tmp_path / f"o{orientation}.jpg")
        with open(path, "wb") as f:
            f.write(_with_exif_orientation(stored, orientation))
    paths["grey_jpeg"] = str(tmp_path / "grey.jpg")
    stored.convert("L").save(paths["grey_jpeg"], quality=90)
    for case, path in paths.items():
        if case in UNREADABLE:
            with pytest.raises(ImageLoadError) as error:
                ImageFile(path).native_tensor()
            assert error.value.kind == UNREADABLE[case], case
            continue
        fast = path.endswith(".jpg") and case != "cmyk"  # torchvision's RGB and grey
        assert (_decode_jpeg_pixels(path) is not None) == fast, case
        expected = to_tensor(open_upright(path))
        assert torch.equal(ImageFile(path).native_tensor(), expected), case
        assert np.array_equal(np.asarray(ImageFile(path).native()), np.asarray(open_upright(path)))


def test_odd_modes_are_converted_faithfully(tmp_path):
    paths = write_bad_inputs(tmp_path)
    # 16 bits are rescaled, not clipped at 255: the gradient spans dark to bright
    gray = load_image(paths["sixteen_bit"], 64)[0].float()
    assert gray[:, :8].mean() < 60 and gray[:, -8:].mean() > 195
    # transparent pixels are shown over white
    rgba = load_image(paths["rgba"], 64)
    assert rgba[:, :, :12].float().mean() > 250
    # CMYK keeps the picture
    rgb = load_image(_photo(3), 64).float()
    assert (load_image(paths["cmyk"], 64).float() - rgb).abs().mean() < 12


def test_exif_orientation_is_honoured_so_a_turned_file_is_not_tilted(tmp_path, tiny_model_files):
    paths = write_bad_inputs(tmp_path)
    upright = load_image(paths["upright"], 64).float()
    for case in ("exif6", "exif8"):
        assert (load_image(paths[case], 64).float() - upright).abs().mean() < 4, case
    # losslessly stored (PNG with EXIF): the rotation model scores exactly the upright photo
    upright_png = _photo(7)
    upright_png.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright_png.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif6.png", exif=exif)
    model = PretextModel.load(tiny_model_files["rotation"])
    _, raw = model.score_images([str(tmp_path / "upright.png"), str(tmp_path / "exif6.png")])
    assert raw[0] == pytest.approx(raw[1], abs=1e-5)


def test_scoring_a_messy_dataset_scores_the_good_and_explains_the_bad(
    dataset_factory, tmp_path, tiny_model_files
):
    paths = write_bad_inputs(tmp_path)
    dataset = dataset_factory()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths.values()])
    dataset.set_values("my_label", ["keep"] * len(dataset))
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")

    summary = sq.score(dataset, key="blur", progress=False)
    assert summary["scored"] == len(READABLE) and summary["failed"] == len(UNREADABLE)
    assert summary["failure_kinds"] == {kind: 1 for kind in UNREADABLE.values()}
    assert f"{len(UNREADABLE)} could not be read" in summary["message"]
    by_path = dict(zip(*dataset.values(["filepath", "blur"]), strict=True))
    for case in UNREADABLE:
        assert by_path[paths[case]] is None, case
    for case in READABLE:
        assert isinstance(by_path[paths[case]], float), case
    reasons = {
        f["filepath"]: f["kind"] for f in runs.load_results(dataset, "blur")["scoring"]["failures"]
    }
    assert reasons == {paths[c]: k for c, k in UNREADABLE.items()}
    assert dataset.values("my_label") == ["keep"] * len(dataset)  # nothing else touched


def test_training_skips_unreadable_files_and_records_why(dataset_factory, tmp_path):
    from conftest import TINY_TRAINING

    paths = write_bad_inputs(tmp_path)
    dataset = dataset_factory()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths.values()])
    info = sq.train(dataset, task="blur", progress=False, **TINY_TRAINING)
    skipped = {s["kind"] for s in info.training["skipped_images"]}
    assert skipped == set(UNREADABLE.values())


def test_a_video_dataset_is_refused_by_every_entry_point(
    dataset_factory, tmp_path, tiny_model_files
):
    video = dataset_factory()
    video.add_sample(fo.Sample(filepath=str(tmp_path / "clip.mp4")))
    for call in (
        lambda: sq.train(video, task="blur", progress=False),
        lambda: sq.import_model(video, tiny_model_files["blur"]),
        lambda: sq.score(video, key="blur", progress=False),
    ):
        with pytest.raises(ValueError, match="media type is 'video'"):
            call()
    assert video.list_runs() == []


def test_an_empty_view_is_a_clear_no_op_for_scoring_and_an_error_for_training(
    image_dataset, tiny_model_files
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    empty = image_dataset.match(fo.ViewField("filepath") == "nowhere")
    summary = sq.score(empty, key="blur", progress=False)
    assert summary["scored"] == 0 and summary["message"] == "nothing to score"
    assert not image_dataset.has_field("blur")  # no empty fields left behind
    with pytest.raises(ValueError, match="at least 4 images .*; this collection has 0"):
        sq.train(empty, task="blur", key="other", progress=False)


def test_a_file_changed_after_scoring_is_found_and_rescored_alone(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    before = dict(zip(*image_dataset.values(["id", "blur_raw"]), strict=True))
    changed = image_dataset.first()
    blurred = Image.open(changed.filepath).filter(
        __import__("PIL.ImageFilter").ImageFilter.GaussianBlur(3)
    )
    blurred.save(changed.filepath)
    os.utime(changed.filepath, ns=(1, 10**18))  # a distinct modification time

    stale = sq.changed_since_scoring(image_dataset, "blur")
    assert stale.values("id") == [changed.id]
    summary = sq.score(image_dataset, key="blur", skip_unchanged=True, progress=False)
    assert summary["samples"] == 1 and summary["skipped_unchanged"] == 11
    assert summary["message"] == "scored 1 of 1 samples (11 more unchanged, skipped)"
    after = dict(zip(*image_dataset.values(["id", "blur_raw"]), strict=True))
    assert after[changed.id] != before[changed.id]
    assert {k: v for k, v in after.items() if k != changed.id} == {
        k: v for k, v in before.items() if k != changed.id
    }
    assert sq.changed_since_scoring(image_dataset, "blur").count() == 0


def _retrained_copy(path: str, folder) -> str:
    """The model of ``path`` with other weights (as a retraining would give), saved anew."""
    model = PretextModel.load(path)
    with torch.no_grad():
        for parameter in model.branch.parameters():
            parameter.mul_(1.5)
    retrained = str(folder / "retrained.pt")
    model.save(retrained)
    return retrained


def test_values_written_by_a_models_previous_weights_are_stale_after_retraining(
    image_dataset, tiny_model_files, tmp_path
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    before = image_dataset.values("blur_raw")
    assert sq.changed_since_scoring(image_dataset, "blur").count() == 0

    sq.import_model(
        image_dataset,
        _retrained_copy(tiny_model_files["blur"], tmp_path),
        key="blur",
        overwrite=True,
    )
    assert sq.changed_since_scoring(image_dataset, "blur").count() == len(image_dataset)
    summary = sq.score(image_dataset, key="blur", skip_unchanged=True, progress=False)
    assert summary["samples"] == len(image_dataset) and summary["skipped_unchanged"] == 0
    assert image_dataset.values("blur_raw") != before
    assert sq.changed_since_scoring(image_dataset, "blur").count() == 0
    again = sq.score(image_dataset, key="blur", skip_unchanged=True, progress=False)
    assert again["skipped_unchanged"] == len(image_dataset)


# --- wrong parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_seconds": -5.0}, "max_seconds must be positive"),
        ({"working_resolution": 0}, "working_resolution must be an integer of at least 32"),
        ({"key": "my model"}, "letters, digits and underscores"),
    ],
)
def test_train_form_names_the_wrong_parameter_as_the_sdk_does(image_dataset, params, message):
    shown = form_errors("train_quality_model", image_dataset, params)
    assert message in shown
    with pytest.raises(sq.InvalidOption, match=message) as refused:
        sq.train(image_dataset, task="blur", progress=False, **params)
    assert shown == str(refused.value)  # the SDK's check, not a copy of it
    assert refused.value.option in ("max_seconds", "working_resolution", "key")


def test_train_form_refuses_an_existing_key_and_other_media(
    image_dataset, dataset_factory, tiny_model_files, tmp_path
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    errors = form_errors("train_quality_model", image_dataset, {"key": "blur"})
    assert "A model 'blur' exists" in errors
    video = dataset_factory()
    video.add_sample(fo.Sample(filepath=str(tmp_path / "clip.mp4")))
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": video.name, "params": {}})
    form = str(
        foo.get_operator(f"{sq.PLUGIN_NAME}/train_quality_model").resolve_input(ctx).to_json()
    )
    assert "works on image datasets" in form


def test_score_form_names_a_clashing_field(image_dataset, tiny_model_files):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    image_dataset.set_values("blur_raw", [0.0] * 12)
    errors = form_errors("score_quality", image_dataset, {"keys": ["blur"]})
    assert "'blur_raw' already exists and was written by you" in errors


def test_sdk_refuses_an_unknown_model_key_naming_the_available_ones(
    image_dataset, tiny_model_files
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    with pytest.raises(ValueError, match="Unknown model key 'tilt'; models on this dataset: blur"):
        sq.score(image_dataset, key="tilt", progress=False)
    with pytest.raises(ValueError, match="Unknown model key"):
        sq.evaluate(image_dataset, key="tilt")
    with pytest.raises(ValueError, match="Unknown model key"):
        sq.delete_model(image_dataset, "tilt")


# --- unsafe model files ----------------------------------------------------------------


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_model_file_with_a_pickle_payload_is_refused_without_running_it(image_dataset, tmp_path):
    marker = str(tmp_path / "payload_ran")
    evil = str(tmp_path / "evil.pt")
    torch.save(
        {
            "format": "siamese_quality.pretext_model",
            "format_version": 1,
            "payload": _Payload(marker),
        },
        evil,
    )
    with pytest.raises(ModelFileError, match="not a safe siamese_quality model file"):
        sq.import_model(image_dataset, evil)
    assert not os.path.exists(marker)
    assert image_dataset.list_runs() == []


def test_an_exported_file_carries_its_format_version_and_a_wrong_one_is_refused(
    image_dataset, tiny_model_files, tmp_path
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    exported = sq.export_model(image_dataset, "blur", str(tmp_path / "blur.pt"))
    state = torch.load(exported, weights_only=True)
    assert state["format"] == "siamese_quality.pretext_model" and state["format_version"] == 2
    state["format_version"] = 99
    future = str(tmp_path / "future.pt")
    torch.save(state, future)
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        sq.import_model(image_dataset, future, key="future")
    assert image_dataset.list_runs() == ["blur"]


@pytest.mark.parametrize(
    "operator, params, message",
    [
        ("filter_by_quality", {"percent": 0.0}, "percent must be above 0 and at most 100"),
        ("filter_by_quality", {"percent": 101.0}, "percent must be above 0 and at most 100"),
        ("tag_by_quality", {"threshold": 1.0, "tag": "  "}, "tag must be a non-empty string"),
    ],
)
def test_quality_action_forms_show_the_sdks_own_message(
    image_dataset, tiny_model_files, operator, params, message
):
    from siamese_quality import actions

    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    sq.score(image_dataset, key="blur", progress=False)
    assert form_errors(operator, image_dataset, {"field": "blur", **params}).startswith(message)
    with pytest.raises(sq.InvalidOption, match=message):
        if operator == "filter_by_quality":
            actions.worst_percent(image_dataset, "blur", params["percent"])
        else:
            actions.tag_beyond(image_dataset, "blur", params["threshold"], params["tag"])


def test_exporting_onto_an_existing_file_is_refused_unless_overwrite(
    image_dataset, tiny_model_files, tmp_path
):
    sq.import_model(image_dataset, tiny_model_files["blur"], key="blur")
    precious = tmp_path / "notes.pt"
    precious.write_bytes(b"someone's file")
    with pytest.raises(FileExistsError, match="a file exists at .*overwrite=True"):
        sq.export_model(image_dataset, "blur", str(precious))
    assert precious.read_bytes() == b"someone's file"
    params = {"key": "blur", "path": str(precious)}
    form_error = form_errors("export_quality_model", image_dataset, params)
    assert form_error.startswith(f"path: a file exists at {precious}")  # the SDK's own check
    assert form_errors("export_quality_model", image_dataset, {**params, "overwrite": True}) == ""

    sq.export_model(image_dataset, "blur", str(precious), overwrite=True)
    assert PretextModel.load(str(precious)).task == "blur"
    assert not list(tmp_path.glob("*.partial*"))  # no partial file left
