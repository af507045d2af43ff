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


class _WeightCache:
    """The weight-normed weight ``g * v / ||v||``, computed once while v and g are unchanged.

    ``torch._weight_norm`` is deterministic, so the cached weight is bit-identical to one
    computed per call (engine-spec §9.1: pre-fusing is equivalent); recomputing it costs a pass
    over all 78 M decoder weights per decode. Off (``enabled`` False) it recomputes per call.
    It holds the v and g it was computed from: a cast or move (new storage) or an in-place
    write (a new version counter) invalidates it, and a held storage's address cannot be reused.
    """

    __slots__ = ("enabled", "source", "version", "weight")

    def __init__(self) -> None:
        self.enabled = False
        self.source: tuple[torch.Tensor, torch.Tensor] | None = None
        self.version: tuple[int, int] | None = None
        self.weight: torch.Tensor | None = None

    def get(self, v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return torch._weight_norm(v, g, 0)
        version = (v._version, g._version)
        if (
            self.weight is None
            or self.source is None
            or self.version != version
            or self.source[0].data_ptr() != v.data_ptr()
            or self.source[1].data_ptr() != g.data_ptr()
        ):
            self.weight = torch._weight_norm(v, g, 0)
            self.source, self.version = (v.detach(), g.detach()), version
        return self.weight

    def clear(self) -> None:
        self.source = self.version = self.weight = None


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
        self.weight_cache = _WeightCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_cache.get(self.weight_v, self.weight_g)
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
        self.weight_cache = _WeightCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_cache.get(self.weight_v, self.weight_g)
        return F.conv_transpose1d(x, weight, self.bias, self.stride, self.padding)


class SnakeBeta(nn.Module):
    """``x + 1/(b + 1e-9) * sin(a x)^2`` with log-scale per-channel a, b over [B, C, T].

    ``fast`` (off by default; never in ``reference`` precision) computes the same formula with
    one temporary instead of four and ``addcmul`` for the last multiply-add: fewer passes over
    memory at audio rate, equal to the reference op chain to a few fp32 ulp (the fused
    multiply-add rounds once instead of twice).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.fast = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha.unsqueeze(0).unsqueeze(-1))
        beta = torch.exp(self.beta.unsqueeze(0).unsqueeze(-1))
        if self.fast:
            t = x * alpha  # the one temporary [B, C, T]
            t.sin_().square_()
            return torch.addcmul(x, t, 1.0 / (beta + 0.000000001))
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

    def latents_needed(self, keep_samples: int) -> int:
        """How many leading latent frames determine the first ``keep_samples`` output samples.

        Walks the layers from the output back to the latents, tracking the last input index
        the last kept sample depends on: a conv (kernel k, dilation d, padding p) reaches
        ``(k - 1) d - p`` samples to the right; a transposed conv (stride s, padding p) maps
        output index o to inputs up to ``floor((o + p) / s)``. Decoding only these latents
        gives the kept samples from exactly the same inputs as the full decode (the zero
        padding at the cropped end lies outside every kept sample's receptive field).
        """
        last = keep_samples - 1  # index at the current layer's rate
        for layer in reversed(_flat_layers(self)):
            if isinstance(layer, WNConv1d):
                k = layer.weight_v.shape[-1]
                last += (k - 1) * layer.dilation - layer.padding
            elif isinstance(layer, WNConvTranspose1d):
                last = (last + layer.padding) // layer.stride
        return last + 1


def _flat_layers(module: nn.Module) -> list[nn.Module]:
    """Leaf layers in execution order (a residual unit's skip path reaches no further)."""
    return [m for m in module.modules() if isinstance(m, WNConv1d | WNConvTranspose1d)]


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

    def set_fast_snake(self, fast: bool) -> None:
        """Use the fused Snake (``SnakeBeta.fast``) everywhere, or the reference op chain."""
        for m in self.model.modules():
            if isinstance(m, SnakeBeta):
                m.fast = fast

    def cache_decoder_weights(self, enabled: bool) -> None:
        """Keep the decoder's weight-normed weights between decodes (bit-identical; costs the
        decoder's weights once more in memory: 312 MB in fp32 for the Oobleck VAE)."""
        for m in self.model.decoder.modules():
            if isinstance(m, WNConv1d | WNConvTranspose1d):
                m.weight_cache.enabled = enabled
                m.weight_cache.clear()

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio [B, A, N] float32 -> latents [B, latent, N/ratio] float32 (divided by scale)."""
        dtype = self.dtype
        encoded = self.model.encode(audio.to(dtype), self.iterate_batch)
        if dtype != torch.float32:
            encoded = encoded.float()
        return encoded / self.scale

    def decode(self, z: torch.Tensor, keep_samples: int | None = None) -> torch.Tensor:
        """Latents [B, latent, T] -> audio [B, A, T * ratio] float32 (multiplied by scale).

        With ``keep_samples``, only the latents that determine the first ``keep_samples``
        samples are decoded (``OobleckDecoder.latents_needed``) and audio [B, A, keep_samples]
        is returned: equal to the full decode's first samples up to the convolutions' fp32
        rounding (kernels may block a shorter input differently).
        """
        if keep_samples is not None:
            total = z.shape[-1] * self.downsampling_ratio
            if not 0 < keep_samples <= total:
                raise ValueError(f"keep_samples must be 1..{total}, got {keep_samples}")
            needed = self.model.decoder.latents_needed(keep_samples)
            return self.decode(z[..., :needed])[..., :keep_samples]
        z = z * self.scale
        dtype = self.dtype
        decoded = self.model.decode(z.to(dtype), self.iterate_batch)
        if dtype != torch.float32:
            decoded = decoded.float()
        return decoded
