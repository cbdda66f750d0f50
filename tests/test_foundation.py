"""Set-up essentials: the demo dataset and an installable wheel."""

import os
import shutil
import subprocess
import sys
import zipfile

import fiftyone as fo
import pytest
from conftest import REPO_ROOT, unique_name, write_generated_images
from fiftyone import ViewField as F

from siamese_quality import demo


@pytest.fixture(scope="module")
def demo_photos(tmp_path_factory) -> str:
    """The demo's photos and damaged copies, written once for this module's tests."""
    folder = str(tmp_path_factory.mktemp("demo") / "photos")
    demo.write_demo_samples(folder)
    return folder


def test_demo_dataset_is_built_from_skimage_photos_and_reused(demo_photos, tmp_path):
    name = unique_name("sq-demo")
    try:
        ds = demo.build_demo_dataset(demo_photos, name)
        assert ds.persistent
        photos = len(demo.SKIMAGE_COLOR_PHOTOS)
        assert len(ds) == photos + demo.COPIES_PER_TASK * len(demo.DEMO_TASKS)
        assert ds.count_values("demo_truth.label") == {
            demo.CLEAN: photos,
            **{task: demo.COPIES_PER_TASK for task in demo.DEMO_TASKS},
        }
        assert all(os.path.isfile(p) for p in ds.values("filepath"))
        assert min(ds.values("metadata.width")) >= 300
        jpegs = ds.match(F("demo_truth.label") == "jpeg")
        assert all(p.endswith(".jpg") for p in jpegs.values("filepath"))  # quality as encoded

        ds.set_values("note", ["kept"] * len(ds))
        again = demo.build_demo_dataset(demo_photos, name)
        assert again.values("note") == ["kept"] * len(ds)

        # rebuilt from another folder (another clone): the demo's own dataset follows
        shutil.copytree(demo_photos, tmp_path / "moved")
        moved = demo.build_demo_dataset(str(tmp_path / "moved"), name)
        assert all("/moved/" in p for p in moved.values("filepath"))
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


@pytest.mark.parametrize("suffix", ["", demo.TUNED])
def test_demo_findings_score_an_oracle_perfectly(demo_photos, suffix):
    """The demo's precision@10 and Spearman against the truth, on fields that are the
    truth's own severity (larger is worse: the way worst-first reads a field of yours),
    bundled models' fields or fine-tuned ones'."""
    from siamese_quality.core.distortions import get_distortion

    name = unique_name("sq-demo")
    try:
        ds = demo.build_demo_dataset(demo_photos, name)
        kinds, magnitudes = ds.values(["demo_truth.label", "demo_truth.magnitude"])
        for task in demo.DEMO_TASKS:
            distortion = get_distortion(task)
            truth = [
                m if k == task else distortion.identity
                for k, m in zip(kinds, magnitudes, strict=True)
            ]
            ds.set_values(task + suffix, [float(distortion.severity(m)) for m in truth])
        rows = {row["task"]: row for row in demo.demo_findings(ds, suffix)}
        assert all(row["precision"] == 1.0 for row in rows.values())
        for task in ("blur", "noise", "pixelation"):  # severity grows with the magnitude
            assert rows[task]["spearman"] == pytest.approx(1.0)
        assert rows["noise"]["baseline_precision"] >= 0.8  # the wavelet estimate finds noise
        assert "baseline" not in rows["rotation"]
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_grayscale_skimage_photos_are_written_as_rgb_files(tmp_path):
    from PIL import Image

    paths = demo.write_skimage_photos(str(tmp_path), demo.SKIMAGE_GRAYSCALE_PHOTOS)
    assert [os.path.basename(p) for p in paths] == [
        f"{name}.png" for name in demo.SKIMAGE_GRAYSCALE_PHOTOS
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= 100


def test_demo_refuses_to_replace_a_dataset_it_did_not_create(
    dataset_factory, demo_photos, tmp_path
):
    user_ds = dataset_factory(persistent=True)
    user_ds.add_samples([fo.Sample(filepath=p) for p in write_generated_images(tmp_path, 2)])
    with pytest.raises(ValueError, match="already exists with other images"):
        demo.build_demo_dataset(demo_photos, user_ds.name)
    assert len(fo.load_dataset(user_ds.name)) == 2


@pytest.mark.slow
def test_demo_main_assesses_fine_tunes_and_prints_its_evidence(
    demo_photos, tiny_model_files, capsys
):
    """The README's main job, end to end, with tiny budgets: the bundled models, then the
    same fine-tuned on the dataset, on a demo dataset where an older demo left a model it
    trained from scratch under a task's name."""
    import siamese_quality as sq
    from siamese_quality.assessment import recorded_default_version

    name = unique_name("sq-demo")
    try:
        sq.import_model(
            demo.build_demo_dataset(demo_photos, name), tiny_model_files["blur"], key="blur"
        )
        demo.main(["--data-dir", demo_photos, "--dataset", name, "--seconds", "3"])
        out = capsys.readouterr().out
        dataset = fo.load_dataset(name)
        assert "deleted model 'blur', trained by an older demo" in out
        assert recorded_default_version(dataset, "blur") is not None  # the bundled one
        findings = out.split("What each model finds")[1].split("Fine-tuning, judged")[0]
        for task in demo.DEMO_TASKS:
            assert dataset.count(task) == dataset.count(task + demo.TUNED) == len(dataset)
            assert f"\n{task} " in findings  # a row of the findings table
            assert sq.model_info(dataset, task + demo.TUNED).training["init"]["kept"] in out
        assert "precision@10" in findings and "(variance of the Laplacian)" in findings
        # the cross-model summary of the fine-tuned models, against the truth no model read
        kinds, issues = dataset.values(["demo_truth.label", "quality_issue"])
        right = sum(i == k + demo.TUNED for k, i in zip(kinds, issues, strict=True))
        damaged = sum(k != demo.CLEAN for k in kinds)
        assert f"fine-tuned:     {right} of {damaged} damaged samples" in findings
        assert dataset.count("blur_heatmap") == dataset.count("blur_tuned_heatmap") == len(dataset)
        most_blurred = dataset.sort_by("blur", reverse=True).first().filepath
        assert os.path.basename(most_blurred) == out.split("Most blurred sample: ")[1].split()[0]

        # a second run reuses the fine-tuned models instead of training again, and finds
        # what the first found with the bundled ones (assess scores nothing the second time)
        demo.main(["--data-dir", demo_photos, "--dataset", name, "--seconds", "3"])
        again = capsys.readouterr().out
        assert again.count("reusing model") == len(demo.DEMO_TASKS)
        bundled_issues = out.split("bundled models: ")[1].splitlines()[0]
        assert not bundled_issues.startswith("0 of")
        assert again.split("bundled models: ")[1].splitlines()[0] == bundled_issues
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_package_builds_as_a_wheel_with_the_app_modules(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            REPO_ROOT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert "siamese_quality/app/operators.py" in names
    assert not any(n.startswith("tests/") for n in names)


def test_the_demo_app_can_schedule_operations():
    """Open-source FiftyOne offers "Schedule" only with legacy orchestrators allowed."""
    code = (
        "import os, fiftyone as fo\n"
        "from fiftyone.operators.executor import ExecutionOptions\n"
        "from siamese_quality import demo\n"
        "before = ExecutionOptions().orchestrator_registration_enabled\n"
        "demo.enable_scheduling()\n"
        "print(before, ExecutionOptions().orchestrator_registration_enabled,\n"
        "      os.environ['FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    # before: the App would register an orchestrator first (NOT AVAILABLE); after: it queues
    assert out.stdout.split()[-3:] == ["True", "False", "true"]


# the modules that work without FiftyOne: everything in siamese_quality/core/
CORE_MODULES = sorted(
    name[: -len(".py")]
    for name in os.listdir(os.path.join(REPO_ROOT, "siamese_quality", "core"))
    if name.endswith(".py") and name != "__init__.py"
)


def test_the_core_modules_import_no_fiftyone():
    assert {"distortions", "model", "training", "scoring"} <= set(CORE_MODULES)
    imports = "; ".join(f"import siamese_quality.core.{name}" for name in CORE_MODULES)
    loaded = "sorted(m for m in sys.modules if m.startswith('fiftyone'))"
    code = f"import sys; {imports}; print({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _imported_modules(path: str, package: str) -> set[str]:
    """The absolute names of the modules the file at ``path`` (in ``package``) imports."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = node.module if not node.level else ".".join([*base, node.module or ""])
            names.add(module.rstrip("."))
    return names


def test_no_module_imports_upward():
    """The core imports only the core (and the package's version); the SDK nothing of
    the App."""
    root = os.path.join(REPO_ROOT, "siamese_quality")
    for folder, package in (("core", "siamese_quality.core"), ("", "siamese_quality")):
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if not name.endswith(".py"):
                continue
            ours = {
                m
                for m in _imported_modules(os.path.join(root, folder, name), package)
                if m.startswith("siamese_quality")
            }
            if folder == "core":
                upward = {m for m in ours if m != "siamese_quality" and not m.startswith(package)}
            else:
                upward = {m for m in ours if m.startswith("siamese_quality.app")}
            assert not upward, f"{folder}/{name} imports {sorted(upward)}"


def test_the_damage_that_measures_the_models_shares_no_code_with_them():
    path = os.path.join(REPO_ROOT, "siamese_quality", "core", "degradations.py")
    ours = {m for m in _imported_modules(path, "siamese_quality.core") if "siamese" in m}
    assert ours == set()


def test_the_public_paths_the_readme_shows_are_the_core_modules():
    import siamese_quality.core.distortions
    import siamese_quality.core.training
    import siamese_quality.distortions
    import siamese_quality.training

    assert siamese_quality.distortions is siamese_quality.core.distortions
    assert siamese_quality.training is siamese_quality.core.training


BENCHMARK_HELP = """
import os, runpy, sys
sys.path.insert(0, "benchmarks")
for script in sorted(os.listdir("benchmarks")):
    if script.endswith(".py") and script != "tables.py":
        sys.argv = [script, "--help"]
        try:
            runpy.run_path(os.path.join("benchmarks", script), run_name="__main__")
        except SystemExit as done:
            assert done.code in (0, None), script
        print("OK", script)
"""


def test_every_benchmark_imports_what_it_names():
    """A benchmark that no longer imports is a claim nobody can re-measure."""
    out = subprocess.run(
        [sys.executable, "-c", BENCHMARK_HELP],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr
    scripts = [n for n in os.listdir(os.path.join(REPO_ROOT, "benchmarks")) if n.endswith(".py")]
    assert out.stdout.count("OK ") == len(scripts) - 1, out.stdout
