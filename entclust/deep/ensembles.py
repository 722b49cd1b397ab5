"""The autoencoder ensembles of selective pseudo-label clustering (Wang et al. 2023, "Mahon & Lukasiewicz 2021"):
M members batched into one model, every layer holding the M members' weights. MLP layers run as
one batched matrix product; the convolutional members of images as grouped convolutions, one
group per member. Inputs ``(M, B, ...)``: member j sees row j."""
from __future__ import annotations

import math

import torch
from torch import nn


class BatchedLinear(nn.Module):
    """M independent linear layers applied as one batched product: ``(M, B, in) -> (M, B, out)``;
    PyTorch's default ``nn.Linear`` initialisation per member, drawn from ``generator``."""

    def __init__(self, members: int, fan_in: int, fan_out: int, generator: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter((torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


def batched_mlp(sizes, members, generator):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(BatchedLinear(members, a, b, generator))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class MLPEnsemble(nn.Module):
    """M MLP autoencoders with pseudo-classifier heads, batched over the members: inputs
    ``(M, B, D)``, latents ``(M, B, L)``."""

    def __init__(self, members, dim, hidden, latent, k, generator):
        super().__init__()
        self.encoder = batched_mlp([dim, hidden, hidden, latent], members, generator)
        self.decoder = batched_mlp([latent, hidden, hidden, dim], members, generator)
        self.classifier = batched_mlp([latent, hidden, k], members, generator)


class GroupedConv(nn.Module):
    """``(M, B, C, H, W)`` through a grouped convolution (group j = member j), batch norm and
    leaky ReLU; ``transpose`` for the decoders' transposed convolutions."""

    def __init__(self, members, c_in, c_out, kernel, stride, padding, *, transpose=False, output_padding=0,
                 last=False):
        super().__init__()
        self.members = members
        if transpose:
            self.conv = nn.ConvTranspose2d(members * c_in, members * c_out, kernel, stride, padding,
                                           output_padding=output_padding, groups=members)
        else:
            self.conv = nn.Conv2d(members * c_in, members * c_out, kernel, stride, padding, groups=members)
        self.post = nn.Identity() if last else nn.Sequential(nn.BatchNorm2d(members * c_out), nn.LeakyReLU(0.2))

    def forward(self, x):
        m, b = x.shape[:2]
        y = self.post(self.conv(x.transpose(0, 1).reshape(b, -1, *x.shape[3:])))  # (B, M*C, H, W)
        return y.view(b, m, -1, *y.shape[2:]).transpose(0, 1)


class ConvEncoder(nn.Module):
    def __init__(self, members, channels, size, width, latent, generator):
        super().__init__()
        h, w = size
        self.shapes = [(h, w)]
        layers = [GroupedConv(members, channels, width, 3, 1, 1)]
        c = width
        for _ in range(2):  # two stride-2 stages: H -> floor(H / 2) -> floor(H / 4)
            if min(h, w) < 4:
                break
            layers.append(GroupedConv(members, c, 2 * c, 4, 2, 1))
            h, w, c = h // 2, w // 2, 2 * c
            self.shapes.append((h, w))
        self.convs = nn.Sequential(*layers)
        self.feature = (c, h, w)
        self.project = BatchedLinear(members, c * h * w, latent, generator)

    def forward(self, x):
        return self.project(self.convs(x).flatten(2))


class ConvDecoder(nn.Module):
    def __init__(self, members, channels, encoder: ConvEncoder, latent, generator):
        super().__init__()
        c, h, w = encoder.feature
        self.feature = encoder.feature
        self.expand = BatchedLinear(members, latent, c * h * w, generator)
        layers = []
        for (h_out, w_out), (h_in, w_in) in zip(encoder.shapes[-2::-1], encoder.shapes[:0:-1]):
            padding = (h_out - 2 * h_in, w_out - 2 * w_in)  # odd sizes: what the strided conv dropped
            layers.append(GroupedConv(members, c, c // 2, 4, 2, 1, transpose=True, output_padding=padding))
            c //= 2
        layers.append(GroupedConv(members, c, channels, 3, 1, 1, last=True))
        self.convs = nn.Sequential(*layers)

    def forward(self, z):
        m, b = z.shape[:2]
        return self.convs(nn.functional.leaky_relu(self.expand(z), 0.2).view(m, b, *self.feature))


class ConvEnsemble(nn.Module):
    """M convolutional autoencoders (Mahon & Lukasiewicz 2021's members: strided convolutions with batch norm and
    leaky ReLU, transposed convolutions back, an MLP pseudo-classifier), batched as grouped
    convolutions: inputs ``(M, B, C, H, W)``, latents ``(M, B, L)``."""

    def __init__(self, members, shape, width, hidden, latent, k, generator, seed):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the convolutions' default init, reproducibly
            torch.manual_seed(seed)
            self.encoder = ConvEncoder(members, shape[0], shape[1:], width, latent, generator)
            self.decoder = ConvDecoder(members, shape[0], self.encoder, latent, generator)
        self.classifier = batched_mlp([latent, hidden, k], members, generator)


__all__ = ["BatchedLinear", "batched_mlp", "MLPEnsemble", "GroupedConv", "ConvEncoder", "ConvDecoder", "ConvEnsemble"]
