"""Rebuilds the bundled default models (``siamese_quality/default_models``).

    python benchmarks/build_default_models.py [--tasks blur,noise] [--out DIR]

One model per built-in task, trained by the library's own ``train_pretext_model`` on
every real photo this repository can use: the shared 1024-px photos and scikit-image's
colour photos (except the native benchmark's fold 0 of 3, kept out so that the bundled
models can be measured on photos none of them saw), scikit-image's grayscale photos and
OpenCV's sample photos (``fetch_opencv_photos.py``, downloaded once from PyPI).

Deterministic: a fixed seed and a step budget per task, no time budget. Writes each
``<task>.pt`` and ``manifest.json`` (version, sha256 of every file, the photos, each
model's training record and its held-out metrics) into ``--out``. Models of tasks not
rebuilt stay as they are, stamped with the current version (``carried_from``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from native_quality import CACHE, default_photos  # noqa: E402

# Steps per task: at most about two minutes each on 2 CPU cores, as sq.train's default
# budget (a step's cost differs by task; pixelation and rotation stop earlier, when the
# checkpoint photos stop improving; noise's two readers take these steps each)
STEPS = {
    "blur": 600,
    "noise": 1000,
    "jpeg": 1000,
    "pixelation": 1200,
    "brightness": 3000,
    "contrast": 1000,
    "rotation": 1000,
}
BENCHMARK_FOLDS, HELD_OUT_FOLD = 3, 0  # native_quality.py's folds: fold 0 is never trained on


def training_photos() -> tuple[list[str], list[str]]:
    """(photos to train on, benchmark photos kept out)."""

    photos, grey = default_photos()
    kept_out = [p for i, p in enumerate(photos) if i % BENCHMARK_FOLDS == HELD_OUT_FOLD]
    train = [p for p in photos if p not in kept_out] + grey + opencv_photos()
    return train, kept_out


def opencv_photos() -> list[str]:
    """OpenCV's 21 sample photos, downloaded once from PyPI into the benchmark cache."""
    import tempfile

    from fetch_opencv_photos import PHOTOS, download_sdist, write_opencv_photos

    folder = os.path.join(CACHE, "opencv_photos")
    if not all(os.path.isfile(os.path.join(folder, name)) for name in PHOTOS):
        sdist = os.path.join(tempfile.gettempdir(), "opencv-python-4.10.0.84.tar.gz")
        download_sdist(sdist)
        write_opencv_photos(folder, sdist)
    return [os.path.join(folder, name) for name in PHOTOS]


def build(task: str, photos: list[str], out: str, seed: int = 0) -> dict:
    from siamese_quality.core.defaults import DEFAULT_MODELS_VERSION
    from siamese_quality.core.training import TrainingConfig, train_pretext_model

    started = time.monotonic()
    config = TrainingConfig(task=task, max_seconds=None, max_steps=STEPS[task], seed=seed)
    model = train_pretext_model(photos, config)
    model.training["default_model"] = {"version": DEFAULT_MODELS_VERSION, "task": task}
    model.save(os.path.join(out, f"{task}.pt"))
    metrics = model.evaluation.get("metrics", {})
    print(
        f"  {task}: {model.training['steps']} steps in {time.monotonic() - started:.0f} s, "
        f"held-out Spearman {metrics.get('spearman', float('nan')):.3f}",
        flush=True,
    )
    entry = {
        "steps": model.training["steps"],
        "held_out_images": model.training.get("held_out_images"),
        "metrics": metrics,
        "baseline": model.evaluation.get("baseline"),
    }
    if model.jpeg_reader is not None:  # its steps and its held-out metrics
        entry["jpeg_file_reader"] = model.training["jpeg_file_reader"]
    return entry


def carry_over(task: str, out: str) -> None:
    """Keeps a bundled model that is not rebuilt, stamped with the current version: the
    same weights and calibration, a new record of the version (so its sha256 changes),
    its view reading the spectral readers (blur) and the file's encoding (JPEG) that its
    distortion reads today."""
    from dataclasses import replace

    from siamese_quality.core.cepstrum import SPECTRAL_READERS
    from siamese_quality.core.defaults import DEFAULT_MODELS_VERSION
    from siamese_quality.core.pretext_model import PretextModel

    path = os.path.join(out, f"{task}.pt")
    model = PretextModel.load(path)
    stamp = model.training.setdefault("default_model", {"task": task})
    if stamp.get("version") != DEFAULT_MODELS_VERSION:
        stamp["carried_from"] = stamp.get("version")
        stamp["version"] = DEFAULT_MODELS_VERSION
        if model.distortion.reads_spectral_blur:
            model.view = replace(model.view, spectral_blur=SPECTRAL_READERS)
        if model.distortion.reads_encoded_quality:
            model.view = replace(model.view, encoded_quality=True)
        model.save(path)
        print(f"  {task}: carried over to version {DEFAULT_MODELS_VERSION}", flush=True)


def describe_file(out: str, task: str) -> dict:
    """What the manifest says of a bundled file, read from the file itself."""
    from siamese_quality.core.pretext_model import PretextModel, sha256_of_file

    path = os.path.join(out, f"{task}.pt")
    return {
        "file": os.path.basename(path),
        "sha256": sha256_of_file(path),
        "bytes": os.path.getsize(path),
        "view": PretextModel.load(path).view.to_dict(),
    }


def main(argv: list[str] | None = None) -> None:
    from siamese_quality import __version__
    from siamese_quality.core.defaults import DEFAULT_MODELS_DIR, DEFAULT_MODELS_VERSION

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(STEPS), help="comma-separated tasks")
    parser.add_argument("--out", default=DEFAULT_MODELS_DIR)
    parser.add_argument("--seed", type=int, default=0, help="the bundled files use 0")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.isfile(manifest_path) else {}
    train, kept_out = training_photos()
    print(f"{len(train)} training photos, {len(kept_out)} kept out", flush=True)
    # models not rebuilt are carried over to this version (their weights unchanged)
    models = manifest.get("models", {})
    for task in models:
        if task not in tasks:
            carry_over(task, args.out)
    for task in [*tasks, None]:  # None: only rewrite the manifest (e.g. --tasks "")
        if task is not None:
            models[task] = build(task, train, args.out, args.seed)
        for name, entry in models.items():
            entry.update(describe_file(args.out, name))
        manifest = {
            "version": DEFAULT_MODELS_VERSION,
            "library_version": __version__,
            "built": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/build_default_models.py",
            "training_photos": sorted(os.path.basename(p) for p in train),
            "kept_out_photos": sorted(os.path.basename(p) for p in kept_out),
            "models": dict(sorted(models.items())),
        }
        with open(manifest_path, "w") as f:  # after each model: a stopped build keeps them
            json.dump(manifest, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
