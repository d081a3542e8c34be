"""Device choice, mixed-precision dtype, and batched inference for the tile engine."""

import contextlib

import numpy as np
import pytest
import torch

from vstain.models import DeviceError, ModelError, choose_device, create, predict_batch
from vstain.models.device import (
    MAX_AUTO_BATCH,
    Predictor,
    auto_batch_size,
    autocast_context,
    autocast_dtype,
    batch_for_memory,
    prepare_model,
)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(cpu_only, monkeypatch):
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("auto") == torch.device("cuda")
    assert choose_device("cuda:1") == torch.device("cuda:1")


def test_unavailable_devices_list_the_available_ones(one_gpu):
    with pytest.raises(DeviceError, match=r"'mps' is not available.*Available: cuda:0, cpu\."):
        choose_device("mps")
    with pytest.raises(DeviceError, match=r"'cuda:1' is not available"):
        choose_device("cuda:1")
    assert choose_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu(cpu_only):
    with pytest.raises(
        DeviceError,
        match=r"'cuda' is not available on this machine\. "
        r"Available: cpu\.",
    ):
        choose_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "tpu", ""])
def test_unknown_device_names(name):
    with pytest.raises(DeviceError, match="Use auto, cuda, cuda:N, mps or cpu"):
        choose_device(name)


def test_autocast_dtype(monkeypatch):
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("mps")) is None
    assert isinstance(autocast_context(torch.device("cpu")), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(torch.device("cuda:0")) == torch.float16
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "off") is None
    assert autocast_dtype(torch.device("mps"), "fp16") == torch.float16


def test_predict_batch_accepts_numpy_uint8_float_and_tensors(pair):
    cpu = torch.device("cpu")
    model = prepare_model(create("pix2pix"), cpu)
    he = pair["he"].repeat(2, 1, 1, 1)
    expected = model.predict(he).ihc.numpy()
    hwc_uint8 = np.rint(he.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    he_uint8 = torch.from_numpy(hwc_uint8).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(he_uint8, he)  # the fixture is 8-bit already

    out = predict_batch(model, hwc_uint8, cpu)
    assert set(out) == {"ihc"}
    assert out["ihc"].dtype == np.float32 and out["ihc"].shape == (2, 3, 64, 64)
    np.testing.assert_allclose(out["ihc"], expected, atol=1e-6)
    np.testing.assert_allclose(
        predict_batch(model, hwc_uint8 / 255.0, cpu)["ihc"], expected, atol=1e-6
    )
    np.testing.assert_allclose(predict_batch(model, he, cpu)["ihc"], expected, atol=1e-6)
    engine_batch = he.numpy().astype(np.float32)  # what the tile engine passes: B x 3 x H x W
    np.testing.assert_allclose(predict_batch(model, engine_batch, cpu)["ihc"], expected, atol=1e-6)
    np.testing.assert_allclose(
        predict_batch(model, torch.from_numpy(hwc_uint8).permute(0, 3, 1, 2), cpu)["ihc"],
        expected,
        atol=1e-6,
    )


def test_predict_batch_errors(pair):
    cpu = torch.device("cpu")
    model = prepare_model(create("pix2pix"), cpu)
    with pytest.raises(ModelError, match="B x H x W x 3 or B x 3 x H x W"):
        predict_batch(model, np.zeros((1, 64, 64, 4), np.uint8), cpu)
    with pytest.raises(ModelError, match="sides other than 3 px"):
        predict_batch(model, np.zeros((1, 3, 8, 3), np.uint8), cpu)
    with pytest.raises(ModelError, match=r"float batches must be in \[0, 1\].*divide"):
        predict_batch(model, np.full((1, 64, 64, 3), 200.0), cpu)
    with pytest.raises(ModelError, match="uint8 or float"):
        predict_batch(model, np.zeros((1, 64, 64, 3), np.int32), cpu)
    with pytest.raises(ModelError, match="B x 3 x H x W"):
        predict_batch(model, torch.zeros(1, 64, 64, 3), cpu)
    with pytest.raises(ModelError, match="model is on cpu but meta was asked"):
        predict_batch(model, pair["he"], torch.device("meta"))


def _hwc_uint8(pair, n=2) -> np.ndarray:
    he = pair["he"].repeat(n, 1, 1, 1)
    return np.rint(he.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def test_predictor_uint8_output_is_the_float_output_rounded(pair):
    """The engine's path (uint8 in, IHC rounded on the device) stores exactly what the float
    path stored: `OutputSpec.encode` of the float IHC."""
    from vstain.tiles import OutputSpec

    cpu = torch.device("cpu")
    model = prepare_model(create("pix2pix"), cpu)
    batch = _hwc_uint8(pair)
    floats = predict_batch(model, batch, cpu)["ihc"]
    out = Predictor(model, cpu)(batch)
    assert out["ihc"].dtype == np.uint8
    spec = OutputSpec("ihc")
    for got, ref in zip(out["ihc"], floats, strict=True):
        np.testing.assert_array_equal(spec.encode(got), spec.encode(ref))


def test_predictor_submit_then_collect_equals_a_call(pair):
    cpu = torch.device("cpu")
    predictor = Predictor(prepare_model(create("pix2pix"), cpu), cpu)
    batch = _hwc_uint8(pair)
    first, second = predictor.submit(batch), predictor.submit(batch[::-1].copy())
    np.testing.assert_array_equal(first()["ihc"], predictor(batch)["ihc"])
    np.testing.assert_array_equal(second()["ihc"], predictor(batch)["ihc"][::-1])


def test_predictor_switches_are_recorded_and_stay_close(pair):
    """bf16 autocast (asked for explicitly on CPU) stays within 6/255 of float32 on the demo-size
    model; channels-last changes the layout, not the values (within 1/255)."""
    cpu = torch.device("cpu")
    model = prepare_model(create("pix2pix"), cpu)
    batch = _hwc_uint8(pair)
    plain = Predictor(model, cpu, autocast="off", channels_last=False)
    assert plain.settings == {"autocast": "off", "channels_last": False}
    reference = plain(batch)["ihc"].astype(int)
    bf16 = Predictor(model, cpu, autocast="bf16")
    assert bf16.settings == {"autocast": "bfloat16", "channels_last": False}
    assert np.abs(bf16(batch)["ihc"].astype(int) - reference).max() <= 6
    last = Predictor(model, cpu, channels_last=True)
    assert last.settings["channels_last"]
    assert np.abs(last(batch)["ihc"].astype(int) - reference).max() <= 1
    with pytest.raises(ModelError, match="autocast must be one of"):
        Predictor(model, cpu, autocast="fp8")


def test_batch_size_from_free_memory():
    assert batch_for_memory(10 * 2**30, 2**30) == 6  # 60 % of 10 GiB at 1 GiB per tile
    assert batch_for_memory(2**20, 2**30) == 1
    assert batch_for_memory(80 * 2**30, 2**20) == MAX_AUTO_BATCH
    cpu = torch.device("cpu")
    predictor = Predictor(prepare_model(create("pix2pix"), cpu), cpu)
    assert auto_batch_size(predictor, window=64, default=3) == 3  # no memory report off CUDA
