"""Hold the back end's program IR: a chain of fully-connected layers for one hardware config.

:class:`GemmProgram` is what the back-end stages (:mod:`accel.compiler.backend`) rewrite
and annotate, one stage at a time: lowering fills :attr:`GemmProgram.layers` from the
canonical graph, the folding stages rewrite weights and biases, tiling, memory planning and
emission add tiles, addresses, memory images and the program. :meth:`GemmProgram.run` is
the program's reference semantics at any stage (the golden model of the chain), so a stage
that changes a result is found by running it before and after; :meth:`GemmProgram.verify`
checks the invariants of every stage done so far.

Each layer computes, for ``M = batch * rows`` input rows::

    Y[M, N] = requant((X[M, K] - x_zp) @ (W[K, N] - w_zp) + bias)

with int32 wrap-around and onnxruntime's requantization, exactly like the canonical
``matmul`` it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..config import HardwareConfig
from ..isa import INSN_BITS, Opcode, decode
from .ir import Graph, IRError, dtype_range
from .layout import chunks, wrap_signed

__all__ = ["Boundary", "Tiling", "GemmLayer", "GemmProgram", "Stage"]


@dataclass
class Boundary:
    """Describe the model input or output as the host sees it.

    ``name``/``shape`` are the ONNX tensor's (one inference); ``dtype`` is what the user
    passes or gets (``float32``, or ``int8``/``uint8``); ``quant`` (``scale``,
    ``zero_point``, ``dtype``, ``axis``) is how the host quantizes or dequantizes it;
    ``tensor`` is the integer tensor the first layer reads or the last layer writes.
    """

    name: str
    shape: tuple
    dtype: str
    quant: dict
    tensor: str


@dataclass(frozen=True)
class Tiling:
    """Describe how one layer's GEMM maps onto the array.

    ``k_tiles`` weight tiles of ``rows`` along K, ``n_tiles`` column tiles of ``cols``
    along N, and the ``M`` rows in MATMULs of at most ``m_tile`` rows (the ACC depth).
    """

    M: int
    k_tiles: int
    n_tiles: int
    m_tile: int

    @property
    def m_tiles(self) -> int:
        return chunks(self.M, self.m_tile)

    def m_ranges(self) -> list[tuple[int, int]]:
        """Return ``(first row, row count)`` of every row tile."""
        return [(m0, min(self.m_tile, self.M - m0)) for m0 in range(0, self.M, self.m_tile)]

    @property
    def matmuls(self) -> int:
        return self.n_tiles * self.m_tiles


@dataclass(eq=False)
class GemmLayer:
    """Describe one fully-connected layer and, as stages run, its tiles, addresses and instructions."""

    name: str
    op: str
    x: str
    y: str
    rows: int                 # input rows per inference (product of the leading dimensions)
    weight: np.ndarray        # int64 [K, N]
    bias: np.ndarray          # int64 [N]
    multiplier: np.ndarray    # float32 [N]
    x_zp: int
    w_zp: np.ndarray          # int64 [N]
    x_dtype: np.dtype
    y_dtype: np.dtype
    y_zp: int
    y_lo: int
    y_hi: int
    tiling: Tiling | None = None
    x_addr: int | None = None  # ABUF word of the input matrix
    y_addr: int | None = None  # ABUF word of the output matrix
    w_addr: int | None = None  # WBUF word of column tile 0, K tile 0
    p_addr: int | None = None  # PBUF word of channel 0
    insns: range | None = None  # IMEM addresses of this layer's instructions (its SYNC/HALT included)
    cycles: int | None = None   # modelled cycles of those instructions

    @property
    def K(self) -> int:
        return self.weight.shape[0]

    @property
    def N(self) -> int:
        return self.weight.shape[1]

    @property
    def x_signed(self) -> bool:
        return self.x_dtype == np.int8

    @property
    def y_signed(self) -> bool:
        return self.y_dtype == np.int8

    def run(self, x: np.ndarray) -> np.ndarray:
        """Return this layer's output for integer input rows ``x[M, K]`` (int32 wrap-around, ORT requantization)."""
        xf = x.astype(np.float64) - self.x_zp
        wf = self.weight.astype(np.float64) - self.w_zp.astype(np.float64)
        acc = wrap_signed(np.matmul(xf, wf).astype(np.int64) + self.bias, 32)  # exact: |x @ w| < 2**53
        return numerics.requantize(acc, self.multiplier, self.y_zp, self.y_dtype, (self.y_lo, self.y_hi))


@dataclass(eq=False)
class GemmProgram:
    """Hold one model being compiled for one config: its layers, boundaries and, later, its memory images."""

    name: str
    graph: Graph
    config: HardwareConfig
    batch: int
    layers: list[GemmLayer] = field(default_factory=list)
    input: Boundary | None = None
    output: Boundary | None = None
    dynamic_batch: bool = False
    done: list[str] = field(default_factory=list)  # names of the stages applied so far
    abuf_words: int | None = None   # ABUF words in use (peak over the run)
    wbuf: list[int] | None = None
    pbuf: list[int] | None = None
    imem: list[int] | None = None

    # -- reference semantics ----------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Return the output rows for input rows ``x[batch * rows, K]`` of the input's integer dtype."""
        for layer in self.layers:
            x = layer.run(x)
        return x

    # -- checking ---------------------------------------------------------------------
    def verify(self) -> "GemmProgram":
        """Check the invariants of every stage applied so far; raise :class:`IRError` (a compiler bug) if one fails."""
        if not self.layers:
            return self
        _check(self.input is not None and self.output is not None, "boundaries not set")
        _check(self.layers[0].x == self.input.tensor, "the first layer does not read the input")
        _check(self.layers[-1].y == self.output.tensor, "the last layer does not write the output")
        for prev, layer in zip(self.layers, self.layers[1:]):
            _check(prev.y == layer.x, f"{layer.name!r} does not read {prev.name!r}'s output")
            _check(prev.N == layer.K and prev.rows == layer.rows and prev.y_dtype == layer.x_dtype,
                   f"{layer.name!r} takes [{layer.rows}, {layer.K}] {layer.x_dtype}, {prev.name!r} makes "
                   f"[{prev.rows}, {prev.N}] {prev.y_dtype}")
        for layer in self.layers:
            self._verify_layer(layer)
        if "PlanMemory" in self.done:
            self._verify_memory_plan()
        if "LayoutWeights" in self.done:
            last, cfg = self.layers[-1], self.config
            _check(len(self.wbuf) == last.w_addr + last.tiling.n_tiles * last.tiling.k_tiles * cfg.rows,
                   "WBUF image and memory plan disagree")
            _check(len(self.pbuf) == last.p_addr + last.tiling.n_tiles * cfg.cols, "PBUF image and memory plan disagree")
        if "EmitProgram" in self.done:
            self._verify_program()
        return self

    def _verify_layer(self, layer: GemmLayer):
        n, where = layer.N, f"layer {layer.name!r}"
        _check(layer.weight.ndim == 2 and layer.weight.dtype == np.int64, f"{where}: weight must be int64 [K, N]")
        _check(layer.bias.shape == (n,) and layer.bias.dtype == np.int64, f"{where}: bias must be int64 [N]")
        _check(layer.multiplier.shape == (n,) and layer.multiplier.dtype == np.float32, f"{where}: multiplier [N]")
        _check(layer.w_zp.shape == (n,), f"{where}: w_zp must be [N]")
        lo, hi = dtype_range(layer.y_dtype)
        _check(lo <= layer.y_lo <= layer.y_hi <= hi and lo <= layer.y_zp <= hi, f"{where}: bad output zp/clamp")
        if "SubtractWeightZeroPoint" in self.done:
            bits = self.config.weight_bits
            _check(not layer.w_zp.any(), f"{where}: weight zero point not subtracted")
            _check(layer.weight.min() >= -(1 << (bits - 1)) and layer.weight.max() < 1 << (bits - 1),
                   f"{where}: W' does not fit {bits} bits")
        if "FoldInputZeroPointIntoBias" in self.done:
            _check(layer.x_zp == 0, f"{where}: input zero point not folded")
            _check(layer.bias.min() >= -(1 << 31) and layer.bias.max() < 1 << 31, f"{where}: bias' exceeds int32")
        if "TileLayers" in self.done:
            t, r = layer.tiling, self.config.rows
            _check(t is not None and t.M == self.batch * layer.rows, f"{where}: tiling M")
            _check(t.k_tiles == chunks(layer.K, r) and t.n_tiles == chunks(n, self.config.cols), f"{where}: tiles")
            _check(1 <= t.m_tile <= self.config.acc_rows, f"{where}: m_tile exceeds the ACC rows of a MATMUL")

    def _verify_memory_plan(self):
        cfg = self.config
        regions = {}
        for i, layer in enumerate(self.layers):
            for tensor, addr, words in ((layer.x, layer.x_addr, layer.tiling.M * chunks(layer.K, cfg.rows)),
                                        (layer.y, layer.y_addr, layer.tiling.M * chunks(layer.N, cfg.cols))):
                _check(addr is not None and 0 <= addr and addr + words <= cfg.abuf.depth, f"{tensor!r} outside ABUF")
                regions[tensor] = (addr, addr + words)
            (a0, a1), (b0, b1) = regions[layer.x], regions[layer.y]
            _check(a1 <= b0 or b1 <= a0, f"layer {layer.name!r} writes over its own input")
            _check(layer.w_addr is not None and layer.p_addr is not None, f"layer {layer.name!r} has no WBUF/PBUF")

    def _verify_program(self):
        _check(self.imem is not None and 0 < len(self.imem) <= self.config.imem.depth, "program does not fit IMEM")
        _check(all(0 <= w < 1 << INSN_BITS for w in self.imem), "instruction word out of range")
        _check(decode(self.imem[-1]).opcode == Opcode.HALT, "the program does not end with HALT")
        _check(self.layers[-1].insns.stop == len(self.imem), "layers do not cover the program")


def _check(condition: bool, message: str):
    if not condition:
        raise IRError(f"back end: {message}")


class Stage:
    """Rewrite or annotate a :class:`GemmProgram`; subclasses implement :meth:`apply`."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        return f"{self.name}()"
