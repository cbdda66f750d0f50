"""Pair generation, the ranking loss, training, persistence and backbones, with real torch."""

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from conftest import dead_leaves_image, write_dead_leaves_images
from scipy.stats import spearmanr

from siamese_quality.core.baselines import mean_hsv_value, tonal_reach
from siamese_quality.core.degradations import exposure_gain, exposure_gamma
from siamese_quality.core.distortions import get_distortion
from siamese_quality.core.errors import InvalidOption
from siamese_quality.core.evaluation import EvaluationSet, evaluate_model, magnitude_grid
from siamese_quality.core.images import load_image
from siamese_quality.core.model import EdgeSpreadNet, PixelGridNet, QualityBranch, TonalReachNet
from siamese_quality.core.pairs import (
    Augmentation,
    GroupedBatches,
    stratified_magnitudes,
)
from siamese_quality.core.pretext_model import ModelFileError, PretextModel
from siamese_quality.core.training import (
    FINE_TUNING_CONFIDENCE,
    TrainingConfig,
    fine_tuning_confidence,
    fine_tuning_message,
    ranking_loss,
    train_pretext_model,
)
from siamese_quality.core.views import PatchView, WholeView
from siamese_quality.demo import SKIMAGE_COLOR_PHOTOS


def _sources(count: int, seed: int = 0, size=(200, 160)) -> list[torch.Tensor]:
    return [
        torch.from_numpy(dead_leaves_image(seed * 100 + i, size)).permute(2, 0, 1).contiguous()
        for i in range(count)
    ]


def test_grouped_batches_hold_k_spread_magnitudes_of_each_image():
    distortion = get_distortion("brightness")
    batches = GroupedBatches(
        _sources(5), distortion, WholeView(64), images_per_batch=4, magnitudes_per_image=5, seed=1
    )
    batch = batches.next_batch()
    assert batch.images.shape == (20, 3, 64, 64) and batch.images.dtype == torch.uint8
    assert batch.groups.tolist() == [g for g in range(4) for _ in range(5)]
    for group in range(4):
        m = np.sort(batch.magnitudes[batch.groups == group].numpy())
        slices = np.floor((m - distortion.low) / (distortion.high - distortion.low) * 5)
        assert slices.tolist() == [0, 1, 2, 3, 4]  # one magnitude per fifth of the range
    # brighter copies of one image really are brighter
    for group in range(4):
        members = batch.groups == group
        order = np.argsort(batch.magnitudes[members].numpy())
        means = batch.images[members].amax(1).float().mean((1, 2)).numpy()[order]
        assert np.all(np.diff(means) > 0)


def test_pixelation_draws_and_calibrates_its_block_sizes_by_equal_ratios():
    """Blocks of 1.5 and 2 px get as many training copies as blocks of 6 and 8."""
    pixelation = get_distortion("pixelation")
    grid = magnitude_grid(pixelation, 9)
    assert grid[0] == pixelation.low and grid[-1] == pytest.approx(pixelation.high)
    assert np.allclose(grid[1:] / grid[:-1], grid[1] / grid[0])  # equal ratios
    rng = np.random.default_rng(0)
    drawn = np.concatenate([stratified_magnitudes(pixelation, 6, rng) for _ in range(200)])
    assert np.mean(drawn < 2.15) == pytest.approx(1 / 3, abs=0.01)  # 10 ** (1 / 3) = 2.15
    positions = pixelation.position(torch.from_numpy(drawn)).numpy()
    assert np.allclose(pixelation.spread(positions), drawn)
    # linear spacing stays as it was for the others: a third of blur's draws below 8 / 3
    blur = get_distortion("blur")
    drawn = np.concatenate([stratified_magnitudes(blur, 6, rng) for _ in range(200)])
    assert np.mean(drawn < 8 / 3) == pytest.approx(1 / 3, abs=0.01)
    with pytest.raises(ValueError, match="positive low end"):
        dataclasses.replace(blur, spacing="log")


def _front_end_features(branch: QualityBranch, pixels: np.ndarray) -> torch.Tensor:
    """A branch's fixed features of an (H, W, 3) image, normalised as the branch does."""
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return branch.encoder((image.float() - branch.mean) / branch.std)[0]


def test_pixel_grid_front_end_sees_small_blocks_and_ignores_quarter_turns():
    """The pixelation branch's fixed features, on a real photo pixelated by OpenCV."""
    photo = np.ascontiguousarray(skimage.data.chelsea()[100:228, 100:228])
    branch = QualityBranch("pixel_grid")

    def features(pixels: np.ndarray) -> torch.Tensor:
        return _front_end_features(branch, pixels)

    def pixelated(block: float) -> np.ndarray:
        small = cv2.resize(photo, None, fx=1 / block, fy=1 / block, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (128, 128), interpolation=cv2.INTER_NEAREST)

    lag_1 = PixelGridNet.LAGS.index(1)  # equal neighbours beyond the photo's own share
    untouched = features(photo)
    shares = [float(features(pixelated(b))[lag_1]) for b in (1.5, 2, 4)]
    assert shares[0] - float(untouched[lag_1]) > 0.25
    assert shares[0] < shares[1] < shares[2]
    turned = np.rot90(pixelated(1.5)).copy()
    assert torch.allclose(features(turned), features(pixelated(1.5)), atol=1e-6)


def test_noise_front_end_reads_fine_detail_apart_from_texture_and_ignores_quarter_turns():
    """The noise branch's fixed features, on a real photo with NumPy's Gaussian noise."""
    photo = np.ascontiguousarray(skimage.data.chelsea()[100:228, 100:228])
    branch = QualityBranch("noise_residual")

    def features(pixels: np.ndarray) -> torch.Tensor:
        return _front_end_features(branch, pixels)

    noise = np.random.default_rng(0).normal(0, 12, photo.shape)
    noisy = np.clip(photo + noise, 0, 255).round().astype(np.uint8)
    fine, coarse = 2, 6  # log median |diagonal detail| of luma, at full and half scale
    clean, damaged = features(photo), features(noisy)
    assert damaged[fine] > clean[fine] + 0.5
    # white noise halves one scale coarser, the photo's texture does not
    assert (damaged[fine] - damaged[coarse]) - (clean[fine] - clean[coarse]) > 0.3
    assert torch.allclose(features(np.rot90(noisy)), damaged, atol=1e-5)


def _edge_spread_reading(pixels: np.ndarray) -> float:
    """The blur front end's start reading of a photo (px, uncalibrated): its patches'
    geometric mean of the edge and energy widths, the sharpest patches' (5 %)."""
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
    features = EdgeSpreadNet()(PatchView().tiles(image, 0).float())
    widths = torch.exp(features[:, :2].mean(1)) - EdgeSpreadNet.WIDTH_FLOOR
    return float(torch.quantile(widths, 0.05))


def test_blur_front_end_reads_gaussian_sigma_in_px_whatever_the_contrast():
    """OpenCV's Gaussian blur on a real photo: the reading grows with sigma, is in px
    (before any calibration), and a photo at half the contrast reads the same (a CNN
    read it as about twice as blurred, benchmarks/RESULTS.md)."""
    photo = skimage.data.astronaut()
    readings, faded = [], []
    for sigma in (0, 1, 2, 3, 4):
        blurred = cv2.GaussianBlur(photo, (0, 0), sigma) if sigma else photo
        readings.append(_edge_spread_reading(blurred))
        half = blurred.mean() + 0.5 * (blurred.astype(np.float64) - blurred.mean())
        faded.append(_edge_spread_reading(np.clip(half, 0, 255).round().astype(np.uint8)))
    assert readings == sorted(readings) and len(set(readings)) == 5, readings
    assert 1.2 < readings[2] < 2.8, readings  # sigma 2
    assert np.allclose(faded, readings, rtol=0.1), (faded, readings)


def test_blur_front_end_tells_camera_shake_by_its_direction_and_flat_patches_by_none():
    photo = skimage.data.astronaut()
    line = np.zeros((13, 13), np.float32)
    line[6, :] = 1 / 13  # 13 px of shake along x
    net = EdgeSpreadNet()

    def most_and_least_blurred(pixels: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
        return net.readings(PatchView().tiles(image, 0).float())["energy_fine"].median(0).values

    widest, narrowest = most_and_least_blurred(cv2.filter2D(photo, -1, line))
    assert widest / narrowest > 2.2, (widest, narrowest)
    widest, narrowest = most_and_least_blurred(photo)
    assert widest / narrowest < 1.8, (widest, narrowest)
    # a flat patch shows no sharp edge: it reads as the widest, never as NaN
    flat = net(torch.full((1, 3, 64, 64), 120.0))
    assert torch.allclose(flat[0, :2], torch.log(torch.tensor(net.WIDEST + net.WIDTH_FLOOR)))


def test_blur_front_end_quantiles_per_patch_are_torchs_quantiles():
    """The edge widths' quantiles come from one sort of all patches' edges: each patch's
    must be what ``torch.quantile`` gives for its own edges (empty, single, tied)."""
    generator = torch.Generator().manual_seed(0)
    sizes = [0, 1, 2, 7, 40, 0, 300, 5]
    values = [torch.rand(n, generator=generator) * 10 for n in sizes]
    values[4][:20] = 2.5  # ties
    values[6][0] = 0.0
    groups = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    order = torch.randperm(len(groups), generator=generator)  # edges in pixel order
    levels = torch.tensor(EdgeSpreadNet.POOLED_QUANTILES)
    got = EdgeSpreadNet._grouped_quantiles(
        torch.cat(values)[order], groups[order], len(sizes), levels
    )
    for i, v in enumerate(values):
        if len(v) == 0:
            assert got[i].isnan().all()
        else:
            assert torch.allclose(got[i], torch.quantile(v, levels), rtol=0, atol=1e-6), i


def test_blur_training_starts_as_the_front_ends_reading_and_keeps_it_unless_beaten(tmp_path):
    """A branch that starts as a classical reading (blur's) keeps it unless training
    beats it on the checkpoint images with confidence, and says which it kept."""
    images = write_dead_leaves_images(tmp_path, 8, size=(160, 144), seed=3)
    config = TrainingConfig(
        task="blur", max_seconds=None, max_steps=20, learning_rate=1e-9, images_per_batch=4
    )
    model = train_pretext_model(images, config)
    assert model.training["start"]["kept"] == "start", model.training["start"]
    start = EdgeSpreadNet().start_weights()
    assert torch.equal(model.branch.head.weight[0], start) and model.branch.head.bias == 0
    assert model.calibration.kind == "isotonic"  # blur's (a line read 2 px as 3)
    assert model.evaluation["metrics"]["spearman"] > 0.9, model.evaluation["metrics"]


def test_ranking_loss_rewards_the_right_order_and_ignores_cross_pairs_at_weight_zero():
    magnitudes = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    right = magnitudes * 5
    assert ranking_loss(right, magnitudes, groups, 0.5, 0.5) < 0.01
    assert ranking_loss(-right, magnitudes, groups, 0.5, 0.5) > 4
    # within each image right, across images wrong (image 1 offset far below image 0)
    offset = right - torch.tensor([0, 0, 0, 100.0, 100, 100])
    assert ranking_loss(offset, magnitudes, groups, 0.0, 0.5) < 0.01
    assert ranking_loss(offset, magnitudes, groups, 1.0, 0.5) > 10


def test_fixed_seed_and_step_budget_give_identical_models():
    images = [dead_leaves_image(i, (120, 100)) for i in range(5)]
    config = TrainingConfig(
        task="noise",
        working_resolution=48,
        max_seconds=None,
        max_steps=6,
        validation_every=3,
        images_per_batch=3,
        magnitudes_per_image=3,
    )
    first = train_pretext_model(images, config)
    second = train_pretext_model(images, config)
    probe = [dead_leaves_image(99, (120, 90))]
    assert first.training["steps"] == 6 and first.training["stop_reason"] == "max_steps"
    assert np.array_equal(first.score_images(probe)[1], second.score_images(probe)[1])


def test_save_and_load_give_identical_scores_and_refuse_pickles(tmp_path):
    images = [dead_leaves_image(i, (120, 100)) for i in range(4)]
    config = TrainingConfig(
        task="blur",
        working_resolution=48,
        max_seconds=None,
        max_steps=4,
        validation_every=2,
        images_per_batch=2,
        magnitudes_per_image=3,
    )
    model = train_pretext_model(images, config, checkpoint_path=str(tmp_path / "ckpt.pt"))
    path = str(tmp_path / "model.pt")
    digest = model.save(path)
    loaded = PretextModel.load(path, expected_sha256=digest)
    sources = [dead_leaves_image(50 + i, (90, 70)) for i in range(3)]
    assert np.array_equal(model.score_images(sources)[1], loaded.score_images(sources)[1])
    assert loaded.training["config"]["task"] == "blur"
    assert loaded.calibration.to_dict() == model.calibration.to_dict()

    with pytest.raises(ModelFileError, match="sha256"):
        PretextModel.load(path, expected_sha256="0" * 64)

    class Payload:
        def __reduce__(self):
            return (print, ("pickle payload executed",))

    evil = str(tmp_path / "evil.pt")
    torch.save({"format": "siamese_quality.pretext_model", "payload": Payload()}, evil)
    with pytest.raises(ModelFileError, match="not a safe"):
        PretextModel.load(evil)


@pytest.mark.parametrize(
    "change, parameter",
    [
        ({"task": "sharpness"}, "task"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"max_seconds": -5}, "max_seconds"),
        ({"working_resolution": 0}, "working_resolution"),
        ({"backbone": "vgg"}, "backbone"),
        ({"epochs": 0}, "epochs"),
        ({"magnitudes_per_image": 1}, "magnitudes_per_image"),
        ({"checkpoint_fraction": 0.5}, "checkpoint_fraction"),
        ({"held_out_fraction": 0.0}, "held_out_fraction"),
        ({"task": "blur", "patch_fraction": 0.5}, "patch_fraction applies to whole-image tasks"),
    ],
)
def test_invalid_parameters_are_refused_naming_the_parameter(change, parameter):
    with pytest.raises(ValueError, match=parameter if parameter != "task" else "Unknown task"):
        train_pretext_model([dead_leaves_image(0, (64, 64))] * 3, TrainingConfig(**change))


def test_training_skips_unreadable_images_and_stops_when_too_few_remain(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    good = [dead_leaves_image(i, (100, 80)) for i in range(4)]
    config = TrainingConfig(
        task="blur",
        working_resolution=48,
        max_seconds=None,
        max_steps=2,
        validation_every=1,
        images_per_batch=2,
        magnitudes_per_image=2,
    )
    model = train_pretext_model([*good, str(broken), str(tmp_path / "missing.png")], config)
    kinds = sorted(s["kind"] for s in model.training["skipped_images"])
    assert kinds == ["missing", "not_an_image"]
    # 6 files plan 2 checkpoint images; 4 readable train with 1 rather than refuse
    assert len(model.training["roles"]["checkpoint"]) == 1
    assert len(model.training["roles"]["train"]) == 1
    with pytest.raises(ValueError, match="Too few readable images.*1 of 3 could be read"):
        train_pretext_model([good[0], str(broken), str(tmp_path / "missing.png")], config)


def test_pretrained_weights_are_refused_up_front_for_backbones_that_have_none():
    """Before any image is read, and saying where such weights do load."""
    for task, why in (("rotation", "a fixed reader"), ("blur", "trains from scratch")):
        with pytest.raises(InvalidOption, match=why) as refused:
            TrainingConfig(task=task, pretrained=True).validate()
        assert refused.value.option == "pretrained"
        assert "load into: resnet18, mobilenet_v3_small" in str(refused.value)
    TrainingConfig(task="rotation", backbone="resnet18", pretrained=True).validate()


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_backbones_load_a_local_pretrained_weights_file(tmp_path, backbone):
    import torchvision.models as tvm

    reference = getattr(tvm, backbone)(weights=None)
    path = tmp_path / f"{backbone}.pth"
    torch.save(reference.state_dict(), path)
    branch = QualityBranch(backbone, pretrained=str(path))
    first_conv = next(k for k in reference.state_dict() if k.endswith("weight"))
    assert torch.equal(branch.encoder.state_dict()[first_conv], reference.state_dict()[first_conv])
    assert branch(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (2,)

    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=f"not {backbone} weights"):
        QualityBranch(backbone, pretrained=str(wrong))


def test_a_backbone_is_one_spec_registration_that_training_and_saving_use(tmp_path):
    """Builder, feature size, normalisation, memory format and head in one record."""
    from torch import nn

    from siamese_quality.core import model as M

    class MeanLevel(nn.Module):  # the mean grey level: enough to rank fades
        out_features = 1

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None]

    def build(pretrained):
        return MeanLevel(), 1

    M.register_backbone(M.BackboneSpec("test_mean_level", build, mean=(0, 0, 0), std=(1, 1, 1)))
    try:
        assert "test_mean_level" in M.BACKBONES  # the train form and messages list it
        config = TrainingConfig(
            task="brightness",
            backbone="test_mean_level",
            working_resolution=48,
            max_seconds=None,
            max_steps=4,
            validation_every=2,
            images_per_batch=2,
        )
        model = train_pretext_model([dead_leaves_image(i, (80, 64)) for i in range(6)], config)
        path = str(tmp_path / "model.pt")
        model.save(path)
        again = PretextModel.load(path)
        assert again.branch.backbone == "test_mean_level"
        assert not again.branch.channels_last  # the spec's default: no convolutions
        images = torch.stack([get_distortion("brightness").apply(_sources(1)[0], 0.0)] * 2)
        assert torch.allclose(again.branch.score(images), model.branch.score(images))
    finally:
        M._BACKBONE_SPECS.pop("test_mean_level", None)
    with pytest.raises(ValueError, match="Unknown backbone 'test_mean_level'"):
        QualityBranch("test_mean_level")


def test_task_defaults_fill_only_the_options_left_open():
    contrast = TrainingConfig(task="contrast").resolved()
    # contrast reads the ends of the tones, so it sees whole images, at twice the usual size
    assert (contrast.backbone, contrast.working_resolution, contrast.patch_fraction) == (
        "tonal_reach",
        256,
        1.0,
    )
    # blur reads 64-px patches at the image's own resolution, 16 per image
    blur = TrainingConfig(task="blur").resolved()
    assert (blur.working_resolution, blur.patch_count) == (64, 16)
    rotation = TrainingConfig(task="rotation").resolved()
    assert (rotation.backbone, rotation.working_resolution) == ("lines_or_edges", 256)
    # a backbone's own size goes with it: the trained edge histogram reads 128 px
    chosen = TrainingConfig(task="rotation", backbone="orientation").resolved()
    assert chosen.working_resolution == 128
    chosen = TrainingConfig(
        task="contrast", backbone="small_cnn", working_resolution=96, patch_fraction=0.5
    ).resolved()
    assert (chosen.backbone, chosen.working_resolution, chosen.patch_fraction) == (
        "small_cnn",
        96,
        0.5,
    )


@pytest.mark.parametrize("factor", [0.5, 0.8])
def test_tonal_front_end_reads_the_contrast_factor_where_the_tones_reach_an_end(factor):
    """The contrast branch's fixed features: each tail's distance from the mean grey."""
    photo = load_image(skimage.data.coffee(), 256)  # its darkest tones reach black
    branch = QualityBranch("tonal")
    contrast = get_distortion("contrast")

    def features(image):  # the encoder's input, as the branch normalises it
        return branch.encoder((image[None].float() - branch.mean) / branch.std)[0]

    untouched, flattened = features(photo), features(contrast.apply(photo, factor))
    boosted = features(contrast.apply(photo, 1.5))
    one_percent = TonalReachNet.TAILS.index(0.01)
    assert untouched[one_percent] > 0.95
    assert flattened[one_percent] / untouched[one_percent] == pytest.approx(factor, abs=0.02)
    clipped_black = 2 * len(TonalReachNet.TAILS)
    assert flattened[clipped_black] == 0 and boosted[clipped_black] > untouched[clipped_black]


def test_contrast_starts_from_the_classical_tonal_reach_of_the_view_it_reads():
    """Contrast's default branch (tonal_reach) starts as the baseline's formula, on the
    same pixels, at every factor: training can only replace it by beating it."""
    photo = load_image(skimage.data.astronaut(), 256)
    branch = QualityBranch("tonal_reach")
    contrast = get_distortion("contrast")
    for factor in (0.4, 1.0, 1.6):
        image = contrast.apply(photo, factor)
        score = float(branch.score(image[None])[0])
        assert score == pytest.approx(tonal_reach(image), abs=1e-4), factor


@pytest.mark.parametrize("damage", [exposure_gain, exposure_gamma])
def test_brightness_starts_from_highlights_and_ranks_exposure_across_photos(damage):
    """Exposure by gain (the highlights go with it) and by a tone curve (they stay), at
    the photos' own resolution: brightness's default branch (exposure_levels), as it
    starts, ranks the added exposure of eight different scenes pooled ahead of their
    mean level, which mixes exposure with how dark each scene is."""
    branch = QualityBranch("exposure_levels")
    rng = np.random.default_rng(0)
    starts, mean_values, stops = [], [], []
    for name in SKIMAGE_COLOR_PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = photo[0] if name == "stereo_motorcycle" else photo  # a stereo pair
        for step in (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5):
            damaged = damage(photo, step, rng) if step else photo
            image = torch.from_numpy(np.ascontiguousarray(damaged)).permute(2, 0, 1)
            starts.append(float(branch.score(image[None])[0]))
            mean_values.append(mean_hsv_value(image))
            stops.append(step)
    start_rank, mean_rank = spearmanr(starts, stops)[0], spearmanr(mean_values, stops)[0]
    assert start_rank > mean_rank + 0.05, (start_rank, mean_rank)


def test_scoring_folds_batch_norm_into_the_convolutions_without_changing_scores():
    torch.manual_seed(0)
    branch = QualityBranch("small_cnn")
    branch(torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8))  # running statistics
    images = torch.randint(0, 256, (40, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = branch.eval()(images)
    branch.train()
    fused = branch.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert torch.allclose(branch.score(images, 16), expected, atol=1e-4)
    assert branch.training  # scoring leaves the branch as it found it
    assert fused.for_inference() is fused  # a dataset's scoring folds the branch once


def test_noise_nuisance_gives_every_copy_of_a_source_the_same_noise():
    """The copies differ only by the distortion, so the ranking cannot learn the noise."""
    augmentation = Augmentation(noise=True)
    copies = [torch.full((3, 32, 32), level, dtype=torch.uint8) for level in (60, 120)]
    noisy = [augmentation.after(copies, np.random.default_rng(seed)) for seed in range(20)]
    changed = [n for n in noisy if not torch.equal(n[0], copies[0])]
    assert 0 < len(changed) < 20  # applied to about half of the sources
    for first, second in changed:  # the same noise, up to rounding
        assert ((first.int() - 60) - (second.int() - 120)).abs().max() <= 1
    assert Augmentation(noise=False).after(copies, np.random.default_rng(0)) == copies


def test_short_contrast_training_ranks_unseen_images_across_images(tmp_path):
    """Contrast's default branch orders flattened and boosted copies of different images
    (blur's short training is measured on real photos: tests/test_native_units.py)."""
    train = write_dead_leaves_images(tmp_path / "train", 12, size=(200, 160), seed=1)
    held_out = write_dead_leaves_images(tmp_path / "test", 6, size=(200, 160), seed=2)
    config = TrainingConfig(
        task="contrast", working_resolution=64, max_seconds=None, max_steps=150, seed=0
    )
    progress = []
    model = train_pretext_model(train, config, progress=progress.append)
    assert progress and set(progress[0]) >= {"step", "loss", "val_spearman", "seconds"}
    assert model.branch.backbone == "tonal_reach"
    report = evaluate_model(model, held_out)
    # pooled over the six images, not only within each (0.975 here, the tonal reach it
    # starts from and keeps; the MLP head over the tails: 0.985; a CNN from scratch: 0.94)
    assert report["metrics"]["spearman"] > 0.95, report["metrics"]


def test_fine_tuned_weights_replace_the_start_only_when_the_checkpoint_images_are_sure():
    rng = np.random.default_rng(0)
    groups, magnitudes = np.repeat(np.arange(6), 9), np.tile(np.arange(9.0), 6)
    checkpoint = EvaluationSet(torch.empty(0), magnitudes, groups)
    start = magnitudes + rng.normal(0, 3, len(magnitudes))  # a noisy reader
    better_everywhere = magnitudes + rng.normal(0, 0.5, len(magnitudes))
    assert fine_tuning_confidence(start, better_everywhere, checkpoint) >= FINE_TUNING_CONFIDENCE
    # the start's readings, except perfect on one image of six: the best of many checks
    # can look like that by luck alone, and a resample without that image shows no gain
    lucky = np.where(groups == 0, magnitudes, start)
    assert fine_tuning_confidence(start, lucky, checkpoint) < FINE_TUNING_CONFIDENCE
    assert fine_tuning_confidence(start, start, checkpoint) == 0.0  # a tie is no gain


def test_a_kept_fine_tuned_model_that_ranks_the_held_out_images_worse_says_so():
    """The checkpoint images choose; the held-out images only report. When they disagree
    the user is told, with both numbers, and nothing else is claimed."""
    worse = fine_tuning_message(0.95, 300, start_spearman=0.92, kept_spearman=0.88)
    assert "best at step 300" in worse and "95%" in worse
    assert "ranks the held-out images worse than the start (0.880 against 0.920)" in worse
    better = fine_tuning_message(0.95, 300, start_spearman=0.88, kept_spearman=0.92)
    assert "worse" not in better
    kept_start = fine_tuning_message(0.5, 0, start_spearman=0.92, kept_spearman=0.92)
    assert "the bundled weights are kept" in kept_start and "50%" in kept_start
    assert "did not beat" in fine_tuning_message(None, 0, 0.9, 0.9)
