"""What every generator backend shares: input checks, one seeded ``torch.Generator`` per image, batching,
resizing to the backend's tile size and uint8 conversion. A backend implements only :meth:`Generator._render`."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..images import MAX_SEED, resize_tensor, tensor_to_uint8
from ..tissues import tissue_index

OUTPUT_SIZE = 28  # the tile size of a backend that does not say otherwise (PathMNIST's 28 px, the shipped models)


class Generator:
    """A generator backend: ``generate(tissues, seeds)`` -> uint8 ``(N, S, S, 3)`` with ``S = output_size``.

    Image *i* depends only on ``tissues[i]`` and ``seeds[i]`` (its own CPU ``torch.Generator``, so the
    starting noise is the same on any device and in any batch), which makes any image reproducible alone.
    """

    name = ""
    batch_size = 64  # images per rendering call: one huge batch runs slower on a CPU
    output_size = OUTPUT_SIZE  # px of the tiles ``generate`` returns (the embedded backend: its model's size)

    def class_index(self, key: int | str) -> int:
        """A class of the generator's domain by index or name (histology's tissues unless a backend says so)."""
        return tissue_index(key)

    def _render(self, tissues: list[int], generators: list[torch.Generator], **options) -> torch.Tensor:
        """Float ``(n, 3, R, R)`` images in [0, 1] for one batch (a backend's only job)."""
        raise NotImplementedError

    def render(self, tissues: Sequence[int | str], seeds: Sequence[int], **options) -> torch.Tensor:
        """Full-resolution samples as float ``(N, 3, R, R)`` in [0, 1] on the CPU."""
        if len(tissues) != len(seeds):
            raise ValueError("one seed per image is required")
        tissues = [self.class_index(t) for t in tissues]
        chunks = []
        for start in range(0, len(tissues), self.batch_size):
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + self.batch_size]]
            chunks.append(self._render(tissues[start:start + self.batch_size], generators, **options).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, 3, self.output_size, self.output_size)

    def generate(self, tissues: Sequence[int | str], seeds: Sequence[int], **options) -> np.ndarray:
        """uint8 ``(N, S, S, 3)`` tiles: :meth:`render`, then an antialiased resize to ``output_size`` when larger."""
        return tensor_to_uint8(resize_tensor(self.render(tissues, seeds, **options), self.output_size))
