"""Checkpoints: round trip, atomic writes, and refusal of wrong, damaged or pickled files."""

import hashlib
import pickle

import pytest
import torch
from safetensors.torch import save_file

from tests.models.conftest import Payload
from vstain.models import (
    CheckpointError,
    SimpleTrainState,
    create,
    load_checkpoint,
    model_configs,
    read_card,
    save_checkpoint,
    sha256_file,
)
from vstain.models.checkpoint import CARD_KEY


def trained_model(pair, name="pix2pix"):
    """A small model after a few steps, so weights and batch-norm statistics are not the init."""
    torch.manual_seed(0)
    model = create(name, markers=["CK8/18"], pixel_size=0.5, training_data="one test pair")
    state = SimpleTrainState.for_model(model.train(), total_steps=3)
    for _ in range(3):
        model.training_step(pair, state)
        state.end_step()
    model.card.steps = 3
    model.card.metrics = {"psnr": 12.5}
    return model


def write_raw(path, tensors, card_json):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={CARD_KEY: card_json})


def test_round_trip_gives_identical_outputs(tmp_path, pair):
    model = trained_model(pair, "pyramid-pix2pix")
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.card == model.card
    assert not loaded.training
    assert torch.equal(loaded.predict(pair["he"]).ihc, model.predict(pair["he"]).ihc)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_save_is_atomic_and_overwrites(tmp_path, pair):
    model = trained_model(pair)
    path = tmp_path / "m.safetensors"
    save_checkpoint(create("pix2pix"), path)
    save_checkpoint(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left
    assert read_card(path).steps == 3
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(model, tmp_path / "no" / "m.safetensors")


def test_other_architecture_reports_shape_differences(tmp_path, pair):
    model = trained_model(pair)
    cfg = {**model_configs("pyramid-pix2pix")["small"], "ngf": 8}
    other = create("pyramid-pix2pix", cfg)
    path = tmp_path / "wrong.safetensors"
    write_raw(path, model.state_dict(), other.card.to_json())
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches \(first: generator.model.1.weight: "
        r"file \(16, 3, 7, 7\), model \(8, 3, 7, 7\)",
    ):
        load_checkpoint(path)


def test_missing_and_unexpected_keys_are_named(tmp_path, pair):
    model = trained_model(pair)
    tensors = dict(model.state_dict())
    tensors["extra.weight"] = tensors.pop("generator.model.1.weight")
    path = tmp_path / "keys.safetensors"
    write_raw(path, tensors, model.card.to_json())
    with pytest.raises(
        CheckpointError,
        match=r"1 missing keys \(first: generator.model.1.weight\); "
        r"1 unexpected keys \(first: extra.weight\)",
    ):
        load_checkpoint(path)


def test_unknown_architecture_in_card(tmp_path, pair):
    model = trained_model(pair)
    path = tmp_path / "future.safetensors"
    write_raw(path, model.state_dict(), model.card.to_json().replace('"pix2pix"', '"future-net"'))
    with pytest.raises(
        CheckpointError, match=r"Unknown model 'future-net'. Known models: .*pix2pix"
    ):
        load_checkpoint(path)


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload does run when unpickled
    assert live.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(pickle.dumps({"weights": Payload(marker)}))
    with pytest.raises(CheckpointError, match=r"not a safetensors checkpoint.*never loads"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_zip_truncated_and_cardless_files(tmp_path, pair):
    torch.save(create("pix2pix").state_dict(), tmp_path / "zip.safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(tmp_path / "zip.safetensors")

    good = save_checkpoint(trained_model(pair), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no vstain model card"):
        load_checkpoint(tmp_path / "plain.safetensors")

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
