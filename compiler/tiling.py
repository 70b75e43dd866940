"""Split each layer's GEMM into the tiles the weight-stationary array runs.

For a layer ``Y[M, N] = X[M, K] @ W'[K, N]`` with ``M = batch * rows per inference`` on an
``R x C`` array: K in ``ceil(K / R)`` weight tiles (zero padded), N in ``ceil(N / C)`` column
tiles, and M in row tiles of at most the ACC depth (a tile's partial sums stay in ACCBUF
while its K tiles accumulate). One MATMUL runs one (column tile, row tile) over all K tiles.
"""

from __future__ import annotations

from .gemm import GemmProgram, Stage, Tiling
from .layout import chunks

__all__ = ["TileLayers", "tile_layer"]

_COUNT_MAX = (1 << 16) - 1  # the MATMUL count field is 16 bits


def tile_layer(M: int, K: int, N: int, config) -> Tiling:
    """Return the tiling of an ``[M, K] @ [K, N]`` GEMM on ``config``'s array."""
    return Tiling(M=M, k_tiles=chunks(K, config.rows), n_tiles=chunks(N, config.cols),
                  m_tile=min(M, config.acc_rows, _COUNT_MAX))


class TileLayers(Stage):
    """Give every layer its :class:`Tiling` for the program's batch."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        for layer in program.layers:
            layer.tiling = tile_layer(program.batch * layer.rows, layer.K, layer.N, program.config)
        return program
