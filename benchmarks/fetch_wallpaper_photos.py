"""Writes 15 real photos from Debian's desktop-wallpaper packages: a test set nothing saw.

    python benchmarks/fetch_wallpaper_photos.py /tmp/photos_wallpapers

The shared 1024-px photos are desktop wallpapers too; these are the photographs of the
same packages that are not among them (artwork, renders and the shared ones left out,
chosen by looking at the packages' images before any model read them). The bundled
models, every constant of the readers and every choice of the benchmarks were made
without them, so they test what ships on photos it never met. Each is written as a
JPEG at quality 95 (as the shared photos are), its longer side reduced to at most
1600 px (area), so the set is a second size of stored photo (1.5-1.7 MP against the
shared photos' 0.7 MP).

The packages are fetched with ``apt-get download`` (run ``apt-get update`` once first)
and read with ``dpkg-deb``; nothing is installed. The photos are only measured on,
never redistributed; their authors and licences are in each package's copyright file
(lomiri-wallpapers-16.04 and -20.04: CC BY-SA; plasma-workspace-wallpapers, the KDE
Plasma wallpapers; mate-backgrounds).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tarfile
import tempfile

from PIL import Image, ImageOps

LONGER_SIDE = 1600
# package -> {path inside it: the photo's name here}
PHOTOS = {
    "lomiri-wallpapers-16.04": {
        "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg": "bridge",
        "usr/share/backgrounds/Picture_0B_by_freespace.jpg": "fig",
        "usr/share/backgrounds/Picture_1A_by_freespace.jpg": "brushes",
        "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg": "wine",
        "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg": "aitzgorri",
        "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg": "friends",
        "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg": "waterfall",
        "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg": "picosdeeuropa",
        "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg": "dandelions",
        "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg": "sunset",
    },
    "lomiri-wallpapers-20.04": {
        "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg": "nuthatch",
    },
    "mate-backgrounds": {"usr/share/backgrounds/mate/nature/Dune.jpg": "dune"},
    "plasma-workspace-wallpapers": {
        f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg": name.lower()
        for name in ("EveningGlow", "FallenLeaf", "ColorfulCups")
    },
}
# the photos with structure a person tells level by (a horizon, a wall or room, plants
# or a tree trunk growing up), chosen by looking at them as the tilt benchmark's were
UPRIGHT = frozenset(
    {
        "bridge", "wine", "aitzgorri", "friends", "waterfall", "dandelions", "sunset",
        "nuthatch", "dune", "eveningglow",
    }
)  # fmt: skip


def download(package: str, folder: str) -> str:
    """The package's .deb, downloaded into ``folder`` by apt; returns its path."""
    done = subprocess.run(
        ["apt-get", "download", "-qq", package], cwd=folder, capture_output=True, text=True
    )
    found = [f for f in os.listdir(folder) if f.startswith(package + "_")]
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"apt-get download {package} failed ({done.stderr.strip()[-300:]}); "
            "run `apt-get update` once, then try again"
        )
    return os.path.join(folder, found[0])


def write_photo(data: bytes, path: str) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((LONGER_SIDE, LONGER_SIDE), Image.Resampling.BOX)
        image.save(path, quality=95)


def write_wallpaper_photos(folder: str) -> list[str]:
    """The photos of :data:`PHOTOS` as JPEGs in ``folder`` (kept: a second call reads
    them); returns their paths, sorted."""
    os.makedirs(folder, exist_ok=True)
    names = [name for wanted in PHOTOS.values() for name in wanted.values()]
    paths = {name: os.path.join(folder, f"{name}.jpg") for name in names}
    missing = [p for p in PHOTOS if any(not os.path.isfile(paths[n]) for n in PHOTOS[p].values())]
    with tempfile.TemporaryDirectory() as scratch:
        for package in missing:
            archive = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", download(package, scratch)],
                capture_output=True,
                check=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as files:
                for member in files:
                    name = PHOTOS[package].get(member.name.removeprefix("./"))
                    if name is not None and member.isfile():
                        write_photo(files.extractfile(member).read(), paths[name])
    absent = [n for n, p in paths.items() if not os.path.isfile(p)]
    if absent:
        raise RuntimeError(f"not found in the packages: {', '.join(sorted(absent))}")
    return sorted(paths.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    for path in write_wallpaper_photos(parser.parse_args().folder):
        print(path)


if __name__ == "__main__":
    main()
