"""Trains one pretext model per task and measures it on held-out real photos.

    python benchmarks/pretext_quality.py --train-images DIR --test-images DIR \
        --tasks blur,brightness,rotation,noise,jpeg,contrast,pixelation \
        --max-seconds 120 --json OUT.json [--seeds 0,1,2]

Without --train-images/--test-images the eight colour photos that scikit-image ships
are split 5 / 3, every third photo held out so both sides mix everyday photos with
scientific images (astronomy, microscopy, retina). Each model is calibrated on its
own validation images (taken from the training images), so the test images take
part in nothing but the measurement. The classical baseline and the model on an
independent implementation of the distortion are measured on the same test images
in the same run. --train-skimage-grayscale adds the ten grayscale photos scikit-image
ships (camera, coins, moon, page, text, clock, brick, grass, gravel, cell) to the
training images: more varied content, never any of the colour test photos.

--folds N replaces --test-images with cross-validation: the photos of the first
--train-images folder, sorted by name, are split by index (i % N), and each fold in turn
is the test set of models trained on everything else given (the other folds, the other
folders, the grayscale photos). One test set of a few photos decides little; the folds
show how much a result depends on which photos are held out:

    python benchmarks/pretext_quality.py --train-images ../shared/photos /tmp/photos_skimage \
        --train-skimage-grayscale --folds 3 --tasks contrast --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from tables import print_table as print_columns

from siamese_quality.core.distortions import list_distortions
from siamese_quality.core.evaluation import evaluate_model
from siamese_quality.core.texts import PUBLISHED_CORRELATIONS as PUBLISHED
from siamese_quality.core.training import TrainingConfig, train_pretext_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


SKIMAGE_FOLDER = os.path.join(tempfile.gettempdir(), "siamese_quality_skimage")


def images_in(*folders: str) -> list[str]:
    paths = []
    for folder in folders:
        found = sorted(
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_SUFFIXES)
        )
        if not found:
            sys.exit(f"no images in {folder}")
        paths += found
    return paths


def skimage_split() -> tuple[list[str], list[str]]:
    from siamese_quality.demo import write_skimage_photos

    paths = write_skimage_photos(SKIMAGE_FOLDER)
    test = paths[1::3]
    return [p for p in paths if p not in test], test


def skimage_grayscale_photos() -> list[str]:
    from siamese_quality.demo import SKIMAGE_GRAYSCALE_PHOTOS, write_skimage_photos

    return write_skimage_photos(SKIMAGE_FOLDER, SKIMAGE_GRAYSCALE_PHOTOS)


def fold_splits(
    folders: list[str], folds: int, extra_train: list[str]
) -> list[tuple[str, list[str], list[str]]]:
    """(name, train, test) per fold of the first folder's photos, split by index."""
    photos = images_in(folders[0])
    if len(photos) < folds:
        sys.exit(f"--folds {folds} needs at least {folds} photos in {folders[0]}")
    others = images_in(*folders[1:])
    splits = []
    for fold in range(folds):
        test = [p for i, p in enumerate(photos) if i % folds == fold]
        rest = [p for i, p in enumerate(photos) if i % folds != fold]
        splits.append((f"fold {fold}", rest + others + extra_train, test))
    return splits


def run_task(task: str, seed: int, train: list[str], test: list[str], args) -> dict:
    config = TrainingConfig(
        task=task,
        max_seconds=args.max_seconds,
        seed=seed,
        working_resolution=args.working_resolution,
        backbone=args.backbone,
    )
    started = time.monotonic()
    model = train_pretext_model(train, config)
    train_seconds = time.monotonic() - started
    ours = evaluate_model(model, test)
    alternative = evaluate_model(model, test, implementation="alternative")
    baseline = ours["baseline"]
    return {
        "task": task,
        "seed": seed,
        "test_photos": [os.path.basename(p) for p in test],
        "unit": model.unit,
        "published": PUBLISHED.get(task),
        "pearson": ours["metrics"]["pearson"],
        "spearman": ours["metrics"]["spearman"],
        "per_image_spearman": ours["metrics"]["per_image_spearman"],
        "mae": ours["metrics"]["mae"],
        "raw_pearson": ours["metrics"]["raw_pearson"],
        "baseline_name": baseline["name"] if baseline else None,
        "baseline_pearson": baseline["pearson"] if baseline else None,
        "baseline_spearman": baseline["spearman"] if baseline else None,
        "baseline_mae": baseline["mae"] if baseline else None,
        "alternative_pearson": alternative["metrics"]["pearson"],
        "alternative_spearman": alternative["metrics"]["spearman"],
        "validation_spearman": model.evaluation["metrics"]["spearman"],
        "train_seconds": train_seconds,
        "backbone": model.branch.backbone,
        "steps": model.training["steps"],
        "stop_reason": model.training["stop_reason"],
    }


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def beats_baseline(row: dict) -> bool:
    return row["baseline_spearman"] is None or row["spearman"] > row["baseline_spearman"]


def target_met(row: dict) -> bool:
    """The issue's target: beat the write-up and the baseline, else Spearman >= 0.9."""
    if row["published"] is not None:
        return row["pearson"] > row["published"] and beats_baseline(row)
    return row["spearman"] >= 0.9


def print_seed_summary(rows: list[dict]) -> None:
    """Per task run several times (seeds, folds): the spread, and how often it met the target."""
    for task in dict.fromkeys(r["task"] for r in rows):
        runs = [r for r in rows if r["task"] == task]
        if len(runs) < 2:
            continue
        spearman = [r["spearman"] for r in runs]
        seeds = len({r["seed"] for r in runs})
        test_sets = len({r["test_set"] for r in runs})
        over = f"{seeds} seed{'s' * (seeds != 1)}"
        if test_sets > 1:
            over += f" x {test_sets} test sets"
        print(
            f"{task}: Spearman min {min(spearman):.3f}, mean {sum(spearman) / len(runs):.3f}, "
            f"max {max(spearman):.3f} over {over}; "
            f"target met in {sum(map(target_met, runs))} of {len(runs)}"
        )


def print_table(rows: list[dict]) -> None:
    header = (
        "task",
        "test",
        "seed",
        "published r",
        "ours Pearson",
        "ours Spearman",
        "baseline Spearman",
        "beats baseline",
        "alt-impl Spearman",
        "MAE (unit)",
        "baseline MAE",
        "train s",
        "target",
    )
    lines = []
    for r in rows:
        lines.append(
            (
                r["task"],
                r["test_set"],
                str(r["seed"]),
                _fmt(r["published"]),
                _fmt(r["pearson"]),
                _fmt(r["spearman"]),
                _fmt(r["baseline_spearman"]),
                "-" if r["baseline_spearman"] is None else "yes" if beats_baseline(r) else "no",
                _fmt(r["alternative_spearman"]),
                f"{_fmt(r['mae'], 2)} {r['unit']}",
                _fmt(r["baseline_mae"], 2),
                f"{r['train_seconds']:.0f}",
                "met" if target_met(r) else "MISSED",
            )
        )
    print_columns(header, lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; adds ``seed_list``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-images", nargs="+", help="folder(s) of training photos")
    parser.add_argument("--test-images", help="folder of held-out test photos")
    parser.add_argument(
        "--tasks",
        default="blur,brightness,rotation",
        help=f"comma-separated, from: {','.join(list_distortions())}",
    )
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument(
        "--working-resolution", type=int, default=None, help="default: each task's own"
    )
    parser.add_argument("--backbone", default=None, help="default: each task's own default")
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated; each task is trained once per seed (a target is dependable "
        "when every seed meets it)",
    )
    parser.add_argument(
        "--train-skimage-grayscale",
        action="store_true",
        help="also train on the grayscale photos scikit-image ships (camera, moon, cell, ...)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="instead of --test-images: split the first --train-images folder into this "
        "many folds and test on each in turn",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if not args.seed_list:
        parser.error(f"--seeds names no seed, got {args.seeds!r}")
    if args.folds:
        if args.folds < 2:
            parser.error(f"--folds takes 2 or more, got {args.folds}")
        if not args.train_images or args.test_images:
            parser.error(
                "--folds takes --train-images (its first folder is split) and no --test-images"
            )
    elif bool(args.train_images) != bool(args.test_images):
        parser.error("give both --train-images and --test-images, or neither")
    return args


def photo_splits(args: argparse.Namespace) -> list[tuple[str, list[str], list[str]]]:
    """(name, training photos, test photos) per test set; written to disk only now that
    the arguments are known to be good."""
    grayscale = skimage_grayscale_photos() if args.train_skimage_grayscale else []
    if args.folds:
        return fold_splits(args.train_images, args.folds, grayscale)
    train, test = (
        (images_in(*args.train_images), images_in(args.test_images))
        if args.train_images
        else skimage_split()
    )
    return [("held out", train + grayscale, test)]


def save_json(args: argparse.Namespace, splits: list, rows: list[dict]) -> None:
    """Everything measured so far (after every run: a long benchmark keeps it)."""
    train_counts = [len(train) for _, train, _ in splits]
    test_counts = [len(test) for _, _, test in splits]
    summary = {  # one number per split with --folds, else one number
        "train_images": train_counts if args.folds else train_counts[0],
        "test_images": test_counts if args.folds else test_counts[0],
        "folds": args.folds or None,
        "max_seconds": args.max_seconds,
        "seeds": args.seed_list,
        "tasks": rows,
    }
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    splits = photo_splits(args)
    for name, train, test in splits:
        print(f"{name}: {len(train)} training photos, {len(test)} test photos", flush=True)
    print(
        f"{args.max_seconds:.0f} s per task, torch {torch.__version__} on "
        f"{torch.get_num_threads()} threads\n",
        flush=True,
    )
    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        for name, train, test in splits:
            for seed in args.seed_list:
                row = {"test_set": name, **run_task(task, seed, train, test, args)}
                rows.append(row)
                if args.json:
                    save_json(args, splits, rows)
                print(
                    f"  {task}, {name}, seed {seed}: Pearson {row['pearson']:.3f}, "
                    f"Spearman {row['spearman']:.3f} "
                    f"({row['steps']} steps, {row['stop_reason']})",
                    flush=True,
                )
    print()
    print_table(rows)
    print()
    print_seed_summary(rows)


if __name__ == "__main__":
    main()
