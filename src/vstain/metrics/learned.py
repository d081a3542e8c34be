"""Metrics that need pretrained networks: FID, KID (Inception features) and LPIPS (AlexNet).

Nothing is downloaded. A metric is computed only when its package is installed and its weights
are already in the torch hub cache (``torch.hub.get_dir()/checkpoints``); otherwise it is reported
as ``{"metric": name, "available": False, "reason": ...}``, never estimated another way.

- FID and KID: ``pytorch-fid``'s Inception (pool3, 2048 features) with the FID weights
  ``pt_inception-2015-12-05-6726825d.pth``. FID is the Fréchet distance of Gaussians fitted to the
  two feature sets; KID the unbiased polynomial-kernel MMD² (Bińkowski et al. 2018) averaged over
  random subsets. Both compare distributions, so they need many images (FID is strongly biased
  below a few thousand).
- LPIPS: the ``lpips`` package (v0.1 linear layers ship with it) on torchvision's ImageNet AlexNet
  ``alexnet-owt-7be5be79.pth``; the mean over images of the per-image distance.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
#: KID averages the MMD² over this many random subsets of at most ``KID_SUBSET`` images.
KID_SUBSETS, KID_SUBSET = 100, 1000


@dataclass(frozen=True)
class Requirement:
    """The package and the torch-hub weight file a learned metric needs."""

    module: str
    pip_name: str
    weights: str


REQUIREMENTS = {
    "fid": Requirement("pytorch_fid", "pytorch-fid", FID_WEIGHTS),
    "kid": Requirement("pytorch_fid", "pytorch-fid", FID_WEIGHTS),
    "lpips": Requirement("lpips", "lpips", ALEXNET_WEIGHTS),
}


def unavailable(name: str, reason: str) -> dict:
    """The report of a metric that cannot be computed here, with the reason."""
    return {"metric": name, "available": False, "reason": reason}


def hub_weights(filename: str) -> Path:
    """Where torch keeps a downloaded weight file: ``torch.hub.get_dir()/checkpoints/filename``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def missing_requirement(name: str) -> dict | None:
    """None when metric ``name`` (fid, kid, lpips) can be computed here, else why not."""
    need = REQUIREMENTS[name]
    if importlib.util.find_spec(need.module) is None:
        return unavailable(
            name, f"the package {need.pip_name} is not installed (pip install {need.pip_name})"
        )
    path = hub_weights(need.weights)
    if not path.is_file():
        return unavailable(
            name,
            f"its weights {need.weights} are not in the torch hub cache ({path.parent}) and "
            "nothing is downloaded; copy the file there to enable it",
        )
    return None


def _trace_sqrt_product(xa: np.ndarray, xb: np.ndarray) -> float:
    """tr(sqrt(Ca Cb)) of the covariances of centred features ``xa`` (n x D) and ``xb`` (m x D).

    The non-zero eigenvalues of Ca Cb are the squared singular values of xa xb^T / sqrt(c), with
    c = (n - 1)(m - 1): that n x m route is used when it is smaller than D x D (few images).
    """
    (n, d), m = xa.shape, len(xb)
    if n * m <= d * d:
        return float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1)))
    product = (xa.T @ xa) @ (xb.T @ xb) / ((n - 1) * (m - 1))
    return float(np.sqrt(np.linalg.eigvals(product).real.clip(min=0)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N x D, N >= 2)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    xa, xb = a - a.mean(0), b - b.mean(0)
    traces = (xa**2).sum() / (len(a) - 1) + (xb**2).sum() / (len(b) - 1)
    mean_term = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return float(mean_term + traces - 2 * _trace_sqrt_product(xa, xb))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (x . y / d + 1)^3 between equal-sized samples."""
    m, d = x.shape
    kxx, kyy, kxy = (((p @ q.T) / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, size: int = KID_SUBSET, seed: int = 0
) -> float:
    """KID of feature sets ``a`` and ``b``: mean unbiased MMD² over random subsets (N >= 2 each)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(len(a), len(b), size)
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(
            a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values))


class LearnedMetrics:
    """Accumulates FID / KID features and LPIPS distances over batches, for those available.

    ``add`` takes batches B x 3 x H x W float in [0, 1]; ``result`` gives each metric as a float or
    as its unavailable report.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.status = {name: missing_requirement(name) for name in REQUIREMENTS}
        self.inception = self.lpips = None
        if self.status["fid"] is None:
            from pytorch_fid.inception import InceptionV3

            self.inception = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
        if self.status["lpips"] is None:
            import lpips

            with warnings.catch_warnings():  # lpips still passes torchvision's old `pretrained`
                warnings.simplefilter("ignore", UserWarning)
                self.lpips = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        self.features: dict[str, list[np.ndarray]] = {"virtual": [], "real": []}
        self.distances: list[np.ndarray] = []

    @torch.inference_mode()
    def add(self, virtual: Tensor, real: Tensor) -> None:
        """Score one batch of virtual and real IHC (B x 3 x H x W in [0, 1])."""
        virtual, real = virtual.to(self.device), real.to(self.device)
        if self.inception is not None:
            for key, images in (("virtual", virtual), ("real", real)):
                pooled = self.inception(images)[0].flatten(1)
                self.features[key].append(pooled.float().cpu().numpy())
        if self.lpips is not None:
            dist = self.lpips(virtual, real, normalize=True).flatten()
            self.distances.append(dist.float().cpu().numpy())

    def result(self) -> dict[str, float | dict]:
        """FID, KID and LPIPS of everything added (or why not)."""
        out: dict[str, float | dict] = dict(self.status)
        if self.inception is not None:
            v, r = (
                np.concatenate(self.features[k] or [np.zeros((0, 2048))]) for k in self.features
            )
            if len(v) < 2:
                out["fid"], out["kid"] = (
                    unavailable(n, "needs at least 2 images") for n in ("fid", "kid")
                )
            else:
                out["fid"], out["kid"] = frechet_distance(v, r), kernel_inception_distance(v, r)
        if self.lpips is not None:
            dist = np.concatenate(self.distances) if self.distances else np.zeros(0)
            out["lpips"] = float(dist.mean()) if dist.size else unavailable("lpips", "no images")
        return out
