"""The README's main job: the demo dataset, three quality models, scores and their evidence.

Builds a persistent dataset from the colour photos that scikit-image ships, trains
blur, rotation and brightness models on it (small budgets), scores every sample,
and prints the held-out correlations next to the published ones and the classical
baselines. Run with ``python -m siamese_quality.demo`` (``make demo`` does the
set-up first); ``--app`` opens the FiftyOne App on the dataset.
"""

import argparse
import os
from collections.abc import Sequence

import fiftyone as fo
import numpy as np
from PIL import Image

from siamese_quality import PLUGIN_NAME

DEMO_DATASET = "siamese-quality-demo"
_DEMO_MARK = "siamese_quality.demo"

# The colour photographs bundled with scikit-image (no download needed)
SKIMAGE_COLOR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)


# Grayscale photographs bundled with scikit-image (camera, microscopy, astronomy,
# textures, scanned text): more varied content for training, never in the demo
SKIMAGE_GRAYSCALE_PHOTOS = (
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "cell",
)


def write_skimage_photos(folder: str, names: Sequence[str] = SKIMAGE_COLOR_PHOTOS) -> list[str]:
    """Writes scikit-image's bundled photos to ``folder`` as RGB PNG files.

    Existing files are kept, so a second call costs nothing.

    Args:
        names: ``skimage.data`` functions, e.g. :data:`SKIMAGE_GRAYSCALE_PHOTOS`

    Returns:
        the absolute file paths, in ``names`` order
    """
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.abspath(os.path.join(folder, f"{name}.png"))
        if not os.path.isfile(path):
            pixels = getattr(skimage.data, name)()
            if isinstance(pixels, tuple):  # stereo_motorcycle -> (left, right, disparity)
                pixels = pixels[0]
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB").save(path)
        paths.append(path)
    return paths


def build_demo_dataset(data_dir: str, name: str = DEMO_DATASET) -> fo.Dataset:
    """Creates (or reuses) the persistent demo dataset of scikit-image photos.

    An existing dataset with exactly these files is reused, keeping its fields
    and runs. One that this function built from other files (e.g. another clone
    of the project) is rebuilt; any other dataset of that name is left alone and
    an error is raised.
    """
    paths = write_skimage_photos(data_dir)
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if sorted(dataset.values("filepath")) == sorted(paths):
            return dataset
        if dataset.info.get("created_by") != _DEMO_MARK:
            raise ValueError(
                f"A dataset named {name!r} already exists with other images; "
                f"delete it (fo.delete_dataset({name!r})) or choose another name"
            )
        from siamese_quality import sdk

        for key in [m.key for m in sdk.list_models(dataset)]:  # no orphaned weights files
            sdk.delete_model(dataset, key)
        dataset.delete()
    dataset = fo.Dataset(name, persistent=True)
    dataset.info["created_by"] = _DEMO_MARK
    dataset.save()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    dataset.compute_metadata()
    return dataset


def registered_plugin_members() -> tuple[list[str], list[str]]:
    """Returns the URIs of this plugin's registered operators and panels."""
    import fiftyone.operators as foo

    members = [op for op in foo.list_operators() if op.plugin_name == PLUGIN_NAME]
    panels = sorted(op.uri for op in members if isinstance(op, foo.Panel))
    operators = sorted(op.uri for op in members if not isinstance(op, foo.Panel))
    return operators, panels


DEMO_TASKS = ("blur", "rotation", "brightness")


def train_demo_models(dataset: fo.Dataset, seconds: float, retrain: bool = False) -> list:
    """Trains (or reuses) one model per demo task; returns their ModelInfo."""
    from siamese_quality import sdk

    infos = []
    for task in DEMO_TASKS:
        if task in [m.key for m in sdk.list_models(dataset)] and not retrain:
            print(f"reusing model {task!r} (pass --retrain to train it again)")
        else:
            print(f"training {task!r} for up to {seconds:.0f} s ...", flush=True)
            sdk.train(dataset, task=task, max_seconds=seconds, overwrite=True)
        infos.append(sdk.model_info(dataset, task))
    return infos


def results_table(infos: list) -> str:
    """Held-out correlations next to the published ones and the classical baselines."""
    from siamese_quality.core.texts import PUBLISHED_CORRELATIONS

    header = (
        "model",
        "published r",
        "held-out Pearson",
        "Spearman",
        "baseline Spearman",
        "MAE",
        "unit",
    )
    rows = []
    for info in infos:
        baseline = info.baseline or {}
        published = PUBLISHED_CORRELATIONS.get(info.task)
        rows.append(
            (
                info.key,
                "-" if published is None else f"{published:.3f}",
                f"{info.metrics.get('pearson', float('nan')):.3f}",
                f"{info.metrics.get('spearman', float('nan')):.3f}",
                "-"
                if "spearman" not in baseline
                else f"{baseline['spearman']:.3f} ({baseline['name']})",
                f"{info.metrics.get('mae', float('nan')):.2f}",
                info.unit,
            )
        )
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        " | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    )


WORKER_COMMAND = "make worker   (or: fiftyone delegated launch, with FIFTYONE_PLUGINS_DIR set)"


def enable_scheduling() -> None:
    """Lets the App queue delegated operations ("Schedule"): open-source FiftyOne 1.22
    offers it only with ``allow_legacy_orchestrators``. Set before the App server starts
    (it inherits the environment)."""
    os.environ["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] = "true"
    fo.config.allow_legacy_orchestrators = True


def launch_app(dataset: fo.Dataset, port: int) -> None:
    """Opens the App on ``dataset`` with scheduling enabled, and waits."""
    enable_scheduling()
    session = fo.launch_app(dataset, port=port, address="127.0.0.1", auto=False)
    print(f"FiftyOne App on {session.url} (Ctrl+C to stop)")
    print(f"Scheduled operations (training, sharded scoring) run in a worker: {WORKER_COMMAND}")
    session.wait(-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.path.join("data", "demo"),
        help="folder the demo photos are written to",
    )
    parser.add_argument("--dataset", default=DEMO_DATASET, help="FiftyOne dataset name")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="training budget per model (three models)"
    )
    parser.add_argument("--retrain", action="store_true", help="train existing models again")
    parser.add_argument("--app", action="store_true", help="open the FiftyOne App and wait")
    parser.add_argument("--port", type=int, default=5151, help="App port for --app")
    args = parser.parse_args(argv)

    dataset = build_demo_dataset(args.data_dir, args.dataset)
    if args.app:
        launch_app(dataset, args.port)
        return

    operators, panels = registered_plugin_members()
    if not operators and not panels:
        raise SystemExit(
            f"FiftyOne found no operators of {PLUGIN_NAME}: is FIFTYONE_PLUGINS_DIR "
            f"({fo.config.plugins_dir}) pointing at a folder that links to this plugin?"
        )
    print(f"Plugin {PLUGIN_NAME}: {len(operators)} operators, {len(panels)} panels")
    for uri in operators + panels:
        print(f"  {uri}")
    print()

    from siamese_quality import actions, sdk

    infos = train_demo_models(dataset, args.seconds, args.retrain)
    summary = sdk.score(dataset, key=list(DEMO_TASKS), progress=False)
    print(f"\n{summary['message']} into fields {', '.join(DEMO_TASKS)} (+ *_raw)\n")
    print(dataset)
    print(
        "\nHeld-out evidence (photos that neither trained a model nor chose its checkpoint, "
        "distorted at known magnitudes; calibration cross-fitted over them):"
    )
    print(results_table(infos))
    worst = actions.worst_first(dataset, "blur").first()
    print(
        f"\nMost blurred photo: {os.path.basename(worst.filepath)} "
        f"(blur sigma {worst.blur:.2f} px of the stored image)"
    )
    print("\nOpen the App on this dataset with:  make app   (then http://127.0.0.1:5151)")


if __name__ == "__main__":
    main()
