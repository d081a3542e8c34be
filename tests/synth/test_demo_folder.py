"""The demo pair as a folder of slides for the slide navigator."""

from vstain.io.slide_set import SlidePair, folder_slides
from vstain.synth import demo


def test_demo_folder_pairs_case_01_with_its_ihc_and_leaves_case_02_alone(tmp_path, monkeypatch):
    he, ihc = demo.demo_pair(size=256, folder=tmp_path / "pair")
    monkeypatch.setattr(demo, "demo_pair", lambda: (he, ihc))
    slides = demo.demo_folder(tmp_path)
    assert folder_slides(slides) == [
        SlidePair(slides / "case-01.ome.tif", slides / "case-01_IHC.ome.tif"),
        SlidePair(slides / "case-02.ome.tif", None),
    ]
    assert (slides / "case-01_IHC.ome.tif").resolve() == ihc.resolve()
