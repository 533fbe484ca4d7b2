"""The dihedral group D4 (the 8 rotations/flips of a square) on image tensors: one home for views,
their inverses and the group's multiplication table."""

from __future__ import annotations

import torch


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` in 0..7 of the last two axes: ``k % 4`` quarter turns, then a left-right flip
    when ``k >= 4``."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def _tables() -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    probe = torch.arange(9, dtype=torch.float64).reshape(3, 3) ** 1.5
    views = [dihedral(probe, k) for k in range(8)]

    def index(img: torch.Tensor) -> int:
        return next(k for k in range(8) if torch.equal(views[k], img))

    product = tuple(tuple(index(dihedral(dihedral(probe, b), a)) for b in range(8)) for a in range(8))
    inverse = tuple(next(b for b in range(8) if product[a][b] == 0) for a in range(8))
    return product, inverse


#: ``D4_PRODUCT[a][b]`` is the view equal to applying view ``b`` then view ``a``.
D4_PRODUCT, D4_INVERSE = _tables()
