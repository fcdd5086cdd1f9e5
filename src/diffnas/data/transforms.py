"""Batched tensor augmentation without torchvision: crop with padding, flip, cutout, normalize.

Every function takes a whole batch and a torch.Generator, so a batch's augmentation is
reproducible from (seed, epoch, step) and costs a few tensor ops, not a Python loop. The
random numbers are drawn on the host (the same on every device) and copied to the batch's
device with `non_blocking=True`: a blocking copy to a CUDA device waits for its queued work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the input size at a random offset per sample."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=gen).to(x.device, non_blocking=True)
    rows = off[0, :, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = off[1, :, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each sample with probability 1/2."""
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device, non_blocking=True)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) at a random centre of each sample."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=gen).to(x.device, non_blocking=True)
    cx = torch.randint(0, w, (b,), generator=gen).to(x.device, non_blocking=True)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    half = size // 2
    in_y = (ys >= (cy[:, None] - half)) & (ys < (cy[:, None] + half))  # [B, H]
    in_x = (xs >= (cx[:, None] - half)) & (xs < (cx[:, None] + half))  # [B, W]
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x * (~hole)[:, None].to(x.dtype)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 255] floats -> standardized floats."""
    return (x.float() / 255.0 - mean) / std


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (area when shrinking, bilinear when growing)."""
    h = images.shape[-1]
    if h == size and images.shape[-2] == size:
        return images
    mode = "area" if size < h else "bilinear"
    out = F.interpolate(
        images.float(),
        size=(size, size),
        mode=mode,
        **({} if mode == "area" else {"align_corners": False}),
    )
    return out.round().clamp(0, 255).to(torch.uint8)


@dataclass
class Augment:
    """The augmentation of one stream of batches."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x: uint8 [B, C, H, W] -> augmented uint8-valued tensor (crop and flip only)."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, gen)
        if self.flip:
            x = random_flip(x, gen)
        return x
