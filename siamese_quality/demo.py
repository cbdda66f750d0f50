"""The README's main job: build the demo dataset from photos that scikit-image ships.

Run with ``python -m siamese_quality.demo`` (``make demo`` does the set-up first).
"""

import argparse
import os

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


def write_skimage_photos(folder: str) -> list[str]:
    """Writes the scikit-image colour photos to ``folder`` as PNG files.

    Existing files are kept, so a second call costs nothing.

    Returns:
        the absolute file paths, in ``SKIMAGE_COLOR_PHOTOS`` order
    """
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in SKIMAGE_COLOR_PHOTOS:
        path = os.path.abspath(os.path.join(folder, f"{name}.png"))
        if not os.path.isfile(path):
            pixels = getattr(skimage.data, name)()
            if isinstance(pixels, tuple):  # stereo_motorcycle -> (left, right, disparity)
                pixels = pixels[0]
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.path.join("data", "demo"),
        help="folder the demo photos are written to",
    )
    parser.add_argument("--dataset", default=DEMO_DATASET, help="FiftyOne dataset name")
    args = parser.parse_args(argv)

    dataset = build_demo_dataset(args.data_dir, args.dataset)
    print(dataset)
    operators, panels = registered_plugin_members()
    print(f"\nPlugin {PLUGIN_NAME}: {len(operators)} operators, {len(panels)} panels")
    for uri in operators:
        print(f"  operator  {uri}")
    for uri in panels:
        print(f"  panel     {uri}")
    if not operators and not panels:
        raise SystemExit(
            f"FiftyOne found no operators of {PLUGIN_NAME}: is FIFTYONE_PLUGINS_DIR "
            f"({fo.config.plugins_dir}) pointing at a folder that links to this plugin?"
        )


if __name__ == "__main__":
    main()
