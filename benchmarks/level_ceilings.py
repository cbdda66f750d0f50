"""What the photos' own levels leave to win on exposure and contrast (no training).

    python benchmarks/level_ceilings.py [--json benchmarks/results/native_quality.json]

The headline benchmark pools each family's Spearman over photos whose own brightness
and contrast differ. A reader that measured each damaged file's *total* level exactly
(the undamaged photo's own level, as the classical measure reads it, composed with the
damage) would still rank the added damage only as well as the photos' own levels allow.
From a ``native_quality.py`` run's per-file values (seed 0), per fold:

- contrast: the undamaged photo's tonal reach times the factor (Pillow blends towards
  the mean grey, so every tail's reach scales by it until it clips);
- exposure gain: the photo's log2 mean HSV value plus the stops over 2.2 (sRGB's
  gamma; clipping ignored);
- exposure gamma: the photo's mean value (0-1) to the power ``2 ** -magnitude``.

Beside it: the classical measure on the files and the model's field. A target above
the exact reader's ceiling needs a cue the damage moves and the scenes do not (for
exposure gain, the highlights: docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
from scipy.stats import spearmanr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tables import print_table  # noqa: E402

# family -> (the field's task, the measure of the photo's own level, its composition
# with the damage, the undamaged photo's magnitude)
TOTALS = {
    "contrast": ("contrast", "baseline_contrast", lambda own, m: own * m, 1.0),
    "exposure gain": (
        "brightness",
        "baseline_brightness",
        lambda own, m: math.log2(max(own, 1.0)) + m / 2.2,
        0.0,
    ),
    "exposure gamma": (
        "brightness",
        "baseline_brightness",
        lambda own, m: (own / 255.0) ** (2.0**-m),
        0.0,
    ),
}


def fold_rows(files: list[dict], family: str, fold: int) -> tuple[str, ...]:
    task, measure, total, identity = TOTALS[family]
    chosen = [f for f in files if f["fold"] == fold and f["family"] in (family, None)]
    own = {f["photo"]: f[measure] for f in chosen if f["family"] is None}
    truth = [identity if f["magnitude"] is None else f["magnitude"] for f in chosen]
    exact = [total(own[f["photo"]], m) for f, m in zip(chosen, truth, strict=True)]
    measured = [f[measure] for f in chosen]
    field = [f.get(task) for f in chosen]

    def rank(values) -> str:
        if any(v is None for v in values):
            return "-"
        return f"{spearmanr(values, truth)[0]:.3f}"

    return (family, str(fold), rank(exact), rank(measured), rank(field))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.path.join(HERE, "results", "native_quality.json")
    parser.add_argument("--json", default=default, help="a native_quality.py run")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        files = [r for r in json.load(f)["files"] if r["seed"] == 0]
    folds = sorted({r["fold"] for r in files})
    rows = [fold_rows(files, family, fold) for family in TOTALS for fold in folds]
    header = ("damage", "fold", "exact reader of the total", "classical measure", "field")
    print_table(header, rows)
    means = [
        (family, f"{np.mean([float(r[2]) for r in rows if r[0] == family]):.3f}")
        for family in TOTALS
    ]
    print_table(("damage", "exact reader's mean over the folds"), means)


if __name__ == "__main__":
    main()
