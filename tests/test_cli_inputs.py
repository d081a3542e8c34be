"""Hostile or damaged inputs on the command line end in one `vstain: error:` line and exit 2."""

import json

import imagecodecs
import numpy as np
import pytest
import tifffile

from tests.io.builders import rgb_image, set_png_size
from vstain.cli import main


def one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("vstain: error:") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(("width", "height"), [(10**6, 10**6), (2**31 - 1, 1)])
def test_info_refuses_png_headers_claiming_huge_sizes(tmp_path, capsys, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(imagecodecs.png_encode(rgb_image(4, 4)))
    set_png_size(path, width, height)
    assert main(["info", str(path)]) == 2
    one_line_error(capsys, "more than the 200000 px per side")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr=abc", "lr must be a finite number, got 'abc'"),
        ("lr=NaN", "lr must be a finite number, got nan"),
        ("lr=-1", "lr must be positive"),
        ("ngf=-1", "ngf must be an integer from 1"),
        ("n_blocks=10000000", "n_blocks must be an integer from 1"),
    ],
)
def test_train_refuses_config_values_out_of_range(tmp_path, capsys, setting, message):
    argv = ["train", "--model", "pix2pix", "--data", str(tmp_path), "--set", setting]
    assert main([*argv, "--out", str(tmp_path / "m.safetensors")]) == 2
    one_line_error(capsys, message)


def test_train_refuses_a_grayscale_tile_before_the_first_step(tmp_path, capsys):
    from vstain.synth import synth_dataset

    data = tmp_path / "ds"
    synth_dataset(data, 3, tile=64, slides=2, slide_size=1024, test_fraction=0.34)
    tile = sorted((data / "HE" / "train").iterdir())[0]
    tile.write_bytes(imagecodecs.png_encode(np.full((64, 64), 128, np.uint8)))
    out = tmp_path / "m.safetensors"
    argv = ["train", "--model", "pix2pix", "--data", str(data), "--out", str(out), "--crop", "64"]
    assert main([*argv, "--steps", "2", "--batch-size", "1"]) == 2
    one_line_error(capsys, f"{tile} is a grayscale image")
    assert not out.exists()


@pytest.fixture
def finetune_args(tmp_path):
    """Arguments of a fine-tune on two small aligned slides, up to the options under test."""
    for name in ("he", "ihc"):
        tifffile.imwrite(tmp_path / f"{name}.tif", rgb_image(256, 256), photometric="rgb")
    regions = tmp_path / "regions.geojson"
    box = [[[0, 0], [128, 0], [128, 128], [0, 128], [0, 0]]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": box}}
    regions.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return [
        "finetune",
        *("--he", str(tmp_path / "he.tif"), "--ihc", str(tmp_path / "ihc.tif"), "--aligned"),
        *("--regions", str(regions), "--out", str(tmp_path / "ft.safetensors"), "--steps", "1"),
    ]


def _nan_regions(args, tmp_path):
    path = tmp_path / "nan.geojson"
    ring = [[0, 0], [float("nan"), 0], [128, 128], [0, 128], [0, 0]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    path.write_text(json.dumps([feature]))  # Python writes NaN, as some tools do
    return ["--regions", str(path)]


def _deep_regions(args, tmp_path):
    path = tmp_path / "deep.geojson"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return ["--regions", str(path)]


def _folder_checkpoint(args, tmp_path):
    (tmp_path / "weights").mkdir()
    return ["--checkpoint", str(tmp_path / "weights")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda a, p: ["--checkpoint", "pix2pix", "--lr", "nan"], "lr must be a finite number"),
        (lambda a, p: ["--checkpoint", "pix2pix", "--lr", "-1"], "lr must be positive"),
        (lambda a, p: ["--checkpoint", "pix2pix", *_nan_regions(a, p)], "not finite pixel"),
        (lambda a, p: ["--checkpoint", "pix2pix", *_deep_regions(a, p)], "nested 100000 levels"),
        (_folder_checkpoint, "is a folder"),
    ],
)
def test_finetune_refuses_bad_inputs_in_one_line(finetune_args, tmp_path, capsys, extra, message):
    # argparse keeps the last of a repeated option, so the extra arguments win
    assert main([*finetune_args, *extra(finetune_args, tmp_path)]) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "ft.safetensors").exists()


def _read_card(path):
    from vstain.models.base import ModelCard

    return ModelCard.from_json(path.read_text())


def _read_registration(path):
    from vstain.registration import Registration

    return Registration.load(path)


def _read_regions(path):
    from vstain.train.region_geojson import read_regions

    return read_regions(path)


@pytest.mark.parametrize("read", [_read_card, _read_registration, _read_regions])
@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, "[1, 2]", '{"type": "FeatureCollection"', "NaN"]
)
def test_json_readers_refuse_deep_or_misshapen_documents_in_one_line(tmp_path, read, text):
    from vstain.errors import VstainError

    path = tmp_path / "input.json"
    path.write_text(text)
    with pytest.raises(VstainError) as error:
        read(path)
    assert "\n" not in str(error.value)
