"""Networks for deep self-labeled clustering: the papers' VGG4 (Zhang & Boykov 2023a Table 5), IMSAT's MLP,
and a clustering head with several sub-heads.

Every model here maps a batch to logits of shape ``(H, N, K)``: H sub-heads, each an
independent clustering of the same batch (H = 1 by default). The trainer solves the H
pseudo-label problems in one batched call and sums their losses, so each sub-head gets the
gradient of its own objective; after training the sub-head with the lowest objective is
selected without labels (:meth:`ClusteringNet.select`)."""
from __future__ import annotations

import math

import torch
from torch import nn

# Zhang & Boykov 2023a Table 5: channels of the four 5x5 convolutions and their stride, per input kind
VGG4_LAYOUTS = {
    "grey": ((64, 128, 256, 512), 1),    # 28x28x1 (MNIST): 512 x 3 x 3 features
    "rgb": ((32, 64, 128, 256), 1),      # 32x32x3 (CIFAR): 256 x 4 x 4
    "large": ((128, 256, 512, 1024), 2),  # 96x96x3 (STL-10): 1024 x 1 x 1
}


def vgg4_layout(shape) -> str:
    """The paper's layout for images of shape ``(C, H, W)``: ``"large"`` from 64 pixels a side (the
    strided STL-10 column), ``"grey"`` for one channel, else ``"rgb"``."""
    c, h, w = shape
    if min(h, w) >= 64:
        return "large"
    return "grey" if c == 1 else "rgb"


class VGG4(nn.Module):
    """Four 5x5 convolutions (padding 2) with batch norm and ReLU, a 2x2 max-pool after each of
    the first three, flattened (Zhang & Boykov 2023a Table 5, adapted from IIC). ``layout`` picks the paper's
    column ("grey" 64-128-256-512, "rgb" 32-64-128-256, "large" 128-...-1024 with stride 2);
    ``width`` scales every channel count (1.0: the paper's; CPU tests use 1/8). Images smaller
    than 8 pixels a side are not pooled below 1 pixel."""

    def __init__(self, in_shape, *, layout: str | None = None, width: float = 1.0):
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        layout = layout or vgg4_layout((c, h, w))
        if layout not in VGG4_LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(VGG4_LAYOUTS)}, got {layout!r}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"width must be a number > 0, got {width!r}")
        channels, stride = VGG4_LAYOUTS[layout]
        layers = []
        for i, out in enumerate(channels):
            out = max(1, int(round(out * width)))
            layers += [nn.Conv2d(c, out, 5, stride=stride, padding=2), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            h, w = (h + stride - 1) // stride, (w + stride - 1) // stride  # 5x5, padding 2
            if i < 3 and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.in_shape, self.layout, self.width = tuple(int(v) for v in in_shape), layout, width
        self.out_features = c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLP(nn.Module):
    """IMSAT's backbone for vectors: ``d - 1200 - 1200`` with batch norm and ReLU (Hu et al. 2017);
    ``hidden`` sets the widths."""

    def __init__(self, in_features: int, hidden=(1200, 1200)):
        super().__init__()
        layers, d = [], int(in_features)
        for width in hidden:
            layers += [nn.Linear(d, int(width)), nn.BatchNorm1d(int(width)), nn.ReLU(inplace=True)]
            d = int(width)
        self.body = nn.Sequential(*layers)
        self.out_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


class ClusterHeads(nn.Module):
    """H linear sub-heads ``features -> logits (H, N, K)``, stored as one ``(H, K, D)`` weight (one
    batched matmul). Kaiming-normal weights, zero bias, as the linear head of the papers."""

    def __init__(self, in_features: int, n_clusters: int, n_heads: int = 1):
        super().__init__()
        if n_clusters < 1 or n_heads < 1:
            raise ValueError(f"n_clusters and n_heads must be >= 1, got {n_clusters} and {n_heads}")
        self.weight = nn.Parameter(torch.randn(n_heads, n_clusters, in_features) * math.sqrt(2.0 / in_features))
        self.bias = nn.Parameter(torch.zeros(n_heads, n_clusters))

    @property
    def n_heads(self) -> int:
        return self.weight.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,hkd->hnk", features, self.weight) + self.bias.unsqueeze(1)


class ClusteringNet(nn.Module):
    """``backbone`` features then :class:`ClusterHeads`: ``forward`` returns ``(H, N, K)`` logits.
    ``overcluster`` > 0 adds IIC's auxiliary overclustering head (H sub-heads of that many
    clusters on the same features, Ji et al. 2019), trained beside the main one to give the
    features more detail; ``forward(x, overcluster=True)`` returns both logits, the main head's
    first. ``selected`` (set by :meth:`select`, 0 until then) is the sub-head
    :meth:`predict_logits` uses."""

    def __init__(self, backbone: nn.Module, n_clusters: int, n_heads: int = 1, overcluster: int = 0):
        super().__init__()
        if isinstance(overcluster, bool) or not isinstance(overcluster, int) or overcluster < 0:
            raise ValueError(f"overcluster must be an int >= 0 (0: no overclustering head), got {overcluster!r}")
        self.backbone = backbone
        self.heads = ClusterHeads(backbone.out_features, n_clusters, n_heads)
        self.over_heads = ClusterHeads(backbone.out_features, overcluster, n_heads) if overcluster else None
        self.register_buffer("selected", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor, *, overcluster: bool = False):
        features = self.backbone(x)
        if not overcluster:
            return self.heads(features)
        if self.over_heads is None:
            raise ValueError("this ClusteringNet has no overclustering head (build it with overcluster > 0)")
        return self.heads(features), self.over_heads(features)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` logits of the selected sub-head."""
        return self.forward(x)[int(self.selected)]

    def select(self, objectives) -> int:
        """Keep the sub-head with the lowest objective (label-free selection); returns its index."""
        best = int(torch.as_tensor(objectives).argmin())
        self.selected.fill_(best)
        return best


def default_network(shape, n_clusters: int, *, n_heads: int = 1, width: float = 1.0,
                    overcluster: int = 0) -> ClusteringNet:
    """VGG4 (Zhang & Boykov 2023a Table 5, layout from the image size) for ``(C, H, W)`` images, the IMSAT
    MLP ``d-1200-1200`` (widths scaled by ``width``) for ``(D,)`` vectors, with H sub-heads and
    an optional overclustering head of ``overcluster`` clusters."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 3:
        backbone = VGG4(shape, width=width)
    elif len(shape) == 1:
        backbone = MLP(shape[0], hidden=(max(1, round(1200 * width)),) * 2)
    else:
        raise ValueError(f"inputs must be images (N, C, H, W) or vectors (N, D), got sample shape {shape}")
    return ClusteringNet(backbone, n_clusters, n_heads, overcluster)


__all__ = ["VGG4", "MLP", "ClusterHeads", "ClusteringNet", "default_network", "vgg4_layout"]
