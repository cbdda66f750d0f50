"""Scoring throughput against the decoding floor and CleanVision, measured in one run.

    python benchmarks/throughput.py --n 1000 --json OUT.json [--images DIR]

By default it writes N JPEG files of 2.5-3.5 megapixels made from the photos that
scikit-image ships (random crops, rescales and re-encodes; cached under
benchmarks/.cache). In one run it measures, on the same files:

- floor: decoding every pixel and cutting the patches, with the loader and workers
  the scorer uses;
- ours: scoring three local models (blur, noise, JPEG: native-resolution patches)
  through the SDK into a real FiftyOne dataset, end to end (three learned scores
  from one decode per image);
- assess: ``sq.assess`` with every bundled default model (seven tasks, then the
  cross-model summary), the time from a new dataset to its first fields;
- CleanVision: ``Imagelab(filepaths).find_issues`` for dark, light and blurry,
  installed from PyPI into the benchmark's own virtual environment
  (benchmarks/.venv-cleanvision, created on first use);

then the ratios, and peak RSS and seconds per 1,000 samples of our scoring for
N = 1k, 5k, 10k small generated images (each size in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tables import print_table  # noqa: E402

CACHE = os.path.join(HERE, ".cache")
CLEANVISION_VENV = os.path.join(HERE, ".venv-cleanvision")
TASKS = ("blur", "noise", "jpeg")


# --- images ---------------------------------------------------------------------------


def _make_jpeg(args: tuple[int, str, float, float]) -> str:
    import numpy as np
    import skimage.data
    from PIL import Image

    from siamese_quality.demo import SKIMAGE_COLOR_PHOTOS

    index, path, low_mp, high_mp = args
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(index)
    pixels = getattr(skimage.data, SKIMAGE_COLOR_PHOTOS[index % len(SKIMAGE_COLOR_PHOTOS)])()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels
    image = Image.fromarray(pixels)
    w, h = image.size
    crop = rng.uniform(0.7, 1.0)
    cw, ch = int(w * crop), int(h * crop)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((left, top, left + cw, top + ch))
    scale = (rng.uniform(low_mp, high_mp) * 1e6 / (cw * ch)) ** 0.5
    image = image.resize((max(16, int(cw * scale)), max(16, int(ch * scale))), Image.BICUBIC)
    image.save(path, quality=int(rng.integers(80, 96)))
    return path


def generated_jpegs(count: int, low_mp: float, high_mp: float, tag: str) -> list[str]:
    """``count`` JPEG files of ``low_mp``-``high_mp`` megapixels (cached)."""
    from multiprocessing import Pool

    folder = os.path.join(CACHE, f"{tag}_{low_mp:g}-{high_mp:g}mp")
    os.makedirs(folder, exist_ok=True)
    jobs = [(i, os.path.join(folder, f"img_{i:05d}.jpg"), low_mp, high_mp) for i in range(count)]
    with Pool(os.cpu_count() or 2) as pool:
        return pool.map(_make_jpeg, jobs, chunksize=16)


def images_in(folder: str, count: int) -> list[str]:
    suffixes = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
    paths = sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(suffixes)
    )
    if not paths:
        sys.exit(f"no images in {folder}")
    return paths[:count]


# --- measurements ---------------------------------------------------------------------


def model_files(folder: str) -> dict[str, str]:
    """Blur, noise and JPEG models at the default architecture and view (a few steps of
    training: throughput does not depend on how well they are trained)."""
    from siamese_quality.core.training import TrainingConfig, train_pretext_model
    from siamese_quality.demo import write_skimage_photos

    photos = write_skimage_photos(os.path.join(CACHE, "skimage"))
    files = {}
    for task in TASKS:
        files[task] = os.path.join(folder, f"{task}.pt")
        config = TrainingConfig(task=task, max_seconds=None, max_steps=4, validation_every=2)
        train_pretext_model(photos, config).save(files[task])
    return files


def measure_floor(paths: list[str]) -> float:
    """Images/s of decoding + cutting the default patches, with the scorer's loader (the
    view's pixels only: blur's cepstrum is part of its reading, not of the floor)."""
    import torch

    from siamese_quality.core.scoring import ImageFiles, collate_images, default_num_workers
    from siamese_quality.core.training import TrainingConfig

    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, [TrainingConfig(task="blur").view().pixels]),
        batch_size=64,
        num_workers=default_num_workers(len(paths)),
        collate_fn=collate_images,
    )
    started = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    assert count == len(paths)
    return len(paths) / (time.perf_counter() - started)


def measure_ours(paths: list[str], models: dict[str, str]) -> dict:
    """Images/s of sq.score with three models into a FiftyOne dataset, end to end."""
    import fiftyone as fo

    import siamese_quality as sq

    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
        for task, path in models.items():
            sq.import_model(dataset, path, key=task)
        started = time.perf_counter()
        summary = sq.score(dataset, key=list(TASKS), progress=False)
        seconds = time.perf_counter() - started
        assert summary["scored"] == len(paths), summary
        return {"images_per_s": len(paths) / seconds, "seconds": seconds}
    finally:
        dataset.delete()


def measure_assess(paths: list[str]) -> dict:
    """Seconds of ``sq.assess`` with every bundled model (one decode pass, then the
    cross-model summary) into a fresh FiftyOne dataset: the time to first fields."""
    import fiftyone as fo

    import siamese_quality as sq

    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
        started = time.perf_counter()
        result = sq.assess(dataset, progress=False)
        seconds = time.perf_counter() - started
        assert result["scoring"]["scored"] == len(paths), result["message"]
        return {
            "images_per_s": len(paths) / seconds,
            "seconds": seconds,
            "tasks": len(result["tasks"]),
        }
    finally:
        dataset.delete()


CLEANVISION_SCRIPT = """
import json, sys, time
from cleanvision import Imagelab
paths = json.load(open(sys.argv[1]))
started = time.perf_counter()
lab = Imagelab(filepaths=paths)
lab.find_issues(issue_types={"dark": {}, "light": {}, "blurry": {}})
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "images_per_s": len(paths) / seconds}))
"""


def cleanvision_python() -> str:
    python = os.path.join(CLEANVISION_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", CLEANVISION_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "cleanvision"], check=True)
    return python


def measure_cleanvision(paths: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    try:
        out = subprocess.run(
            [cleanvision_python(), "-c", CLEANVISION_SCRIPT, f.name],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.remove(f.name)


SCALING_SCRIPT = """
import json, os, resource, sys, time
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from throughput import measure_ours
paths = json.load(open(sys.argv[2]))
models = json.load(open(sys.argv[3]))
result = measure_ours(paths, models)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
result["peak_rss_mb"] = own / 1024
result["peak_worker_rss_mb"] = workers / 1024
print(json.dumps(result))
"""


def measure_scaling(counts: list[int], models: dict[str, str]) -> list[dict]:
    """Seconds per 1,000 samples and peak RSS at several sizes, each in a fresh process."""
    rows = []
    paths_all = generated_jpegs(max(counts), 0.05, 0.2, "small")
    for count in counts:
        with tempfile.TemporaryDirectory() as folder:
            paths_file, models_file = (os.path.join(folder, n) for n in ("p.json", "m.json"))
            json.dump(paths_all[:count], open(paths_file, "w"))
            json.dump(models, open(models_file, "w"))
            out = subprocess.run(
                [sys.executable, "-c", SCALING_SCRIPT, __file__, paths_file, models_file],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "n": count,
                "seconds_per_1000": 1000 * result["seconds"] / count,
                "images_per_s": result["images_per_s"],
                "peak_rss_mb": result["peak_rss_mb"],
                "peak_worker_rss_mb": result["peak_worker_rss_mb"],
            }
        )
        print(
            f"  scaling n={count}: {rows[-1]['seconds_per_1000']:.1f} s / 1k, "
            f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--images", help="a folder of your own images (first N)")
    parser.add_argument(
        "--scaling",
        default="1000,5000,10000",
        help="sample counts for the memory/scaling part ('' to skip)",
    )
    parser.add_argument("--skip-cleanvision", action="store_true")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def measure_all(args: argparse.Namespace, paths: list[str]) -> dict:
    """Every measurement of one run, as the JSON stores it."""
    with tempfile.TemporaryDirectory() as folder:
        models = model_files(folder)
        floor = measure_floor(paths)
        print(f"  floor: {floor:.1f} images/s", flush=True)
        ours = measure_ours(paths, models)
        print(f"  ours:  {ours['images_per_s']:.1f} images/s", flush=True)
        assess = measure_assess(paths)
        print(
            f"  assess, {assess['tasks']} bundled models: {assess['seconds']:.1f} s "
            f"({assess['images_per_s']:.1f} images/s)",
            flush=True,
        )
        cleanvision = None if args.skip_cleanvision else measure_cleanvision(paths)
        if cleanvision:
            print(f"  CleanVision: {cleanvision['images_per_s']:.1f} images/s", flush=True)
        counts = [int(c) for c in args.scaling.split(",") if c.strip()]
        scaling = measure_scaling(counts, models) if counts else []
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "n": len(paths),
        "floor_images_per_s": floor,
        "ours_images_per_s": ours["images_per_s"],
        "cleanvision_images_per_s": cleanvision["images_per_s"] if cleanvision else None,
        "ours_over_floor": ours["images_per_s"] / floor,
        "assess_seconds": assess["seconds"],
        "assess_images_per_s": assess["images_per_s"],
        "assess_tasks": assess["tasks"],
        "ours_over_cleanvision": (
            ours["images_per_s"] / cleanvision["images_per_s"] if cleanvision else None
        ),
        "scaling": scaling,
    }


def print_results(results: dict) -> None:
    lines = [
        ("floor (decode + patches)", f"{results['floor_images_per_s']:.1f}", ""),
        (
            "ours (3 models, SDK)",
            f"{results['ours_images_per_s']:.1f}",
            f"{results['ours_over_floor']:.2f} x floor",
        ),
        (
            f"sq.assess ({results['assess_tasks']} bundled models)",
            f"{results['assess_images_per_s']:.1f}",
            f"{results['assess_seconds']:.1f} s for {results['n']} images",
        ),
    ]
    if results["cleanvision_images_per_s"]:
        lines.append(
            (
                "CleanVision (3 checks)",
                f"{results['cleanvision_images_per_s']:.1f}",
                f"ours = {results['ours_over_cleanvision']:.2f} x CleanVision",
            )
        )
    print_table(("measure", "images/s", "ratio"), lines)
    if results["scaling"]:
        print()
        print_table(
            ("n", "s per 1k", "images/s", "peak RSS (MB)", "worker peak RSS (MB)"),
            [
                (
                    row["n"],
                    f"{row['seconds_per_1000']:.1f}",
                    f"{row['images_per_s']:.1f}",
                    f"{row['peak_rss_mb']:.0f}",
                    f"{row['peak_worker_rss_mb']:.0f}",
                )
                for row in results["scaling"]
            ],
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    paths = (
        images_in(args.images, args.n) if args.images else generated_jpegs(args.n, 2.5, 3.5, "3mp")
    )
    print(f"{len(paths)} images, {os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)
    results = measure_all(args, paths)
    print()
    print_results(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
