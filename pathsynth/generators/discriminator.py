"""Discriminator guidance (Kim et al., ICML 2023, "Refining Generative Process with Discriminator Guidance").

A small network learns to tell real training tiles from the generator's own samples *at every noise level*.
During sampling, the gradient of its log-odds ``log D / (1 - D)`` with respect to the noisy image is added to the
model's score, which moves each step towards what real tissue looks like where the denoiser still falls short
(texture, membranes, nuclei) without retraining the denoiser. The discriminator sees only the training folds and
generated images: the held-out fold and the independent evaluator network stay out of it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin

from ..tissues import NUM_TISSUES


class ModulatedBlock(nn.Module):
    """Residual conv block whose second normalisation is scaled and shifted by the (time + tissue) embedding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, embed_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.norm1 = nn.GroupNorm(8, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.modulation = nn.Linear(embed_dim, 2 * out_channels)
        same = in_channels == out_channels and stride == 1
        self.skip = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1, stride)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        scale, shift = self.modulation(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(self.conv2(h)) * (1 + scale) + shift
        return F.silu(h + self.skip(x))


class NoisyDiscriminator(ModelMixin, ConfigMixin):
    """Real-vs-generated logit for a noisy tile ``x_t`` at timestep ``t`` of tissue ``y``."""

    @register_to_config
    def __init__(self, width: int = 48, num_tissues: int = NUM_TISSUES, embed_dim: int = 128, time_dim: int = 64,
                 guidance_weight: float = 1.0):
        super().__init__()  # guidance_weight: the sampling weight chosen for this network (train/discriminator.py)
        self.time_embedding = nn.Sequential(nn.Linear(time_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.tissue_embedding = nn.Embedding(num_tissues, embed_dim)
        self.stem = nn.Conv2d(3, width, 3, 1, 1)
        self.blocks = nn.ModuleList([
            ModulatedBlock(width, width, 1, embed_dim), ModulatedBlock(width, 2 * width, 2, embed_dim),
            ModulatedBlock(2 * width, 2 * width, 1, embed_dim), ModulatedBlock(2 * width, 4 * width, 2, embed_dim),
        ])
        self.head = nn.Linear(4 * width, 1)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, tissues: torch.Tensor) -> torch.Tensor:
        # [sin, cos] of t * 10000^(-i / half): the layout the shipped weights were trained with
        sinusoidal = get_timestep_embedding(timesteps, self.config.time_dim, flip_sin_to_cos=False,
                                            downscale_freq_shift=0)
        embedding = self.time_embedding(sinusoidal)
        embedding = embedding + self.tissue_embedding(tissues)
        h = self.stem(noisy)
        for block in self.blocks:
            h = block(h, embedding)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


def guided_v_prediction(discriminator: NoisyDiscriminator, v: torch.Tensor, noisy: torch.Tensor,
                        timestep: torch.Tensor, tissues: torch.Tensor, alpha_bar: torch.Tensor,
                        weight: float) -> torch.Tensor:
    """The v-prediction with the discriminator's correction added to the score.

    Score correction ``w * grad log(D / (1 - D))`` means ``eps' = eps - w * sqrt(1 - a) * grad``, and since
    ``v = eps / sqrt(a) - sqrt(1 - a) / sqrt(a) * x_t``, ``v' = v - w * sqrt((1 - a) / a) * grad``.
    """
    with torch.enable_grad():
        x = noisy.detach().float().requires_grad_(True)
        logit = discriminator(x, timestep.expand(len(x)), tissues)
        (grad,) = torch.autograd.grad(logit.sum(), x)
    return v - weight * ((1 - alpha_bar) / alpha_bar).sqrt() * grad.to(v.dtype)
