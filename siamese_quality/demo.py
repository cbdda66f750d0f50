"""The README's main job: a demo dataset with damage to find, six models, and what they find.

Builds a persistent dataset from the colour photos that scikit-image ships and copies of
them damaged at their own resolution by processes no model trained on (defocus and
camera shake, shot noise, OpenCV JPEG, exposure by gamma and gain, tilts, box
pixelation; :mod:`siamese_quality.core.degradations`), each with its truth in the field
``demo_truth``. It assesses every sample with the bundled models (``sq.assess``), then
fine-tunes each on the dataset itself (no labels: the truth is never read) and scores
with the fine-tuned models too. It prints for each model the precision of its ten
"worst first" samples and its Spearman against the true magnitudes, bundled beside
fine-tuned and the classical baseline's, and what fine-tuning's held-out check kept.
Run with ``python -m siamese_quality.demo`` (``make demo`` does the set-up first);
``--app`` opens the FiftyOne App on the dataset.
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


# per model, the damage the demo hides for it: (degradation family, magnitudes)
DEMO_DAMAGE = {
    "blur": (("defocus blur", (3, 4, 6, 8)), ("motion blur", (8, 12, 16, 24))),
    "noise": (("shot noise", (8, 12, 20, 32)),),
    "jpeg": (("jpeg", (5, 10, 15, 25)),),
    "pixelation": (("pixelation", (3, 4, 6, 8)),),
    "brightness": (
        ("exposure gamma", (-1.2, -0.8, 0.8, 1.2)),
        ("exposure gain", (-1.5, -1.0, 1.0, 1.5)),
    ),
    "rotation": (("rotation", (-12, -8, -5, -3, 3, 5, 8, 12)),),
}
DEMO_TASKS = tuple(DEMO_DAMAGE)
COPIES_PER_TASK = 10
CLEAN = "clean"


def write_demo_samples(data_dir: str) -> list[dict]:
    """The clean photos and their damaged copies as files (existing ones are kept);
    returns ``{"filepath", "kind", "process", "magnitude"}`` per file."""
    from siamese_quality.core.degradations import get_family, write_damaged_copy

    photos = write_skimage_photos(data_dir)
    records = [{"filepath": p, "kind": CLEAN, "process": CLEAN, "magnitude": 0.0} for p in photos]
    damaged_dir = os.path.join(data_dir, "damaged")
    os.makedirs(damaged_dir, exist_ok=True)
    for offset, (task, options) in enumerate(DEMO_DAMAGE.items()):
        choices = [(get_family(name), m) for name, magnitudes in options for m in magnitudes]
        for copy in range(COPIES_PER_TASK):
            photo = photos[(copy + offset) % len(photos)]
            family, magnitude = choices[copy % len(choices)]
            stem = os.path.splitext(os.path.basename(photo))[0]
            path = os.path.join(damaged_dir, f"{stem}_{task}_{copy}{family.suffix}")
            if not os.path.isfile(path):
                pixels = np.asarray(Image.open(photo).convert("RGB"))
                rng = np.random.default_rng(1000 * offset + copy)
                write_damaged_copy(pixels, family, magnitude, path, rng)
            records.append(
                {
                    "filepath": os.path.abspath(path),
                    "kind": task,
                    "process": family.name,
                    "magnitude": float(magnitude),
                }
            )
    return records


def build_demo_dataset(data_dir: str, name: str = DEMO_DATASET) -> fo.Dataset:
    """Creates (or reuses) the persistent demo dataset: scikit-image's photos, their
    damaged copies, and each sample's truth in ``demo_truth`` (a classification: the kind
    of damage or "clean", with ``process`` and ``magnitude``).

    An existing dataset with exactly these files is reused, keeping its fields
    and runs. One that this function built from other files (e.g. another clone
    of the project, or an older demo) is rebuilt; any other dataset of that name is
    left alone and an error is raised.
    """
    records = write_demo_samples(data_dir)
    paths = [r["filepath"] for r in records]
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
    truth = [
        fo.Classification(label=r["kind"], process=r["process"], magnitude=r["magnitude"])
        for r in records
    ]
    dataset.add_samples(
        [
            fo.Sample(filepath=r["filepath"], demo_truth=t)
            for r, t in zip(records, truth, strict=True)
        ]
    )
    dataset.compute_metadata()
    return dataset


def registered_plugin_members() -> tuple[list[str], list[str]]:
    """Returns the URIs of this plugin's registered operators and panels."""
    import fiftyone.operators as foo

    members = [op for op in foo.list_operators() if op.plugin_name == PLUGIN_NAME]
    panels = sorted(op.uri for op in members if isinstance(op, foo.Panel))
    operators = sorted(op.uri for op in members if not isinstance(op, foo.Panel))
    return operators, panels


# each model's share of the per-model budget: JPEG and blur learn slowest (at 30 s
# JPEG found 2 of its 10 samples, at 60 s 9)
DEMO_BUDGET_SHARE = {
    "blur": 1.5,
    "noise": 1.0,
    "jpeg": 2.0,
    "pixelation": 1.0,
    "brightness": 1.0,
    "rotation": 1.0,
}
TUNED = "_tuned"  # the fine-tuned model of a task: key and fields ``<task>_tuned``


def clear_replaced_demo_models(dataset: fo.Dataset) -> list[str]:
    """Deletes models under a task's name that were not bundled (an older demo trained
    them from scratch there), so that :func:`~siamese_quality.sdk.assess` can add the
    bundled ones; returns their keys. Only for the demo's own dataset."""
    from siamese_quality import runs, sdk
    from siamese_quality.assessment import recorded_default_version

    keys = runs.list_model_keys(dataset)
    old = [t for t in DEMO_TASKS if t in keys and recorded_default_version(dataset, t) is None]
    for key in old:
        sdk.delete_model(dataset, key)
    return old


def fine_tune_demo_models(dataset: fo.Dataset, seconds: float, retrain: bool = False) -> list:
    """Fine-tunes (or reuses) each demo task's bundled model on the dataset's own images,
    ``seconds`` each on average, as model ``<task>_tuned``; returns their ModelInfo."""
    from siamese_quality import runs, sdk
    from siamese_quality.core.training import TrainingConfig

    existing = runs.list_model_keys(dataset)
    infos = []
    for task in DEMO_TASKS:
        key = task + TUNED
        if key in existing and not retrain:
            print(f"reusing model {key!r} (pass --retrain to fine-tune it again)")
        else:
            budget = seconds * DEMO_BUDGET_SHARE[task]
            doing = (
                f"measuring {task!r} on this dataset (a fixed reader: nothing to fine-tune)"
                if TrainingConfig(task=task, init="default").reads_units
                else f"fine-tuning {task!r} on this dataset for up to {budget:.0f} s ..."
            )
            print(doing, flush=True)
            sdk.train(
                dataset, task=task, key=key, init="default", max_seconds=budget, overwrite=True
            )
        infos.append(sdk.model_info(dataset, key))
    return infos


def _text_table(header: tuple, rows: list[tuple]) -> str:
    """Columns padded to their widest cell, separated by " | "."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        " | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    )


def fine_tuning_table(infos: list) -> str:
    """Per fine-tuned model: the bundled start's and the fine-tuned weights' held-out
    Spearman on the same held-out images of this dataset, and which was kept."""
    header = ("model", "bundled start", "fine-tuned", "kept", "unit")
    rows = []
    for info in infos:
        init = info.training.get("init") or {}
        start, tuned = init.get("start_metrics") or {}, init.get("metrics") or {}
        rows.append(
            (
                info.key,
                f"{start.get('spearman', float('nan')):.3f}",
                f"{tuned.get('spearman', float('nan')):.3f}",
                init.get("kept", "-"),
                info.unit,
            )
        )
    return _text_table(header, rows)


TOP = 10  # the "worst first" samples a user looks at


def _baseline_row(task: str, kinds: list[str], own: np.ndarray, truth: np.ndarray, images) -> dict:
    """The classical baseline's precision@10 and Spearman on the same files, or {}."""
    from siamese_quality.core.calibration import spearman
    from siamese_quality.core.distortions import get_distortion

    distortion = get_distortion(task)
    if distortion.baseline is None:
        return {}
    values = np.array(
        [distortion.baseline.measure(image) for image in images]
    )  # grows with the magnitude
    if distortion.two_sided:  # worse: further from the clean photos, either way
        severities = np.abs(values - np.median(values[np.array(kinds) == CLEAN]))
    else:
        severities = values if distortion.higher_is_worse else -values
    worst = np.argsort(-severities, kind="stable")[:TOP]
    return {
        "baseline": distortion.baseline.name,
        "baseline_precision": sum(kinds[i] == task for i in worst) / TOP,
        "baseline_spearman": spearman(values[own], truth[own]),
    }


def demo_findings(dataset: fo.Dataset, suffix: str = "", baselines: bool = True) -> list[dict]:
    """Per model (field ``<task><suffix>``): the share of its ten worst-first samples that
    carry its kind of damage, and the Spearman of its field against the true magnitudes
    of that kind (clean photos at no damage); with ``baselines``, the same for the
    classical baseline on the same files (it decodes every file: once per report)."""
    import torch

    from siamese_quality import actions
    from siamese_quality.core.calibration import spearman
    from siamese_quality.core.distortions import get_distortion

    kinds, magnitudes, paths = dataset.values(
        ["demo_truth.label", "demo_truth.magnitude", "filepath"]
    )
    images = [
        torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).contiguous()
        for p in (paths if baselines else [])
    ]
    rows = []
    for task in DEMO_TASKS:
        identity = get_distortion(task).identity
        own = np.array([k in (task, CLEAN) for k in kinds])
        truth = np.array(
            [identity if k == CLEAN else m for k, m in zip(kinds, magnitudes, strict=True)]
        )
        field = task + suffix
        worst = actions.worst_first(dataset, field).limit(TOP).values("demo_truth.label")
        rows.append(
            {
                "task": task,
                "damaged": int(sum(k == task for k in kinds)),
                "precision": sum(k == task for k in worst) / TOP,
                "spearman": spearman(np.array(dataset.values(field))[own], truth[own]),
                **(_baseline_row(task, kinds, own, truth, images) if baselines else {}),
            }
        )
    return rows


def findings_table(bundled: list[dict], tuned: list[dict] | None = None) -> str:
    """What each model finds: the bundled models' findings, beside the fine-tuned ones'
    where given, and the classical baseline's on the same files."""
    header = ("model", "damaged samples", f"precision@{TOP}, Spearman vs truth")
    if tuned is not None:
        header += (f"fine-tuned: precision@{TOP}, Spearman",)
    header += ("baseline: precision, Spearman",)
    lines = []
    for i, r in enumerate(bundled):
        line = (r["task"], str(r["damaged"]), f"{r['precision']:.1f}, {r['spearman']:.3f}")
        if tuned is not None:
            line += (f"{tuned[i]['precision']:.1f}, {tuned[i]['spearman']:.3f}",)
        line += (
            f"{r['baseline_precision']:.1f}, {r['baseline_spearman']:.3f} ({r['baseline']})"
            if "baseline" in r
            else "-",
        )
        lines.append(line)
    return _text_table(header, lines)


def issue_agreement(dataset: fo.Dataset, suffix: str = "") -> str:
    """How often the summary's worst issue (``quality_issue``, naming models
    ``<task><suffix>``) names the damage a sample truly carries, in one line."""
    kinds, issues = dataset.values(["demo_truth.label", "quality_issue"])
    parts, right = [], 0
    for task in DEMO_TASKS:
        found = sum(k == task and i == task + suffix for k, i in zip(kinds, issues, strict=True))
        parts.append(f"{task} {found}/{kinds.count(task)}")
        right += found
    damaged = sum(k != CLEAN for k in kinds)
    return f"{right} of {damaged} damaged samples ({', '.join(parts)})"


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.path.join("data", "demo"),
        help="folder the demo photos are written to",
    )
    parser.add_argument("--dataset", default=DEMO_DATASET, help="FiftyOne dataset name")
    parser.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="average fine-tuning budget per model (six models)",
    )
    parser.add_argument(
        "--retrain", action="store_true", help="fine-tune existing fine-tuned models again"
    )
    parser.add_argument("--app", action="store_true", help="open the FiftyOne App and wait")
    parser.add_argument("--port", type=int, default=5151, help="App port for --app")
    return parser.parse_args(argv)


def print_plugin_members() -> None:
    """The operators and panels FiftyOne found for this plugin; none is an error."""
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


def assess_then_fine_tune(dataset: fo.Dataset, seconds: float, retrain: bool) -> dict:
    """The bundled models' fields and findings, then the fine-tuned models' fields:
    ``{"bundled_rows", "bundled_issues", "infos"}`` for the report."""
    from siamese_quality import sdk

    for key in clear_replaced_demo_models(dataset):
        print(f"deleted model {key!r}, trained by an older demo: the bundled one replaces it")
    tasks, tuned_keys = list(DEMO_TASKS), [t + TUNED for t in DEMO_TASKS]
    assessment = sdk.assess(dataset, tasks=tasks, upgrade=True, heatmaps=True, progress=False)
    print(f"\nsq.assess: {assessment['message']}")
    bundled_rows = demo_findings(dataset)
    sdk.summarize(dataset, keys=tasks)  # assess summarizes only when it scored something
    bundled_issues = issue_agreement(dataset)
    print()
    infos = fine_tune_demo_models(dataset, seconds, retrain)
    sdk.score(dataset, key=tuned_keys, heatmaps=True, progress=False)
    sdk.summarize(dataset, keys=tuned_keys)
    print(
        f"\nDataset {dataset.name!r}: {len(dataset)} samples; fields {', '.join(tasks)} "
        f"(bundled), {', '.join(tuned_keys)} (fine-tuned), each with _raw, _fingerprint and, "
        "local models, _patches and _heatmap; quality_issue, quality_severity, "
        "quality_percentile (sq.summarize of the fine-tuned models)"
    )
    return {"bundled_rows": bundled_rows, "bundled_issues": bundled_issues, "infos": infos}


def print_report(dataset: fo.Dataset, found: dict) -> None:
    """What each model finds against the truth, and what fine-tuning kept."""
    from siamese_quality import actions

    print(
        f"\nWhat each model finds among {len(dataset)} samples ({COPIES_PER_TASK} damaged per "
        "model by processes no model trained on; the truth is in demo_truth, which no model "
        "read): the bundled models (sq.assess, fields blur, noise, ...) and the same "
        f"fine-tuned on this dataset (fields blur{TUNED}, ...):"
    )
    # the baseline's columns come from the bundled rows: the files are the same
    print(findings_table(found["bundled_rows"], demo_findings(dataset, TUNED, baselines=False)))
    print(
        "\nWorst issue per sample (sq.summarize: quality_issue, quality_severity, "
        "quality_percentile) names the true damage of\n"
        f"  bundled models: {found['bundled_issues']}\n"
        f"  fine-tuned:     {issue_agreement(dataset, TUNED)}"
    )
    print(
        "\nFine-tuning, judged on held-out photos of this dataset that neither trained a "
        "model nor chose its checkpoint, damaged at known magnitudes by the library "
        "(held-out Spearman; the better is kept):"
    )
    print(fine_tuning_table(found["infos"]))
    worst = actions.worst_first(dataset, "blur").first()
    print(
        f"\nMost blurred sample: {os.path.basename(worst.filepath)} (blur {worst.blur:.2f} px "
        f"of the stored image; truth: {worst.demo_truth.process} {worst.demo_truth.magnitude:g})"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dataset = build_demo_dataset(args.data_dir, args.dataset)
    if args.app:
        launch_app(dataset, args.port)
        return
    print_plugin_members()
    found = assess_then_fine_tune(dataset, args.seconds, args.retrain)
    print_report(dataset, found)
    print("\nOpen the App on this dataset with:  make app   (then http://127.0.0.1:5151)")


if __name__ == "__main__":
    main()
