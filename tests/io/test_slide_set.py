"""Listing a folder of slides and pairing each H&E with its real IHC by a naming rule."""

from pathlib import Path

import pytest
import zarr

from vstain.errors import SlideError
from vstain.io.slide_set import (
    DEFAULT_RULE,
    SlidePair,
    check_rule,
    folder_slides,
    looks_like_slide,
    pair_slides,
    slide_stem,
)


def touch(folder: Path, *names: str) -> list[Path]:
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(b"")
    return paths


@pytest.mark.parametrize(
    ("name", "stem"),
    [("a.ome.tif", "a"), ("a.OME.TIFF", "a"), ("b.svs", "b"), ("c.d.png", "c.d"), ("e.zarr", "e")],
)
def test_slide_stem_drops_the_slide_suffix(name, stem):
    assert slide_stem(name) == stem


def test_the_default_rule_pairs_name_ihc_and_leaves_partners_out(tmp_path):
    a, a_ihc, b, c, c_ihc = touch(
        tmp_path, "a.svs", "a_IHC.ome.tif", "b.ome.tif", "c.png", "c_IHC.png"
    )
    assert pair_slides([c_ihc, c, b, a_ihc, a], DEFAULT_RULE) == [
        SlidePair(a, a_ihc),
        SlidePair(b, None),
        SlidePair(c, c_ihc),
    ]


def test_the_rule_is_the_user_s(tmp_path):
    he_1, ihc_1, he_2 = touch(tmp_path, "s1_HE.tif", "s1_HE-CK818.tif", "s2_HE.tif")
    assert pair_slides([he_1, ihc_1, he_2], "{name}-CK818.*") == [
        SlidePair(he_1, ihc_1),
        SlidePair(he_2, None),
    ]
    # with the default rule nothing pairs, so every file is an H&E slide
    assert [p.ihc for p in pair_slides([he_1, ihc_1, he_2])] == [None, None, None]


@pytest.mark.parametrize("rule", ["IHC.*", "{stem}_IHC.*", "{name}_{0}", "{name"])
def test_a_rule_without_name_or_with_other_fields_is_refused(rule):
    with pytest.raises(SlideError, match=r"must hold \{name\}"):
        check_rule(rule)


def test_folder_lists_slide_files_only_not_vstain_stores(tmp_path):
    a, a_ihc = touch(tmp_path, "a.png", "a_IHC.png")
    touch(tmp_path, "notes.txt")
    zarr.open_group(tmp_path / "a.png.tiny-0123abcd-t128.zarr", mode="w").attrs["vstain"] = {}
    ome = zarr.open_group(tmp_path / "b.ome.zarr", mode="w")
    ome.attrs["ome"] = {}
    (tmp_path / "sub").mkdir()
    touch(tmp_path / "sub", "c.png")
    assert looks_like_slide(tmp_path / "b.ome.zarr") and not looks_like_slide(tmp_path / "sub")
    assert folder_slides(tmp_path) == [
        SlidePair(a, a_ihc),
        SlidePair(tmp_path / "b.ome.zarr", None),
    ]


def test_an_empty_folder_has_no_slides_and_a_file_is_not_a_folder(tmp_path):
    assert folder_slides(tmp_path) == []
    (path,) = touch(tmp_path, "a.png")
    with pytest.raises(SlideError, match="is not a folder"):
        folder_slides(path)
