"""The model card's stain reference: validated, stored in checkpoints, set on an existing one."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vstain.color import stain_reference
from vstain.models import (
    ModelCard,
    ModelError,
    create,
    read_card,
    save_checkpoint,
    set_stain_reference,
)
from vstain.synth import make_spec, render_he


@pytest.fixture(scope="module")
def reference():
    spec = make_spec(4, size=512)
    tiles = [render_he(spec, x, y, 128, 128) for x, y in ((64, 64), (256, 192), (320, 320))]
    return stain_reference(tiles)


def test_card_with_a_stain_reference_round_trips(reference):
    card = ModelCard(architecture="pix2pix", stain_reference=reference)
    restored = ModelCard.from_json(card.to_json())
    assert restored.stain_reference == reference
    assert ModelCard.from_json('{"architecture": "pix2pix"}').stain_reference == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vahadane": {}}, r"keys must be among \['macenko', 'reinhard'\]"),
        ({"macenko": {"method": "reinhard"}}, "must be a dict with 'method': 'macenko'"),
        ({"macenko": {"max_concentrations": [1.0]}}, r"'max_concentrations' must be \(2,\)"),
        ({"macenko": {"stain_vectors": [[1, 1, 1], [0, 1, 0]]}}, "must be unit vectors"),
        ({"macenko": {"stain_vectors": [[0, 1, 0], [0, 1, 0]]}}, "two different directions"),
        ({"reinhard": {"std": [1.0, 0.0, 2.0]}}, "'std' must be positive"),
        ({"reinhard": {"mean": [1.0, "x", 2.0]}}, r"'mean' must be \(3,\) finite numbers"),
    ],
)
def test_invalid_stain_references_are_refused(reference, change, message):
    bad = {m: {**reference[m], **change.get(m, {})} for m in reference}
    bad |= {k: v for k, v in change.items() if k not in reference}
    with pytest.raises(ModelError, match=message):
        ModelCard(architecture="pix2pix", stain_reference=bad)
    with pytest.raises(ModelError, match="stain_reference must be a dict"):
        ModelCard.from_json(json.dumps({"architecture": "pix2pix", "stain_reference": [1]}))


def test_set_stain_reference_on_a_checkpoint_keeps_the_weights(tmp_path, reference):
    torch.manual_seed(0)
    model = create("pix2pix", "small", markers=["ck818"], pixel_size=0.5)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    before = load_file(path)
    set_stain_reference(path, {"reinhard": reference["reinhard"]})
    set_stain_reference(path, {"macenko": reference["macenko"]})
    assert read_card(path).stain_reference == reference
    after = load_file(path)
    assert all(torch.equal(before[k], after[k]) for k in before)
    broken = {"macenko": {**reference["macenko"], "max_concentrations": [np.nan, 1.0]}}
    with pytest.raises(ModelError, match="finite numbers"):
        set_stain_reference(path, broken)
    assert read_card(path).stain_reference == reference
