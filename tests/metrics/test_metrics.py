import numpy as np
import pytest
from skimage import data

from vstain.color import HED, concentrations_to_rgb
from vstain.errors import VstainError
from vstain.metrics import (
    PSNR_CAP,
    colour_difference,
    dab_correlation,
    dab_difference,
    match_objects,
    positivity_error,
    psnr,
    ssim,
)


@pytest.fixture
def ihc():
    return data.immunohistochemistry()[:256, :256]


def test_identical_images_score_perfectly(ihc):
    assert psnr(ihc, ihc) == PSNR_CAP
    assert ssim(ihc, ihc) == pytest.approx(1.0)
    assert dab_correlation(ihc, ihc) == pytest.approx(1.0)
    assert np.abs(dab_difference(ihc, ihc)).max() == 0
    assert colour_difference(ihc, ihc).max() == pytest.approx(0, abs=1e-6)


def test_psnr_of_known_noise(ihc):
    noisy = np.clip(ihc.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - ihc) ** 2)
    assert psnr(noisy, ihc) == pytest.approx(10 * np.log10(255**2 / mse))
    assert ssim(noisy, ihc) < 1


def test_more_dab_in_virtual_has_positive_sign():
    rng = np.random.default_rng(0)
    conc = np.zeros((64, 64, 3), np.float32)
    conc[..., 0] = rng.uniform(0.1, 0.4, (64, 64))
    conc[..., 2] = 0.1
    real = concentrations_to_rgb(conc, HED)
    conc[:32, :, 2] = 0.5  # the virtual stain adds DAB in the top half
    virtual = concentrations_to_rgb(conc, HED)
    diff = dab_difference(virtual, real)
    assert diff[:32].mean() == pytest.approx(0.4, abs=0.03)
    assert np.abs(diff[32:]).max() < 0.02
    err = positivity_error(virtual, real)
    assert err["percent_positive_real"] == pytest.approx(0)
    assert err["percent_positive_error"] == pytest.approx(50, abs=1)
    assert err["h_score_error"] > 0


def test_object_matching_counts_hits_misses_and_false_alarms():
    ref = np.zeros((40, 40), bool)
    ref[2:8, 2:8] = ref[20:26, 20:26] = ref[30:36, 2:8] = True
    pred = np.zeros_like(ref)
    pred[2:8, 3:9] = True  # shifted by 1 px: IoU 30/42 -> match
    pred[20:23, 20:23] = True  # too small: IoU 9/36 -> no match
    pred[10:14, 30:34] = True  # nothing there
    det = match_objects(pred, ref)
    assert (det.true_positives, det.false_positives, det.false_negatives) == (1, 2, 2)
    assert det.precision == pytest.approx(1 / 3) and det.recall == pytest.approx(1 / 3)
    assert match_objects(ref, ref).f1 == 1.0


def test_mismatched_images_are_a_clear_error(ihc):
    with pytest.raises(VstainError, match="Crop or register"):
        psnr(ihc, ihc[:100])


def test_cell_calls_and_scores():
    from vstain.metrics.cells import cell_calls, score_calls

    nuclei = np.zeros((30, 30), np.int32)
    nuclei[5:9, 5:9] = 7
    nuclei[20:24, 20:24] = 9
    dab = np.zeros((30, 30), np.float32)
    dab[2:12, 2:12] = 0.5  # cell 7 sits in brown; cell 9 does not
    called = cell_calls(dab, nuclei, np.array([7, 9, 11]))
    assert called.tolist() == [True, False, False]  # 11 is not in the tile
    det = score_calls(called, np.array([True, True, False]))
    assert (det.true_positives, det.false_positives, det.false_negatives) == (1, 0, 1)


def test_evaluate_with_a_perfect_model_and_truth(tmp_path):
    import torch

    from vstain.metrics.evaluate import evaluate, format_table
    from vstain.synth import synth_dataset

    synth_dataset(tmp_path / "ds", 3, tile=128, slides=2, slide_size=1024, test_fraction=0.34)
    from vstain.io.datasets import open_paired_dataset

    data = open_paired_dataset(tmp_path / "ds", split="test")

    class Oracle(torch.nn.Module):
        """Returns the real IHC of the item it is asked about."""

        def predict(self, he):
            match = [i for i in range(len(data)) if torch.equal(data[i]["he"], he[0].cpu())]
            return type("P", (), {"ihc": data[match[0]]["ihc"][None]})()

    result = evaluate(Oracle(), data, device="cpu", truth_dir=tmp_path / "ds" / "truth" / "test")
    assert result["psnr"] == 100.0 and result["ssim"] == pytest.approx(1.0)
    assert result["cells"] > 0
    np.testing.assert_equal(result["cell_f1_virtual"], result["cell_f1_real"])
    assert "psnr" in format_table({"oracle": result})
