"""Training a pretext model: grouped ranking batches, checkpoint choice, calibration, budget.

The loss is RankNet's logistic loss on score differences, ``softplus(-(s_i - s_j))``
for every pair whose copy ``i`` got the larger magnitude: the two-branch siamese
classifier ``sigmoid(s_i - s_j)``, evaluated for all pairs of a grouped batch at once.
Pairs of copies of *different* images with clearly different magnitudes are included
at a lower weight: they teach the score an absolute scale shared across images,
which a per-sample quality field needs.

The images play three disjoint roles: most train; a few choose the checkpoint (the
step whose weights are kept); the rest, held out from both, fit the calibration and
report the metrics, cross-fitted so that no image calibrates its own prediction.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as nnf

from .. import __version__
from .calibration import MonotoneCalibration, spearman
from .defaults import (
    DefaultModelError,
    default_architecture,
    default_version,
    load_default_model,
)
from .distortions import get_distortion
from .errors import InvalidOption
from .evaluation import (
    EvaluationSet,
    evaluation_report,
    jpeg_reader_report,
    magnitude_grid,
    render_evaluation_set,
)
from .images import ImageFile, ImageLoadError, ImageSource
from .model import BACKBONES, QualityBranch, get_backbone, pick_device
from .pairs import Augmentation, GroupedBatch, GroupedBatches
from .pretext_model import PretextModel
from .views import PatchView, View, branch_scores, view_for

ProgressCallback = Callable[[dict], None]

# Caps on the two held-out roles: beyond these, more images cost time and memory (each
# is rendered at every magnitude of the grid) and change the curve little
MAX_CHECKPOINT_IMAGES = 8
MAX_HELD_OUT_IMAGES = 24
# Local tasks keep random native tiles of each training image, not the image: about
# this many tiles in all (2,048 tiles of 128 px: 100 MB), 8 to 64 per image
TRAINING_TILES = 2048
# init="default": fine-tuned weights replace the bundled start only when they rank the
# checkpoint images better in at least this share of bootstrap resamples of those images.
# The best of many checks beats the start on its own images by chance alone (blur, 120 s:
# kept, then 0.85 against the start's 0.90 on photos neither saw).
FINE_TUNING_CONFIDENCE = 0.9
BOOTSTRAP_RESAMPLES = 500


@dataclass
class TrainingConfig:
    """Everything that determines a training run (stored with the model)."""

    task: str = "blur"
    backbone: str | None = None  # None: the task's default (see Distortion.training_defaults)
    pretrained: bool | str = False
    # local tasks: the side of a native-resolution patch; global tasks: the shorter side
    # of the downscaled image (128 px for most). None: the task's default
    working_resolution: int | None = None
    patch_count: int | None = None  # local tasks: patches per image. None: the task's default
    # global tasks: side of the training crops as a fraction of the working resolution:
    # smaller views of most of the photo (see pairs.Augmentation), cheaper steps. 1.0:
    # whole images. None: the task's default. Local tasks train on whole patches.
    patch_fraction: float | None = None
    max_seconds: float | None = 120.0
    epochs: int | None = None
    max_steps: int | None = None
    images_per_batch: int | None = None  # sources per step. None: the task's default
    magnitudes_per_image: int = 6
    learning_rate: float | None = None  # None: the task's default
    weight_decay: float = 1e-4
    cross_image_weight: float = 0.5
    cross_image_min_gap: float = 0.15  # fraction of the magnitude range (by its spacing)
    checkpoint_fraction: float = 0.1  # images that choose the checkpoint (1 to 8)
    held_out_fraction: float = 0.25  # images that calibrate and report (2 to 24)
    max_images: int = 500  # a random subset of larger collections is used
    validation_every: int = 20
    patience: int = 25
    seed: int = 0
    device: str | None = None
    # "default": start from the task's bundled default model (core.defaults) and keep
    # its architecture; the start competes with the fine-tuned checkpoints
    init: str | None = None

    def resolved(self) -> TrainingConfig:
        """A copy with every ``None`` default filled in from the task's defaults."""
        defaults = {
            "backbone": "small_cnn",
            "learning_rate": 1e-3,
            "patch_fraction": 1.0,
            "working_resolution": 128,
            "patch_count": 16,
            "images_per_batch": 8,
        }
        defaults.update(get_distortion(self.task).training_defaults)
        backbone = self.backbone or defaults["backbone"]
        if backbone in BACKBONES and get_backbone(backbone).working_resolution:
            # the size that backbone reads best at, whichever task chose it
            defaults["working_resolution"] = get_backbone(backbone).working_resolution
        if self.init == "default":
            defaults.update(default_architecture(self.task))
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **changes)

    @property
    def reads_units(self) -> bool:
        """Whether the resolved backbone is a fixed reader of the unit: nothing trains."""
        return get_backbone(self.resolved().backbone).reads_units is not None

    def view(self) -> View:
        """The view the model reads (see :mod:`siamese_quality.views`)."""
        c = self.resolved()
        return view_for(get_distortion(c.task), c.working_resolution, c.patch_count)

    def validate(self) -> None:
        """Raises :class:`~siamese_quality.errors.InvalidOption` naming the first invalid
        parameter."""
        if self.init not in (None, "default"):
            raise InvalidOption("init", f"init must be None or 'default', got {self.init!r}")
        try:
            c = self.resolved()
        except ValueError as e:  # an unknown task
            raise InvalidOption("task", str(e)) from None
        except DefaultModelError as e:
            raise InvalidOption("init", str(e)) from None
        if c.init == "default":
            for name, value in default_architecture(c.task).items():
                if getattr(c, name) != value:
                    raise InvalidOption(
                        name,
                        f"init='default' keeps the bundled {c.task} model's {name} "
                        f"({value!r}); got {getattr(c, name)!r}",
                    )
        self._validate_backbone(c)
        if not isinstance(c.working_resolution, int) or c.working_resolution < 32:
            raise InvalidOption(
                "working_resolution",
                f"working_resolution must be an integer of at least 32 px, got "
                f"{c.working_resolution!r}",
            )
        for name in ("max_seconds", "epochs", "max_steps"):
            value = getattr(c, name)
            if value is not None and not value > 0:
                raise InvalidOption(name, f"{name} must be positive, got {value!r}")
        if c.max_seconds is None and c.epochs is None and c.max_steps is None:
            raise InvalidOption(
                "max_seconds", "set at least one budget: max_seconds, epochs or max_steps"
            )
        for name in ("images_per_batch", "validation_every", "patience", "patch_count"):
            if getattr(c, name) < 1:
                raise InvalidOption(name, f"{name} must be at least 1, got {getattr(c, name)!r}")
        if c.max_images < 4:
            raise InvalidOption(
                "max_images", f"max_images must be at least 4, got {c.max_images!r}"
            )
        if c.magnitudes_per_image < 2:
            raise InvalidOption("magnitudes_per_image", "magnitudes_per_image must be at least 2")
        for name in ("checkpoint_fraction", "held_out_fraction"):
            if not 0 < getattr(c, name) < 0.5:
                raise InvalidOption(name, f"{name} must be in (0, 0.5), got {getattr(c, name)!r}")
        self._validate_patches_and_rate(c)

    @staticmethod
    def _validate_backbone(c: TrainingConfig) -> None:
        if c.backbone not in BACKBONES:
            raise InvalidOption(
                "backbone", f"backbone: unknown {c.backbone!r}; available: {', '.join(BACKBONES)}"
            )
        spec = get_backbone(c.backbone)
        if c.pretrained and not spec.pretrained_weights:
            loads = ", ".join(b for b in BACKBONES if get_backbone(b).pretrained_weights)
            why = "a fixed reader: nothing trains" if spec.reads_units else "it trains from scratch"
            raise InvalidOption(
                "pretrained",
                f"backbone {c.backbone!r} has no pretrained weights ({why}); "
                f"pretrained weights load into: {loads}",
            )

    @staticmethod
    def _validate_patches_and_rate(c: TrainingConfig) -> None:
        if not 0 < c.patch_fraction <= 1:
            raise InvalidOption(
                "patch_fraction", f"patch_fraction must be in (0, 1], got {c.patch_fraction!r}"
            )
        if get_distortion(c.task).local and c.patch_fraction != 1:
            raise InvalidOption(
                "patch_fraction",
                f"patch_fraction applies to whole-image tasks; {c.task!r} trains on its patches",
            )
        if c.learning_rate <= 0:
            raise InvalidOption(
                "learning_rate", f"learning_rate must be positive, got {c.learning_rate!r}"
            )


@dataclass
class TrainingData:
    """Training sources and the two held-out roles, rendered at every magnitude."""

    train: list[torch.Tensor]  # whole images (global tasks) or native tiles (local tasks)
    checkpoint: EvaluationSet  # chooses the checkpoint
    held_out: EvaluationSet  # fits the calibration and reports the metrics
    # role -> indices into the given images ("train", "checkpoint", "held_out")
    roles: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {role: len(indices) for role, indices in self.roles.items()}


def ranking_loss(
    scores: torch.Tensor,
    magnitudes: torch.Tensor,
    groups: torch.Tensor,
    cross_image_weight: float,
    cross_image_min_gap: float,
) -> torch.Tensor:
    """Weighted mean logistic ranking loss over all informative pairs of a batch."""
    score_diff = scores[:, None] - scores[None, :]
    magnitude_diff = magnitudes[:, None] - magnitudes[None, :]
    upper = torch.ones_like(score_diff, dtype=torch.bool).triu(1)
    same_image = groups[:, None] == groups[None, :]
    within = upper & same_image & (magnitude_diff != 0)
    cross = upper & ~same_image & (magnitude_diff.abs() >= cross_image_min_gap)
    weights = within.float() + cross_image_weight * cross.float()
    pair_loss = nnf.softplus(-torch.sign(magnitude_diff) * score_diff)
    return (pair_loss * weights).sum() / weights.sum().clamp(min=1.0)


def role_sizes(count: int, config: TrainingConfig) -> tuple[int, int]:
    """(checkpoint images, held-out images) for ``count`` images.

    Two checkpoint images where the set allows: one image's copies only rank within
    that image, and cannot tell whether scores agree across photos, which is what a
    score sorted over a dataset needs (12 small images, seeds 0-2: pooled held-out
    Spearman 0.80, 0.87, 0.90 -> 0.86, 0.90, 0.91).
    """
    held_out = min(MAX_HELD_OUT_IMAGES, max(2, round(count * config.held_out_fraction)))
    fewest = 2 if count >= 2 + held_out + 1 else 1
    checkpoint = min(MAX_CHECKPOINT_IMAGES, max(fewest, round(count * config.checkpoint_fraction)))
    return checkpoint, held_out


def _training_source(
    image: ImageFile, view: View, augmentation: Augmentation, tiles: int, rng
) -> list[torch.Tensor]:
    if isinstance(view, PatchView):
        native = image.native_tensor()
        return [view.random_tile(native, rng) for _ in range(tiles)]
    if view.stored_levels:
        return [view.source(image, augmentation.source_short_side(view))]
    return [image.whole(augmentation.source_short_side(view))]


def prepare_training_data(
    images: Sequence[ImageSource], config: TrainingConfig, augmentation: Augmentation
) -> TrainingData:
    """Reads each image once, in a seeded random order, and gives it its role.

    The first readable images choose the checkpoint, the next are held out to calibrate
    and report, the rest train; unreadable ones are skipped and recorded. Each image's
    decode is dropped once its role has what it needs, so memory stays flat.
    """
    config = config.resolved()
    distortion, view = get_distortion(config.task), config.view()
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(images))[: config.max_images]
    n_checkpoint, n_held_out = role_sizes(len(order), config)
    tiles = max(8, min(64, TRAINING_TILES // max(1, len(order) - n_checkpoint - n_held_out)))
    grid = magnitude_grid(distortion, 9)
    roles: dict[str, list] = {"checkpoint": [], "held_out": [], "train": []}
    indices: dict[str, list[int]] = {role: [] for role in roles}
    skipped = []
    for index in order:
        image = ImageFile(images[index])
        try:
            image.native_tensor() if view.reads_native else image.reduced()
        except ImageLoadError as e:
            skipped.append({"index": int(index), "kind": e.kind, "message": str(e)})
            continue
        if len(roles["checkpoint"]) < n_checkpoint:
            role = "checkpoint"
            roles[role].append(render_evaluation_set([image], distortion, view, grid))
        elif len(roles["held_out"]) < n_held_out:
            role = "held_out"
            roles[role].append(render_evaluation_set([image], distortion, view, grid))
        else:
            role = "train"
            roles[role].append(_training_source(image, view, augmentation, tiles, rng))
        indices[role].append(int(index))
    _give_up_a_checkpoint_image(roles, indices, n_held_out, images, view, augmentation, tiles, rng)
    if not roles["train"]:
        readable = len(order) - len(skipped)
        kinds = sorted({s["kind"] for s in skipped})
        raise ValueError(
            f"Too few readable images to train: {readable} of {len(order)} could be read "
            f"(need at least {n_held_out + 2}: 1 to choose the checkpoint,"
            f" {n_held_out} to calibrate and report, and 1 or more to train)"
            + (f"; unreadable: {', '.join(kinds)}" if kinds else "")
        )
    return TrainingData(
        train=[source for sources in roles["train"] for source in sources],
        checkpoint=_concatenate(roles["checkpoint"]),
        held_out=_concatenate(roles["held_out"]),
        roles=indices,
        skipped=skipped,
    )


def _give_up_a_checkpoint_image(
    roles, indices, n_held_out: int, images, view, augmentation, tiles: int, rng
) -> None:
    """Unreadable files left a role short: the second checkpoint image fills it, held-out
    first (its copies are rendered alike), else it trains."""
    if len(roles["checkpoint"]) > 1 and len(roles["held_out"]) < n_held_out:
        roles["held_out"].append(roles["checkpoint"].pop())
        indices["held_out"].append(indices["checkpoint"].pop())
    if len(roles["checkpoint"]) > 1 and not roles["train"]:
        roles["checkpoint"].pop()
        index = indices["checkpoint"].pop()
        image = ImageFile(images[index])
        roles["train"].append(_training_source(image, view, augmentation, tiles, rng))
        indices["train"].append(index)


def _concatenate(sets: list[EvaluationSet]) -> EvaluationSet:
    return EvaluationSet(
        torch.cat([s.images for s in sets]),
        np.concatenate([s.magnitudes for s in sets]),
        np.concatenate([np.full(len(s), i) for i, s in enumerate(sets)]),
    )


def _budget_used(run: _Run) -> float:
    """Fraction of the run's budget spent: steps or seconds, whichever is further."""
    done = run.step / run.max_steps if math.isfinite(run.max_steps) else 0.0
    if run.seconds is not None:
        done = max(done, (time.monotonic() - run.started) / run.seconds)
    return done


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Run:
    """The state of a training loop."""

    config: TrainingConfig
    view: View
    branch: QualityBranch
    batches: GroupedBatches
    checkpoint: EvaluationSet
    device: torch.device
    started: float
    max_steps: float
    seconds: float | None  # its share of max_seconds (half each where a task has two readers)
    step: int = 0
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    stop_reason: str = "max_steps"
    # the weights it started from, a checkpoint candidate that training must beat:
    # init="default"'s bundled model, or a linear head's classical reading
    start_state: dict | None = None


def _step(run: _Run, optimizer: torch.optim.Optimizer) -> float:
    """One optimisation step on a grouped batch, cosine learning-rate decay over the budget."""
    config = run.config
    done = _budget_used(run)
    for group in optimizer.param_groups:
        group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
    batch: GroupedBatch = run.batches.next_batch()
    run.epoch = batch.epoch
    run.branch.train()
    scores = run.branch(batch.images.to(run.device))
    # positions along the range (by the distortion's spacing): the same order, and the
    # cross-image gap is a fraction of the range as the spacing measures it
    positions = run.batches.distortion.position(batch.magnitudes).float()
    loss = ranking_loss(
        scores,
        positions.to(run.device),
        batch.groups.to(run.device),
        config.cross_image_weight,
        config.cross_image_min_gap,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    run.step += 1
    return loss.item()


def _check(run: _Run, losses: list[float]) -> dict:
    """Scores the checkpoint images and records the step."""
    scores = branch_scores(run.branch, run.checkpoint.images, run.view)
    positions = run.batches.distortion.position(torch.as_tensor(run.checkpoint.magnitudes))
    config = run.config
    val_loss = ranking_loss(
        scores,
        positions.float(),
        torch.as_tensor(run.checkpoint.groups),
        config.cross_image_weight,
        config.cross_image_min_gap,
    )
    scores = scores.numpy()
    return {
        "step": run.step,
        "epoch": run.epoch,
        "seconds": round(time.monotonic() - run.started, 2),
        "loss": float(np.mean(losses[-run.config.validation_every :])) if losses else None,
        "val_spearman": spearman(scores, run.checkpoint.magnitudes),
        "val_loss": float(val_loss),
        "fraction": min(1.0, _budget_used(run)),
    }


def _better_checkpoint(record: dict, best: dict) -> bool:
    """A higher checkpoint Spearman wins; at a tie, the lower ranking loss.

    A few checkpoint images rank their copies perfectly within a few steps, and a
    Spearman stuck at 1.0 cannot tell an early model from a better-separated later one.
    """
    if record["val_spearman"] > best["spearman"] + 1e-4:
        return True
    tied = record["val_spearman"] >= best["spearman"] - 1e-4
    return tied and record["val_loss"] < best["loss"] * (1 - 1e-3)


def _fit(run: _Run, progress: ProgressCallback | None, save_best: Callable[[], None]) -> None:
    """Trains until a budget ends or the checkpoint images stop improving; keeps the best."""
    config = run.config
    optimizer = torch.optim.AdamW(
        run.branch.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    run.best = {
        "spearman": -math.inf,
        "loss": math.inf,
        "step": 0,
        "state": copy.deepcopy(run.branch.state_dict()),
    }
    if get_backbone(run.branch.backbone).reads_units:
        # a fixed reader, from scratch or bundled: nothing to learn, and a learned scale
        # would no longer read the unit its identity calibration assumes
        run.stop_reason = "reads_units"
        return
    if run.start_state is not None:  # the start is a checkpoint like any other
        record = _check(run, [])
        run.history.append(record)
        run.best.update(spearman=record["val_spearman"], loss=record["val_loss"], checked=True)
    stale, losses = 0, []
    while True:
        if run.step >= run.max_steps:
            run.stop_reason = (
                "epochs" if config.epochs is not None and not config.max_steps else "max_steps"
            )
            return
        if run.seconds is not None and time.monotonic() - run.started >= run.seconds:
            run.stop_reason = "max_seconds"
            return
        losses.append(_step(run, optimizer))
        if run.step % config.validation_every:
            continue
        record = _check(run, losses)
        run.history.append(record)
        if progress is not None:
            progress(dict(record))
        if _better_checkpoint(record, run.best):
            state = copy.deepcopy(run.branch.state_dict())
            run.best = {
                "spearman": record["val_spearman"],
                "loss": record["val_loss"],
                "step": run.step,
                "state": state,
            }
            stale = 0
            save_best()
        else:
            stale += 1
            # some tasks sit on a plateau before they take off: never give up early
            if stale >= config.patience and record["fraction"] >= 0.5:
                run.stop_reason = "early_stopping"
                return


def calibrate_and_report(model: PretextModel, held_out: EvaluationSet) -> None:
    """Fits ``model``'s calibration on the held-out images and reports its metrics there.

    The stored calibration uses every held-out image; the reported Pearson and MAE come
    from two-fold cross-fitting over them (each half predicted by a calibration fitted
    on the other half), Spearman from the raw scores, which calibration cannot reorder.
    """
    scores = branch_scores(model.branch, held_out.images, model.view).numpy().astype(np.float64)
    span = get_backbone(model.branch.backbone).reads_units
    if span is not None:  # already in the unit: these images only measure it
        model.calibration = MonotoneCalibration.identity(span, scores, held_out.magnitudes)
        model.evaluation = evaluation_report(
            scores, held_out, model.task, calibration=model.calibration
        )
        return
    model.calibration = MonotoneCalibration().fit(
        scores, held_out.magnitudes, kind=model.distortion.calibration_kind, groups=held_out.groups
    )
    model.evaluation = evaluation_report(scores, held_out, model.task)


def train_pretext_model(
    images: Sequence[ImageSource],
    config: TrainingConfig | None = None,
    progress: ProgressCallback | None = None,
    checkpoint_path: str | None = None,
) -> PretextModel:
    """Trains, chooses a checkpoint and calibrates a pretext model on unlabeled images.

    Stops at the first of ``max_seconds``, ``epochs``, ``max_steps``, or when the
    checkpoint images' Spearman has not improved for ``patience`` checks; the best
    checked weights are kept. With a fixed ``seed`` and a step or epoch budget the
    result is reproducible (a time budget stops at a machine-dependent step).

    Args:
        images: image paths, PIL images or uint8 arrays; unreadable ones are skipped
        progress: called with ``{"step", "epoch", "seconds", "loss", "val_spearman",
            "fraction"}`` after each check (``fraction``: share of the budget used)
        checkpoint_path: if set, the best model so far is saved there during training

    A task with a JPEG-file reader (``Distortion.jpeg_file_reader``: noise) trains it
    after the first, on the same images and roles, each for half of ``max_seconds``;
    partial work saved at ``checkpoint_path`` is the first reader's.

    Returns:
        the model, calibrated on held-out images, with ``training`` (config, curve, stop
        reason, roles; ``start``: whether a branch that starts as a classical reading
        kept it; ``jpeg_file_reader``: that reader's steps and held-out metrics) and
        ``evaluation`` (metrics on the held-out images and points)
    """
    config = (config or TrainingConfig()).resolved()
    config.validate()
    _seed_everything(config.seed)
    started = time.monotonic()
    distortion = get_distortion(config.task)
    readers = 2 if _trains_jpeg_file_reader(config) else 1
    augmentation = Augmentation.for_distortion(distortion)
    data = prepare_training_data(images, config, augmentation)
    seconds = None if config.max_seconds is None else config.max_seconds / readers
    run = _start_run(config, data, augmentation, started, seconds)

    def save_best() -> None:  # called when the current weights are the best so far
        if checkpoint_path:
            PretextModel(run.branch, run.batches.distortion, run.view).save(checkpoint_path)

    _fit(run, _share_of(progress, 0, readers), save_best)
    model = _calibrated_best(run, data)
    if readers == 2:
        deadline = None if config.max_seconds is None else started + config.max_seconds
        second_progress = _share_of(progress, 1, readers)
        model.jpeg_reader = _jpeg_file_reader(config, data, deadline, second_progress)
        model.training["jpeg_file_reader"] = _reader_summary(model.jpeg_reader, data.held_out)
    if checkpoint_path:
        model.save(checkpoint_path)
    return model


def _calibrated_best(run: _Run, data: TrainingData, against_start: bool = True) -> PretextModel:
    """The run's kept weights (the start's, where fine-tuning did not beat it), calibrated
    and reported on the held-out images, with the run's training record (and, for
    init="default" and ``against_start``, the bundled model's numbers beside them)."""
    config = run.config
    confidence = _settle_start_or_fine_tuned(run) if run.start_state is not None else None
    model = _best_model(run)
    calibrate_and_report(model, data.held_out)
    model.evaluation["protocol"] = _protocol(data, get_backbone(config.backbone).reads_units)
    model.training = _training_record(run, data)
    if config.init == "default" and against_start:
        model.training["init"] = _against_the_start(run, data, model, confidence)
    elif run.start_state is not None:
        model.training["start"] = {
            "kept": "start" if run.best["step"] == 0 else "trained",
            "confidence": confidence,
        }
    return model


def _trains_jpeg_file_reader(config: TrainingConfig) -> bool:
    """Whether the task has a JPEG-file reader to train (a fixed reader trains none)."""
    reads_units = get_backbone(config.backbone).reads_units is not None
    return get_distortion(config.task).jpeg_file_reader and not reads_units


def _jpeg_file_reader(
    config: TrainingConfig,
    data: TrainingData,
    deadline: float | None,
    progress: ProgressCallback | None,
) -> PretextModel:
    """The task's second reader (``Distortion.jpeg_file_reader``): the same images in the
    same roles, half of its training copies saved as a JPEG; its checkpoint is chosen and
    its calibration fitted on the same unsaved copies as the first reader's, so that a
    reader that learned to see through the save reads the same unit. It trains for the
    rest of ``max_seconds``; a step or epoch budget is each reader's own."""
    augmentation = Augmentation.for_distortion(get_distortion(config.task), jpeg_saves=True)
    started = time.monotonic()
    seconds = None if deadline is None else max(1.0, deadline - started)
    run = _start_run(config, data, augmentation, started, seconds, jpeg_files=True)
    _fit(run, progress, lambda: None)
    return _calibrated_best(run, data, against_start=False)


def _reader_summary(reader: PretextModel, held_out: EvaluationSet) -> dict:
    """What the main model's training record says of its JPEG-file reader: its held-out
    metrics on the unsaved copies (beside the first reader's), and on the same copies
    saved as a JPEG at 95, as it reads a user's files (cross-fitted there: its stored
    calibration was fitted on the unsaved copies of these images)."""
    training = reader.training
    saved = jpeg_reader_report(
        reader, held_out, use_model_calibration=False, include_baseline=False
    )
    return {
        "steps": training.get("steps"),
        "best_step": training.get("best_step"),
        "stop_reason": training.get("stop_reason"),
        "seconds": training.get("seconds"),
        "metrics": reader.evaluation.get("metrics", {}),
        "saved_quality": saved["saved_quality"],
        "saved_metrics": saved["metrics"],
    }


def _share_of(
    progress: ProgressCallback | None, index: int, readers: int
) -> ProgressCallback | None:
    """``progress`` for the ``index``-th of ``readers`` runs: its fraction of the whole."""
    if progress is None or readers == 1:
        return progress

    def report(record: dict) -> None:
        progress({**record, "fraction": (index + record["fraction"]) / readers})

    return report


def _start_run(
    config: TrainingConfig,
    data: TrainingData,
    augmentation: Augmentation,
    started: float,
    seconds: float | None,
    jpeg_files: bool = False,
) -> _Run:
    """A new branch, its batches of training copies and its step budget (``jpeg_files``:
    the JPEG-file reader's, which starts from the bundled model's own)."""
    distortion, view = get_distortion(config.task), config.view()
    batches = GroupedBatches(
        data.train,
        distortion,
        view,
        config.images_per_batch,
        config.magnitudes_per_image,
        augmentation,
        seed=config.seed,
        patch_size=max(16, round(config.working_resolution * config.patch_fraction)),
    )
    max_steps = config.max_steps or math.inf
    if config.epochs is not None:
        max_steps = min(max_steps, config.epochs * batches.batches_per_epoch)
    device = pick_device(config.device)
    start_state = None
    if config.init == "default":
        start = load_default_model(config.task)
        if jpeg_files and start.jpeg_reader is not None:
            start = start.jpeg_reader
        branch = start.branch.to(device)
        start_state = copy.deepcopy(branch.state_dict())
    else:
        branch = QualityBranch(config.backbone, config.pretrained).to(device)
        if get_backbone(config.backbone).head == "linear":
            # it starts as a classical reading, which training must beat to replace
            start_state = copy.deepcopy(branch.state_dict())
    return _Run(
        config,
        view,
        branch,
        batches,
        data.checkpoint,
        device,
        started,
        max_steps,
        seconds,
        start_state=start_state,
    )


def fine_tuning_confidence(
    start_scores: np.ndarray, tuned_scores: np.ndarray, evaluation: EvaluationSet, seed: int = 0
) -> float:
    """The share of bootstrap resamples of ``evaluation``'s images (each drawn with all
    its copies) on which ``tuned_scores`` rank the magnitudes better (pooled Spearman)
    than ``start_scores``: how sure those images are that fine-tuning helped."""
    members = [np.flatnonzero(evaluation.groups == g) for g in np.unique(evaluation.groups)]
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(BOOTSTRAP_RESAMPLES):
        drawn = rng.integers(0, len(members), len(members))
        pick = np.concatenate([members[i] for i in drawn])
        truth = evaluation.magnitudes[pick]
        wins += spearman(tuned_scores[pick], truth) > spearman(start_scores[pick], truth)
    return wins / BOOTSTRAP_RESAMPLES


def _settle_start_or_fine_tuned(run: _Run) -> float | None:
    """init="default": keeps the best fine-tuned weights only if the checkpoint images
    are sure enough that they beat the start (``FINE_TUNING_CONFIDENCE``); otherwise the
    start becomes the run's best again. Returns that confidence (None: the start was
    already the best)."""
    if run.best["step"] == 0:
        return None
    scores = {}
    for name, state in (("start", run.start_state), ("tuned", run.best["state"])):
        branch = copy.deepcopy(run.branch)
        branch.load_state_dict(state)
        scores[name] = branch_scores(branch.eval(), run.checkpoint.images, run.view).numpy()
    confidence = fine_tuning_confidence(
        scores["start"], scores["tuned"], run.checkpoint, run.config.seed
    )
    if confidence < FINE_TUNING_CONFIDENCE:
        start_spearman = run.history[0]["val_spearman"]
        run.best = {
            "spearman": start_spearman,
            "loss": run.history[0]["val_loss"],
            "step": 0,
            "state": run.start_state,
            "checked": True,
        }
    return confidence


def fine_tuning_message(
    confidence: float | None,
    kept_step: int,
    start_spearman: float | None,
    kept_spearman: float | None,
) -> str:
    """What a fine-tuning run kept and why, for a user. The checkpoint images decide;
    the held-out images only report, so a kept fine-tuned model that ranks them worse
    than the start is said to, not swapped back (choosing on them would make them
    report their own choice)."""
    if confidence is None:
        return (
            "fine-tuning did not beat the bundled start on the checkpoint images: the "
            "bundled weights are kept, calibrated on these images"
        )
    if kept_step == 0:
        return (
            f"fine-tuned weights beat the bundled start on the checkpoint images in only "
            f"{confidence:.0%} of resamples of them ({FINE_TUNING_CONFIDENCE:.0%} needed): "
            "the bundled weights are kept, calibrated on these images"
        )
    message = (
        f"fine-tuned from the bundled model (best at step {kept_step}; better than the "
        f"start in {confidence:.0%} of resamples of the checkpoint images)"
    )
    if start_spearman is not None and kept_spearman is not None and kept_spearman < start_spearman:
        message += (
            f"; but it ranks the held-out images worse than the start ({kept_spearman:.3f} "
            f"against {start_spearman:.3f}): compare both on your images before relying on it"
        )
    return message


def _against_the_start(
    run: _Run, data: TrainingData, model: PretextModel, confidence: float | None
) -> dict:
    """init="default": the bundled start's held-out numbers beside the kept model's, on
    the same held-out images, and which of the two the checkpoint images kept."""
    start = load_default_model(run.config.task)
    version = default_version(start)
    calibrate_and_report(start, data.held_out)  # on this dataset's held-out images
    kept_start = run.best["step"] == 0
    start_metrics = start.evaluation.get("metrics", {})
    metrics = model.evaluation.get("metrics", {})
    if run.stop_reason == "reads_units":
        message = (
            "the bundled reader is fixed (it reads the unit itself, nothing trains): kept "
            "as it is, measured on these held-out images"
        )
    else:
        message = fine_tuning_message(
            confidence, run.best["step"], start_metrics.get("spearman"), metrics.get("spearman")
        )
    return {
        "from": f"bundled default model v{version}",
        "version": version,
        "kept": "start" if kept_start else "fine-tuned",
        "confidence": confidence,
        "start_metrics": start_metrics,
        "metrics": metrics,
        "message": message,
    }


def _best_model(run: _Run) -> PretextModel:
    """The run's best checked weights (the current ones before the first check), in eval
    mode, as an uncalibrated model."""
    branch = copy.deepcopy(run.branch)
    if run.history and (run.best.get("step", 0) > 0 or run.best.get("checked")):
        branch.load_state_dict(run.best["state"])
    return PretextModel(branch.eval(), run.batches.distortion, run.view)


def _protocol(data: TrainingData, reads_units: tuple[float, float] | None = None) -> dict:
    calibration = (
        "fitted on the held-out images, which neither trained the model nor chose its "
        "checkpoint; Pearson and MAE are two-fold cross-fitted over them (no image "
        "calibrates its own prediction)"
    )
    if reads_units is not None:
        calibration = (
            "none fitted: the reader's value is the magnitude (identity); the held-out "
            "images only measure it and set the error band"
        )
    return {
        "checkpoint_images": data.counts["checkpoint"],
        "held_out_images": data.counts["held_out"],
        "train_images": data.counts["train"],
        "calibration": calibration,
    }


def _training_record(run: _Run, data: TrainingData) -> dict:
    config = run.config
    return {
        "config": {
            k: (str(v) if k == "pretrained" and not isinstance(v, bool) else v)
            for k, v in asdict(config).items()
        },
        "library_version": __version__,
        "device": str(run.device),
        "steps": run.step,
        "best_step": run.best["step"],
        "stop_reason": run.stop_reason,
        "seconds": round(time.monotonic() - run.started, 2),
        "train_images": data.counts["train"],
        "checkpoint_images": data.counts["checkpoint"],
        "held_out_images": data.counts["held_out"],
        "train_sources": len(data.train),
        # which of the given images played which role (indices; the SDK stores sample ids)
        "roles": data.roles,
        "skipped_images": data.skipped,
        "history": run.history,
    }
