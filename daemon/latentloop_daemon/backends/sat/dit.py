"""The diffusion transformer of Stable Audio Open, in reading order (engine-spec §6, §7).

Module and parameter names follow stable-audio-tools' ``DiffusionTransformer`` /
``ContinuousTransformer`` exactly, so released checkpoints load strictly; every op is written in
the library's order, so fp32 results match it bit for bit. Shapes: B batch, T latent frames,
C latent channels, E embed_dim, H heads, dh head dim, L conditioning tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import DiTConfig


class LayerNorm(nn.Module):
    """Bias-free LayerNorm: learnable ``gamma``, a zero ``beta`` buffer (kept in checkpoints)."""

    beta: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], weight=self.gamma, bias=self.beta, eps=self.eps)


class RotaryEmbedding(nn.Module):
    """Rotary position tables (GPT-NeoX style, non-interleaved) over the first ``dim`` channels."""

    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, seq_len: int) -> torch.Tensor:
        """Return fp32 angles [N, dim] for positions 0..seq_len-1."""
        t = torch.arange(seq_len, device=self.inv_freq.device).to(torch.float32)
        freqs = torch.einsum("i , j -> i j", t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x = rearrange(x, "... (j d) -> ... j d", j=2)
    x1, x2 = x.unbind(dim=-2)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first freqs.shape[-1] channels of t [B, H, N, dh] in fp32; keep t's dtype."""
    out_dtype = t.dtype
    dtype = torch.promote_types(torch.promote_types(t.dtype, freqs.dtype), torch.float32)
    rot_dim, seq_len = freqs.shape[-1], t.shape[-2]
    freqs, t = freqs.to(dtype), t.to(dtype)
    freqs = freqs[-seq_len:, :]
    t, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    t = (t * freqs.cos() * 1) + (_rotate_half(t) * freqs.sin() * 1)
    return torch.cat((t.to(out_dtype), t_pass.to(out_dtype)), dim=-1)


class Attention(nn.Module):
    """Multi-head attention: self (fused qkv) or cross (GQA when the context is narrower)."""

    def __init__(
        self, dim: int, dim_heads: int, dim_context: int | None = None, qk_norm: str = "none"
    ) -> None:
        super().__init__()
        dim_kv = dim_context if dim_context is not None else dim
        self.num_heads = dim // dim_heads
        self.kv_heads = dim_kv // dim_heads
        if dim_context is not None:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_kv, dim_kv * 2, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.qk_norm = qk_norm
        if qk_norm == "ln":
            self.q_norm = nn.LayerNorm(dim_heads, elementwise_affine=True, eps=1.0e-6)
            self.k_norm = nn.LayerNorm(dim_heads, elementwise_affine=True, eps=1.0e-6)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rotary: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, N, E], context [B, L, Dc] or None, rotary [N, R] fp32 angles -> [B, N, E]."""
        h, kv_h = self.num_heads, self.kv_heads
        if context is not None:
            q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=h)
            k, v = self.to_kv(context).chunk(2, dim=-1)
            k = rearrange(k, "b n (h d) -> b h n d", h=kv_h)
            v = rearrange(v, "b n (h d) -> b h n d", h=kv_h)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
            q = rearrange(q, "b n (h d) -> b h n d", h=h)
            k = rearrange(k, "b n (h d) -> b h n d", h=h)
            v = rearrange(v, "b n (h d) -> b h n d", h=h)
        if self.qk_norm == "ln":
            q_type, k_type = q.dtype, k.dtype
            q = self.q_norm(q).to(q_type)
            k = self.k_norm(k).to(k_type)
        if rotary is not None:
            q = apply_rotary(q.to(torch.float32), rotary).to(v.dtype)
            k = apply_rotary(k.to(torch.float32), rotary * 1.0).to(v.dtype)
        if h != kv_h:  # grouped-query attention: query heads 2i, 2i+1 share kv head i
            k = k.repeat_interleave(h // kv_h, dim=1)
            v = v.repeat_interleave(h // kv_h, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (B, H, N, dh)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class GLU(nn.Module):
    """SwiGLU input projection: the first half is the value, the second half the gate."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * self.act(gate)


class FeedForward(nn.Module):
    """SwiGLU feed-forward, E -> 4E -> E; Identity slots keep the library's ``ff.ff.{0,2}`` keys."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(
            GLU(dim, inner), nn.Identity(), nn.Linear(inner, dim), nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention (rotary), cross-attention (no rotary), SwiGLU."""

    def __init__(self, dim: int, dim_heads: int, dim_context: int | None, qk_norm: str) -> None:
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = Attention(dim, dim_heads, qk_norm=qk_norm)
        self.cross_attend = dim_context is not None
        if dim_context is not None:
            self.cross_attend_norm = LayerNorm(dim)
            self.cross_attn = Attention(dim, dim_heads, dim_context=dim_context, qk_norm=qk_norm)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None, rotary: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.pre_norm(x), rotary=rotary)
        if context is not None and self.cross_attend:
            x = x + self.cross_attn(self.cross_attend_norm(x), context=context)
        return x + self.ff(self.ff_norm(x))


class ContinuousTransformer(nn.Module):
    """Linear in, prepended tokens, N blocks, linear out."""

    def __init__(
        self, dim: int, depth: int, dim_in: int, dim_out: int, dim_heads: int, cond_dim: int | None,
        qk_norm: str,
    ) -> None:  # fmt: skip
        super().__init__()
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(max(dim_heads // 2, 32))
        self.layers = nn.ModuleList(
            TransformerBlock(dim, dim_heads, cond_dim, qk_norm) for _ in range(depth)
        )

    def forward(
        self, x: torch.Tensor, prepend: torch.Tensor | None, context: torch.Tensor | None
    ) -> torch.Tensor:
        """x [B, T, C], prepend [B, P, E], context [B, L, Dc] -> [B, P+T, C]."""
        x = x.to(self.project_in.weight.dtype)
        x = self.project_in(x)
        if prepend is not None:
            x = torch.cat((prepend, x), dim=-2)
        rotary = self.rotary_pos_emb(x.shape[1])
        for layer in self.layers:
            x = layer(x, context, rotary)
        return self.project_out(x)


class FourierFeatures(nn.Module):
    """Random Fourier features of the timestep: [B, 1] -> [B, 2F] as (cos, sin)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_features // 2, in_features]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


def _mlp(dim_in: int, dim_out: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, dim_out, bias=bias), nn.SiLU(), nn.Linear(dim_out, dim_out, bias=bias)
    )


class DiffusionTransformer(nn.Module):
    """v- or velocity-predicting DiT on latents [B, C, T] with prepended global token and CFG."""

    def __init__(self, config: DiTConfig, objective: str) -> None:
        super().__init__()
        c = config
        self.objective = objective
        self.timestep_features = FourierFeatures(1, 256)
        self.to_timestep_embed = _mlp(256, c.embed_dim, bias=True)
        self.has_cross = c.cond_token_dim > 0
        if self.has_cross:
            self.to_cond_embed = _mlp(c.cond_token_dim, c.cond_embed_dim, bias=False)
        self.has_global = c.global_cond_dim > 0
        if self.has_global:
            self.to_global_embed = _mlp(c.global_cond_dim, c.global_embed_dim, bias=False)
        self.transformer = ContinuousTransformer(
            c.embed_dim, c.depth, c.io_channels, c.io_channels, c.dim_heads,
            c.cond_embed_dim if self.has_cross else None, c.qk_norm,
        )  # fmt: skip
        self.preprocess_conv = nn.Conv1d(c.io_channels, c.io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(c.io_channels, c.io_channels, 1, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.preprocess_conv.weight.dtype

    def _forward(
        self, x: torch.Tensor, t: torch.Tensor, cross: torch.Tensor | None,
        global_embed: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        """One pass: x [B, C, T], t [B], cross [B, L, Dc], global [B, Dg] -> [B, C, T]."""
        if cross is not None:
            cross = self.to_cond_embed(cross)
        if global_embed is not None:
            global_embed = self.to_global_embed(global_embed)
        timestep_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))  # (B, E)
        if global_embed is not None:
            global_embed = global_embed + timestep_embed
        else:
            global_embed = timestep_embed
        prepend = global_embed.unsqueeze(1)  # (B, 1, E)
        x = self.preprocess_conv(x) + x
        x = rearrange(x, "b c t -> b t c")
        out = self.transformer(x, prepend=prepend, context=cross)
        out = rearrange(out, "b t c -> b c t")[:, :, prepend.shape[1] :]
        return self.postprocess_conv(out) + out

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cross_attn_cond: torch.Tensor | None = None,
        negative_cross_attn_cond: torch.Tensor | None = None,
        negative_cross_attn_mask: torch.Tensor | None = None,
        global_cond: torch.Tensor | None = None,
        cfg_scale: float = 1.0,
        cfg_interval: tuple[float, float] = (0.0, 1.0),
        scale_phi: float = 0.0,
    ) -> torch.Tensor:
        """Model output for x [B, C, T] at diffusion time t [B], with classifier-free guidance.

        CFG runs cond and uncond as one doubled batch (cond first); the uncond cross tokens are
        zeros, or the negative prompt's tokens where its mask is set. The global token is kept.
        The cross-attention mask is never applied (as in the reference).
        """
        dtype = self.dtype
        x, t = x.to(dtype), t.to(dtype)
        if cross_attn_cond is not None:
            cross_attn_cond = cross_attn_cond.to(dtype)
        if negative_cross_attn_cond is not None:
            negative_cross_attn_cond = negative_cross_attn_cond.to(dtype)
        if global_cond is not None:
            global_cond = global_cond.to(dtype)
        if self.objective == "v":
            sigma = torch.sin(t * math.pi / 2)
        else:
            sigma = t
        use_cfg = cfg_scale != 1.0 and cross_attn_cond is not None
        if not (use_cfg and cfg_interval[0] <= sigma[0] <= cfg_interval[1]):
            return self._forward(x, t, cross_attn_cond, global_cond)
        assert cross_attn_cond is not None
        null_embed = torch.zeros_like(cross_attn_cond, device=cross_attn_cond.device)
        uncond = null_embed
        if negative_cross_attn_cond is not None:
            uncond = negative_cross_attn_cond
            if negative_cross_attn_mask is not None:
                mask = negative_cross_attn_mask.to(torch.bool).unsqueeze(2)
                uncond = torch.where(mask, negative_cross_attn_cond, null_embed)
        batch_global = None if global_cond is None else torch.cat([global_cond, global_cond])
        out = self._forward(
            torch.cat([x, x], dim=0),
            torch.cat([t, t], dim=0),
            torch.cat([cross_attn_cond, uncond], dim=0),
            batch_global,
        )
        cond_out, uncond_out = torch.chunk(out, 2, dim=0)
        cfg_out = uncond_out + (cond_out - uncond_out) * cfg_scale
        if scale_phi != 0.0:
            cond_std = cond_out.std(dim=1, keepdim=True)
            cfg_std = cfg_out.std(dim=1, keepdim=True)
            return scale_phi * (cfg_out * (cond_std / cfg_std)) + (1 - scale_phi) * cfg_out
        return cfg_out


class DiTWrapper(nn.Module):
    """Holds the DiT as ``.model`` so checkpoint keys read ``model.model.*``."""

    def __init__(self, config: DiTConfig, objective: str) -> None:
        super().__init__()
        self.model = DiffusionTransformer(config, objective)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: object) -> torch.Tensor:
        out: torch.Tensor = self.model(x, t, **kwargs)
        return out
