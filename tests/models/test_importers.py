"""Importing public generator checkpoints: every layout gives the reference's outputs."""

import pickle

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from torch import nn

from tests.models.conftest import Payload, make_pair
from tests.models.cut_reference import RefResnetGenerator, randomise
from tests.models.unet_reference import RefUnetGenerator
from tests.tiles.conftest import make_tissue_image
from vstain.io.slide import Slide
from vstain.models import CheckpointError, import_generator, load_checkpoint, save_checkpoint
from vstain.models.checkpoint import sha256_file
from vstain.models.device import predict_batch
from vstain.models.import_layouts import detect_layout
from vstain.tiles import OutputSpec, stain_level

LAYOUTS = {
    "cut-default": dict(norm="instance", n_blocks=9, no_antialias=False, no_antialias_up=False),
    "pix2pix": dict(
        norm="batch", n_blocks=9, dropout=True, no_antialias=True, no_antialias_up=True
    ),
    "pix2pix-no-dropout": dict(norm="batch", n_blocks=9, no_antialias=True, no_antialias_up=True),
    "vstain-small": dict(norm="batch", n_blocks=3, no_antialias=True, no_antialias_up=True),
    "cyclegan-6": dict(norm="instance", n_blocks=6, no_antialias=True, no_antialias_up=True),
    "cyclegan-6-dropout": dict(
        norm="instance", n_blocks=6, dropout=True, no_antialias=True, no_antialias_up=True
    ),
    "antialias-down-only": dict(
        norm="instance", n_blocks=6, no_antialias=False, no_antialias_up=True
    ),
    "no-norm": dict(norm="none", n_blocks=6, no_antialias=True, no_antialias_up=False),
}
#: Public U-Nets (ngf 4): pix2pix's unet_256 / unet_128 and BCI's attention_unet_32.
UNETS = {
    "unet_256": dict(num_downs=8, norm="batch", use_dropout=True),
    "unet_256-instance": dict(num_downs=8, norm="instance"),
    "unet_128": dict(num_downs=7, norm="batch"),
    "unet_128-instance-dropout": dict(num_downs=7, norm="instance", use_dropout=True),
    "attention_unet_32": dict(num_downs=5, norm="batch", attention=True),
    "attention_unet_32-instance": dict(num_downs=5, norm="instance", attention=True),
}
#: Weight scales that keep each reference's tanh output mostly unsaturated.
SCALES = {"no-norm": 0.07}


def reference(layout: dict, seed: int = 0, spectral: bool = False, scale: float = 0.1) -> nn.Module:
    ref = RefUnetGenerator(**layout) if "num_downs" in layout else RefResnetGenerator(**layout)
    if spectral:
        for m in ref.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.utils.spectral_norm(m)
    randomise(ref, seed, scale)
    if spectral:  # power iterations, so the stored u, v estimate each weight's spectral norm
        with torch.no_grad():
            for _ in range(5):
                ref(torch.rand(1, 3, 32, 32))
    return ref.eval()


def assert_unsaturated(ref: nn.Module, x: torch.Tensor) -> None:
    """Most outputs away from tanh's +-1 and not constant, so equal outputs mean equal weights."""
    with torch.no_grad():
        y = ref(x * 2 - 1)
    assert (y.abs() < 0.99).float().mean() > 0.5 and y.std() > 0.01


def assert_same_outputs(model, ref, x):
    with torch.no_grad():
        expected = ref(x * 2 - 1)
    torch.testing.assert_close(model.generator(x * 2 - 1), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(model.predict(x).ihc, (expected + 1) / 2, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", LAYOUTS)
def test_import_reproduces_reference_outputs(tmp_path, pair, name):
    layout = LAYOUTS[name]
    ref = reference(layout, scale=SCALES.get(name, 0.1))
    assert_unsaturated(ref, pair["he"])
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_generator(path, markers=["CK8/18"], pixel_size=0.5)
    cfg = model.card.config
    assert (cfg["norm"], cfg["n_blocks"], cfg["ngf"]) == (layout["norm"], layout["n_blocks"], 8)
    assert cfg["antialias"] == (not layout["no_antialias"])
    assert cfg["antialias_up"] == (not layout["no_antialias_up"])
    assert cfg["dropout"] == layout.get("dropout", False)
    assert model.card.architecture == "pix2pix"
    assert model.card.provenance["layout"] == f"resnet_{layout['n_blocks']}blocks"
    assert_imported_card(model, path)
    assert_same_outputs(model, ref, pair["he"])


def assert_imported_card(model, path):
    card = model.card
    assert card.parent == path.name and card.parent_sha256 == sha256_file(path)
    assert card.provenance["sha256"] == sha256_file(path)
    assert card.provenance["source"] == "imported public checkpoint"
    assert card.markers == ["CK8/18"] and card.pixel_size == 0.5


@pytest.mark.parametrize("name", UNETS)
def test_unet_import_reproduces_reference_outputs(tmp_path, name):
    layout = UNETS[name]
    he = make_pair(256)["he"]
    ref = reference(layout, seed=5, scale=0.3)  # at 0.1 the deepest weights barely matter
    assert_unsaturated(ref, he)
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_generator(path, markers=["CK8/18"], pixel_size=0.5)
    cfg = model.card.config
    n = layout["num_downs"]
    assert (cfg["ngf"], cfg["num_downs"], cfg["norm"]) == (4, n, layout["norm"])
    assert cfg["attention"] == layout.get("attention", False)
    kind = "attention_unet" if cfg["attention"] else "unet"
    assert model.card.provenance["layout"] == f"{kind}_{2**n}"
    assert model.card.architecture == (
        "pyramid-pix2pix-unet" if cfg["attention"] else "pix2pix-unet"
    )
    assert model.size_multiple == 2**n and model.card.halo % 2**n == 0
    assert_imported_card(model, path)
    assert_same_outputs(model, ref, he)
    innermost = model.generator.model.model[1]
    while innermost.kind != "innermost":
        innermost = innermost.model[3]
    with torch.no_grad():  # the comparison sees the deepest level
        expected = model.generator(he * 2 - 1)
        innermost.model[1].weight.mul_(1.5)
        assert (model.generator(he * 2 - 1) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["attention_unet_32", "unet_128", "unet_256"])
def test_unet_halo_covers_the_measured_receptive_field(tmp_path, name):
    """Batch norm (eval): the gradient support of an output pixel is the receptive field."""
    ref = reference({**UNETS[name], "norm": "batch"}, scale=0.3)  # few dead ReLUs
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    model = import_generator(tmp_path / "g.pth")
    n = model.card.config["num_downs"]
    radius = measured_radius(model.generator, n)
    print(f"{name}: halo {model.card.halo}, measured radius {radius}")
    exact = model.generator.receptive_radius()  # a dead ReLU may hide the farthest pixel
    assert model.card.halo - model.size_multiple < radius <= exact <= model.card.halo


def measured_radius(generator, num_downs: int) -> int:
    """Farthest input pixel that moves an output pixel (gradient support, four phases)."""
    size = 2**num_downs * 8
    radius = 0
    torch.manual_seed(0)
    for phase in (0, 1, 2**num_downs // 2 - 1, 2**num_downs - 1):
        x = torch.randn(1, 3, size, size, requires_grad=True)
        centre = size // 2 + phase
        generator(x)[0, :, centre, centre].sum().backward()
        rows, cols = (x.grad[0].abs().sum(0) > 0).nonzero().T
        radius = max(radius, *(centre - rows.min(), rows.max() - centre), centre - cols.min())
    return int(radius)


def test_spectral_norm_layout(tmp_path, pair):
    ref = reference(LAYOUTS["cyclegan-6"], spectral=True)
    assert_unsaturated(ref, pair["he"])
    path = tmp_path / "sn_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_generator(path)
    assert model.card.config["spectral_norm"] is True
    assert_same_outputs(model, ref, pair["he"])


def test_dataparallel_prefix_and_legacy_zip_free_format(tmp_path, pair):
    ref = reference(LAYOUTS["cut-default"], seed=3)
    path = tmp_path / "dp_net_G.pth"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert_same_outputs(import_generator(path), ref, pair["he"])


def test_legacy_norm_buffers(tmp_path, pair):
    """Pre-0.4 InstanceNorm running stats are dropped; pre-0.4.1 BatchNorm counters are added."""
    inst = reference(LAYOUTS["cyclegan-6"], seed=1)
    state = dict(inst.state_dict())
    state["model.2.running_mean"] = torch.zeros(8)
    state["model.2.running_var"] = torch.ones(8)
    torch.save(state, tmp_path / "inst.pth")
    assert_same_outputs(import_generator(tmp_path / "inst.pth"), inst, pair["he"])

    batch = reference(LAYOUTS["pix2pix"], seed=2)
    state = {k: v for k, v in batch.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "bn.pth")
    assert_same_outputs(import_generator(tmp_path / "bn.pth"), batch, pair["he"])


@pytest.mark.parametrize(
    ("ref", "name", "generator"),
    [
        (
            RefResnetGenerator(64, 9, "batch", True, no_antialias=True, no_antialias_up=True),
            "resnet_9blocks",
            {"ngf": 64, "n_blocks": 9, "norm": "batch", "dropout": True, "antialias": False,
             "antialias_up": False, "spectral_norm": False},
        ),
        (
            RefResnetGenerator(16, 3, "batch", False, no_antialias=True, no_antialias_up=True),
            "resnet_3blocks",
            {"ngf": 16, "n_blocks": 3, "norm": "batch", "dropout": False, "antialias": False,
             "antialias_up": False, "spectral_norm": False},
        ),
        (
            RefUnetGenerator(64, 5, "batch", attention=True),
            "attention_unet_32",
            {"ngf": 64, "num_downs": 5, "norm": "batch", "dropout": False, "attention": True},
        ),
    ],
)  # fmt: skip
def test_detected_layouts_of_paper_and_small_generators(ref, name, generator):
    """Paper sizes (pix2pix's resnet_9blocks, BCI's attention_unet_32) and vstain's own small
    pix2pix (batch norm without dropout: its conv_block.6 is a norm, not a conv)."""
    layout = detect_layout(ref.state_dict())
    assert (layout.name, layout.generator) == (name, generator)
    assert (layout.in_channels, layout.out_channels) == (3, 3)


@pytest.mark.parametrize(("name", "architecture"), [("pix2pix", "pyramid-pix2pix"),
                                                    ("attention_unet_32", None)])  # fmt: skip
def test_imported_model_saves_and_reloads(tmp_path, name, architecture):
    """The attention U-Net's repeated ``gating`` keys are not saved twice."""
    layout = {**LAYOUTS, **UNETS}[name]
    he = make_pair(64)["he"]
    ref = reference(layout, seed=4)
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    model = import_generator(tmp_path / "g.pth", architecture=architecture, markers=["HER2"])
    save_checkpoint(model, tmp_path / "g.safetensors")
    loaded = load_checkpoint(tmp_path / "g.safetensors")
    assert loaded.card == model.card
    assert not any(".gating." in k for k in loaded.state_dict())
    assert_same_outputs(loaded, ref, he)


def test_layout_settings_must_match_and_unet_dropout_is_given(tmp_path):
    torch.save(reference(LAYOUTS["cut-default"]).state_dict(), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=r"n_blocks=9 \(not 6\)"):
        import_generator(tmp_path / "g.pth", expected={"n_blocks": 6})
    with pytest.raises(CheckpointError, match="norm='instance'"):
        import_generator(tmp_path / "g.pth", expected={"norm": "batch"})
    with pytest.raises(CheckpointError, match=r"dropout=False \(not True\)"):
        import_generator(tmp_path / "g.pth", dropout=True)
    torch.save(reference(UNETS["unet_128"]).state_dict(), tmp_path / "u.pth")
    assert import_generator(tmp_path / "u.pth").card.config["dropout"] is True  # pix2pix's default
    assert import_generator(tmp_path / "u.pth", dropout=False).card.config["dropout"] is False


def test_architecture_must_have_the_files_generator(tmp_path):
    torch.save(reference(UNETS["unet_128"]).state_dict(), tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match=r"'pix2pix' has no unet_128 generator.*pix2pix-unet"):
        import_generator(tmp_path / "u.pth", architecture="pix2pix")
    model = import_generator(tmp_path / "u.pth", architecture="pyramid-pix2pix-unet")
    assert model.card.architecture == "pyramid-pix2pix-unet"


def test_attention_gating_keys_must_repeat_the_model_keys(tmp_path):
    state = reference(UNETS["attention_unet_32"]).state_dict()
    key = next(k for k in state if ".gating." in k and k.endswith("weight"))
    state[key] = state[key] + 1
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match="no equal twin"):
        import_generator(tmp_path / "g.pth")


def test_partial_spectral_norm_is_refused(tmp_path):
    ref = reference(LAYOUTS["cyclegan-6"])
    nn.utils.spectral_norm(ref.model[1])
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match="only some convs"):
        import_generator(tmp_path / "g.pth")


def test_files_that_are_not_generators(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        import_generator(tmp_path / "missing.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a generator state dict"):
        import_generator(tmp_path / "tensor.pth")
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a known generator layout") as error:
        import_generator(tmp_path / "other.pth")
    assert "\n" not in str(error.value)
    assert all(n in str(error.value) for n in ("resnet_9blocks", "unet_256", "attention_unet_32"))


def test_malicious_pickle_is_not_executed(tmp_path):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload does run when unpickled
    assert live.exists()
    marker = tmp_path / "marker"
    torch.save({"model.1.weight": Payload(marker)}, tmp_path / "evil_net_G.pth")
    with pytest.raises(CheckpointError, match="never unpickles") as error:
        import_generator(tmp_path / "evil_net_G.pth")
    assert not marker.exists() and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["attention_unet_32", "unet_128"])
def test_imported_unet_tiles_like_the_whole_image(tmp_path, name):
    """Through the tile engine (card halo, size multiple as alignment, centre crop), the stitched
    output equals the untiled output wherever the whole image gave the model full context; with
    a halo of one size multiple it does not (the deep levels reach farther)."""
    ref = reference(UNETS[name], seed=7, scale=0.3)  # deep paths that move the output visibly
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    model = import_generator(tmp_path / "g.pth")
    tile = model.size_multiple * 2
    start = -(-model.card.halo // tile) * tile  # the first tile with a full halo in the image
    image = make_tissue_image(2 * start + 3 * tile, 2 * start + 3 * tile)
    slide = Slide(tmp_path / "fake.png", [da.from_array(image, chunks=(tile, tile, 3))])
    inside = slice(start, start + 3 * tile)  # 9 tiles, seams inside, context in the image
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    whole = np.clip(np.rint(model.predict(x).ihc[0, :, inside, inside].numpy() * 255), 0, 255)
    assert whole.std() > 5  # not a flat image

    def tiled(halo: int) -> np.ndarray:
        out = tmp_path / f"halo{halo}.zarr"
        result = stain_level(
            slide,
            lambda batch: predict_batch(model, batch, torch.device("cpu")),
            out,
            specs=[OutputSpec("ihc", "rgb", 3, background=1.0)],
            tile=tile,
            halo=halo,
            align=model.size_multiple,
            region=(start, start, 3 * tile, 3 * tile),
            min_tissue=0,
        )
        assert result.computed == 9
        return np.asarray(zarr.open_array(out / "ihc" / "0", mode="r")[:3, inside, inside])

    assert np.abs(tiled(model.card.halo).astype(int) - whole).max() <= 1
    assert np.abs(tiled(model.size_multiple).astype(int) - whole).max() > 10
