"""Registry lookups and errors; the model card's validation and JSON round trip."""

import datetime
import json

import pytest
import torch

from vstain.models import ModelCard, ModelError, create, list_models, model_configs
from vstain.models.base import Prediction


def test_baselines_are_registered_with_both_configs():
    assert {"pix2pix", "pyramid-pix2pix"} <= set(list_models())
    for name in list_models():
        configs = model_configs(name)
        assert {"small", "paper"} <= set(configs)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match=r"Unknown model 'nope'.*pix2pix, pyramid-pix2pix"):
        create("nope")


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ModelError, match=r"no config 'huge'.*paper, small"):
        create("pix2pix", "huge")


def test_config_dicts_must_have_exactly_the_models_keys():
    cfg = model_configs("pix2pix")["small"]
    with pytest.raises(ModelError, match=r"missing keys \['ngf'\]"):
        create("pix2pix", {k: v for k, v in cfg.items() if k != "ngf"})
    with pytest.raises(ModelError, match=r"unknown keys \['colour'\]"):
        create("pix2pix", {**cfg, "colour": "brown"})
    with pytest.raises(ModelError, match="Config of 'pix2pix' is invalid: norm must be"):
        create("pix2pix", {**cfg, "norm": "group"})


def test_config_dict_is_used_as_given():
    cfg = {**model_configs("pix2pix")["small"], "ngf": 8, "n_blocks": 1}
    model = create("pix2pix", cfg)
    assert model.card.config == cfg
    assert model.generator.model[1].out_channels == 8


def test_card_overrides_and_derived_fields():
    model = create("pyramid-pix2pix", markers=["Ki67"], pixel_size=0.5, tile_size=256)
    card = model.card
    assert (card.architecture, card.markers, card.pixel_size, card.tile_size) == (
        "pyramid-pix2pix",
        ["Ki67"],
        0.5,
        256,
    )
    assert card.halo == model.generator.halo() == 36  # 3 blocks, stride-2 convs
    assert card.outputs == ["ihc"] and card.normalisation == "[-1,1]"
    assert card.created == datetime.date.today().isoformat()
    with pytest.raises(ModelError, match=r"Cannot set card fields \['halo'\]"):
        create("pix2pix", halo=0)
    with pytest.raises(ModelError, match=r"Cannot set card fields \['colour'\]"):
        create("pix2pix", colour="brown")
    with pytest.raises(ModelError, match="multiple of 4"):
        create("pix2pix", tile_size=250)


def test_paper_config_is_the_public_resnet_9blocks_generator():
    model = create("pix2pix", "paper")
    assert sum(p.numel() for p in model.generator.parameters()) == 11_383_427
    assert model.card.halo == 84


def test_card_json_round_trip():
    card = ModelCard(
        architecture="pix2pix",
        config={"ngf": 16, "weights": [1.0, 2.0]},
        markers=["CD3"],
        pixel_size=0.25,
        tile_size=256,
        halo=36,
        outputs=["ihc", "uncertainty"],
        normalisation="[-1,1]",
        training_data="simulated tissue, seed 3",
        steps=1200,
        metrics={"psnr": 31.5},
        parent="base.safetensors",
        parent_sha256="ab" * 32,
        created="2025-01-02",
        perceptual_backbone="vgg16-random-seed0",
        notes="demo weights trained on simulated tissue",
    )
    text = card.to_json()
    assert json.loads(text)["metrics"] == {"psnr": 31.5}
    assert ModelCard.from_json(text) == card


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"notes": "x"}', "no 'architecture'"),
        ('{"architecture": "pix2pix", "colour": 1}', r"unknown fields \['colour'\]"),
        ('{"architecture": "pix2pix", "outputs": ["segmentation"]}', "outputs must include"),
        ('{"architecture": "pix2pix", "normalisation": "[0,255]"}', "normalisation must be"),
        (
            '{"architecture": "pix2pix", "tile_size": 0}',
            "tile_size must be an integer from 1 to 4096",
        ),
        ('{"architecture": "pix2pix", "pixel_size": -1}', "pixel_size must be a positive"),
        ('{"architecture": "pix2pix", "markers": "CD3"}', "markers must be a list"),
    ],
)
def test_invalid_cards_are_refused(text, message):
    with pytest.raises(ModelError, match=message):
        ModelCard.from_json(text)


def test_unserialisable_config_is_reported():
    card = ModelCard(architecture="pix2pix", config={"fn": print})
    with pytest.raises(ModelError, match="not JSON-serialisable"):
        card.to_json()


def test_prediction_lists_present_outputs():
    ihc, unc = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4)
    assert Prediction(ihc=ihc).outputs().keys() == {"ihc"}
    assert Prediction(ihc=ihc, uncertainty=unc).outputs().keys() == {"ihc", "uncertainty"}
