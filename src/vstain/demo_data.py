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
    from vstain.io import write_ome_tiff
    from vstain.synth import synth_slide

    folder = Path(folder) if folder else cache_dir() / "demo"
    stem = f"{marker}-{size}-seed{DEMO_SEED}-v{__version__}"
    he, ihc = folder / f"{stem}-he.ome.tif", folder / f"{stem}-ihc.ome.tif"
    if he.exists() and ihc.exists():
        return he, ihc
    folder.mkdir(parents=True, exist_ok=True)
    pair = synth_slide(marker, size, seed=DEMO_SEED, mode="adjacent-section")
    ps = pair.spec.pixel_size
    for image, path in ((pair.he, he), (pair.ihc, ihc)):
        if not path.exists():
            write_ome_tiff(image, path, pixel_size=ps, compression="jpeg", quality=90)
    return he, ihc
