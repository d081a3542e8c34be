"""Write a simulated slide pair to pyramidal OME-TIFF, with its spec and true transform."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vstain.synth.slide import slide_arrays
from vstain.synth.spec import SlideSpec
from vstain.synth.transform import SectionTransform


def sidecar_path(he_path: Path) -> Path:
    """``he.ome.tif`` -> ``he.ome.tif.synth.json``: the spec and the true H&E -> IHC affine."""
    return he_path.with_name(he_path.name + ".synth.json")


def export_pair(
    spec: SlideSpec,
    he_path: Path,
    ihc_path: Path | None = None,
    *,
    overwrite: bool = False,
    quality: int = 90,
    progress=None,
) -> dict:
    """Write the H&E (and IHC) of ``spec`` tile by tile; returns what the sidecar holds.

    The simulated scanner's own JPEG pass is switched off and the writer's JPEG applied instead,
    so pixels are compressed once, as by a real scanner.
    """
    from vstain.io import write_ome_tiff

    he, ihc = slide_arrays(spec.with_scans(jpeg_quality=None))
    for image, path in ((he, he_path), (ihc, ihc_path)):
        if path is not None:
            write_ome_tiff(
                image,
                path,
                pixel_size=spec.pixel_size,
                compression="jpeg",
                quality=quality,
                overwrite=overwrite,
                progress=progress and (lambda d, t, p=path: progress(p, d, t)),
            )
    info = {
        "spec": spec.to_dict(),
        "ihc": str(ihc_path) if ihc_path else None,
        "he_to_ihc_affine": (
            SectionTransform.from_spec(spec).affine.tolist()
            if spec.mode == "adjacent-section"
            else None
        ),
    }
    sidecar = sidecar_path(Path(he_path))
    tmp = sidecar.with_name(sidecar.name + ".partial")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, sidecar)
    return info
