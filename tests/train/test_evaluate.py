import numpy as np
import pytest
import torch

from tests.metrics.conftest import blobs, stained
from vstain.errors import DatasetError
from vstain.metrics import PSNR_CAP
from vstain.models import ModelCard, Prediction, StainModel
from vstain.train.evaluate import evaluate, format_table


class Identity(StainModel):
    """Returns the H&E as the virtual IHC: scores then depend only on the dataset."""

    normalisation = "[0,1]"

    def __init__(self):
        super().__init__(ModelCard(architecture="identity-test"))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def receptive_halo(self) -> int:
        return 0

    def infer(self, x):
        return Prediction(ihc=x)

    def configure_optimizers(self):
        return {}

    def training_step(self, batch, state):
        return {}


def chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)


CELLS = [(10, 10), (10, 40), (40, 10), (40, 40)]


class Pairs(torch.utils.data.Dataset):
    """Items whose H&E (= the identity model's output) has ``virtual`` cells, the IHC all four."""

    def __init__(self, virtual, n=3):
        self.he = stained(blobs((52, 52), virtual))
        self.ihc = stained(blobs((52, 52), CELLS))
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"he": chw(self.he), "ihc": chw(self.ihc), "name": f"tile{i}"}


@pytest.fixture(autouse=True)
def no_hub_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_a_perfect_virtual_stain_scores_perfectly():
    result = evaluate(Identity(), Pairs(CELLS), device="cpu", batch_size=2)
    assert result["images"] == 3
    assert result["psnr"] == PSNR_CAP and result["ssim"] == pytest.approx(1.0)
    assert result["dab_correlation"] == pytest.approx(1.0)
    assert result["object_f1"] == 1.0
    assert result["percent_positive_mae"] == result["h_score_bias"] == 0
    assert result["lpips"]["available"] is False  # no weights in this hub cache


def test_a_virtual_stain_missing_half_the_cells():
    result = evaluate(Identity(), Pairs(CELLS[:2]), device="cpu", learned=False, limit=2)
    assert result["images"] == 2
    assert result["object_precision"] == 1.0 and result["object_recall"] == 0.5
    assert result["object_f1"] == pytest.approx(2 / 3)
    assert result["percent_positive_bias"] < 0  # the virtual is less positive
    assert result["percent_positive_mae"] == pytest.approx(-result["percent_positive_bias"])
    assert result["psnr"] < PSNR_CAP and "lpips" not in result


def write_truth(folder, names, positive):
    """Simulator-style truth: one nucleus under each cell, positive as given."""
    folder.mkdir(parents=True)
    nuclei = np.zeros((52, 52), np.int32)
    for k, (r, c) in enumerate(CELLS, start=1):
        nuclei[r - 2 : r + 2, c - 2 : c + 2] = k
    for name in names:
        np.savez(
            folder / f"{name}.npz",
            nuclei=nuclei,
            cell_id=np.arange(1, 5),
            cell_in_he=np.ones(4, bool),
            cell_in_ihc=np.ones(4, bool),
            cell_positive=np.asarray(positive),
        )


def test_per_cell_scores_against_truth(tmp_path):
    truth = tmp_path / "truth"
    write_truth(truth, ["tile0", "tile1"], [True, True, True, False])
    result = evaluate(Identity(), Pairs(CELLS[:2], n=2), device="cpu", truth=truth, learned=False)
    assert result["cells"] == 8
    # real IHC: all 4 brown, 3 truly positive; virtual: cells 1 and 2 brown
    assert result["cell_precision_real"] == 0.75 and result["cell_recall_real"] == 1.0
    assert result["cell_precision_virtual"] == 1.0
    assert result["cell_recall_virtual"] == pytest.approx(2 / 3)


def test_missing_truth_file_is_a_clear_error(tmp_path):
    write_truth(tmp_path / "truth", ["tile0"], [True] * 4)
    with pytest.raises(DatasetError, match=r"tile1\.npz is missing"):
        evaluate(Identity(), Pairs(CELLS), device="cpu", truth=tmp_path / "truth", learned=False)


def test_format_table_has_models_as_rows_and_explains_unavailable_metrics():
    reason = "its weights x.pth are not in the torch hub cache"
    results = {
        "pix2pix": {"psnr": 21.123456, "images": 4, "fid": {"available": False, "reason": reason}},
        "asp": {"psnr": 23.5, "images": 4},
    }
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["model", "psnr", "images", "fid"]
    assert lines[1].split() == ["pix2pix", "21.12", "4", "n/a"]
    assert lines[2].split() == ["asp", "23.5", "4", "-"]
    assert lines[3] == f"n/a fid: {reason}"
