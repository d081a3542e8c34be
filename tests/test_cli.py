import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.tiles.conftest import make_tissue_image
from vstain.cli import main
from vstain.io import write_ome_tiff
from vstain.models import load_checkpoint


@pytest.fixture
def slide_path(tmp_path):
    path = tmp_path / "slide.ome.tif"
    write_ome_tiff(
        make_tissue_image(600, 800), path, pixel_size=0.5, compression="deflate", tile=256
    )
    return path


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "vstain.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("info", "stain", "import"):
        assert command in out


def test_info_prints_levels_pixel_size_and_tissue(slide_path, capsys):
    assert main(["info", str(slide_path)]) == 0
    out = capsys.readouterr().out
    assert "pixel size: 0.5000 um/px" in out
    assert "level 0: 800 x 600 px" in out and "level 1: 400 x 300 px" in out
    fraction = float(out.split("tissue fraction: ")[1].split("%")[0])
    assert 60 < fraction < 90  # the right fifth is glass


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"not an image at all", "is not a slide format"),
    ],
)
def test_bad_slides_give_one_line_and_nonzero_exit(tmp_path, capsys, content, message):
    path = tmp_path / "bad.tif"
    if content is not None:
        path.write_bytes(content)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vstain: error:") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_grayscale_png_is_refused_with_advice(tmp_path, capsys):
    from skimage.io import imsave

    path = tmp_path / "gray.png"
    imsave(path, np.full((32, 32), 128, np.uint8), check_contrast=False)
    assert main(["info", str(path)]) == 2
    assert "RGB" in capsys.readouterr().err


def test_unknown_model_and_missing_checkpoint(slide_path, tmp_path, capsys):
    assert (
        main(
            [
                "stain",
                str(slide_path),
                "--model",
                "no-such-model",
                "--out",
                str(tmp_path / "o.zarr"),
            ]
        )
        == 2
    )
    assert "No trained weights for model 'no-such-model'" in capsys.readouterr().err
    assert (
        main(
            [
                "stain",
                str(slide_path),
                "--model",
                str(tmp_path / "missing.safetensors"),
                "--out",
                str(tmp_path / "o.zarr"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_synth_slide_and_dataset_commands(tmp_path, capsys):
    from vstain.io import open_slide
    from vstain.train.datasets import open_paired_dataset

    he, ihc = tmp_path / "new" / "he.ome.tif", tmp_path / "new" / "ihc.ome.tif"
    assert (
        main(
            [
                "synth-slide",
                "--size",
                "700",
                "--mode",
                "adjacent-section",
                "--out",
                str(he),
                "--ihc-out",
                str(ihc),
            ]
        )
        == 0
    )
    assert "true H&E -> IHC affine" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "new" / "he.ome.tif.synth.json").read_text())
    assert sidecar["spec"]["mode"] == "adjacent-section"
    assert np.asarray(sidecar["he_to_ihc_affine"]).shape == (3, 3)
    a, b = open_slide(he), open_slide(ihc)
    assert a.shape == b.shape == (700, 700) and a.pixel_size == pytest.approx(0.5)
    assert main(["synth-slide", "--size", "700", "--out", str(he)]) == 2  # exists
    out = tmp_path / "ds"
    assert main(["synth-dataset", "--n", "5", "--tile", "64", "--out", str(out)]) == 0
    data = open_paired_dataset(out, layout="bci", split="train")
    assert len(data) >= 1 and data[0]["he"].shape == (3, 64, 64)


def test_train_with_one_seed_gives_one_model_whatever_torch_rng_held(tmp_path):
    from safetensors.torch import load_file

    from vstain.models import create
    from vstain.synth import synth_dataset

    data = tmp_path / "ds"
    synth_dataset(data, 4, tile=64, slides=2, slide_size=1024, test_fraction=0.25)

    def run(name: str, seed: int) -> dict:
        out = tmp_path / f"{name}.safetensors"
        args = ["train", "--model", "pix2pix", "--data", str(data), "--out", str(out)]
        args += ["--crop", "64", "--batch-size", "2", "--steps", "1", "--seed", str(seed)]
        assert main([*args, "--val-every", "0", "--marker", "ck818"]) == 0
        return load_file(out)

    first, second, third = run("a", 0), run("b", 0), run("c", 1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)
    state = torch.random.get_rng_state()
    create("pix2pix", seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is kept


@pytest.mark.parametrize("model, masks", [("stain-diffuser", True), ("pix2pix", False)])
def test_train_gives_dataset_wide_or_refined_dab_masks_to_models_that_learn_them(
    model, masks, tmp_path, monkeypatch
):
    from vstain.synth import synth_dataset

    data, seen = tmp_path / "ds", {}
    synth_dataset(data, 4, tile=64, slides=2, slide_size=1024, test_fraction=0.25)

    class Seen(Exception):
        pass

    def fake_train(model, train_data, **options):
        seen["data"], seen["card"] = train_data, model.card
        raise Seen

    monkeypatch.setattr("vstain.train.trainer.train", fake_train)
    with pytest.raises(Seen):
        main(["train", "--model", model, "--data", str(data), "--out", str(tmp_path / "m"),
              "--crop", "64", "--refine-masks", "2"])  # fmt: skip
    assert ("mask" in seen["data"][0]) is masks
    # the masks are refined by a segmentation net only for models that learn them
    assert ("refined by a segmentation net trained 2 steps" in seen["card"].training_data) is masks
    if masks:  # thresholded with the dataset's DAB statistics, not each crop's own
        assert seen["data"].mask_stats.std > 0


@pytest.mark.parametrize("val", [0, 1])
def test_train_validates_on_the_val_slide_where_the_dataset_has_one(val, tmp_path, monkeypatch):
    from vstain.synth import synth_dataset

    data, seen = tmp_path / "ds", {}
    synth_dataset(data, 4, tile=64, slides=2, slide_size=1024, test_fraction=0.25, val=val)

    class Seen(Exception):
        pass

    def fake_train(model, train_data, **options):
        seen["val"], seen["card"] = options["val_data"], model.card
        raise Seen

    monkeypatch.setattr("vstain.train.trainer.train", fake_train)
    with pytest.raises(Seen):
        main(["train", "--model", "pix2pix", "--data", str(data), "--out", str(tmp_path / "m"),
              "--crop", "64"])  # fmt: skip
    split = "val" if val else "test"
    assert {p.he.parent for p in seen["val"].pairs} == {data / "HE" / split}
    assert seen["card"].training_data.endswith(f"validated on the {split} split)")


def test_train_init_starts_from_a_checkpoints_weights_or_refuses_another_shape(
    tmp_path, monkeypatch, capsys
):
    """``--init`` loads a same-shaped checkpoint's weights (the card names it as the parent) and
    refuses one of another architecture with a message, before any training."""
    from vstain.models import create, save_checkpoint
    from vstain.synth import synth_dataset

    data, seen = tmp_path / "ds", {}
    synth_dataset(data, 4, tile=64, slides=2, slide_size=1024, test_fraction=0.25)
    base = create("pix2pix", seed=3)
    save_checkpoint(base, tmp_path / "base.safetensors")
    save_checkpoint(create("pix2pix", {**base.config, "ngf": 8}), tmp_path / "thin.safetensors")

    class Seen(Exception):
        pass

    def fake_train(model, train_data, **options):
        seen["model"] = model
        raise Seen

    monkeypatch.setattr("vstain.train.trainer.train", fake_train)
    args = ["train", "--model", "pix2pix", "--data", str(data), "--out", str(tmp_path / "m")]
    with pytest.raises(Seen):
        main([*args, "--crop", "64", "--init", str(tmp_path / "base.safetensors")])
    model = seen["model"]
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.card.parent == "base.safetensors" and model.card.parent_sha256
    assert main([*args, "--crop", "64", "--init", str(tmp_path / "thin.safetensors")]) == 2
    assert "another shape" in capsys.readouterr().err
    # one part of another-shaped checkpoint: its discriminator, the generator left as created
    thin = create("pix2pix", {**base.config, "ngf": 8})
    save_checkpoint(thin, tmp_path / "thin.safetensors")
    part = ["--init", str(tmp_path / "thin.safetensors"), "--init-part"]
    with pytest.raises(Seen):
        main([*args, "--crop", "64", "--seed", "3", *part, "discriminator"])
    model = seen["model"]
    for k, v in model.state_dict().items():
        source = thin if k.startswith("discriminator.") else base
        assert torch.equal(v, source.state_dict()[k]), k
    assert model.card.provenance["init_part"] == "discriminator"
    assert main([*args, "--crop", "64", *part, "decoder"]) == 2
    err = capsys.readouterr().err
    assert "no part named 'decoder' (its parts: discriminator, generator)" in err


def test_train_resume_and_evaluate_commands(tmp_path, capsys):
    from vstain.models import read_card
    from vstain.synth import synth_dataset
    from vstain.train.loss_log import read_loss_log

    data = tmp_path / "ds"
    synth_dataset(data, 4, tile=64, slides=2, slide_size=1024, test_fraction=0.25)
    ckpt = tmp_path / "m.safetensors"
    base = [
        "train",
        "--model",
        "pix2pix",
        "--data",
        str(data),
        "--out",
        str(ckpt),
        "--crop",
        "64",
        "--batch-size",
        "2",
        "--val-every",
        "2",
        "--marker",
        "ck818",
    ]
    assert main([*base, "--steps", "2"]) == 0
    assert main([*base, "--steps", "2"]) == 2  # exists
    capsys.readouterr()
    assert main([*base, "--steps", "4", "--resume", "--keep-steps"]) == 0
    assert "step 4/4: d " in capsys.readouterr().out  # progress lines without a terminal
    # --keep-steps: each checkpoint also under its step's name, the final one equal to the run's
    assert not (tmp_path / "m.step2.safetensors").exists()  # that run did not keep its steps
    assert read_card(tmp_path / "m.step4.safetensors").steps == 4
    assert (tmp_path / "m.step4.safetensors").read_bytes() == ckpt.read_bytes()
    log = read_loss_log(tmp_path / "m.losses.csv")
    assert log["g_rec"][0] == [1, 2, 3, 4] and log["seconds"][0] == [1, 2, 3, 4]
    card = read_card(ckpt)
    assert card.steps == 4 and card.markers == ["ck818"] and "psnr" in card.metrics
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(ckpt),
                "--data",
                str(data),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert "cell_f1_virtual" in capsys.readouterr().out
    scores = json.loads((tmp_path / "r.json").read_text())["m"]
    assert scores["images"] == 1
    assert "heldout" not in read_card(ckpt).metrics

    model = load_checkpoint(ckpt)
    evaluate = ["evaluate", "--model", str(ckpt), "--data", str(data)]
    assert main([*evaluate, "--write-card"]) == 0
    heldout = read_card(ckpt).metrics["heldout"]
    assert heldout["psnr"] == pytest.approx(scores["psnr"]) and heldout["options"] == {}
    assert "split test (1 pairs)" in heldout["data"]
    he = torch.rand(1, 3, 64, 64)
    assert torch.equal(load_checkpoint(ckpt).predict(he).ihc, model.predict(he).ihc)
    shipped = ["evaluate", "--model", "pix2pix", "--data", str(data), "--write-card"]
    assert main(shipped) == 2
    assert "shipped with vstain, which vstain never changes" in capsys.readouterr().err
    assert main([*evaluate, "--option", "steps=5"]) == 2  # pix2pix takes no options
    assert "does not take the options ['steps']" in capsys.readouterr().err


def test_train_set_overrides_config_entries(tmp_path, capsys):
    from vstain.models import read_card
    from vstain.synth import synth_dataset

    data = tmp_path / "ds"
    synth_dataset(data, 3, tile=64, slides=2, slide_size=1024, test_fraction=0.34)
    ckpt = tmp_path / "m.safetensors"
    base = ["train", "--model", "pix2pix", "--data", str(data), "--out", str(ckpt), "--crop", "64"]
    base += ["--steps", "1", "--batch-size", "1", "--val-every", "1"]
    assert main([*base, "--set", "lr=0.001", "--set", "ngf=8", "--ema", "0.5"]) == 0
    config = read_card(ckpt).config
    assert config["lr"] == 0.001 and config["ngf"] == 8
    assert main([*base, "--overwrite", "--set", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert main([*base, "--overwrite", "--train-limit", "1"]) == 0
    assert "(1 train pairs; validated on the test split)" in read_card(ckpt).training_data
    assert main([*base, "--overwrite", "--train-limit", "9"]) == 2
    assert "--train-limit must be 1 to 2" in capsys.readouterr().err


def test_train_joins_one_dataset_per_marker_for_multi_stain(tmp_path, capsys):
    from vstain.models import read_card
    from vstain.synth import synth_dataset

    folders = []
    for marker in ("ck818", "cd3"):
        folders += ["--data", str(tmp_path / marker), "--marker", marker]
        synth_dataset(
            tmp_path / marker,
            2,
            tile=64,
            marker=marker,
            slides=2,
            slide_size=1024,
            test_fraction=0.5,
        )
    ckpt = tmp_path / "multi.safetensors"
    base = ["train", "--model", "stain-diffuser-multi", "--out", str(ckpt), "--crop", "64"]
    base += ["--steps", "1", "--batch-size", "2", "--val-every", "1", "--val-limit", "1"]
    base += ["--set", "n_markers=2", "--set", "marker_weights=[1.0, 1.0]"]
    assert main([*base, *folders]) == 0
    card = read_card(ckpt)
    assert card.markers == ["ck818", "cd3"]
    assert "(2 train pairs; validated on the test split)" in card.training_data
    assert main([*base, "--overwrite", *folders[:-2]]) == 2  # a folder without its marker
    assert "2 --data folders need one --marker each" in capsys.readouterr().err


def test_evaluate_scores_adjacent_sections_against_the_aligned_ihc(tmp_path):
    from vstain.synth import synth_dataset
    from vstain.train.datasets import open_paired_dataset
    from vstain.train.evaluate import evaluate

    data = tmp_path / "adj"
    synth_dataset(
        data, 2, tile=64, slides=2, slide_size=1024, test_fraction=0.5, mode="adjacent-section"
    )
    test = open_paired_dataset(data, split="test")

    class RealIHC(torch.nn.Module):  # "predicts" the misaligned real IHC of the test item
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def predict(self, he):
            from vstain.models.base import Prediction

            return Prediction(ihc=test[0]["ihc"][None].expand(len(he), -1, -1, -1))

    scores = evaluate(RealIHC(), test, truth=data / "truth" / "test", learned=False)
    assert scores["psnr"] > 90  # identical to the real IHC
    assert scores["psnr_aligned"] < 40 and -1 <= scores["ssim_aligned"] < 0.99


def test_option_values_are_json_or_strings():
    from vstain.cli import key_value

    assert key_value("steps=50") == ("steps", 50)
    assert key_value("tta=true") == ("tta", True)
    assert key_value("marker=cd3") == ("marker", "cd3")
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        key_value("steps")


def test_import_writes_a_checkpoint_whose_card_says_where_it_came_from(tmp_path, capsys):
    from tests.models.unet_reference import RefUnetGenerator
    from vstain.models import read_card, sha256_file

    pth = tmp_path / "latest_net_G.pth"
    torch.save(RefUnetGenerator(ngf=4, num_downs=5, attention=True).state_dict(), pth)
    out = tmp_path / "bci.safetensors"
    args = ["import", str(pth), "--out", str(out), "--marker", "HER2", "--pixel-size", "0.46"]
    assert main([*args, "--notes", "BCI HER2 weights"]) == 0
    assert "attention_unet_32 as pyramid-pix2pix-unet" in capsys.readouterr().out
    card = read_card(out)
    assert (card.architecture, card.markers, card.pixel_size) == (
        "pyramid-pix2pix-unet",
        ["HER2"],
        0.46,
    )
    assert card.notes == "BCI HER2 weights" and card.parent == pth.name
    assert card.provenance == {
        "kind": "import",
        "source": "imported public checkpoint",
        "layout": "attention_unet_32",
        "file": pth.name,
        "sha256": sha256_file(pth),
    }
    assert load_checkpoint(out).card == card
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main([*args, "--architecture", "pix2pix-unet", "--overwrite"]) == 0
    assert read_card(out).architecture == "pix2pix-unet"


def test_import_of_a_file_that_is_no_known_generator_is_one_line(tmp_path, capsys):
    pth = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(2, 8), "fc.bias": torch.zeros(2)}, pth)
    out = tmp_path / "x.safetensors"
    assert main(["import", str(pth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vstain: error:") and len(err.strip().splitlines()) == 1
    assert "not a known generator layout" in err and "unet_256" in err
    assert not out.exists()


def test_an_imported_instance_norm_unet_stains_with_feathered_tiles(slide_path, tmp_path, capsys):
    """Instance norm makes every tile's statistics its own: ``--blend feather`` blends them."""
    import zarr

    from tests.models.unet_reference import RefUnetGenerator

    pth = tmp_path / "cyclegan_unet.pth"
    torch.save(RefUnetGenerator(ngf=4, num_downs=5, norm="instance").state_dict(), pth)
    model = tmp_path / "unet.safetensors"
    assert main(["import", str(pth), "--out", str(model)]) == 0
    out = tmp_path / "o.zarr"
    args = ["stain", str(slide_path), "--model", str(model), "--out", str(out), "--tile", "64"]
    assert main([*args, "--region", "0,0,256,192", "--blend", "feather"]) == 0
    assert "12 tiles computed" in capsys.readouterr().out
    assert zarr.open_group(out, mode="r").attrs["vstain"]["blend"] == "feather"
    assert main([*args, "--blend", "blur", "--overwrite"]) == 2
    assert "Blend must be one of crop, feather" in capsys.readouterr().err
