"""VGG16 perceptual loss. ImageNet weights come only from the torch cache or a local file.

Nothing is downloaded. When ``backbone="vgg16"`` and torchvision's ImageNet file is not in the torch
cache, one warning is logged and random-but-fixed VGG16 features (seed 0) are used instead;
``backbone_name`` says which was used so the model card can record it. Why that fallback: see
docs/models/framework.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from vstain.errors import ModelError
from vstain.triton_guard import guard_triton

log = logging.getLogger(__name__)

#: relu1_2, relu2_2, relu3_3, relu4_3 of torchvision's ``vgg16().features``.
DEFAULT_LAYERS = (3, 8, 15, 22)
RANDOM_SEED = 0
RANDOM_NAME = f"vgg16-random-seed{RANDOM_SEED}"
IMAGENET_NAME = "vgg16-imagenet"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def cached_vgg16_path() -> Path:
    """Where torchvision keeps its ImageNet VGG16 weights in the torch cache."""
    guard_triton()
    from torchvision.models import VGG16_Weights

    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 conv layers (``vgg16().features``), without the classifier."""
    guard_triton()
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"])


def random_vgg16_features() -> nn.Sequential:
    """VGG16 conv layers, torchvision's initialisation from a fixed seed (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        features = vgg16_features()
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return features


def vgg16_features_from_file(path: Path) -> nn.Sequential:
    """VGG16 conv layers with weights from a torchvision VGG16 state dict (.pth or .safetensors).

    Keys may be the full model's (``features.0.weight``, ...) or the features' alone (``0.weight``).
    """
    if not path.is_file():
        raise ModelError(
            f"VGG16 weights file {path} does not exist. Give the path of a "
            "torchvision VGG16 state dict, or backbone=None for random features."
        )
    try:
        state = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
    except Exception as e:
        raise ModelError(
            f"Cannot read VGG16 weights from {path} ({e}). Give a torchvision "
            "VGG16 state dict saved with torch.save or safetensors."
        ) from e
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a VGG16 state dict.")
    if any(k.startswith("features.") for k in state):
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
    features = vgg16_features()
    try:
        features.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{path} does not hold VGG16 weights: {e}".splitlines()[0]) from e
    return features


def _load_backbone(backbone: str | Path | None) -> tuple[nn.Sequential, str]:
    if backbone is None:
        return random_vgg16_features(), RANDOM_NAME
    if backbone == "vgg16":
        cached = cached_vgg16_path()
        if cached.is_file():
            return vgg16_features_from_file(cached), IMAGENET_NAME
        log.warning(
            "ImageNet VGG16 weights are not in the torch cache (%s) and nothing is "
            "downloaded: the perceptual loss uses random-but-fixed VGG16 features "
            "(seed %d) instead. Put the file there or pass its path to use ImageNet "
            "features.",
            cached,
            RANDOM_SEED,
        )
        return random_vgg16_features(), RANDOM_NAME
    path = Path(backbone)
    return vgg16_features_from_file(path), f"vgg16-file:{path.name}"


class PerceptualLoss(nn.Module):
    """Mean L1 distance between VGG16 activations of two images in [0, 1].

    ``backbone``: "vgg16" (ImageNet weights from the torch cache, else the random fallback with one
    warning), a path to VGG16 weights, or None (the random features, by choice). The network is
    frozen; ``backbone_name`` names what was used.
    """

    def __init__(
        self, backbone: str | Path | None = "vgg16", layers: Sequence[int] = DEFAULT_LAYERS
    ):
        super().__init__()
        features, self.backbone_name = _load_backbone(backbone)
        self.layers = tuple(sorted(layers))
        self.features = features[: self.layers[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Activations at ``layers`` for images ``x`` (B x 3 x H x W in [0, 1])."""
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layers:
                out.append(x)
        return out

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        with torch.no_grad():
            targets = self.activations(real)
        losses = [F.l1_loss(a, t) for a, t in zip(self.activations(fake), targets, strict=True)]
        return torch.stack(losses).mean()
