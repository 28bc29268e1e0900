"""Image grids at true pixel size, through torchvision's make_grid / save_image."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image


def grid(images: torch.Tensor, per_row: int) -> torch.Tensor:
    """(n, C, H, W) in [0, 1] -> one (C, H', W') image with a 2-pixel light-grey grid."""
    return make_grid(images.clamp(0, 1), nrow=per_row, padding=2, pad_value=0.5)


def save_grid(images: torch.Tensor, path: Path, per_row: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid(images, per_row), path)
    return path


def comparison_rows(
    inputs: torch.Tensor, reconstructions: torch.Tensor, per_row: int
) -> torch.Tensor:
    """Rows of `per_row` inputs, each directly above its row of reconstructions: (2n, C, H, W)."""
    rows = [
        torch.cat([inputs[start : start + per_row], reconstructions[start : start + per_row]])
        for start in range(0, len(inputs), per_row)
    ]
    return torch.cat(rows)
