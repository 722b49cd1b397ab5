"""Batched, seeded image augmentations in plain PyTorch (no torchvision), for self-augmentation
``sigma_i = E_t sigma(f(t(x_i)))`` (Zhang & Boykov 2023a appendix E: two augmentations per image from flips,
rotations and colour distortion).

Every random parameter is drawn from the ``torch.Generator`` passed in, on the CPU, so a run is
reproducible and resumable on any device; the warp and the colour changes then run on the
images' device as one batched ``affine_grid``/``grid_sample`` and a few tensor ops."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """One random augmentation per image of an ``(N, C, H, W)`` batch.

    Geometry (one affine warp, bilinear): ``rotation`` degrees (uniform in +-rotation),
    ``translate`` (fraction of the side, uniform in +-translate on each axis), ``scale``
    ``(low, high)`` zoom factors, ``flip`` (horizontal, probability 1/2; wrong for digits,
    hence off in their preset). ``padding``: ``"zeros"`` (dark background: digits) or
    ``"reflection"`` (natural images). Colour (for C = 3, as SimCLR/IIC's colour distortion,
    each applied with probability ``color_p``): brightness and contrast factors in
    ``1 +- brightness`` and ``1 +- contrast``, saturation in ``1 +- saturation``; then
    grey-scale with probability ``grayscale_p``. Brightness and contrast also apply to one
    channel."""

    rotation: float = 0.0
    translate: float = 0.0
    scale: tuple = (1.0, 1.0)
    flip: bool = False
    padding: str = "zeros"
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    color_p: float = 0.8
    grayscale_p: float = 0.0

    def __post_init__(self):
        if self.padding not in ("zeros", "reflection", "border"):
            raise ValueError(f"padding must be 'zeros', 'reflection' or 'border', got {self.padding!r}")
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        for name in ("rotation", "translate", "brightness", "contrast", "saturation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("color_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")

    @property
    def geometric(self) -> bool:
        return self.rotation > 0 or self.translate > 0 or self.scale != (1.0, 1.0) or self.flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"augmentations take images (N, C, H, W), got shape {tuple(x.shape)}")
        n = x.shape[0]
        draw = lambda *size: torch.rand(*size, generator=generator)  # noqa: E731  (CPU, then moved)
        out = x
        if self.geometric:
            angle = (draw(n) * 2 - 1) * math.radians(self.rotation)
            low, high = self.scale
            zoom = low + (high - low) * draw(n)
            shift = (draw(n, 2) * 2 - 1) * (2 * self.translate)  # affine_grid's [-1, 1] is the full side
            mirror = torch.where(draw(n) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
            theta = torch.zeros(n, 2, 3)
            # output pixel -> input pixel: rotate, divide by the zoom, mirror x, then shift
            theta[:, 0, 0] = angle.cos() / zoom * mirror
            theta[:, 0, 1] = -angle.sin() / zoom
            theta[:, 1, 0] = angle.sin() / zoom * mirror
            theta[:, 1, 1] = angle.cos() / zoom
            theta[:, :, 2] = shift
            theta = theta.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            out = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        if self.brightness or self.contrast or self.saturation or self.grayscale_p:
            out = self._colour(out, n, draw)
        return out

    def _colour(self, x: torch.Tensor, n: int, draw) -> torch.Tensor:
        shape = (n, 1, 1, 1)
        on = (draw(n) < self.color_p).float().view(shape)

        def factor(amount):
            return (1 + on * (draw(n).view(shape) * 2 - 1) * amount).to(x)

        if self.brightness:
            x = x * factor(self.brightness)
        if self.contrast:
            mean = x.mean((1, 2, 3), keepdim=True)
            x = mean + (x - mean) * factor(self.contrast)
        if x.shape[1] == 3 and (self.saturation or self.grayscale_p):
            grey = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(
                1, keepdim=True)
            if self.saturation:
                x = grey + (x - grey) * factor(self.saturation)
            if self.grayscale_p:
                to_grey = (draw(n) < self.grayscale_p).view(shape).to(x.device)
                x = torch.where(to_grey, grey.expand_as(x), x)
        return x

    def params(self) -> dict:
        return asdict(self)


# Presets: digit-like (no flips: a mirrored 2 is not a 2), CIFAR-like and STL-like natural images.
PRESETS = {
    "none": Augment(),
    "digits": Augment(rotation=15.0, translate=0.1, scale=(0.9, 1.1)),
    "cifar": Augment(rotation=10.0, translate=0.1, scale=(0.9, 1.1), flip=True, padding="reflection",
                     brightness=0.4, contrast=0.4, saturation=0.4, grayscale_p=0.2),
    "stl": Augment(rotation=10.0, translate=0.1, scale=(0.8, 1.2), flip=True, padding="reflection",
                   brightness=0.4, contrast=0.4, saturation=0.4, grayscale_p=0.2),
}


def preset_for(shape) -> str:
    """The preset for images of shape ``(C, H, W)``: one channel is digit-like, three channels
    below 64 pixels CIFAR-like, larger STL-like."""
    c, h, w = (int(v) for v in shape)
    if c == 1:
        return "digits"
    return "stl" if min(h, w) >= 64 else "cifar"


def get_augment(spec, shape) -> Augment:
    """An :class:`Augment` from a preset name, ``"auto"`` (:func:`preset_for`), an ``Augment``,
    or None (no augmentation)."""
    if spec is None:
        return PRESETS["none"]
    if isinstance(spec, Augment):
        return spec
    if spec == "auto":
        return PRESETS[preset_for(shape)] if len(shape) == 3 else PRESETS["none"]
    if spec not in PRESETS:
        raise ValueError(f"augment must be 'auto', None, an Augment or one of {sorted(PRESETS)}, got {spec!r}")
    return PRESETS[spec]


__all__ = ["Augment", "PRESETS", "preset_for", "get_augment"]
