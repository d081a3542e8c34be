"""npe2 sample data: the simulated demo slide pair and scikit-image's real IHC image."""

from __future__ import annotations

from vstain.io import open_slide
from vstain.napari.layers import slide_layer_data
from vstain.synth.demo import demo_pair

HE_NAME = "H&E"
IHC_NAME = "real IHC (adjacent section)"


def demo_he_with_ihc() -> list[tuple]:
    """The simulated CK8/18 H&E and its adjacent-section IHC (generated on first use, cached)."""
    he, ihc = demo_pair()
    return [slide_layer_data(open_slide(he), HE_NAME), slide_layer_data(open_slide(ihc), IHC_NAME)]


def skimage_ihc() -> list[tuple]:
    """scikit-image's real IHC image (DAB and haematoxylin; pixel size not known)."""
    from skimage import data

    return [(data.immunohistochemistry(), {"name": "scikit-image IHC", "rgb": True}, "image")]
