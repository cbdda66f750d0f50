"""One preparation path per view: patches at native resolution, whole images downscaled,
the same pixels whichever models score together, roles that stay apart, large images."""

import fiftyone as fo
import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING, dead_leaves_image, write_dead_leaves_images
from PIL import Image

import siamese_quality as sq
from siamese_quality import runs
from siamese_quality.core.distortions import get_distortion
from siamese_quality.core.images import REDUCED_DECODE_SHORT_SIDE, ImageFile, sample_levels
from siamese_quality.core.pretext_model import ModelFileError, PretextModel
from siamese_quality.core.views import ALIGN, PatchView, WholeView, patch_structure, view_for


@pytest.mark.parametrize("height, width", [(768, 1024), (1024, 640), (300, 451), (4000, 6000)])
def test_patches_cover_the_whole_image_on_the_jpeg_block_grid(height, width):
    view = PatchView(size=64, count=16)
    corners = view.positions(height, width)
    rows, columns = view.grid(height, width)
    assert len(corners) == rows * columns == 16
    tops, lefts = sorted({t for t, _ in corners}), sorted({c for _, c in corners})
    assert all(t % ALIGN == 0 for t in tops) and all(c % ALIGN == 0 for c in lefts)
    # spread from edge to edge (not only the centre), each with its margin inside the image
    assert tops[0] <= view.margin + ALIGN and lefts[0] <= view.margin + ALIGN
    assert tops[-1] + view.size >= height - view.margin - ALIGN
    assert lefts[-1] + view.size >= width - view.margin - ALIGN
    assert tops[0] >= view.margin and tops[-1] + view.size + view.margin <= height
    # the grid follows the image's shape: never more rows than columns across a landscape
    assert columns >= rows if width >= height else rows >= columns


def test_a_tiny_image_is_padded_to_one_patch_per_cell():
    view = PatchView(size=64, count=16)
    tiny = ImageFile(dead_leaves_image(0, (40, 30)))
    patches = view.prepare(tiny)
    assert patches.shape == (16, 3, 64, 64) and patches.dtype == torch.uint8


def test_flat_patches_do_not_vote():
    view = PatchView(size=8, count=8, quantile=0.25, min_structure=2.0)
    flat = torch.full((1, 4, 3, 8, 8), 128, dtype=torch.uint8)
    textured = torch.from_numpy(dead_leaves_image(3, (8, 32))).permute(2, 0, 1)
    textured = textured.reshape(3, 8, 4, 8).permute(2, 0, 1, 3)[None]  # 4 patches of 8 x 8
    images = torch.cat([flat, textured], dim=1)  # 4 flat patches, 4 with structure
    structure = patch_structure(images)
    assert (structure[0, :4] == 0).all() and (structure[0, 4:] > 2).all()
    # flat patches of a blurred photo read as sharp (here: score -100): they must not count
    scores = torch.tensor([[-100.0, -100, -100, -100, 1, 2, 3, 4]])
    assert view.aggregate(scores, structure).item() == pytest.approx(1.75)
    # with no structure anywhere, the most structured quarter still decides
    assert view.aggregate(scores[:, :4], structure[:, :4]).shape == (1,)
    # every patch votes where flat patches carry evidence (noise)
    noise_view = PatchView(size=8, count=8, quantile=0.25, min_structure=0.0)
    assert noise_view.aggregate(scores, structure).item() == -100.0


@pytest.fixture
def mixed_files(tmp_path):
    """A large JPEG (decoded at a reduced scale for whole views), a PNG and a small JPEG."""
    big = Image.fromarray(dead_leaves_image(1, (2400, 1700), disks=2000))
    paths = [str(tmp_path / "big.jpg"), str(tmp_path / "photo.png"), str(tmp_path / "small.jpg")]
    big.save(paths[0], quality=90)
    Image.fromarray(dead_leaves_image(2, (400, 300))).save(paths[1])
    Image.fromarray(dead_leaves_image(3, (200, 150))).save(paths[2], quality=80)
    return paths


def test_several_models_give_exactly_the_values_each_gives_alone(
    dataset_factory, mixed_files, tiny_model_files
):
    dataset = dataset_factory()
    dataset.add_samples([fo.Sample(filepath=p) for p in mixed_files])
    assert min(Image.open(mixed_files[0]).size) >= 2 * REDUCED_DECODE_SHORT_SIDE
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    sq.import_model(dataset, tiny_model_files["rotation"], key="rotation")
    # contrast reads the stored levels (the native decode), rotation a reduced one
    sq.import_model(dataset, tiny_model_files["contrast"], key="contrast")
    keys, fields = ["blur", "rotation", "contrast"], ["b_both", "r_both", "c_both"]
    sq.score(dataset, key=keys, field=fields, progress=False)
    for key, field in zip(keys, ("b_alone", "r_alone", "c_alone"), strict=True):
        sq.score(dataset, key=key, field=field, progress=False)
    for both, alone in (("b_both", "b_alone"), ("r_both", "r_alone"), ("c_both", "c_alone")):
        for suffix in ("", "_raw"):
            assert dataset.values(both + suffix) == dataset.values(alone + suffix), both
    assert dataset.values("b_both_patches") == dataset.values("b_alone_patches")
    # and the SDK's single-image path agrees with the stored fields
    model = sq.load_model(dataset, "rotation")
    _, raw = model.score_images(dataset.values("filepath"))
    assert np.allclose(raw, dataset.values("r_alone_raw"), atol=1e-6)


def test_tone_readers_see_the_stored_levels_of_the_whole_frame(tmp_path):
    # a grey scene whose only highlights are small white squares at its sides, outside
    # the centre square, and single white pixels (noise, not tone) in the middle
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(100, 5, (300, 900, 3)), 0, 255).astype(np.uint8)
    squares = np.zeros((300, 900), bool)
    for top in range(0, 300, 12):
        for left in [*range(0, 150, 12), *range(750, 900, 12)]:
            squares[top : top + 4, left : left + 4] = True
    pixels[squares] = 255
    salt = rng.random((300, 900)) < 0.02
    salt[:, :150] = salt[:, 750:] = False
    pixels[salt] = 255
    path = str(tmp_path / "highlights.png")
    Image.fromarray(pixels).save(path)
    for task in ("brightness", "contrast"):
        view = view_for(get_distortion(task), 128, 16)
        assert view.stored_levels and view.reads_native
        seen = view.prepare(ImageFile(path))[0]
        assert seen.shape == (3, 128, 128)
        white = seen.amin(dim=0) == 255
        # the squares' white, as stored, in the outer sixths where they are; none of the
        # single pixels' white in the middle
        assert float(white[:, :21].float().mean()) > 0.25 * float(squares[:, :150].mean())
        assert float(white[:, 22:106].float().mean()) == 0.0
    # the resized centre square that other whole views read holds no white at all
    resized = WholeView(resolution=128).prepare(ImageFile(path))[0]
    assert int(resized.max()) < 200


def test_the_level_sample_is_the_median_of_each_three_by_three_block():
    pixels = torch.from_numpy(dead_leaves_image(6, (130, 97))).permute(2, 0, 1)
    noisy = (pixels.float() + 40 * torch.randn(pixels.shape)).clamp(0, 255).to(torch.uint8)
    size = 24
    rows = ((torch.arange(size) + 0.5) * 97 / size).long().clamp(1, 95)
    columns = ((torch.arange(size) + 0.5) * 130 / size).long().clamp(1, 128)
    blocks = [noisy[:, rows + dy][:, :, columns + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    expected = torch.stack(blocks).median(dim=0).values
    assert torch.equal(sample_levels(noisy, size), expected)


def test_training_roles_are_disjoint_and_only_held_out_images_report(dataset_factory, tmp_path):
    dataset = dataset_factory()
    paths = write_dead_leaves_images(tmp_path / "images", 14, size=(160, 120), seed=4)
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    info = sq.train(dataset, task="blur", progress=False, **TINY_TRAINING)
    roles = info.training["roles"]
    sets = {role: set(ids) for role, ids in roles.items()}
    assert set(sets) == {"train", "checkpoint", "held_out"}
    assert not sets["train"] & sets["checkpoint"]
    assert not sets["train"] & sets["held_out"]
    assert not sets["checkpoint"] & sets["held_out"]
    assert set().union(*sets.values()) == set(dataset.values("id"))
    # two to choose the checkpoint: one image's copies cannot say whether scores agree
    # across photos
    assert len(sets["checkpoint"]) == 2 and len(sets["held_out"]) >= 2
    # the reported metrics come from the held-out images' points only
    points = runs.load_results(dataset, "blur")["evaluation"]["points"]
    assert len(set(points["image"])) == len(sets["held_out"])
    assert info.metrics and "protocol" in runs.load_results(dataset, "blur")["evaluation"]


def test_a_large_photo_is_read_at_its_own_resolution_in_a_fixed_number_of_patches(
    dataset_factory, tmp_path, tiny_model_files
):
    path = str(tmp_path / "large.jpg")
    Image.fromarray(dead_leaves_image(5, (6000, 4000), disks=3000)).save(path, quality=92)
    image = ImageFile(path)
    blur = PretextModel.load(tiny_model_files["blur"])
    assert blur.prepare(image).shape == (16, 3, 48, 48)  # 16 patches, whatever the size
    assert min(image.reduced().shape[-2:]) < 4000  # whole views decode a reduced copy
    dataset = dataset_factory()
    dataset.add_sample(fo.Sample(filepath=path))
    sq.import_model(dataset, tiny_model_files["blur"], key="blur")
    summary = sq.score(dataset, key="blur", progress=False)
    assert summary["scored"] == 1 and np.isfinite(dataset.first().blur)
    assert np.array(dataset.first().blur_patches).shape == (4, 4)


def test_a_model_of_the_thumbnail_format_is_refused_with_a_reason(tmp_path):
    path = str(tmp_path / "old.pt")
    torch.save({"format": "siamese_quality.pretext_model", "format_version": 1}, path)
    with pytest.raises(ModelFileError, match="thumbnail.*train it again"):
        PretextModel.load(path)
