"""A folder of slides as H&E slides, each with the real IHC a naming rule finds for it.

The rule is a file-name pattern with ``{name}`` for the H&E's stem (its name without the
slide suffix, so ``a.ome.tif`` -> ``a``) and shell wildcards: the default ``{name}_IHC.*`` pairs
``a.svs`` with ``a_IHC.svs`` or ``a_IHC.ome.tif``. Files the rule matches for another slide are
IHC partners and not listed as H&E slides. Names are compared case-sensitively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from vstain.errors import SlideError
from vstain.io.ome_zarr import is_output_store

#: Suffixes of the slide files vstain reads: tifffile, zarr and plain images, then the formats
#: only OpenSlide reads (docs/io.md).
SLIDE_SUFFIXES = (
    *(".svs", ".tif", ".tiff", ".zarr", ".png", ".jpg", ".jpeg"),
    *(".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".dcm", ".svslide", ".czi"),
)
#: Suffixes of two parts, dropped whole from a stem.
DOUBLE_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr")
DEFAULT_RULE = "{name}_IHC.*"


@dataclass(frozen=True)
class SlidePair:
    """An H&E slide and its real IHC (None when the rule finds none)."""

    he: Path
    ihc: Path | None


def looks_like_slide(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a slide suffix or is a zarr folder (checked by name, fast)."""
    path = Path(path)
    if path.suffix.lower() in SLIDE_SUFFIXES:
        return True
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zattrs").exists())


def slide_stem(path: str | os.PathLike) -> str:
    """The name of a slide file without its suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for suffix in DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def check_rule(rule: str) -> str:
    """The rule, stripped; `SlideError` when it has no ``{name}`` or another field."""
    rule = rule.strip()
    try:
        probe = rule.format(name="\0")
    except (KeyError, IndexError, ValueError):
        probe = ""
    if "\0" not in probe:
        raise SlideError(
            f"The IHC naming rule {rule!r} must hold {{name}} (the H&E's name without suffix) and "
            "no other {...} field, for example {name}_IHC.*"
        )
    return rule


def pair_slides(paths, rule: str = DEFAULT_RULE) -> list[SlidePair]:
    """H&E slides of ``paths`` in name order, each with the first file (by name) ``rule`` matches;
    files matched for another slide are partners, not H&E slides."""
    rule = check_rule(rule)
    paths = sorted((Path(p) for p in paths), key=lambda p: p.name)
    partners = {p: [q for q in paths if q != p and _matches(rule, p, q)] for p in paths}
    taken = {q for found in partners.values() for q in found}
    return [SlidePair(p, partners[p][0] if partners[p] else None) for p in paths if p not in taken]


def _matches(rule: str, he: Path, other: Path) -> bool:
    return fnmatchcase(other.name, rule.format(name=slide_stem(he)))


def folder_slides(folder: str | os.PathLike, rule: str = DEFAULT_RULE) -> list[SlidePair]:
    """The slide pairs of ``folder`` (its slide files, not its subfolders' contents, nor vstain's
    output stores); `SlideError` when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SlideError(f"{folder} is not a folder. Choose the folder that holds the slides.")
    slides = [p for p in folder.iterdir() if looks_like_slide(p) and not is_output_store(p)]
    return pair_slides(slides, rule)
