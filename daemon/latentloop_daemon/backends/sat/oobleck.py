"""The Oobleck VAE pretransform: audio [B, 2, N] <-> latents [B, 64, N/2048] (engine-spec §9).

Names follow stable-audio-tools (``pretransform.model.{encoder,decoder}.layers...`` with
weight-normed convs as ``weight_g``/``weight_v``/``bias``), so checkpoints load strictly. The
weight norm is computed with ``torch._weight_norm``, bit-identical to the library's hook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import OobleckConfig, PretransformConfig


class WNConv1d(nn.Module):
    """Conv1d whose weight is ``g * v / ||v||`` (norm over all dims but 0)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
        dilation: int = 1, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_ch, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, 0)
        return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight norm per input channel (v is [in, out, k], g is [in, 1, 1])."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(in_ch, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(in_ch, out_ch, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, 0)
        return F.conv_transpose1d(x, weight, self.bias, self.stride, self.padding)


class SnakeBeta(nn.Module):
    """``x + 1/(b + 1e-9) * sin(a x)^2`` with log-scale per-channel a, b over [B, C, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha.unsqueeze(0).unsqueeze(-1))
        beta = torch.exp(self.beta.unsqueeze(0).unsqueeze(-1))
        return x + (1.0 / (beta + 0.000000001)) * torch.pow(torch.sin(x * alpha), 2)


def _activation(use_snake: bool, channels: int) -> nn.Module:
    return SnakeBeta(channels) if use_snake else nn.ELU()


class ResidualUnit(nn.Module):
    """Snake, dilated k7 conv, Snake, k1 conv, plus the input."""

    def __init__(self, channels: int, dilation: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _activation(use_snake, channels),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=(dilation * 6) // 2),
            _activation(use_snake, channels),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x


class EncoderBlock(nn.Module):
    """Three residual units, then a strided conv that downsamples by ``stride``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResidualUnit(in_ch, 1, use_snake),
            ResidualUnit(in_ch, 3, use_snake),
            ResidualUnit(in_ch, 9, use_snake),
            _activation(use_snake, in_ch),
            WNConv1d(in_ch, out_ch, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """A transposed conv that upsamples by ``stride``, then three residual units."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _activation(use_snake, in_ch),
            WNConvTranspose1d(in_ch, out_ch, 2 * stride, stride, math.ceil(stride / 2)),
            ResidualUnit(out_ch, 1, use_snake),
            ResidualUnit(out_ch, 3, use_snake),
            ResidualUnit(out_ch, 9, use_snake),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    """Audio [B, A, N] -> pre-bottleneck latents [B, 2 * latent, N / prod(strides)]."""

    def __init__(self, c: OobleckConfig) -> None:
        super().__init__()
        mults = (1, *c.c_mults)
        layers: list[nn.Module] = [WNConv1d(c.audio_channels, mults[0] * c.channels, 7, padding=3)]
        for i, stride in enumerate(c.strides):
            in_ch, out_ch = mults[i] * c.channels, mults[i + 1] * c.channels
            layers.append(EncoderBlock(in_ch, out_ch, stride, c.use_snake))
        layers += [
            _activation(c.use_snake, mults[-1] * c.channels),
            WNConv1d(mults[-1] * c.channels, c.latent_dim, 3, padding=1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """Latents [B, latent, T] -> audio [B, A, T * prod(strides)]; no tanh unless configured."""

    def __init__(self, c: OobleckConfig) -> None:
        super().__init__()
        mults = (1, *c.c_mults)
        layers: list[nn.Module] = [WNConv1d(c.latent_dim, mults[-1] * c.channels, 7, padding=3)]
        for i in range(len(mults) - 1, 0, -1):
            in_ch, out_ch = mults[i] * c.channels, mults[i - 1] * c.channels
            layers.append(DecoderBlock(in_ch, out_ch, c.strides[i - 1], c.use_snake))
        layers += [
            _activation(c.use_snake, mults[0] * c.channels),
            WNConv1d(mults[0] * c.channels, c.audio_channels, 7, padding=3, bias=False),
            nn.Tanh() if c.final_tanh else nn.Identity(),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AudioAutoencoder(nn.Module):
    """Encoder + VAE bottleneck + decoder; ``iterate_batch`` runs the convs one item at a time."""

    def __init__(self, c: PretransformConfig) -> None:
        super().__init__()
        self.encoder = OobleckEncoder(c.encoder)
        self.decoder = OobleckDecoder(c.decoder)

    def encode(self, audio: torch.Tensor, iterate_batch: bool) -> torch.Tensor:
        """Audio [B, A, N] -> sampled latents [B, latent, N/ratio]; consumes the global RNG."""
        if iterate_batch:
            h = torch.cat([self.encoder(audio[i : i + 1]) for i in range(audio.shape[0])], dim=0)
        else:
            h = self.encoder(audio)
        mean, scale = h.chunk(2, dim=1)
        stdev = F.softplus(scale) + 1e-4
        return torch.randn_like(mean) * stdev + mean  # VAE sampling, random even at inference

    def decode(self, latents: torch.Tensor, iterate_batch: bool) -> torch.Tensor:
        """Latents [B, latent, T] -> audio [B, A, T * ratio]."""
        if iterate_batch:
            n = latents.shape[0]
            return torch.cat([self.decoder(latents[i : i + 1]) for i in range(n)], dim=0)
        return self.decoder(latents)


class AutoencoderPretransform(nn.Module):
    """The library's AutoencoderPretransform: scale, ``model_half`` casting, ``iterate_batch``."""

    def __init__(self, c: PretransformConfig) -> None:
        super().__init__()
        self.model = AudioAutoencoder(c)
        self.scale = c.scale
        self.model_half = c.model_half
        self.iterate_batch = c.iterate_batch
        self.downsampling_ratio = c.downsampling_ratio
        self.io_channels = c.io_channels

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio [B, A, N] float32 -> latents [B, latent, N/ratio] float32 (divided by scale)."""
        dtype = self.dtype
        encoded = self.model.encode(audio.to(dtype), self.iterate_batch)
        if dtype != torch.float32:
            encoded = encoded.float()
        return encoded / self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, latent, T] -> audio [B, A, T * ratio] float32 (multiplied by scale)."""
        z = z * self.scale
        dtype = self.dtype
        decoded = self.model.decode(z.to(dtype), self.iterate_batch)
        if dtype != torch.float32:
            decoded = decoded.float()
        return decoded
