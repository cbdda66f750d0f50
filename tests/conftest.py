"""Shared test set-up: real FiftyOne on the local MongoDB, in a database of its own."""

import os
import shutil
import tempfile
import uuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS_DIR = os.path.join(REPO_ROOT, ".plugins")

# Must happen before fiftyone is imported: FiftyOne reads its config at import time
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "siamese_quality_tests")
os.environ["FIFTYONE_PLUGINS_DIR"] = PLUGINS_DIR
# model weights of the tests go to a throwaway folder, never the user's
_TEST_MODELS_DIR = None
if "SIAMESE_QUALITY_MODELS_DIR" not in os.environ:
    _TEST_MODELS_DIR = tempfile.mkdtemp(prefix="sq-test-models-")
    os.environ["SIAMESE_QUALITY_MODELS_DIR"] = _TEST_MODELS_DIR
os.makedirs(PLUGINS_DIR, exist_ok=True)
if not os.path.exists(os.path.join(PLUGINS_DIR, "siamese_quality")):
    os.symlink(REPO_ROOT, os.path.join(PLUGINS_DIR, "siamese_quality"))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _TEST_MODELS_DIR:
        shutil.rmtree(_TEST_MODELS_DIR, ignore_errors=True)


def imports_torch_in_a_fresh_process(code: str) -> bool:
    """Runs ``code`` in a new Python process (this test session's environment); returns
    whether torch got imported. Fails the test if the code fails."""
    import subprocess
    import sys

    code += "\nimport sys\nprint('torch' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def unique_name(prefix: str = "sq-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dataset_factory():
    """Creates datasets with unique names and deletes them after the test."""
    created = []

    def make(persistent: bool = False) -> fo.Dataset:
        ds = fo.Dataset(unique_name(), persistent=persistent)
        created.append(ds.name)
        return ds

    yield make
    for name in created:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def dead_leaves_image(seed: int, size=(160, 120), disks: int = 300) -> np.ndarray:
    """A "dead leaves" picture: overlapping sharp-edged disks of random colours and sizes.

    The classic synthetic stand-in for natural image statistics (used for camera
    sharpness charts): sharp edges at every scale, no blur of its own.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(disks):
        radius = float(min(size) * 0.4 * rng.power(0.3) + 1)
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius),
            fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
        )
    return np.array(image)


def write_dead_leaves_images(folder, count: int, size=(160, 120), seed: int = 0) -> list[str]:
    """Writes ``count`` dead-leaves PNGs and returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(str(folder), f"leaves_{seed}_{i:03d}.png")
        Image.fromarray(dead_leaves_image(seed * 1000 + i, size)).save(path)
        paths.append(path)
    return paths


def write_generated_images(folder, count: int, size=(96, 64), seed: int = 0) -> list[str]:
    """Writes ``count`` smooth random RGB images (JPEG) and returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        path = os.path.join(str(folder), f"generated_{i:03d}.jpg")
        image.save(path, quality=95)
        paths.append(path)
    return paths


TINY_TRAINING = {
    "working_resolution": 48,
    "max_seconds": None,
    "max_steps": 12,
    "validation_every": 4,
    "images_per_batch": 3,
    "magnitudes_per_image": 3,
}


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory) -> dict[str, str]:
    """Exported model files (blur, rotation, contrast), trained for a few steps on
    generated images.

    Quality does not matter here: these tests check plumbing, and importing a file
    is much faster than training per test. The rotation file is a trained one
    (``orientation``), which writes no confidence: the fixed default reader's confidence
    would weigh its severity (tested on its own in test_overview).
    """
    from siamese_quality.core.training import TrainingConfig, train_pretext_model

    folder = tmp_path_factory.mktemp("models")
    images = [dead_leaves_image(100 + i, (120, 96)) for i in range(6)]
    files = {}
    for task in ("blur", "rotation", "contrast"):
        backbone = "orientation" if task == "rotation" else None
        config = TrainingConfig(task=task, backbone=backbone, **TINY_TRAINING)
        model = train_pretext_model(images, config)
        files[task] = str(folder / f"{task}.pt")
        model.save(files[task])
    return files


@pytest.fixture(scope="session")
def noise_model_and_progress():
    """A noise model trained for a few steps, with its reader of JPEG files (measured on
    held-out copies saved as JPEG 95, which the bundled one predates), and the progress
    fractions its training reported."""
    from siamese_quality.core.training import TrainingConfig, train_pretext_model

    images = [dead_leaves_image(400 + i, (120, 96)) for i in range(6)]
    fractions: list[float] = []
    config = TrainingConfig(task="noise", **TINY_TRAINING)
    model = train_pretext_model(images, config, lambda r: fractions.append(r["fraction"]))
    return model, fractions


@pytest.fixture
def image_dataset(dataset_factory, tmp_path):
    """A dataset of 12 generated images (files on disk)."""
    ds = dataset_factory()
    paths = write_dead_leaves_images(tmp_path / "images", 12, size=(120, 96), seed=7)
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    return ds


def resolved_form(operator_name: str, dataset, params: dict) -> dict:
    """The form an operator shows for ``params``, as the App gets it from
    ``resolve_input``."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    from siamese_quality import PLUGIN_NAME

    operator = foo.get_operator(f"{PLUGIN_NAME}/{operator_name}")
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    return operator.resolve_input(ctx).to_json()


def form_errors(operator_name: str, dataset, params: dict) -> str:
    """The error messages an operator's form shows for ``params`` (joined)."""
    form = resolved_form(operator_name, dataset, params)
    errors = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("invalid"):
                errors.append(node.get("error_message", ""))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(form)
    return " | ".join(errors)
