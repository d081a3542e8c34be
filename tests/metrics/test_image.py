import numpy as np
import pytest
from skimage import data

from vstain.errors import StainError
from vstain.metrics import PSNR_CAP, dab_correlation, psnr, ssim


@pytest.fixture
def ihc():
    return data.immunohistochemistry()[:128, :128]


def test_identical_images_score_perfectly(ihc):
    assert psnr(ihc, ihc) == PSNR_CAP
    assert ssim(ihc, ihc) == pytest.approx(1.0)
    assert dab_correlation(ihc, ihc) == pytest.approx(1.0)


def test_psnr_and_ssim_of_known_noise(ihc):
    noisy = np.clip(ihc.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - ihc) ** 2)
    assert psnr(noisy, ihc) == pytest.approx(10 * np.log10(255**2 / mse))
    assert 0 < ssim(noisy, ihc) < 1
    rng = np.random.default_rng(0)
    noise = np.clip(ihc + rng.normal(0, 40, ihc.shape), 0, 255).astype(np.uint8)
    assert ssim(noise, ihc) < ssim(noisy, ihc)


def test_dab_correlation_is_nan_for_a_constant_image(ihc):
    flat = np.full_like(ihc, 200)
    assert np.isnan(dab_correlation(flat, ihc))


def test_mismatched_or_non_uint8_images_are_clear_errors(ihc):
    with pytest.raises(StainError, match="Crop or register"):
        psnr(ihc, ihc[:100])
    with pytest.raises(StainError, match="uint8"):
        ssim(ihc.astype(float), ihc.astype(float))
