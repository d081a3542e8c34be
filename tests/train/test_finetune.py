"""Fine-tuning on rectangles: parts freeze what they say, the best checkpoint is kept, the base is
never written, regions round-trip through GeoJSON."""

import json

import pytest
import torch

from tests.io.builders import write_synth_pair
from vstain.io import open_slide
from vstain.models import create, load_checkpoint, read_card, save_checkpoint, sha256_file
from vstain.tiles import CancelToken
from vstain.train.finetune import FinetuneError, finetune, select_part, trainable_counts
from vstain.train.region_geojson import read_regions, write_regions
from vstain.train.regions import Region

SIZE = 512
REGIONS = [Region(0, 0, 256, 256), Region(256, 0, 256, 256), Region(0, 256, 256, 256, True)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A 512 px simulated same-section H&E / IHC pair on disk (same geometry: no registration)."""
    return write_synth_pair(tmp_path_factory.mktemp("pair"), SIZE, seed=7)


@pytest.fixture
def base(tmp_path):
    torch.manual_seed(0)
    model = create("pix2pix", markers=["ck818"], pixel_size=0.5, tile_size=128)
    return save_checkpoint(model, tmp_path / "base.safetensors")


def trainable(model, prefix):
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)}


def test_parts_freeze_the_stainer_but_never_the_discriminator(base):
    model = load_checkpoint(base)
    everything = {n for n, _ in model.named_parameters()}
    counts = trainable_counts(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == everything  # unchanged
    generator = [n for n, _ in model.named_parameters() if n.startswith("generator.")]
    discriminator = trainable(model, "discriminator.")

    assert select_part(model, "norm") == counts["norm"]
    norms = trainable(model, "generator.")
    assert norms and all(".weight" in n or ".bias" in n for n in norms)
    assert all(
        isinstance(model.get_submodule(n.rsplit(".", 1)[0]), torch.nn.BatchNorm2d) for n in norms
    )
    assert trainable(model, "discriminator.") == discriminator

    for p in model.parameters():
        p.requires_grad_(True)
    assert select_part(model, "decoder") == counts["decoder"] < counts["all"]
    assert trainable(model, "generator.") == set(generator[len(generator) // 2 :])
    assert counts["norm"] < counts["decoder"]
    with pytest.raises(FinetuneError, match="Unknown part 'head'"):
        select_part(model, "head")


def test_finetune_keeps_the_best_checkpoint_and_records_where_it_came_from(pair, base, tmp_path):
    he, ihc = (open_slide(p) for p in pair)
    base_hash = sha256_file(base)
    out = tmp_path / "tuned.safetensors"
    validations = []

    class StopAfter15:
        def __init__(self, token):
            self.token = token

        def on_validation(self, step, metrics):
            validations.append((step, metrics["psnr"]))

        def on_step(self, step, losses, seconds):
            if step == 15:
                self.token.cancel()

    token = CancelToken()
    result = finetune(
        base,
        he,
        ihc,
        REGIONS,
        out,
        part="decoder",
        steps=30,
        lr=1e-3,
        batch_size=2,
        crop=64,
        val_every=5,
        device="cpu",
        sources={"he": str(pair[0]), "ihc": str(pair[1])},
        callbacks=[StopAfter15(token)],
        cancel=token,
    )
    assert result.cancelled and result.steps == 15
    assert [s for s, _ in validations] == [5, 10, 15]
    best_step, best_psnr = max(validations, key=lambda v: v[1])
    assert result.best_step == best_step and result.after["psnr"] == pytest.approx(best_psnr)
    assert sha256_file(base) == base_hash  # the base is never written

    card = read_card(out)
    assert card.steps == best_step and card.parent == str(base)
    assert card.parent_sha256 == base_hash
    assert card.provenance["regions"][2] == {
        "x": 0,
        "y": 256,
        "w": 256,
        "h": 256,
        "validation": True,
    }
    assert card.provenance["part"] == "decoder" and card.provenance["lr"] == 1e-3
    assert card.metrics["before"]["psnr"] == pytest.approx(result.before["psnr"])
    assert card.metrics["after"]["psnr"] == pytest.approx(best_psnr)
    assert load_checkpoint(out).card.config["lr"] == 1e-3

    with pytest.raises(FinetuneError, match="never written"):
        finetune(base, he, ihc, REGIONS, base, steps=1, crop=64)
    with pytest.raises(FinetuneError, match="exists"):
        finetune(base, he, ihc, REGIONS, out, steps=1, crop=64)


def test_work_files_cannot_be_the_base(pair, base, tmp_path):
    he, ihc = (open_slide(p) for p in pair)
    named_like_work = tmp_path / "q.work.safetensors"
    named_like_work.write_bytes(base.read_bytes())
    with pytest.raises(FinetuneError, match=r"q\.work\.safetensors, the base"):
        finetune(named_like_work, he, ihc, REGIONS, tmp_path / "q.safetensors", steps=1, crop=64)
    assert named_like_work.read_bytes() == base.read_bytes()


def test_a_diverging_finetune_keeps_the_base_and_warns(pair, tmp_path):
    from vstain.weights import resolve_checkpoint

    base = resolve_checkpoint("pix2pix")  # trained: 26 dB here, far above a blown-up model's 14
    he, ihc = (open_slide(p) for p in pair)
    out = tmp_path / "wild.safetensors"
    options = {"steps": 10, "batch_size": 2, "crop": 64, "val_every": 5, "device": "cpu"}
    result = finetune(base, he, ihc, REGIONS, out, lr=1e6, **options)
    assert result.warning and "holds the base's weights" in result.warning
    assert result.best_step == 0 and result.after == result.before
    kept, original = load_checkpoint(out), load_checkpoint(base)
    for (name, a), b in zip(kept.state_dict().items(), original.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert kept.card.config["lr"] == original.card.config["lr"]  # not 1e6 for the next run
    with pytest.raises(FinetuneError, match="other lr"):
        finetune(base, he, ihc, REGIONS, out, lr=1e-4, resume=True, **options)


def test_regions_round_trip_through_geojson_and_read_qupath_exports(tmp_path):
    path = write_regions(tmp_path / "r.geojson", REGIONS)
    assert read_regions(path) == REGIONS
    qupath = [  # a QuPath export: a list of features, classes by name, float coordinates
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[10.0, 20.0], [110.0, 20.0], [110.0, 70.0], [10.0, 70.0], [10.0, 20.0]]
                ],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "validation"}},
        }
    ]
    (tmp_path / "q.geojson").write_text(json.dumps(qupath))
    assert read_regions(tmp_path / "q.geojson") == [Region(10, 20, 100, 50, True)]
    qupath[0]["geometry"]["coordinates"][0][1] = [120.0, 25.0]
    (tmp_path / "q.geojson").write_text(json.dumps(qupath))
    with pytest.raises(Exception, match="not an axis-aligned rectangle"):
        read_regions(tmp_path / "q.geojson")
    (tmp_path / "bad.geojson").write_text("{")
    with pytest.raises(Exception, match="Cannot read regions"):
        read_regions(tmp_path / "bad.geojson")


def test_finetune_command_runs_headless_from_geojson(pair, base, tmp_path, capsys):
    from vstain.cli import main

    regions = write_regions(tmp_path / "r.geojson", REGIONS[:2])
    validation = write_regions(tmp_path / "v.geojson", [Region(0, 256, 256, 256)])

    def command(out, *extra):
        args = ["finetune", "--checkpoint", str(base), "--he", str(pair[0]), "--ihc", str(pair[1])]
        args += ["--regions", str(regions), "--validation", str(validation), "--out", str(out)]
        args += ["--steps", "4", "--val-every", "2", "--crop", "64", "--batch-size", "2"]
        return main([*args, *extra])

    out = tmp_path / "cli.safetensors"
    assert command(out, "--aligned") == 0
    card = read_card(out)
    assert f"step {card.steps} of 4 kept" in capsys.readouterr().out and card.steps in (2, 4)
    assert card.provenance["slides"] == {"he": str(pair[0]), "ihc": str(pair[1])}
    assert [r["validation"] for r in card.provenance["regions"]] == [False, False, True]
    (tmp_path / "bad.json").write_text("{}")
    assert (
        command(tmp_path / "other.safetensors", "--registration", str(tmp_path / "bad.json")) == 2
    )
    assert "Cannot read registration" in capsys.readouterr().err
