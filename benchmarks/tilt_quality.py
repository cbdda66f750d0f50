"""Tilt a user can trust: real photos turned by -30 to +30 degrees, read as a user would.

    python benchmarks/tilt_quality.py --folds 3 --seeds 0,1,2 --json OUT.json
    python benchmarks/tilt_quality.py --variants orientation --train-sizes 25,100,400,1600

The photos of the headline benchmark (``native_quality.py``: the 23 shared 1024-px photos
and scikit-image's 8 colour photos, in the same folds) are turned at their own
resolution by scikit-image, cropped to the largest rectangle inside and resized back by
OpenCV (``core.degradations.rotation``, no code shared with the library's training). In
a FiftyOne dataset, ``sq.train(task="rotation")`` learns on the other folds'
photos and ``sq.score`` reads the turned files. Each model variant (``--variants``)
trains with the same seed and time budget in the same run: the default fixed reader
(``lines_or_edges``), the lines alone, and the edge-orientation histogram trained on
the fold's photos (``orientation``, the default before), the baseline.

Per variant, fold and seed: pooled signed Spearman of the field against the angle; MAE
in degrees within +-15 and within +-30; how many undamaged photos read within 2 degrees;
and, for models that write ``rotation_confidence``, the share of files at or above
``--confident`` and their MAE within +-15. Each photo kind also gets its own line, and
so do the photos with an upright (``UPRIGHT_PHOTOS``) and those without. The
third kind, OpenCV's 21 sample photos (``fetch_opencv_photos.py``; buildings, a board,
a sudoku, fruit, a baboon), is tested only, split over the same folds: the line
reader's constants (``core.tilt``) were chosen looking at the other two kinds, so the
OpenCV line is the one no choice saw.

``--photos wallpapers`` turns 15 photos that nothing in this project saw instead
(``fetch_wallpaper_photos.py``, 10 of them with an upright), one test set; variants that
train learn on every photo of the other three kinds.

``--train-sizes`` trains each variant once per size: how the score grows with the
number of training images. A fold has about 30 real training photos; above that the
set is all of them plus level crops of them (``variety_crops``: new views, not new
scenes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fetch_wallpaper_photos import UPRIGHT as UPRIGHT_WALLPAPERS  # noqa: E402
from native_quality import (  # noqa: E402
    CACHE,
    SHARED_PHOTOS,
    _seed,
    _spearman,
    damaged_copies,
    default_photos,
    load_rgb,
    score_fold,
    wallpaper_photos,
)
from tables import print_table  # noqa: E402

from siamese_quality.core.degradations import Family, rotation  # noqa: E402

TILT = Family(
    "tilt",
    "rotation",
    (-30, -20, -15, -10, -5, 5, 10, 15, 20, 30),
    0,
    rotation,
    description="degrees CCW (scikit-image, inscribed crop)",
)
# long straight lines (writes rotation_confidence) beside the default, an
# edge-orientation histogram on the 128-px image
VARIANTS = {
    "lines_or_edges": {"backbone": "lines_or_edges", "working_resolution": 256},
    "lines": {"backbone": "lines", "working_resolution": 256},
    "orientation": {"backbone": "orientation", "working_resolution": 128},
}
# The photos with gravity-aligned structure a person tells level by: a horizon, a
# building or wall, people or objects standing, plants growing up. Chosen by looking at
# the photos, not at any reading. The others (textures, close-ups, flowers, food and
# paper from above, micrographs, the sky) have no upright for any reader to find, which
# bounds the pooled Spearman over all photos: reading these perfectly and the others
# as level gives about 0.65.
UPRIGHT_PHOTOS = frozenset(
    {
        # shared
        "bythewater", "coldripple", "darkesthour", "free", "greenmeadow", "path",
        "storm", "summer-1am",
        # scikit-image
        "astronaut", "rocket", "stereo_motorcycle",
        # OpenCV
        "aero1", "aero3", "aloeL", "building", "home", "leuvenA", "messi5", "right",
        "rubberwhale1",
    }
) | UPRIGHT_WALLPAPERS  # fmt: skip


def variety_crops(photos: list[str], count: int) -> list[str]:
    """``count`` level crops of ``photos`` (cached JPEGs): each a random 45-90 % of the
    photo's sides, mirrored half of the time, the longer side at most 768 px. A crop of a
    level photo is level, so these add views, not new scenes: the generated variety the
    issue allows once the real photos run out."""
    from PIL import Image, ImageOps

    folder = os.path.join(CACHE, "tilt_variety")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        name = os.path.splitext(os.path.basename(photo))[0]
        path = os.path.join(folder, f"{name}_{i // len(photos):04d}.jpg")
        if not os.path.isfile(path):
            rng = np.random.default_rng(_seed(name, i // len(photos)))
            image = Image.fromarray(load_rgb(photo))
            w, h = image.size
            cw, ch = (int(side * rng.uniform(0.45, 0.9)) for side in (w, h))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = image.crop((left, top, left + cw, top + ch))
            if rng.random() < 0.5:
                image = ImageOps.mirror(image)
            image.thumbnail((768, 768), Image.BICUBIC)
            image.save(path, quality=92)
        paths.append(path)
    return paths


def training_set(train: list[str], size: int | None, fold: int) -> list[str]:
    """``size`` training images: a seeded subset of ``train``, or all of it and
    :func:`variety_crops` of it up to ``size``. ``None``: ``train`` as it is."""
    if size is None:
        return train
    if size <= len(train):
        order = np.random.default_rng(fold).permutation(len(train))[:size]
        return [train[i] for i in sorted(order)]
    return train + variety_crops(train, size - len(train))


def _mae(records: list[dict], limit: float) -> float | None:
    errors = [
        abs(r["rotation"] - r["angle"])
        for r in records
        if abs(r["angle"]) <= limit and r.get("rotation") is not None
    ]
    return float(np.mean(errors)) if errors else None


def measure(records: list[dict], confident: float) -> dict:
    """The issue's numbers for one set of scored files (``angle`` 0: undamaged)."""
    level = [r for r in records if r["angle"] == 0 and r.get("rotation") is not None]
    row = {
        "files": len(records),
        "spearman": _spearman([r.get("rotation") for r in records], [r["angle"] for r in records]),
        "mae_15": _mae(records, 15),
        "mae_30": _mae(records, 30),
        "level_within_2": (
            sum(abs(r["rotation"]) <= 2 for r in level) / len(level) if level else None
        ),
        "confident_share": None,
        "confident_mae_15": None,
        "confident_within_3": None,
    }
    if any("rotation_confidence" in r for r in records):
        sure = [r for r in records if (r.get("rotation_confidence") or 0) >= confident]
        row["confident_share"] = len(sure) / len(records)
        row["confident_mae_15"] = _mae(sure, 15)
        errors = [abs(r["rotation"] - r["angle"]) for r in sure]
        row["confident_within_3"] = float(np.mean([e <= 3 for e in errors])) if sure else None
    return row


KINDS = ("all", "shared", "scikit-image", "opencv", "wallpapers", "with an upright", "no upright")


def opencv_photos() -> list[str]:
    """OpenCV's sample photos (downloaded once from PyPI into the benchmark cache)."""
    from build_default_models import opencv_photos as fetch

    return fetch()


def in_kind(record: dict, kind: str) -> bool:
    if kind == "all":
        return True
    if kind in ("with an upright", "no upright"):
        return (record["photo"] in UPRIGHT_PHOTOS) == (kind == "with an upright")
    return _kind(record) == kind


def _kind(record: dict) -> str:
    if record["source"].startswith(os.path.abspath(SHARED_PHOTOS)):
        return "shared"
    for kind, folder in (("opencv", "opencv_photos"), ("wallpapers", "wallpapers")):
        if f"{os.sep}{folder}{os.sep}" in record["source"]:
            return kind
    return "scikit-image"


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(rows: list[dict]) -> None:
    header = (
        "variant",
        "photos",
        "Spearman mean (min-max)",
        "MAE +-15",
        "MAE +-30",
        "level within 2",
        "confident share",
        "confident MAE +-15",
        "confident within 3",
    )
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for kind in KINDS:
            runs = [r for r in rows if (r["variant"], r["photos"]) == (variant, kind)]

            def mean(key, runs=runs, digits=2):
                values = [r[key] for r in runs if r[key] is not None]
                return _fmt(float(np.mean(values)), digits) if values else "-"

            rho = [r["spearman"] for r in runs if r["spearman"] is not None]
            spread = f" ({min(rho):.3f}-{max(rho):.3f})" if rho else ""
            lines.append(
                (
                    variant,
                    kind,
                    mean("spearman", digits=3) + spread,
                    mean("mae_15", digits=1),
                    mean("mae_30", digits=1),
                    mean("level_within_2"),
                    mean("confident_share"),
                    mean("confident_mae_15", digits=1),
                    mean("confident_within_3"),
                )
            )
    print_table(header, lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; adds ``size_list``, ``variant_list``, ``seed_list`` and
    ``fold_list``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-folds", default=None, help="comma-separated fold numbers")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--confident", type=float, default=0.5, help="confidence threshold")
    parser.add_argument(
        "--photos",
        choices=("headline", "wallpapers"),
        default="headline",
        help="the headline's and OpenCV's photos in folds, or 15 photos no choice saw",
    )
    parser.add_argument("--json", help="write rows and per-file values here")
    parser.add_argument(
        "--train-sizes",
        default="",
        help="comma-separated training-set sizes (e.g. 25,100,400,1600): each variant "
        "trains once per size, on a subset of the fold's training photos or on all of "
        "them plus level crops of them (max_images set to the size)",
    )
    args = parser.parse_args(argv)
    args.size_list = [int(n) for n in args.train_sizes.split(",") if n.strip()] or [None]
    args.variant_list = [v for v in args.variants.split(",") if v]
    if set(args.variant_list) - set(VARIANTS):
        parser.error(f"unknown variants; from {','.join(VARIANTS)}")
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.fold_list = (
        [int(f) for f in args.only_folds.split(",")] if args.only_folds else list(range(args.folds))
    )
    if args.photos == "wallpapers":
        args.fold_list = [0]  # one test set
    return args


def tilted_records(test_photos: list[str]) -> list[dict]:
    """The turned copies of the test photos (and the level ones), with their angle."""
    records = damaged_copies(test_photos, [TILT])
    by_name = {os.path.splitext(os.path.basename(p))[0]: p for p in test_photos}
    for r in records:
        r["angle"] = r["magnitude"] if r["family"] else 0.0
        r["source"] = by_name[r["photo"]]
    return records


def file_row(label: str, fold: int, seed: int, r: dict) -> dict:
    return {
        "variant": label,
        "fold": fold,
        "seed": seed,
        "photo": r["photo"],
        "kind": _kind(r),
        "angle": r["angle"],
        "rotation": r.get("rotation"),
        "rotation_confidence": r.get("rotation_confidence"),
    }


def tilt_folds_to_test(args, photos, extra_train, tested_only) -> list[tuple]:
    """(fold, test photos, training photos) for each fold the run tests."""
    if args.photos == "wallpapers":
        return [(0, wallpaper_photos(), photos + extra_train + tested_only)]
    return [
        (
            fold,
            [p for i, p in enumerate(photos) if i % args.folds == fold]
            + [p for i, p in enumerate(tested_only) if i % args.folds == fold],
            [p for i, p in enumerate(photos) if i % args.folds != fold] + extra_train,
        )
        for fold in args.fold_list
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    photos, extra_train = default_photos()
    tested_only = opencv_photos()
    models = tempfile.mkdtemp(prefix="sq-tilt-models-")
    os.environ["SIAMESE_QUALITY_MODELS_DIR"] = models
    sets = tilt_folds_to_test(args, photos, extra_train, tested_only)
    tested = sum(len(test) for _, test, _ in sets)
    print(f"{args.photos}: {tested} photos tested in {len(sets)} folds; {args.max_seconds:.0f} s")
    rows, files = [], []
    for fold, test_photos, train in sets:
        records = tilted_records(test_photos)
        runs = itertools.product(args.seed_list, args.variant_list, args.size_list)
        for seed, variant, size in runs:
            label = variant if size is None else f"{variant} n={size}"
            options = {**VARIANTS[variant], **({"max_images": size} if size else {})}
            args.train_options = {"rotation": options}
            scored, _ = score_fold(
                fold, seed, training_set(train, size, fold), records, ["rotation"], args
            )
            files += [file_row(label, fold, seed, r) for r in scored]
            for kind in KINDS:
                subset = [r for r in scored if in_kind(r, kind)]
                row = measure(subset, args.confident)
                rows.append({"variant": label, "fold": fold, "seed": seed, "photos": kind, **row})
            row = rows[-len(KINDS)]
            print(
                f"  fold {fold} seed {seed} {label}: Spearman {_fmt(row['spearman'], 3)}, "
                f"MAE +-15 {_fmt(row['mae_15'], 1)}, confident "
                f"{_fmt(row['confident_share'])} (MAE {_fmt(row['confident_mae_15'], 1)})",
                flush=True,
            )
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"args": vars(args), "rows": rows, "files": files}, f)
    shutil.rmtree(models, ignore_errors=True)
    print()
    print_summary(rows)


if __name__ == "__main__":
    main()
