"""The blur reader's fixed readings on the headline's damaged files, with no training.

    python benchmarks/blur_readings.py [--patch-size 64] [--patch-count 16] [--photos opencv]

Every blur model keeps (or starts from) the edge-width reader's start reading
(``EdgeSpreadNet``: the mean of the edges' and the gradient energy's log widths), so its
ranking can be probed without ``sq.train``: the files ``native_quality.py`` damages (all
folds, cached), cut into the patches ``sq.score`` reads, each reading aggregated as the
blur view does (its low quantile over the structured patches). Prints, per blur family,
the pooled Spearman of the start reading and of its two halves; how well each photo's
own files are ordered; and the ceiling of a reader that measured each file's total blur
exactly, ``sqrt(s0^2 + sigma^2)`` with ``s0`` the undamaged photo's start reading and
``sigma`` the damage's Gaussian-equivalent width (defocus radius / 2, shake length /
sqrt(12)): what the photos' own blur leaves to win. Beside them, the start reading
calibrated as the bundled blur model calibrates it, with the view's spectral readings
(``core.cepstrum``: camera shake and defocus from the whole image's cepstrum, round blur
from its power spectrum), combined as ``sq.score`` combines them (``combined_width``):
with the shake alone, the defocus alone, both (bundled models v4) and all three (v5,
the field); and, for every kind of damage, the share of files where each is found.
``--photos opencv`` reads OpenCV's 21 sample photos instead (``fetch_opencv_photos.py``),
which chose none of the spectral readers' constants. Deterministic; a few minutes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from native_quality import damaged_copies, default_photos  # noqa: E402
from tables import print_table  # noqa: E402

from siamese_quality.core.cepstrum import combined_width, read_spectral_blur  # noqa: E402
from siamese_quality.core.defaults import load_default_model  # noqa: E402
from siamese_quality.core.degradations import FAMILIES  # noqa: E402
from siamese_quality.core.distortions import get_distortion  # noqa: E402
from siamese_quality.core.images import ImageFile  # noqa: E402
from siamese_quality.core.model import EdgeSpreadNet  # noqa: E402
from siamese_quality.core.views import PatchView, patch_structure, view_for  # noqa: E402

# the damage's width as a Gaussian sigma (px) per unit of its magnitude
GAUSSIAN_EQUIVALENT = {
    "gaussian blur": 1.0,
    "defocus blur": 0.5,
    "motion blur": 1 / math.sqrt(12),
}


def readings(records: list[dict], view: PatchView) -> dict[str, np.ndarray]:
    """Per file: the start reading and its halves (log px), aggregated as ``view`` does,
    and the Gaussian-equivalent widths (px, 0: none found) of the shake and the defocus
    its cepstrum shows and of the round blur its power spectrum shows (NaN: not read)."""
    reader = EdgeSpreadNet()
    found = {"start": [], "edges": [], "energy": [], "shake": [], "defocus": [], "round": []}
    for record in records:
        image = ImageFile(record["filepath"])
        spectral = read_spectral_blur(image.native_tensor())
        found["shake"].append(spectral.shake.sigma)
        found["defocus"].append(spectral.defocus.sigma)
        found["round"].append(spectral.widths[1])
        patches = view.prepare(image).float()
        features, structure = reader(patches), patch_structure(patches[None])
        halves = {
            "start": features[:, :2].mean(1),
            "edges": features[:, 0],
            "energy": features[:, 1],
        }
        for name, value in halves.items():
            found[name].append(float(view.aggregate(value[None], structure)[0]))
    return {name: np.array(values) for name, values in found.items()}


def family_rows(records: list[dict], values: dict[str, np.ndarray]) -> list[tuple]:
    family = np.array([r["family"] or "" for r in records])
    magnitude = np.array([r["magnitude"] or 0.0 for r in records])
    photo = np.array([r["photo"] for r in records])
    undamaged = {p: values["start"][(family == "") & (photo == p)][0] for p in set(photo)}
    width = load_default_model("blur").calibration.predict(values["start"])
    rows = []
    for name, per_unit in GAUSSIAN_EQUIVALENT.items():
        if name not in family:
            continue
        chosen = (family == name) | (family == "")
        truth = magnitude[chosen]
        pooled = [spearmanr(values[k][chosen], truth)[0] for k in ("start", "edges", "energy")]
        for extra, readers in ((["shake"], 1), (["defocus"], 1), (["shake", "defocus"], 1)):
            cepstral = np.maximum.reduce([values[k] for k in extra])
            spectral = np.stack([cepstral, values["round"]], axis=1)
            pooled.append(spearmanr(combined_width(width, spectral, readers)[chosen], truth)[0])
        spectral = np.stack([np.maximum(values["shake"], values["defocus"]), values["round"]], 1)
        pooled.append(spearmanr(combined_width(width, spectral)[chosen], truth)[0])
        within = [
            spearmanr(values["start"][chosen & (photo == p)], magnitude[chosen & (photo == p)])[0]
            for p in sorted(set(photo))
        ]
        own = np.exp([undamaged[p] for p in photo[chosen]]) - EdgeSpreadNet.WIDTH_FLOOR
        ceiling = spearmanr(np.hypot(own, per_unit * truth), truth)[0]
        rows.append(
            (name, *(f"{v:.3f}" for v in pooled), f"{np.nanmean(within):.3f}", f"{ceiling:.3f}")
        )
    return rows


def found_rows(records: list[dict], values: dict[str, np.ndarray]) -> list[tuple]:
    """Per kind of damage: the share of its files where a shake, a defocus, a round blur
    of over 1 px is found."""
    family = np.array([r["family"] or "undamaged" for r in records])
    least = {"shake": 0.0, "defocus": 0.0, "round": 1.0}
    return [
        (name, *(f"{np.mean(values[k][family == name] > least[k]):.2f}" for k in least))
        for name in dict.fromkeys(family)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patch-count", type=int, default=16)
    parser.add_argument("--photos", choices=("headline", "opencv"), default="headline")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    view = view_for(get_distortion("blur"), args.patch_size, args.patch_count)
    if args.photos == "opencv":
        from build_default_models import opencv_photos

        photos = opencv_photos()
    else:
        photos, _ = default_photos()
    records = damaged_copies(photos, list(FAMILIES))
    print(f"{len(records)} files, {args.patch_count} patches of {args.patch_size} px")
    header = (
        "damage",
        "start reading",
        "edges alone",
        "energy alone",
        "start + shake",
        "start + defocus",
        "start + both (v4)",
        "+ round blur (v5, the field)",
        "within one photo",
        "exact reader's ceiling",
    )
    values = readings(records, view)
    print_table(header, family_rows(records, values))
    header = ("damage", "shake found", "defocus found", "round blur over 1 px")
    print_table(header, found_rows(records, values))


if __name__ == "__main__":
    main()
