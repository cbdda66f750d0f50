"""Training a pretext model: grouped ranking batches, validation, early stopping, budget.

The loss is RankNet's logistic loss on score differences, ``softplus(-(s_i - s_j))``
for every pair whose copy ``i`` got the larger magnitude: the two-branch siamese
classifier ``sigmoid(s_i - s_j)``, evaluated for all pairs of a grouped batch at once.
Pairs of copies of *different* images with clearly different magnitudes are included
at a lower weight: they teach the score an absolute scale shared across images,
which a per-sample quality field needs.
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
import torchvision.transforms.v2.functional as F

from . import __version__
from .calibration import MonotoneCalibration
from .distortions import get_distortion
from .evaluation import EvaluationSet, evaluation_report, magnitude_grid, render_evaluation_set
from .images import ImageLoadError, ImageSource, center_crop, decode, to_tensor
from .model import BACKBONES, QualityBranch, pick_device
from .pairs import Augmentation, GroupedBatch, GroupedBatches
from .pretext_model import PretextModel

ProgressCallback = Callable[[dict], None]


@dataclass
class TrainingConfig:
    """Everything that determines a training run (stored with the model)."""

    task: str = "blur"
    backbone: str | None = None  # None: the task's default (see Distortion.training_defaults)
    pretrained: bool | str = False
    working_resolution: int | None = None  # None: the task's default (128 px for most)
    # side of the training patches as a fraction of the working resolution: smaller
    # views of most of the photo (see pairs.Augmentation), cheaper steps. 1.0: whole
    # images. None: the task's default
    patch_fraction: float | None = None
    max_seconds: float | None = 120.0
    epochs: int | None = None
    max_steps: int | None = None
    images_per_batch: int = 8
    magnitudes_per_image: int = 6
    learning_rate: float | None = None  # None: the task's default
    weight_decay: float = 1e-4
    cross_image_weight: float = 0.5
    cross_image_min_gap: float = 0.15  # fraction of the magnitude range
    validation_fraction: float = 0.25
    validation_every: int = 20
    patience: int = 25
    min_images: int = 2
    seed: int = 0
    device: str | None = None

    def resolved(self) -> TrainingConfig:
        """A copy with every ``None`` default filled in from the task's defaults."""
        defaults = {
            "backbone": "small_cnn",
            "learning_rate": 1e-3,
            "patch_fraction": 1.0,
            "working_resolution": 128,
        }
        defaults.update(get_distortion(self.task).training_defaults)
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **changes)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first invalid parameter."""
        c = self.resolved()  # also checks the task
        if c.backbone not in BACKBONES:
            raise ValueError(f"backbone: unknown {c.backbone!r}; available: {', '.join(BACKBONES)}")
        if not isinstance(c.working_resolution, int) or c.working_resolution < 32:
            raise ValueError(
                f"working_resolution must be an integer >= 32, got {c.working_resolution!r}"
            )
        for name in ("max_seconds", "epochs", "max_steps"):
            value = getattr(c, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if c.max_seconds is None and c.epochs is None and c.max_steps is None:
            raise ValueError("set at least one budget: max_seconds, epochs or max_steps")
        for name in ("images_per_batch", "validation_every", "patience", "min_images"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(c, name)!r}")
        if c.magnitudes_per_image < 2:
            raise ValueError("magnitudes_per_image must be at least 2")
        if not 0 < c.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {c.validation_fraction!r}"
            )
        if not 0 < c.patch_fraction <= 1:
            raise ValueError(f"patch_fraction must be in (0, 1], got {c.patch_fraction!r}")
        if c.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {c.learning_rate!r}")


@dataclass
class TrainingData:
    """Decoded training and validation images, and the ones that could not be read."""

    train: list[torch.Tensor]
    validation: list[torch.Tensor]
    skipped: list[dict] = field(default_factory=list)


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


def prepare_training_data(
    images: Sequence[ImageSource], config: TrainingConfig, augmentation: Augmentation
) -> TrainingData:
    """Decodes the images once, skips unreadable ones, splits train / validation."""
    distortion = get_distortion(config.task)
    short_side = augmentation.source_short_side(distortion, config.working_resolution)
    decoded, skipped = [], []
    for index, source in enumerate(images):
        try:
            decoded.append(to_tensor(decode(source, short_side)))
        except ImageLoadError as e:
            skipped.append({"index": index, "kind": e.kind, "message": str(e)})
    if len(decoded) < max(2, config.min_images):
        kinds = sorted({s["kind"] for s in skipped})
        raise ValueError(
            f"Too few readable images to train: {len(decoded)} of {len(images)} could be read "
            f"(need at least {max(2, config.min_images)})"
            + (f"; unreadable: {', '.join(kinds)}" if kinds else "")
        )
    order = np.random.default_rng(config.seed).permutation(len(decoded))
    n_validation = min(len(decoded) - 1, max(1, round(len(decoded) * config.validation_fraction)))
    square = config.working_resolution * distortion.supersample
    validation = [
        center_crop(F.resize(decoded[i], [square], antialias=True), square)
        for i in order[:n_validation]
    ]
    train = [decoded[i] for i in order[n_validation:]]
    return TrainingData(train=train, validation=validation, skipped=skipped)


def _spearman(scores: np.ndarray, evaluation: EvaluationSet) -> float:
    from scipy.stats import spearmanr

    if np.ptp(scores) == 0:
        return 0.0
    return float(spearmanr(scores, evaluation.magnitudes)[0])


def _budget_used(config: TrainingConfig, step: int, max_steps: float, started: float) -> float:
    """Fraction of the training budget spent: steps or seconds, whichever is further."""
    done = step / max_steps if math.isfinite(max_steps) else 0.0
    if config.max_seconds is not None:
        done = max(done, (time.monotonic() - started) / config.max_seconds)
    return done


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_pretext_model(
    images: Sequence[ImageSource],
    config: TrainingConfig | None = None,
    progress: ProgressCallback | None = None,
    checkpoint_path: str | None = None,
) -> PretextModel:
    """Trains, validates and calibrates a pretext model on unlabeled images.

    Stops at the first of ``max_seconds``, ``epochs``, ``max_steps``, or when the
    validation Spearman has not improved for ``patience`` validations; the best
    validated weights are kept. With a fixed ``seed`` and a step or epoch budget the
    result is reproducible (a time budget stops at a machine-dependent step).

    Args:
        images: image paths, PIL images or uint8 arrays; unreadable ones are skipped
        progress: called with ``{"step", "epoch", "seconds", "loss", "val_spearman",
            "fraction"}`` after each validation (``fraction``: share of the budget used)
        checkpoint_path: if set, the best model so far is saved there during training

    Returns:
        the model, calibrated on the validation images, with ``training`` (config,
        curve, stop reason) and ``evaluation`` (held-out metrics and points)
    """
    config = (config or TrainingConfig()).resolved()
    config.validate()
    _seed_everything(config.seed)
    started = time.monotonic()
    distortion = get_distortion(config.task)
    device = pick_device(config.device)
    augmentation = Augmentation.for_distortion(distortion)
    data = prepare_training_data(images, config, augmentation)

    validation = render_evaluation_set(
        data.validation, distortion, config.working_resolution, magnitude_grid(distortion, 9)
    )
    batches = GroupedBatches(
        data.train,
        distortion,
        config.working_resolution,
        config.images_per_batch,
        config.magnitudes_per_image,
        augmentation,
        seed=config.seed,
        patch_size=max(16, round(config.working_resolution * config.patch_fraction)),
    )
    branch = QualityBranch(config.backbone, config.pretrained).to(device)
    optimizer = torch.optim.AdamW(
        branch.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    max_steps = config.max_steps or math.inf
    if config.epochs is not None:
        max_steps = min(max_steps, config.epochs * batches.batches_per_epoch)
    min_gap = config.cross_image_min_gap * (distortion.high - distortion.low)

    def make_model(state_branch: QualityBranch) -> PretextModel:
        return PretextModel(state_branch, distortion, config.working_resolution)

    history: list[dict] = []
    best = {"spearman": -math.inf, "step": 0, "state": copy.deepcopy(branch.state_dict())}
    step, stale, losses, stop_reason = 0, 0, [], "max_steps"
    while True:
        if step >= max_steps:
            stop_reason = (
                "epochs" if config.epochs is not None and not config.max_steps else "max_steps"
            )
            break
        if config.max_seconds is not None and time.monotonic() - started >= config.max_seconds:
            stop_reason = "max_seconds"
            break
        # Cosine learning-rate decay over the budget (steps or seconds, whichever ends first)
        done = _budget_used(config, step, max_steps, started)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        batch: GroupedBatch = batches.next_batch()
        branch.train()
        scores = branch(batch.images.to(device))
        loss = ranking_loss(
            scores,
            batch.magnitudes.to(device),
            batch.groups.to(device),
            config.cross_image_weight,
            min_gap,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1

        if step % config.validation_every == 0:
            val_scores = branch.score(validation.images).numpy()
            spearman = _spearman(val_scores, validation)
            record = {
                "step": step,
                "epoch": batches.epoch,
                "seconds": round(time.monotonic() - started, 2),
                "loss": float(np.mean(losses[-config.validation_every :])),
                "val_spearman": spearman,
                "fraction": min(1.0, _budget_used(config, step, max_steps, started)),
            }
            history.append(record)
            if progress is not None:
                progress(dict(record))
            if spearman > best["spearman"] + 1e-4:
                best = {
                    "spearman": spearman,
                    "step": step,
                    "state": copy.deepcopy(branch.state_dict()),
                }
                stale = 0
                if checkpoint_path:
                    make_model(branch).save(checkpoint_path)
            else:
                stale += 1
                # some tasks sit on a plateau before they take off: never give up early
                if stale >= config.patience and record["fraction"] >= 0.5:
                    stop_reason = "early_stopping"
                    break

    if history and best["step"] > 0:
        branch.load_state_dict(best["state"])
    branch.eval()
    model = make_model(branch)
    val_scores = model.branch.score(validation.images).numpy().astype(np.float64)
    model.calibration = MonotoneCalibration().fit(
        val_scores, validation.magnitudes, kind="auto", groups=validation.groups
    )
    model.evaluation = evaluation_report(val_scores, validation, config.task)
    model.training = {
        "config": {
            k: (str(v) if k == "pretrained" and not isinstance(v, bool) else v)
            for k, v in asdict(config).items()
        },
        "library_version": __version__,
        "device": str(device),
        "steps": step,
        "best_step": best["step"],
        "stop_reason": stop_reason,
        "seconds": round(time.monotonic() - started, 2),
        "train_images": len(data.train),
        "validation_images": len(data.validation),
        "skipped_images": data.skipped,
        "history": history,
    }
    if checkpoint_path:
        model.save(checkpoint_path)
    return model
