"""The siamese network: a shared-weight branch (encoder + head) that scores one image.

The siamese form is two copies of :class:`QualityBranch` with tied weights; the
probability that copy A got the larger magnitude is ``sigmoid(s(A) - s(B))``
(:class:`SiameseRanker`). Training uses grouped batches (several magnitudes of one
image in one forward pass) for the same loss; scoring runs one branch.
"""

from __future__ import annotations

import os

import torch
from torch import nn

BACKBONES = ("small_cnn", "resnet18", "mobilenet_v3_small")
DEFAULT_BACKBONE = "small_cnn"

# Fixed normalisation (no per-image statistics): absolute brightness must stay visible
_SMALL_CNN_MEAN, _SMALL_CNN_STD = (0.45, 0.45, 0.45), (0.25, 0.25, 0.25)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small CNN trained from scratch; sees every pixel in its first (strided) layer.

    Global average *and* standard-deviation pooling of the last features: the spread
    of a response over the image (e.g. of edge energy) is itself a quality cue.
    """

    def __init__(self, width: int = 24, pool: str = "log"):
        super().__init__()
        self.pool = pool
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(3, w, stride=2),
            _conv_bn_relu(w, w),
            _conv_bn_relu(w, 2 * w, stride=2),
            _conv_bn_relu(2 * w, 2 * w),
            _conv_bn_relu(2 * w, 4 * w, stride=2),
            _conv_bn_relu(4 * w, 4 * w),
        )
        self.out_features = 8 * w
        if pool == "attention":
            self.attention = nn.Conv2d(4 * w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.features(x)
        f = fmap.flatten(2)
        mean, std = f.mean(dim=2), f.std(dim=2)
        if self.pool == "attention":
            weights = torch.softmax(self.attention(fmap).flatten(2), dim=2)
            attended = (f * weights).sum(dim=2)
            return torch.cat([torch.log(attended + 1e-3), torch.log(mean + 1e-3)], dim=1)
        if self.pool == "log":
            return torch.cat([torch.log(mean + 1e-3), torch.log(std + 1e-3)], dim=1)
        return torch.cat([mean, std], dim=1)


def _load_state_dict_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def build_encoder(backbone: str, pretrained: bool | str = False) -> tuple[nn.Module, int]:
    """Builds the encoder of a branch and returns it with its feature size.

    Args:
        backbone: one of :data:`BACKBONES`
        pretrained: torchvision backbones only. ``True`` uses torchvision's default
            ImageNet weights (downloaded once to torch's cache), a path loads a local
            state-dict file (``weights_only=True``) for offline machines.
    """
    if backbone == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights; it trains from scratch")
        encoder = SmallCNN()
        return encoder, encoder.out_features

    import torchvision.models as tvm

    if backbone == "resnet18":
        weights = tvm.ResNet18_Weights.DEFAULT if pretrained is True else None
        model = tvm.resnet18(weights=weights)
    elif backbone == "mobilenet_v3_small":
        weights = tvm.MobileNet_V3_Small_Weights.DEFAULT if pretrained is True else None
        model = tvm.mobilenet_v3_small(weights=weights)
    else:
        raise ValueError(f"Unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
    if isinstance(pretrained, str | os.PathLike):
        missing, _ = model.load_state_dict(
            _load_state_dict_file(os.fspath(pretrained)), strict=False
        )
        if any(not k.startswith(("fc.", "classifier.")) for k in missing):
            raise ValueError(f"{pretrained}: not {backbone} weights (missing {missing[:3]}...)")

    if backbone == "resnet18":
        features = model.fc.in_features
        model.fc = nn.Identity()
    else:
        features = model.classifier[0].in_features
        model.classifier = nn.Identity()
    return model, features


class QualityBranch(nn.Module):
    """One branch: uint8 images (N, 3, H, W) -> one score per image (N,)."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, pretrained: bool | str = False):
        super().__init__()
        self.backbone = backbone
        self.encoder, features = build_encoder(backbone, pretrained)
        self.head = nn.Sequential(nn.Linear(features, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        mean, std = (
            (_SMALL_CNN_MEAN, _SMALL_CNN_STD)
            if backbone == "small_cnn"
            else (_IMAGENET_MEAN, _IMAGENET_STD)
        )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return self.head(self.encoder(x)).squeeze(1)

    @torch.inference_mode()
    def score(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Scores uint8 images (N, 3, H, W) in eval mode; returns a float tensor (N,)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            chunks = [
                self(images[i : i + batch_size].to(device)).float().cpu()
                for i in range(0, len(images), batch_size)
            ]
            return torch.cat(chunks) if chunks else torch.empty(0)
        finally:
            self.train(was_training)


class SiameseRanker(nn.Module):
    """The two-branch, shared-weight form: ``P(A has the larger magnitude) = sigmoid(logit)``."""

    def __init__(self, branch: QualityBranch):
        super().__init__()
        self.branch = branch

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        scores = self.branch(torch.cat([first, second]))
        return scores[: len(first)] - scores[len(first) :]


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA, then Apple MPS, then CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
