"""The headline benchmark: photos damaged at their own resolution, scored as a user would.

    python benchmarks/native_quality.py --folds 3 --seeds 0 --json OUT.json

Test photos are damaged *before any resizing* by implementations that share no code
with the library (``benchmarks/degradations.py``: OpenCV, Pillow, scikit-image, NumPy),
written to files, put in a FiftyOne dataset next to the training photos, and then
the user's pipeline runs: ``sq.train`` on the training photos, ``sq.score`` on the
damaged files. For each family of damage it reports, in one run:

- the pooled Spearman of the matching model's field against the magnitude (the
  undamaged photo joins every family at the identity magnitude);
- the classical baseline (``siamese_quality.core.baselines``) on the same files, read at
  their own resolution;
- the units error: median |log(written value / true magnitude)| (families with a unit);
- specificity: |Spearman| of every model's field against every other family.

Photos: the 23 shared 1024-px photos and the 8 colour photos scikit-image ships
(300-1411 px), sorted by folder and name and split into ``--folds`` by index, so every
fold holds both sizes; each fold is tested by models trained on the other folds plus
scikit-image's 10 grayscale photos. Damaged files are cached under
``benchmarks/.cache/native`` (seeded: the same files every run).

The bundled default models (``build_default_models.py``) never saw fold 0 of 3:
``--folds 3 --only-folds 0 --models bundled`` scores it with them (``sq.assess``),
``--models both`` with them and with models trained in the same run (side by side),
and ``--models tuned`` fine-tunes them on the training photos (``init="default"``) for
``--max-seconds`` first.

``--photos wallpapers`` tests on a second set instead, 15 photos that nothing in this
project saw (``fetch_wallpaper_photos.py``: Debian's desktop-wallpaper packages,
1.5-1.7 MP): with the bundled models (``--models bundled``), or with models trained on
every headline photo (``--models trained``), one "fold".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tables import print_table  # noqa: E402

from siamese_quality.core.degradations import (  # noqa: E402
    FAMILIES,
    Family,
    write_damaged_copy,
)

CACHE = os.path.join(HERE, ".cache", "native")
SHARED_PHOTOS = os.path.join(HERE, "..", "..", "shared", "photos")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TASKS = ("blur", "noise", "jpeg", "pixelation", "brightness", "contrast", "rotation")
# a field value at or below this share of the range reads as this floor in the units error
UNITS_FLOOR = {"blur": 0.1, "noise": 0.5, "jpeg": 1.0, "pixelation": 1.0}


def images_in(folder: str) -> list[str]:
    found = sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES)
    )
    if not found:
        sys.exit(f"no images in {folder}")
    return [os.path.abspath(p) for p in found]


def default_photos() -> tuple[list[str], list[str]]:
    """(test-fold photos, extra training photos): shared + skimage colour; skimage grey."""
    from siamese_quality.demo import SKIMAGE_GRAYSCALE_PHOTOS, write_skimage_photos

    folder = os.path.join(CACHE, "skimage")
    colour = write_skimage_photos(folder)
    grey = write_skimage_photos(folder, SKIMAGE_GRAYSCALE_PHOTOS)
    return images_in(SHARED_PHOTOS) + colour, grey


def load_rgb(path: str) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _seed(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def damaged_copies(photos: list[str], families: list[Family]) -> list[dict]:
    """Writes every photo x family x magnitude once (cached); returns one record per file.

    The undamaged photo is one record per photo with ``family=None``.
    """
    records = []
    for photo in photos:
        name = os.path.splitext(os.path.basename(photo))[0]
        records.append({"filepath": photo, "photo": name, "family": None, "magnitude": None})
        pixels = None
        for family in families:
            folder = os.path.join(CACHE, "damaged", family.name.replace(" ", "_"))
            os.makedirs(folder, exist_ok=True)
            for magnitude in family.magnitudes:
                path = os.path.join(folder, f"{name}_{magnitude:g}{family.suffix}")
                if not os.path.isfile(path):
                    pixels = load_rgb(photo) if pixels is None else pixels
                    # one draw per photo and family (the same shake direction, the same
                    # noise pattern scaled): magnitudes differ in nothing else
                    rng = np.random.default_rng(_seed(name, family.name))
                    write_damaged_copy(pixels, family, magnitude, path, rng)
                records.append(
                    {
                        "filepath": path,
                        "photo": name,
                        "family": family.name,
                        "magnitude": float(magnitude),
                    }
                )
    return records


def baseline_values(paths: list[str]) -> dict[str, dict[str, float]]:
    """Every classical baseline on every file, at the file's own resolution (cached)."""
    import torch

    from siamese_quality.core.distortions import get_distortion, list_distortions

    baselines = {t: get_distortion(t).baseline for t in list_distortions()}
    baselines = {task: b for task, b in baselines.items() if b is not None}
    cache_file = os.path.join(CACHE, "baselines.json")
    cache = json.load(open(cache_file)) if os.path.isfile(cache_file) else {}

    def key(path: str) -> str:  # a rewritten file is measured again
        return f"{path}:{os.stat(path).st_mtime_ns}"

    missing = [p for p in paths if key(p) not in cache]
    for index, path in enumerate(missing):
        image = torch.from_numpy(load_rgb(path).copy()).permute(2, 0, 1).contiguous()
        cache[key(path)] = {task: b.measure(image) for task, b in baselines.items()}
        if index % 100 == 99:
            json.dump(cache, open(cache_file, "w"))
    json.dump(cache, open(cache_file, "w"))
    return {p: cache[key(p)] for p in paths}


def _spearman(values, truth) -> float | None:
    values, truth = np.asarray(values, float), np.asarray(truth, float)
    ok = np.isfinite(values)
    if ok.sum() < 3 or np.ptp(values[ok]) == 0:
        return None
    return float(spearmanr(values[ok], truth[ok])[0])


def family_points(records: list[dict], family: Family, column: str) -> tuple[list, list]:
    """(values, magnitudes) of a family, the undamaged photos at the identity."""
    values, truth = [], []
    for r in records:
        if r["family"] == family.name:
            values.append(r.get(column))
            truth.append(r["magnitude"])
        elif r["family"] is None:
            values.append(r.get(column))
            truth.append(family.identity)
    return [np.nan if v is None else v for v in values], truth


def units_error(records: list[dict], family: Family, column: str | None = None) -> float | None:
    column = column or family.task
    floor = UNITS_FLOOR[family.task]
    errors = [
        abs(math.log(max(r[column], floor) / r["magnitude"]))
        for r in records
        if r["family"] == family.name and r.get(column) is not None
    ]
    return float(np.median(errors)) if errors else None


def measure(records: list[dict], families: list[Family], tasks: list[str]) -> list[dict]:
    """One row per family: its own model's Spearman (when that model was trained) and
    every trained model's |Spearman| against its damage (specificity)."""
    rows = []
    for family in families:
        row = {
            "family": family.name,
            "task": family.task,
            "spearman": None,
            "baseline_spearman": None,
            "units_error": None,
            "specificity": {},
        }
        if family.task in tasks:
            values, truth = family_points(records, family, family.task)
            base, _ = family_points(records, family, f"baseline_{family.task}")
            row["spearman"] = _spearman(values, truth)
            row["baseline_spearman"] = _spearman(base, truth)
            row["units_error"] = units_error(records, family) if family.units else None
            pixels = f"{family.task}_pixels"  # a model that also reads the file's encoding
            if any(pixels in r for r in records):
                alone, _ = family_points(records, family, pixels)
                row["pixels_spearman"] = _spearman(alone, truth)
                row["pixels_units_error"] = (
                    units_error(records, family, pixels) if family.units else None
                )
        for other in tasks:
            if other != family.task:
                v, t = family_points(records, family, other)
                rho = _spearman(v, t)
                row["specificity"][other] = None if rho is None else abs(rho)
        rows.append(row)
    return rows


def score_fold(fold, seed, train, records, tasks, args, models="trained") -> list[dict]:
    """Trains every task on ``train`` (``models="tuned"``: fine-tunes the bundled default
    models on it; ``"bundled"``: the bundled models as they are, through ``sq.assess``),
    scores ``records``' files; returns records + values."""
    import fiftyone as fo

    import siamese_quality as sq

    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=p, tags=["train"]) for p in train], progress=False)
        dataset.add_samples(
            [
                fo.Sample(filepath=r["filepath"], tags=["test"], index=i)
                for i, r in enumerate(records)
            ],
            progress=False,
        )
        timings = {}
        for task in tasks if models != "bundled" else ():
            started = time.monotonic()
            info = sq.train(
                dataset.match_tags("train"),
                task=task,
                max_seconds=args.max_seconds,
                seed=seed,
                progress=False,
                **({"init": "default"} if models == "tuned" else {}),
                **args.train_options.get(task, {}),
            )
            timings[task] = time.monotonic() - started
            print(
                f"    trained {task}: {info.training.get('steps')} steps in "
                f"{timings[task]:.0f} s, held-out Spearman "
                f"{info.metrics.get('spearman', float('nan')):.3f}, kept step "
                f"{info.training.get('best_step')}",
                flush=True,
            )
        test = dataset.match_tags("test")
        started = time.monotonic()
        if models == "bundled":
            sq.assess(test, tasks=list(tasks), progress=False)
        else:
            sq.score(test, key=list(tasks), progress=False)
        score_seconds = time.monotonic() - started
        # every model's field, and its confidence where the model tells one
        read = [*tasks, *(f"{t}_confidence" for t in tasks if test.has_field(f"{t}_confidence"))]
        indices, *columns = test.values(["index", *read])
        scored = [dict(r) for r in records]
        for name, column in zip(read, columns, strict=True):
            for i, value in zip(indices, column, strict=True):
                scored[i][name] = value
        add_pixels_alone(test, tasks, scored)
        print(
            f"    scored {len(records)} files with {len(tasks)} models in {score_seconds:.0f} s",
            flush=True,
        )
        return scored, timings
    finally:
        dataset.delete()


def add_pixels_alone(test, tasks: list[str], scored: list[dict]) -> None:
    """For models that also read how a file was encoded (JPEG's tables): their pixels'
    reading alone, ``<task>_pixels``, the calibrated branch score, beside the field."""
    from siamese_quality.registry import load_model

    for task in tasks:
        model = load_model(test, task)
        if not model.view.encoded_quality:
            continue
        indices, raw = test.values(["index", f"{task}_raw"])
        readable = [(i, r) for i, r in zip(indices, raw, strict=True) if r is not None]
        values = model.calibrated(np.array([r for _, r in readable], dtype=np.float64))
        for (i, _), value in zip(readable, values, strict=True):
            scored[i][f"{task}_pixels"] = float(value)


def _compact(fold: int, seed: int, record: dict) -> dict:
    """A scored file's record for the JSON: no path, values to 4 decimals."""
    values = {
        k: round(v, 4) if isinstance(v, float) else v for k, v in record.items() if k != "filepath"
    }
    return {"fold": fold, "seed": seed, **values}


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(rows: list[dict], tasks: list[str]) -> None:
    header = (
        "family",
        "model",
        "Spearman mean (min-max)",
        "baseline",
        "beats baseline",
        "units error",
        "worst |rho| vs other families' damage",
    )
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        runs = [r for r in rows if r["family"] == family]
        rho = [r["spearman"] for r in runs if r["spearman"] is not None]
        base = [r["baseline_spearman"] for r in runs if r["baseline_spearman"] is not None]
        units = [r["units_error"] for r in runs if r["units_error"] is not None]
        beats = sum(
            1
            for r in runs
            if r["baseline_spearman"] is None or (r["spearman"] or -1) > r["baseline_spearman"]
        )
        spreads = {}
        for r in runs:
            for other, value in r["specificity"].items():
                if value is not None:
                    spreads[other] = max(spreads.get(other, 0.0), value)
        worst = max(spreads.items(), key=lambda kv: kv[1]) if spreads else None
        lines.append(
            (
                family,
                runs[0]["task"],
                f"{np.mean(rho):.3f} ({min(rho):.3f}-{max(rho):.3f})" if rho else "-",
                f"{np.mean(base):.3f}" if base else "-",
                f"{beats} of {len(runs)}" if rho else "-",
                f"{np.mean(units):.2f}" if units else "-",
                f"{worst[0]} {worst[1]:.2f}" if worst else "-",
            )
        )
    print_table(header, lines)
    print_pixels_alone(rows)
    print("\nSpecificity: mean |Spearman| of each model's field against each family's damage")
    families = list(dict.fromkeys(r["family"] for r in rows))
    header = ("model", *families)
    lines = []
    for task in tasks:
        line = [task]
        for family in families:
            runs = [r for r in rows if r["family"] == family]
            if runs[0]["task"] == task:
                line.append("(own)")
                continue
            values = [r["specificity"].get(task) for r in runs]
            values = [v for v in values if v is not None]
            line.append(f"{np.mean(values):.2f}" if values else "-")
        lines.append(tuple(line))
    print_table(header, lines)


def print_pixels_alone(rows: list[dict]) -> None:
    """Models that also read the file's encoding: the field beside the pixels alone."""
    families = list(dict.fromkeys(r["family"] for r in rows if "pixels_spearman" in r))
    if not families:
        return
    print("\nFields that also read how the file was saved (JPEG tables), beside the pixels alone")
    lines = []
    for family in families:
        runs = [r for r in rows if r["family"] == family]

        def mean(key: str, runs=runs) -> float | None:
            values = [r[key] for r in runs if r.get(key) is not None]
            return float(np.mean(values)) if values else None

        lines.append(
            (
                family,
                _fmt(mean("spearman")),
                _fmt(mean("pixels_spearman")),
                _fmt(mean("units_error"), 2),
                _fmt(mean("pixels_units_error"), 2),
            )
        )
    header = ("family", "field Spearman", "pixels alone", "field units error", "pixels alone")
    print_table(header, lines)


def print_comparison(rows: list[dict]) -> None:
    """The bundled models beside the ones trained in the same run, family by family."""
    print("\nBundled default models against models trained in this run (same test files)")
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mean = {}
        for source in ("trained", "bundled"):
            rho = [r["spearman"] for r in rows if (r["family"], r["models"]) == (family, source)]
            rho = [v for v in rho if v is not None]
            mean[source] = float(np.mean(rho)) if rho else None
        both = None not in mean.values()
        lines.append(
            (
                family,
                _fmt(mean["trained"]),
                _fmt(mean["bundled"]),
                f"{mean['bundled'] - mean['trained']:+.3f}" if both else "-",
            )
        )
    print_table(("family", "trained Spearman", "bundled Spearman", "bundled - trained"), lines)


def parse_train_options(parser, items: list[str]) -> dict[str, dict]:
    """``["pixelation.backbone=small_cnn"]`` -> ``{"pixelation": {"backbone": "small_cnn"}}``;
    values that read as JSON (numbers, true/false) are converted."""
    options: dict[str, dict] = {}
    for item in items:
        name, sep, value = item.partition("=")
        task, dot, option = name.partition(".")
        if not sep or not dot or task not in TASKS:
            parser.error(f"--train-option {item!r}: expected TASK.NAME=VALUE with TASK in {TASKS}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        options.setdefault(task, {})[option] = value
    return options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; adds ``task_list``, ``seed_list``, ``fold_list`` and
    ``sources`` (the kinds of models to score with)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-folds", default=None, help="comma-separated fold numbers")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument(
        "--damage",
        choices=("tasks", "all"),
        default="tasks",
        help="damage only the families of --tasks, or every family (specificity of fewer models)",
    )
    parser.add_argument(
        "--train-option",
        action="append",
        default=[],
        metavar="TASK.NAME=VALUE",
        help="a training option for one task, e.g. pixelation.backbone=small_cnn (repeatable)",
    )
    parser.add_argument(
        "--models",
        choices=("trained", "bundled", "both", "tuned"),
        default="trained",
        help="train on the other folds, or use the bundled default models (trained on "
        "folds 1-2 of 3 and other photos: fold 0 only), or both in one run, or fine-tune "
        "the bundled models on the other folds for --max-seconds",
    )
    parser.add_argument(
        "--photos",
        choices=("headline", "wallpapers"),
        default="headline",
        help="the headline's photos in folds, or 15 photos no choice saw as one test set "
        "(trained models learn on every headline photo)",
    )
    parser.add_argument("--json", help="write per-run rows here")
    args = parser.parse_args(argv)
    args.train_options = parse_train_options(parser, args.train_option)

    args.task_list = [t for t in args.tasks.split(",") if t]
    unknown = set(args.task_list) - set(TASKS)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; from {','.join(TASKS)}")
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.folds < 2:
        parser.error("--folds takes 2 or more")
    args.fold_list = (
        [int(f) for f in args.only_folds.split(",")] if args.only_folds else list(range(args.folds))
    )
    if args.photos == "wallpapers":
        args.fold_list = [0]  # one test set: every headline photo trains
    elif args.models != "trained" and (args.folds, args.fold_list) != (3, [0]):  # kept out
        parser.error("the bundled models trained on folds 1-2 of 3: use --folds 3 --only-folds 0")
    args.sources = ["trained", "bundled"] if args.models == "both" else [args.models]
    return args


def wallpaper_photos() -> list[str]:
    """The second test set (``fetch_wallpaper_photos.py``), fetched once into the cache."""
    from fetch_wallpaper_photos import write_wallpaper_photos

    return write_wallpaper_photos(os.path.join(CACHE, "wallpapers"))


def folds_to_test(args: argparse.Namespace) -> list[tuple[int, list[str], list[str]]]:
    """(fold, test photos, training photos) for each fold the run tests."""
    photos, extra_train = default_photos()
    if args.photos == "wallpapers":
        return [(0, wallpaper_photos(), photos + extra_train)]
    return [
        (
            fold,
            [p for i, p in enumerate(photos) if i % args.folds == fold],
            [p for i, p in enumerate(photos) if i % args.folds != fold] + extra_train,
        )
        for fold in args.fold_list
    ]


def fold_records(test_photos: list[str], families: list[Family]) -> list[dict]:
    """The damaged files of one fold's test photos, with every baseline's value."""
    records = damaged_copies(test_photos, families)
    baselines = baseline_values([r["filepath"] for r in records])
    for r in records:
        for task, value in baselines[r["filepath"]].items():
            r[f"baseline_{task}"] = value
    return records


def write_json(args: argparse.Namespace, rows: list[dict], files: list[dict]) -> None:
    with open(args.json, "w") as f:
        json.dump(
            {
                "folds": args.folds,
                "photos": args.photos,
                "seeds": args.seed_list,
                "tasks": args.task_list,
                "max_seconds": args.max_seconds,
                "rows": rows,
                "files": files,
            },
            f,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tasks = args.task_list
    families = [f for f in FAMILIES if args.damage == "all" or f.task in tasks]
    sets = folds_to_test(args)
    # the benchmark's models are throwaway: keep their weights out of the user's folder
    models = tempfile.mkdtemp(prefix="sq-native-models-")
    os.environ["SIAMESE_QUALITY_MODELS_DIR"] = models

    import torch

    print(
        f"{args.photos} photos: {sum(len(test) for _, test, _ in sets)} tested in "
        f"{len(sets)} folds; tasks {', '.join(tasks)}; {args.max_seconds:.0f} s per model; "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads",
        flush=True,
    )
    rows, files = [], []
    for fold, test_photos, train in sets:
        records = fold_records(test_photos, families)
        print(f"fold {fold}: {len(train)} training photos, {len(records)} files", flush=True)
        for seed, source in ((seed, source) for seed in args.seed_list for source in args.sources):
            scored, timings = score_fold(fold, seed, train, records, tasks, args, source)
            files += [{"models": source, **_compact(fold, seed, r)} for r in scored]
            for row in measure(scored, families, tasks):
                rows.append(
                    {
                        "fold": fold,
                        "seed": seed,
                        "models": source,
                        "train_seconds": timings.get(row["task"]),
                        **row,
                    }
                )
                alone = (
                    f"; pixels alone {_fmt(row['pixels_spearman'])}, units "
                    f"{_fmt(row['pixels_units_error'], 2)}"
                    if "pixels_spearman" in row
                    else ""
                )
                print(
                    f"  fold {fold} seed {seed} {source} {row['family']}: Spearman "
                    f"{_fmt(row['spearman'])} (baseline {_fmt(row['baseline_spearman'])}), "
                    f"units {_fmt(row['units_error'], 2)}{alone}",
                    flush=True,
                )
            if args.json:
                write_json(args, rows, files)
    shutil.rmtree(models, ignore_errors=True)
    for source in args.sources:
        print(f"\nmodels: {source}")
        print_summary([r for r in rows if r["models"] == source], tasks)
    if len(args.sources) == 2:
        print_comparison(rows)


if __name__ == "__main__":
    main()
