"""The conditional restoration U-Net (the "modified U-Net" of DA-CLIP, two degradation slots).

Inputs: the SDE state ``x_t`` and the low-quality image ``mu`` (concatenated, as IR-SDE does), the
timestep, and the three DA-CLIP embeddings ``[content; degradation 1; degradation 2]``. The
embeddings reach the network twice:

* concatenated and mapped by an MLP into one vector that, added to the timestep embedding, gives a
  per-block scale and shift (feature modulation) in every residual block;
* as three tokens that the low-resolution levels attend to (cross-attention; the improvement the
  study proposed as future work).

The network predicts the clean image ``x0`` as a residual over ``x_t``: near ``t = 0`` the state
already is almost clean and the residual is small; at ``t = T`` with the one-step start ``x_T = mu``
it is the restoration of the LQ image. Every operation is local
(no normalisation over space, no spatial self-attention), so restoring in tiles matches restoring
the whole image away from tile borders. ``conditioned=False`` builds the same network without the
conditioning path (the ablation).

``global_affine``: the condition also predicts one colour correction per image, ``mu' = mu * gain +
offset`` per channel (:class:`GlobalAffine`). Most of the error of a dark, hazy, snowy or
colour-cast photo is global (on held-out seed24 pairs, the best per-channel gain and offset alone
raise PSNR by 4.9 dB), which a local network cannot tell from a tile; the embeddings of the whole
photo can. The U-Net sees ``mu'`` in place of ``mu`` and predicts ``x0`` as
``x_t + g(t) (mu' - mu) + residual``, with a learned gate ``g(t)`` in (0, 1) (near ``t = 0`` the state
is already almost clean). It stays tiling-safe: every tile of a photo shares its condition.
With ``image_stats`` the head also reads colour statistics of the whole LQ photo
(:func:`image_statistics`: per-channel mean, spread and quantiles), which state directly how dark,
washed out or tinted the photo is; the runtime computes them once per photo and passes them to
every tile, like the condition. The ablation (``conditioned=False``) keeps this statistics head, so
the ablation measures what the DA-CLIP embeddings add on top of it.

Cost: a pixel-unshuffle stem runs the first level at half resolution; channels double while the
resolution halves, so every 3x3 convolution costs about the same per input pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.configs import UNetConfig

ARCHITECTURE = "photomend-restorer-unet"


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of ``t`` in [0, 1] (scaled to [0, 1000] like DDPM's integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (no statistics over space, so tiling-safe)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            # channels-last (the runtime's layout): the channels of a pixel are contiguous, so this is
            # one fused layer norm over a [B, H, W, C] view instead of eight passes over the tensor
            return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class ResBlock(nn.Module):
    """Pre-norm residual block: norm -> conv3x3 -> scale/shift from the embedding -> SiLU -> conv3x3
    (zero-initialised, so a fresh block is the identity)."""

    def __init__(self, channels: int, emb_dim: int):
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.modulation = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm(x))
        scale, shift = self.modulation(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, h, 1 + scale)  # h * (1 + scale) + shift in one pass
        if torch.is_grad_enabled():
            return x + self.conv2(F.silu(h))
        # inference: in place, so a tile's large activations are not allocated (and faulted in) twice
        return self.conv2(F.silu(h, inplace=True)).add_(x)


class CrossAttention(nn.Module):
    """Every pixel attends to the condition tokens (per-pixel queries: local, so tiling-safe)."""

    def __init__(self, channels: int, cond_dim: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by attention heads {heads}")
        self.heads = heads
        self.norm = ChannelNorm(channels)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.norm_cond = nn.LayerNorm(cond_dim)
        self.to_kv = nn.Linear(cond_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.to_q(self.norm(x)).reshape(b, self.heads, d, h * w)  # [B, heads, d, N]
        k, v = self.to_kv(self.norm_cond(tokens)).chunk(2, dim=-1)  # [B, T, C] each
        k = k.reshape(b, -1, self.heads, d).transpose(1, 2)  # [B, heads, T, d]
        v = v.reshape(b, -1, self.heads, d).transpose(1, 2)
        attn = torch.softmax(torch.einsum("bhtd,bhdn->bhtn", k, q) / math.sqrt(d), dim=2)  # over tokens
        out = torch.einsum("bhtn,bhtd->bhdn", attn, v).reshape(b, c, h, w)
        return x + self.proj(out)


_LEGACY_PREFIXES = {"global_affine.mlp.0.": "global_affine.cond_in.0.", "global_affine.mlp.1.": "global_affine.cond_in.1.",
                    "global_affine.mlp.3.": "global_affine.out.1."}


def upgrade_key(key: str) -> str:
    """The current name of a weight saved under an older layout (restorers saved before the colour
    head had a statistics input named its condition path ``global_affine.mlp.{0,1,3}``)."""
    for old, new in _LEGACY_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


STATS_GRID = 32
STATS_QUANTILES = (0.02, 0.25, 0.5, 0.75, 0.98)
STATS_FEATURES = 3 * (2 + len(STATS_QUANTILES))


def image_statistics(image: torch.Tensor) -> torch.Tensor:
    """Colour statistics of whole LQ photos ``[B, 3, H, W]`` in [0, 1]: ``[B, STATS_FEATURES]``.

    Per channel: mean, standard deviation and the quantiles :data:`STATS_QUANTILES` of the photo
    average-pooled onto a ``STATS_GRID`` square grid, so a 192-px training crop and a 12-MP photo
    are described alike (pixel noise is mostly averaged away) and the cost is one pooling pass.
    """
    grid = F.adaptive_avg_pool2d(image.float(), (min(STATS_GRID, image.shape[-2]), min(STATS_GRID, image.shape[-1])))
    flat = grid.flatten(2)  # [B, 3, N]
    q = torch.quantile(flat, torch.tensor(STATS_QUANTILES, device=flat.device), dim=2)  # [Q, B, 3]
    feats = torch.cat([flat.mean(2, keepdim=True), flat.std(2, unbiased=False, keepdim=True), q.permute(1, 2, 0)], dim=2)
    return feats.flatten(1)


class GlobalAffine(nn.Module):
    """Per-image, per-channel gain and offset predicted from the flattened condition and/or the
    photo's colour statistics (zero-initialised output, so a fresh head is the identity), and a gate
    over time for how much of it ``x0`` takes."""

    def __init__(self, cond_features: int, time_dim: int, channels: int, hidden: int = 256,
                 stats_features: int = 0):
        super().__init__()
        if not cond_features and not stats_features:
            raise ValueError("GlobalAffine needs a condition, image statistics or both")
        self.cond_in = (nn.Sequential(nn.LayerNorm(cond_features), nn.Linear(cond_features, hidden))
                        if cond_features else None)
        self.stats_in = (nn.Sequential(nn.Linear(stats_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                         if stats_features else None)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * channels))
        self.gate = nn.Linear(time_dim, 1)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def params(self, condition: torch.Tensor | None, stats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gain, offset)``, each ``[B, C, 1, 1]``; the log-gain is bounded to +-log(16)."""
        h = 0
        if self.cond_in is not None:
            h = h + self.cond_in(condition.flatten(1))
        if self.stats_in is not None:
            # log scale: the gain a dark photo needs is about the ratio of levels, a difference of logs
            logs = torch.log(stats.float() + 1.0 / 64.0) + 1.5
            h = h + self.stats_in(logs.to(self.stats_in[0].weight.dtype))
        log_gain, offset = self.out(h).float().chunk(2, dim=1)
        gain = torch.exp(log_gain.clamp(-math.log(16.0), math.log(16.0)))
        return gain[:, :, None, None], offset[:, :, None, None]

    def forward(self, mu: torch.Tensor, condition: torch.Tensor | None, temb: torch.Tensor,
                stats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu', gate)``: the corrected LQ image and the gate ``[B, 1, 1, 1]``."""
        gain, offset = self.params(condition, stats)
        gate = torch.sigmoid(self.gate(temb).float())[:, :, None, None]
        return (mu.float() * gain + offset).to(mu.dtype), gate.to(mu.dtype)


class Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by cross-attention."""

    def __init__(self, channels: int, emb_dim: int, blocks: int, cond_dim: int, heads: int, attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, emb_dim) for _ in range(blocks))
        self.attns = nn.ModuleList(CrossAttention(channels, cond_dim, heads) for _ in range(blocks)) if attention else None

    def forward(self, x, emb, tokens):
        for i, block in enumerate(self.blocks):
            x = block(x, emb)
            if self.attns is not None:
                x = self.attns[i](x, tokens)
        return x


class ConditionalUNet(nn.Module):
    """Predicts ``x0`` from ``(x_t, mu, t, condition)``; see the module docstring."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        r = cfg.stem_factor
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim))
        if cfg.conditioned:
            self.cond_mlp = nn.Sequential(
                nn.LayerNorm(cfg.num_cond_tokens * cfg.cond_dim),
                nn.Linear(cfg.num_cond_tokens * cfg.cond_dim, cfg.time_dim), nn.SiLU(),
                nn.Linear(cfg.time_dim, cfg.time_dim),
            )
        self.global_affine = (GlobalAffine(cfg.num_cond_tokens * cfg.cond_dim if cfg.conditioned else 0,
                                           cfg.time_dim, cfg.in_channels,
                                           stats_features=STATS_FEATURES if cfg.image_stats else 0)
                              if cfg.has_global_affine else None)
        attention = set(cfg.attention_levels) if cfg.conditioned else set()
        self.stem = nn.Sequential(nn.PixelUnshuffle(r), nn.Conv2d(2 * cfg.in_channels * r * r, chans[0], 3, padding=1))
        self.encoder = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            self.encoder.append(Level(c, cfg.time_dim, cfg.num_res_blocks, cfg.cond_dim, cfg.attention_heads, i in attention))
            if not last:
                # pixel-unshuffle + 1x1: a cheap, learnable stride-2 downsampling
                self.downs.append(nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * c, chans[i + 1], 1)))
                self.ups.append(nn.Sequential(nn.Conv2d(chans[i + 1], 4 * c, 1), nn.PixelShuffle(2)))
                self.decoder.append(Level(c, cfg.time_dim, cfg.num_res_blocks, cfg.cond_dim, cfg.attention_heads, i in attention))
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(chans[0], cfg.in_channels * r * r, 3, padding=1), nn.PixelShuffle(r))
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                condition: torch.Tensor | None = None, stats: torch.Tensor | None = None) -> torch.Tensor:
        """``x_t``, ``mu``: ``[B, 3, H, W]`` (H, W multiples of :attr:`multiple`); ``t``: ``[B]`` in [0, 1];
        ``condition``: ``[B, 3, cond_dim]`` (required iff the network is conditioned); ``stats``:
        :func:`image_statistics` of the whole photo when ``mu`` is a tile of it (computed from ``mu``
        when omitted and ``image_stats`` is set). Returns ``x0`` estimate."""
        cfg = self.config
        if x_t.shape[-2] % cfg.multiple or x_t.shape[-1] % cfg.multiple:
            raise ValueError(f"input size {tuple(x_t.shape[-2:])} is not a multiple of {cfg.multiple}")
        temb = self.time_mlp(timestep_embedding(t, cfg.time_dim).to(x_t.dtype))
        emb = temb
        tokens = None
        if cfg.conditioned:
            if condition is None:
                raise ValueError("this restorer is conditioned: a DA-CLIP condition [B, 3, cond_dim] is required")
            condition = condition.to(x_t.dtype)
            emb = emb + self.cond_mlp(condition.flatten(1))
            tokens = condition
        correction = None
        if self.global_affine is not None:
            if cfg.image_stats and stats is None:
                stats = image_statistics(mu)
            corrected, gate = self.global_affine(mu, condition, temb, stats)
            correction = gate * (corrected - mu)
            mu = corrected
        h = self.stem(torch.cat([x_t, mu], dim=1))
        skips = []
        for i, level in enumerate(self.encoder):
            h = level(h, emb, tokens)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(len(self.decoder))):
            h = self.ups[i](h) + skips[i]
            h = self.decoder[i](h, emb, tokens)
        out = x_t + self.head(h)
        return out if correction is None else out + correction
