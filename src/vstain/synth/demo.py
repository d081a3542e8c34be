"""The demo slide pair: a simulated CK8/18 H&E and its adjacent-section IHC, cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

from vstain import __version__

DEMO_SIZE = 3072
DEMO_SEED = 7


def cache_dir() -> Path:
    """Where vstain caches generated data: $VSTAIN_CACHE, else $XDG_CACHE_HOME/vstain."""
    if os.environ.get("VSTAIN_CACHE"):
        return Path(os.environ["VSTAIN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vstain"


def demo_pair(
    marker: str = "ck818", size: int = DEMO_SIZE, folder: Path | None = None
) -> tuple[Path, Path]:
    """Paths of the demo H&E and adjacent-section IHC OME-TIFFs, generated on first use."""
    from vstain.synth import make_spec
    from vstain.synth.export import export_pair

    folder = Path(folder) if folder else cache_dir() / "demo"
    stem = f"{marker}-{size}-seed{DEMO_SEED}-v{__version__}"
    he, ihc = folder / f"{stem}-he.ome.tif", folder / f"{stem}-ihc.ome.tif"
    if he.exists() and ihc.exists():
        return he, ihc
    spec = make_spec(DEMO_SEED, marker, size, mode="adjacent-section")
    export_pair(spec, he, ihc, overwrite=True)
    return he, ihc


def demo_folder(folder: Path) -> Path:
    """``folder``/slides: the demo pair as a folder of slides for the slide navigator, case-01
    (the H&E) with case-01_IHC, and the H&E again as case-02 without IHC (links to the pair)."""
    he, ihc = demo_pair()
    slides = Path(folder) / "slides"
    slides.mkdir(parents=True)
    links = {"case-01.ome.tif": he, "case-01_IHC.ome.tif": ihc, "case-02.ome.tif": he}
    for name, target in links.items():
        (slides / name).symlink_to(target)
    return slides
