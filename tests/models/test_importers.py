"""Importing public ResNet generator checkpoints: every layout gives the reference's outputs."""

import pickle

import pytest
import torch
from torch import nn

from tests.models.conftest import Payload
from tests.models.cut_reference import RefResnetGenerator, randomise
from vstain.models import CheckpointError, import_cut_generator, load_checkpoint, save_checkpoint
from vstain.models.checkpoint import sha256_file
from vstain.models.importers import detect_generator_layout

LAYOUTS = {
    "cut-default": dict(norm="instance", n_blocks=9, no_antialias=False, no_antialias_up=False),
    "pix2pix": dict(
        norm="batch", n_blocks=9, dropout=True, no_antialias=True, no_antialias_up=True
    ),
    "cyclegan-6": dict(norm="instance", n_blocks=6, no_antialias=True, no_antialias_up=True),
    "antialias-down-only": dict(
        norm="instance", n_blocks=6, no_antialias=False, no_antialias_up=True
    ),
    "no-norm": dict(norm="none", n_blocks=6, no_antialias=True, no_antialias_up=False),
}
#: Weight scales that keep each reference's tanh output mostly unsaturated.
SCALES = {"no-norm": 0.07}


def reference(layout: dict, seed: int = 0, spectral: bool = False, scale: float = 0.1) -> nn.Module:
    ref = RefResnetGenerator(**layout)
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
    """Most outputs away from tanh's +-1, so equal outputs are not an artefact of saturation."""
    with torch.no_grad():
        assert (ref(x * 2 - 1).abs() < 0.99).float().mean() > 0.5


def assert_same_outputs(model, ref, x):
    with torch.no_grad():
        expected = ref(x * 2 - 1)
    torch.testing.assert_close(model.generator(x * 2 - 1), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.predict(x).ihc, (expected + 1) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", LAYOUTS)
def test_import_reproduces_reference_outputs(tmp_path, pair, name):
    layout = LAYOUTS[name]
    ref = reference(layout, scale=SCALES.get(name, 0.1))
    assert_unsaturated(ref, pair["he"])
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_cut_generator(path, markers=["CK8/18"], pixel_size=0.5)
    cfg = model.card.config
    assert (cfg["norm"], cfg["n_blocks"], cfg["ngf"]) == (layout["norm"], layout["n_blocks"], 8)
    assert cfg["antialias"] == (not layout["no_antialias"])
    assert cfg["antialias_up"] == (not layout["no_antialias_up"])
    assert cfg["dropout"] == layout.get("dropout", False)
    assert model.card.parent == path.name and model.card.parent_sha256 == sha256_file(path)
    assert model.card.markers == ["CK8/18"] and model.card.pixel_size == 0.5
    assert_same_outputs(model, ref, pair["he"])


def test_spectral_norm_layout(tmp_path, pair):
    ref = reference(LAYOUTS["cyclegan-6"], spectral=True)
    assert_unsaturated(ref, pair["he"])
    path = tmp_path / "sn_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_cut_generator(path)
    assert model.card.config["spectral_norm"] is True
    assert_same_outputs(model, ref, pair["he"])


def test_dataparallel_prefix_and_legacy_zip_free_format(tmp_path, pair):
    ref = reference(LAYOUTS["cut-default"], seed=3)
    path = tmp_path / "dp_net_G.pth"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert_same_outputs(import_cut_generator(path), ref, pair["he"])


def test_legacy_norm_buffers(tmp_path, pair):
    """Pre-0.4 InstanceNorm running stats are dropped; pre-0.4.1 BatchNorm counters are added."""
    inst = reference(LAYOUTS["cyclegan-6"], seed=1)
    state = dict(inst.state_dict())
    state["model.2.running_mean"] = torch.zeros(8)
    state["model.2.running_var"] = torch.ones(8)
    torch.save(state, tmp_path / "inst.pth")
    assert_same_outputs(import_cut_generator(tmp_path / "inst.pth"), inst, pair["he"])

    batch = reference(LAYOUTS["pix2pix"], seed=2)
    state = {k: v for k, v in batch.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "bn.pth")
    assert_same_outputs(import_cut_generator(tmp_path / "bn.pth"), batch, pair["he"])


def test_detected_layout_of_the_paper_pix2pix_generator():
    ref = RefResnetGenerator(
        ngf=64, n_blocks=9, norm="batch", dropout=True, no_antialias=True, no_antialias_up=True
    )
    layout = detect_generator_layout(ref.state_dict())
    assert layout == {
        "in_channels": 3,
        "out_channels": 3,
        "ngf": 64,
        "n_blocks": 9,
        "norm": "batch",
        "dropout": True,
        "antialias": False,
        "antialias_up": False,
        "spectral_norm": False,
    }


def test_imported_model_saves_and_reloads(tmp_path, pair):
    ref = reference(LAYOUTS["pix2pix"], seed=4)
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    model = import_cut_generator(
        tmp_path / "g.pth", architecture="pyramid-pix2pix", markers=["HER2"]
    )
    save_checkpoint(model, tmp_path / "g.safetensors")
    loaded = load_checkpoint(tmp_path / "g.safetensors")
    assert loaded.card == model.card and loaded.card.architecture == "pyramid-pix2pix"
    assert_same_outputs(loaded, ref, pair["he"])


def test_layout_assertions_must_match(tmp_path):
    torch.save(reference(LAYOUTS["cut-default"]).state_dict(), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=r"n_blocks=9 \(not 6\)"):
        import_cut_generator(tmp_path / "g.pth", n_blocks=6)
    with pytest.raises(CheckpointError, match="norm='instance'"):
        import_cut_generator(tmp_path / "g.pth", norm="batch")


def test_partial_spectral_norm_is_refused(tmp_path):
    ref = reference(LAYOUTS["cyclegan-6"])
    nn.utils.spectral_norm(ref.model[1])
    torch.save(ref.state_dict(), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match="only some convs"):
        import_cut_generator(tmp_path / "g.pth")


def test_files_that_are_not_generators(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        import_cut_generator(tmp_path / "missing.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a generator state dict"):
        import_cut_generator(tmp_path / "tensor.pth")
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a ResNet generator"):
        import_cut_generator(tmp_path / "other.pth")


def test_malicious_pickle_is_not_executed(tmp_path):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload does run when unpickled
    assert live.exists()
    marker = tmp_path / "marker"
    torch.save({"model.1.weight": Payload(marker)}, tmp_path / "evil_net_G.pth")
    with pytest.raises(CheckpointError, match="Cannot read"):
        import_cut_generator(tmp_path / "evil_net_G.pth")
    assert not marker.exists()
