"""Which pixels the tone readers should read: a resize, single stored pixels, or medians.

    python benchmarks/tone_views.py --photos headline|wallpapers|opencv [--json OUT]

Brightness and contrast read only the levels of an image (``model.ExposureLevelsNet``,
``model.TonalReachStartNet``), never its geometry. Their readings are fixed formulas
(every model trained here kept them), so this compares the views they could read with
no training: each photo damaged at its own resolution by the headline's code
(``core.degradations``), the start reading of the shipped front end on

- ``resized centre``: the shorter side resized to the working resolution, centre square
  (bundled v9 and before);
- ``stored pixels``: the pixel nearest the centre of each cell of a square grid over the
  whole frame;
- ``3x3 medians``: the median of the 3 x 3 pixels there (``images.sample_levels``,
  bundled v10).

It reports the pooled Spearman of each reading against its own damage (per fold on the
headline's three folds) and its |Spearman| against noise it should not read. OpenCV's
photos chose between the views; the headline's and the wallpapers' test the choice.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tables import print_table  # noqa: E402

from siamese_quality.core.degradations import get_family, jpeg_bytes  # noqa: E402
from siamese_quality.core.images import (  # noqa: E402
    center_crop,
    grid_centres,
    resize_short_side,
    sample_levels,
)
from siamese_quality.core.model import ExposureLevelsNet, TonalReachStartNet  # noqa: E402

# reader -> (its front end, working resolution, its own families, noise it should not read)
READERS = {
    "contrast": (TonalReachStartNet(), 256, ("contrast",)),
    "brightness": (ExposureLevelsNet(), 128, ("exposure gain", "exposure gamma")),
}
NOISE = ("gaussian noise", "shot noise", "camera noise")
VIEWS = ("resized centre", "stored pixels", "3x3 medians")


def view_pixels(pixels: torch.Tensor, view: str, size: int) -> torch.Tensor:
    if view == "resized centre":
        return center_crop(resize_short_side(pixels, size), size)
    if view == "stored pixels":
        height, width = pixels.shape[-2:]
        return pixels[:, grid_centres(height, size)][:, :, grid_centres(width, size)]
    return sample_levels(pixels, size)


def photo_sets(name: str) -> list[list[str]]:
    """The photos of ``name``, in the folds they are measured in."""
    import native_quality

    if name == "headline":
        photos, _ = native_quality.default_photos()
        return [[p for i, p in enumerate(photos) if i % 3 == fold] for fold in range(3)]
    if name == "wallpapers":
        return [native_quality.wallpaper_photos()]
    from build_default_models import opencv_photos

    return [opencv_photos()]


def readings(photo: str, families: list[str]) -> list[dict]:
    """Every reader's start reading on every view of every damaged copy of ``photo``."""
    import native_quality

    name = os.path.splitext(os.path.basename(photo))[0]
    original, records = native_quality.load_rgb(photo), []
    for family in map(get_family, families):
        rng = np.random.default_rng(native_quality._seed(name, family.name))
        for magnitude in (family.identity, *family.magnitudes):
            damaged = original  # the undamaged photo as it is, as in the headline
            if magnitude != family.identity:
                damaged = family.degrade(original, float(magnitude), rng)
                if family.saved_quality is not None:  # saved as the headline saves it
                    encoded = jpeg_bytes(damaged, family.saved_quality)
                    damaged = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
            pixels = torch.from_numpy(np.ascontiguousarray(damaged)).permute(2, 0, 1)
            for reader, (front_end, size, _) in READERS.items():
                for view in VIEWS:
                    seen = view_pixels(pixels, view, size)[None].float()
                    value = float(front_end(seen)[0, 0])
                    records.append(
                        {"photo": name, "family": family.name, "magnitude": magnitude,
                         "reader": reader, "view": view, "value": value}
                    )  # fmt: skip
    return records


def spearman(records: list[dict], reader: str, view: str, family: str) -> float:
    chosen = [r for r in records if (r["reader"], r["view"], r["family"]) == (reader, view, family)]
    return float(spearmanr([r["value"] for r in chosen], [r["magnitude"] for r in chosen])[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", choices=("headline", "wallpapers", "opencv"), default="opencv")
    parser.add_argument("--json", help="write the per-fold numbers here")
    args = parser.parse_args(argv)
    families = sorted({f for _, _, own in READERS.values() for f in own} | set(NOISE))
    folds = [
        [r for p in photos for r in readings(p, families)] for photos in photo_sets(args.photos)
    ]
    rows, results = [], []
    for reader, (_, _, own) in READERS.items():
        for family in (*own, *NOISE):
            for view in VIEWS:
                per_fold = [spearman(records, reader, view, family) for records in folds]
                if family in NOISE:
                    per_fold = [abs(v) for v in per_fold]
                results.append(
                    {"reader": reader, "family": family, "view": view, "folds": per_fold}
                )
                cells = " / ".join(f"{v:.3f}" for v in per_fold)
                kind = "own damage" if family in own else "|rho| vs noise"
                rows.append((reader, family, kind, view, cells, f"{np.mean(per_fold):.3f}"))
    print(f"{args.photos}: {sum(len(set(r['photo'] for r in f)) for f in folds)} photos")
    print_table(("reader", "family", "", "view", "Spearman per fold", "mean"), rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"photos": args.photos, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
