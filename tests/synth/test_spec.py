"""Slide specs: per-slide variation from the seed, overrides, validation, JSON round trip."""

import json

import numpy as np
import pytest

from vstain.color.optics import HED
from vstain.synth import SlideSpec, SynthError, make_spec
from vstain.synth.spec import MARKER_INTENSITY


def test_same_seed_same_spec_and_other_seed_differs():
    assert make_spec(3, "ck818", 1024) == make_spec(3, "ck818", 1024)
    a, b = make_spec(3, "ck818", 1024), make_spec(4, "ck818", 1024)
    assert a.staining != b.staining and a.he_scan != b.he_scan and a.layout != b.layout


def test_stain_vectors_are_jittered_by_a_few_degrees():
    angles = []
    for seed in range(20):
        he = np.array(make_spec(seed, "ck818", 512).staining.he_vectors)
        cos = np.clip(np.sum(he[:2] * HED.vectors[:2], axis=1), -1, 1)
        angles.extend(np.degrees(np.arccos(cos)))
    assert np.mean(angles) > 0.3 and max(angles) <= 4.5


def test_marker_changes_staining_intensity_only():
    a, b = make_spec(9, "ck818", 1024), make_spec(9, "ki67", 1024)
    assert a.layout == b.layout and a.he_scan == b.he_scan
    assert a.staining.he_vectors == b.staining.he_vectors
    assert a.staining.marker_intensity / MARKER_INTENSITY["ck818"] == pytest.approx(
        b.staining.marker_intensity / MARKER_INTENSITY["ki67"]
    )
    assert make_spec(9, "cd3", 1024, marker_intensity=0.25).staining.marker_intensity == 0.25


def test_json_round_trip():
    spec = make_spec(2, "cd3", (900, 1200), pixel_size=0.25, mode="adjacent-section")
    text = json.dumps(spec.to_dict())
    back = SlideSpec.from_dict(json.loads(text))
    assert back.to_dict() == spec.to_dict()
    assert (back.width, back.height, back.pixel_size) == (1200, 900, 0.25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"marker": "her2"}, "Unknown marker"),
        ({"mode": "serial"}, "Unknown pairing mode"),
        ({"pixel_size": 5.0}, "Pixel size"),
        ({"size": 10}, "too small"),
        ({"tissue_fraction": 0.99}, "Tissue fraction"),
    ],
)
def test_bad_parameters_say_what_to_do(kwargs, message):
    args = {"seed": 0, "marker": "ck818", "size": 512} | kwargs
    with pytest.raises(SynthError, match=message):
        make_spec(**args)
