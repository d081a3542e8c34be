"""Configs and cards out of range are refused before anything is allocated, in one line."""

import math
import resource
import time

import pytest
import torch
from safetensors.torch import save_file

from vstain.errors import CheckpointError, ModelError, VstainError
from vstain.models import create, load_checkpoint, model_configs, read_card
from vstain.models.checkpoint import CARD_KEY, FORMAT_KEY, FORMAT_VERSION
from vstain.weights import resolve_checkpoint


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("pix2pix", "n_blocks", 10**7, "n_blocks must be an integer from 1 to 1024"),
        ("pix2pix", "ngf", -1, "ngf must be an integer from 1 to"),
        ("pix2pix", "ngf", 16.0, "ngf must be an integer"),
        ("pix2pix", "lr", math.nan, "lr must be a finite number"),
        ("pix2pix", "lr", -1.0, "lr must be positive"),
        ("pix2pix", "lr", "abc", "lr must be a finite number"),
        ("pix2pix", "beta1", 1.0, r"beta1 must lie in \[0, 1\)"),
        ("pix2pix", "lambda_l1", math.inf, "lambda_l1 must be a finite number"),
        ("pix2pix", "dropout", 1, "dropout must be true or false"),
        ("pix2pix", "norm", 5, "norm must be a string or null"),
        ("stain-diffuser", "channels", [16] * 100, "channels must be a list of at most 16"),
        ("stain-diffuser", "channels", [16, -3], "channels entries must be an integer from 1"),
        ("implicit-stainer", "train_queries", -1, "train_queries must be an integer from 0"),
    ],
)
def test_config_values_out_of_range_are_refused(name, key, value, message):
    config = {**model_configs(name)["small"], key: value}
    with pytest.raises(ModelError, match=message) as error:
        create(name, config)
    assert "\n" not in str(error.value)


def test_weights_too_large_for_the_machine_are_refused_without_allocating():
    config = {**model_configs("pix2pix")["small"], "ngf": 1024, "n_blocks": 300}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(ModelError, match="more than a quarter of this machine's memory"):
        create("pix2pix", config)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert time.monotonic() - start < 30


def _checkpoint(path, card_text):
    save_file(
        {"w": torch.zeros(2)}, path, metadata={CARD_KEY: card_text, FORMAT_KEY: FORMAT_VERSION}
    )
    return path


def _card(**fields):
    import json

    config = {**model_configs("pix2pix")["small"], **fields.pop("config", {})}
    return json.dumps({"architecture": "pix2pix", "config": config, **fields})


@pytest.mark.parametrize(
    ("card", "message"),
    [
        (_card(tile_size=10**9), "tile_size must be an integer from 1 to 4096"),
        (_card(pixel_size=math.inf), "pixel_size must be a positive number"),
        (_card(config={"n_blocks": 10**7}), "n_blocks must be an integer"),
        (_card(config={"ngf": -1}), "ngf must be an integer"),
        ('{"architecture": "pix2pix", "notes": ' + "[" * 10**5 + "]" * 10**5 + "}", "nested"),
    ],
)
def test_hostile_cards_are_refused_in_one_line(tmp_path, card, message):
    path = _checkpoint(tmp_path / "bad.safetensors", card)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    assert time.monotonic() - start < 10


def test_a_folder_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        read_card(folder)
    with pytest.raises(VstainError, match="is a folder"):
        resolve_checkpoint(str(folder))
