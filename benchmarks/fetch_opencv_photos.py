"""Writes 21 real photos from OpenCV's sample data into a folder: another held-out test set.

    python benchmarks/fetch_opencv_photos.py /tmp/photos_opencv

The photos (aerial views, buildings, fruit, a baboon, a butterfly, a circuit board, a
sudoku, ...) ship in the source distribution of ``opencv-python`` on PyPI
(``opencv/samples/data``), which this script downloads once (95 MB, checked against
PyPI's sha256) and reads by name; nothing else is extracted. Left out: drawings, the
synthetic shapes (``pic1``-``pic6``), the stereo and chessboard series, and ``lena``.
They are only measured on, never redistributed; they are OpenCV's sample data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import tempfile
import urllib.request

from siamese_quality.core.pretext_model import sha256_of_file

SDIST_URL = (
    "https://files.pythonhosted.org/packages/4a/e7/"
    "b70a2d9ab205110d715906fc8ec83fbb00404aeb3a37a0654fdb68eb0c8c/"
    "opencv-python-4.10.0.84.tar.gz"
)
SDIST_SHA256 = "72d234e4582e9658ffea8e9cae5b63d488ad06994ef12d81dc303b17472f3526"
SAMPLES = "opencv-python-4.10.0.84/opencv/samples/data/"
PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg",
    "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png",
    "home.jpg", "leuvenA.jpg", "messi5.jpg", "orange.jpg", "right.jpg", "rubberwhale1.png",
    "smarties.png", "squirrel_cls.jpg", "stuff.jpg", "sudoku.png",
)  # fmt: skip


def download_sdist(path: str) -> None:
    """Downloads the sdist to ``path`` unless a copy with the right checksum is there."""
    if os.path.isfile(path) and sha256_of_file(path) == SDIST_SHA256:
        return
    print(f"downloading {SDIST_URL}")
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)
    if sha256_of_file(path) != SDIST_SHA256:
        raise RuntimeError(f"{path}: sha256 does not match PyPI's; not using it")


def write_opencv_photos(folder: str, sdist_path: str) -> list[str]:
    """Copies the :data:`PHOTOS` out of the sdist into ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    wanted = {SAMPLES + name: name for name in PHOTOS}
    written = []
    with tarfile.open(sdist_path, "r:gz") as sdist:
        for member in sdist:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue
            target = os.path.join(folder, name)
            with sdist.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(target)
    missing = sorted(set(PHOTOS) - {os.path.basename(p) for p in written})
    if missing:
        raise RuntimeError(f"not in the sdist: {', '.join(missing)}")
    return sorted(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="where to write the photos")
    parser.add_argument(
        "--sdist",
        default=os.path.join(tempfile.gettempdir(), "opencv-python-4.10.0.84.tar.gz"),
        help="where the downloaded sdist is kept (reused when its checksum matches)",
    )
    args = parser.parse_args()
    download_sdist(args.sdist)
    paths = write_opencv_photos(args.folder, args.sdist)
    print(f"wrote {len(paths)} photos to {args.folder}")


if __name__ == "__main__":
    main()
