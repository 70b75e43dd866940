"""Model the accelerator's memories and instructions in NumPy, and place GEMM layers in them.

:class:`CoreModel` is a small reference of ``docs/isa.md`` written from the document, not
from the compiler or the emulator: memory images of Python ints (addresses wrap modulo
each depth, as in the hardware), the host-link WRITE/READ, and NOP/MATMUL/SYNC/HALT with
the MATMUL loop vectorized over the rows. It assumes, as the compiler guarantees, that a
MATMUL's result rows do not overwrite its own input rows.

:func:`place_gemm` lays out one quantized GEMM ``Y = requant(X @ W + bias)`` the way
``docs/isa.md`` describes and returns its MATMUL instructions and the memory writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel import isa, numerics
from accel.compiler import layout
from accel.config import HardwareConfig

__all__ = ["CoreModel", "Gemm", "place_gemm", "unpack", "pack"]


def unpack(words, count: int, bits: int, signed: bool) -> np.ndarray:
    """Unpack words into an int64 matrix ``[len(words), count]`` of ``bits``-bit elements, element 0 lowest."""
    return layout.unpack_words(list(words), count, bits, signed)


def pack(values, bits: int) -> list[int]:
    """Pack each row of an integer matrix into one word, ``bits`` per element (two's complement)."""
    values = np.asarray(values, np.int64)
    return layout.pack_words(values.reshape(len(values), -1), bits)


def _wrap(values, bits: int) -> np.ndarray:
    half = np.int64(1) << (bits - 1)
    return ((np.asarray(values, np.int64) + half) & ((np.int64(1) << bits) - 1)) - half


class CoreModel:
    """Hold NumPy-side images of the five memories and execute programs on them."""

    def __init__(self, config: HardwareConfig):
        self.config = config
        self.words = {mem: [0] * getattr(config, mem.config_field).depth for mem in isa.Memory}
        self.executed = 0
        self.geometry = isa.ConvGeometry.const({})

    def depth(self, mem: isa.Memory) -> int:
        return len(self.words[mem])

    def write(self, mem: isa.Memory, addr: int, words) -> None:
        bits = {isa.Memory.IMEM: isa.INSN_BITS, isa.Memory.WBUF: self.config.wbuf_word_bits,
                isa.Memory.ABUF: self.config.abuf_word_bits, isa.Memory.PBUF: isa.PARAM_BITS,
                isa.Memory.ACCBUF: self.config.acc_word_bits}[mem]
        for i, word in enumerate(words):
            self.words[mem][(addr + i) % self.depth(mem)] = int(word) & ((1 << bits) - 1)

    def read(self, mem: isa.Memory, addr: int, count: int) -> list[int]:
        return [self.words[mem][(addr + i) % self.depth(mem)] for i in range(count)]

    def run(self, max_instructions: int = 1_000_000) -> None:
        """Execute from PC 0 until HALT."""
        for pc in range(max_instructions):
            insn = isa.decode(self.words[isa.Memory.IMEM][pc % self.depth(isa.Memory.IMEM)])
            self.executed += 1
            if insn.opcode == isa.Opcode.HALT:
                return
            if insn.opcode == isa.Opcode.SETCONV:
                self.geometry = insn
            if insn.opcode == isa.Opcode.MATMUL and insn.count and insn.k_tiles:
                self.matmul(insn)
            if insn.opcode == isa.Opcode.VECTOR and insn.count:
                if insn.vop == isa.Vop.MAX:
                    self.vector_max(insn)
                elif insn.vop == isa.Vop.GSUM:
                    self.vector_gsum(insn)
                elif insn.vop == isa.Vop.ADD:
                    self.vector_add(insn)
        raise RuntimeError(f"no HALT within {max_instructions} instructions")

    def _rows(self, mem, addresses):
        depth = self.depth(mem)
        return [self.words[mem][a % depth] for a in addresses]

    def matmul(self, insn) -> None:
        """Execute one MATMUL exactly as the pseudo-code of ``docs/isa.md``, rows in parallel."""
        c = self.config
        rows, cols, aw = c.rows, c.cols, c.acc_width
        m = np.arange(insn.count)
        acc_addr = insn.acc_addr + m
        acc = None
        for kt in range(insn.k_tiles):
            w = unpack(self._rows(isa.Memory.WBUF, insn.w_addr + kt * rows + np.arange(rows)),
                       cols, c.weight_bits, True)
            if insn.conv:
                x = self._conv_rows(insn, kt)
            else:
                x = unpack(self._rows(isa.Memory.ABUF, insn.a_addr + kt + m * insn.a_stride),
                           rows, 8, bool(insn.x_signed))
            s = x @ w
            if kt == 0:
                acc = s
            else:
                acc = unpack(self._rows(isa.Memory.ACCBUF, acc_addr), cols, aw, True) + s
            acc = _wrap(acc, aw)
            if kt < insn.k_tiles - 1:
                for a, row in zip(acc_addr, pack(acc, aw)):
                    self.words[isa.Memory.ACCBUF][a % self.depth(isa.Memory.ACCBUF)] = row
        y = self._requantize(acc, insn.p_addr + np.arange(cols), insn)
        for addr, row in zip(insn.y_addr + m * insn.y_stride, pack(y, 8)):
            self.words[isa.Memory.ABUF][addr % self.depth(isa.Memory.ABUF)] = row

    def _requantize(self, acc, p_addresses, insn) -> np.ndarray:
        """Return ``requant(acc + bias)`` with the ParamWords at ``p_addresses`` (one per column), as int64."""
        params = np.array(self._rows(isa.Memory.PBUF, p_addresses), dtype=object)
        bias = _wrap([int(p) & 0xFFFF_FFFF for p in params], 32)
        mantissa = np.array([(int(p) >> 32) & 0xFF_FFFF for p in params], np.int64)
        exponent = _wrap([int(p) >> 56 for p in params], 8)
        multiplier = (mantissa.astype(np.float64) * np.exp2(exponent.astype(np.float64))).astype(np.float32)
        dtype = np.int8 if insn.y_signed else np.uint8
        v = _wrap(acc + bias, 32)
        y = numerics.requantize_integer(v, multiplier, int(insn.y_zp), dtype,
                                        clamp=(int(insn.y_lo), int(insn.y_hi)))
        return y.astype(np.int64)

    def _pixels(self, insn, count):
        """Return the output pixels ``(oy, ox)`` of rows ``0..count-1``, counted from ``(oy0, ox0)``."""
        index = insn.ox0 + np.arange(count)
        return insn.oy0 + index // self.geometry.out_w, index % self.geometry.out_w

    def _window(self, insn, oy, ox, ky, kx):
        """Return the input pixels of tap ``(ky, kx)``: ``(word address without cc, inside)``."""
        g = self.geometry
        iy = oy * g.stride_y + ky * g.dil_y - g.pad_t
        ix = ox * g.stride_x + kx * g.dil_x - g.pad_l
        inside = (iy >= 0) & (iy < g.in_h) & (ix >= 0) & (ix < g.in_w)
        return isa.window_addresses(g, int(insn.a_addr), int(insn.ox0), np.arange(len(oy)), ky, kx), inside

    def _abuf_bytes(self, addresses, signed: bool) -> np.ndarray:
        return unpack(self._rows(isa.Memory.ABUF, addresses), self.config.rows, 8, signed)

    def _conv_rows(self, insn, kt) -> np.ndarray:
        """Return the im2col input rows of K tile ``kt`` (``docs/isa.md``, MATMUL with conv = 1)."""
        g = self.geometry
        cc, kx, ky = kt % g.c_chunks, (kt // g.c_chunks) % g.kw, kt // (g.c_chunks * g.kw)
        oy, ox = self._pixels(insn, insn.count)
        base, inside = self._window(insn, oy, ox, ky, kx)
        x = self._abuf_bytes(base + cc, bool(insn.x_signed))
        pad = _wrap(int(g.x_pad) & 0xFF, 8) if insn.x_signed else int(g.x_pad) & 0xFF
        return np.where(inside[:, None], x, pad)

    def vector_max(self, insn) -> None:
        """Execute VECTOR MAX: window max over the taps inside the input (type minimum if none), then the clamp."""
        g = self.geometry
        oy, ox = self._pixels(insn, insn.count)
        floor = -128 if insn.x_signed else 0
        for cc in range(g.c_chunks):
            best = np.full((insn.count, self.config.rows), floor, np.int64)
            for ky in range(g.kh):
                for kx in range(g.kw):
                    base, inside = self._window(insn, oy, ox, ky, kx)
                    x = self._abuf_bytes(base + cc, bool(insn.x_signed))
                    best = np.where(inside[:, None], np.maximum(best, x), best)
            best = np.clip(best, int(insn.y_lo), int(insn.y_hi))  # TODO: docs/isa.md omits this clamp
            for addr, row in zip(insn.y_addr + np.arange(insn.count) * insn.y_stride + cc, pack(best, 8)):
                self.words[isa.Memory.ABUF][addr % self.depth(isa.Memory.ABUF)] = row

    def vector_gsum(self, insn) -> None:
        """Execute VECTOR GSUM: exact lane sums over ``count`` pixels, requantized per lane."""
        rows = self.config.rows
        for cc in range(self.geometry.c_chunks):
            x = self._abuf_bytes(insn.a_addr + np.arange(insn.count) * insn.a_stride + cc, bool(insn.x_signed))
            acc = _wrap(x.sum(axis=0, keepdims=True), self.config.acc_width)
            y = self._requantize(acc, insn.p_addr + cc * rows + np.arange(rows), insn)
            self.words[isa.Memory.ABUF][(insn.y_addr + cc) % self.depth(isa.Memory.ABUF)] = pack(y, 8)[0]


    def vector_add(self, insn) -> None:
        """Execute VECTOR ADD with the recipe in PBUF (``isa.add_recipe``, ``numerics.qlinear_add_by_recipe``)."""
        recipe = isa.add_recipe(self._rows(isa.Memory.PBUF, insn.p_addr + np.arange(1 + isa.ADD_TABLE_WORDS)))
        i = np.arange(insn.count)
        a = self._abuf_bytes(insn.a_addr + i * insn.a_stride, bool(insn.x_signed))
        b = self._abuf_bytes(insn.w_addr + i * insn.b_stride, bool(insn.x_signed))
        q = numerics.qlinear_add_by_recipe(a, b, recipe, *((-128, 127) if insn.y_signed else (0, 255)))
        y = np.clip(q, int(insn.y_lo), int(insn.y_hi))
        for addr, row in zip(insn.y_addr + i * insn.y_stride, pack(y, 8)):
            self.words[isa.Memory.ABUF][addr % self.depth(isa.Memory.ABUF)] = row


@dataclass
class Gemm:
    """Describe one GEMM placed in the memories: its instructions, writes and output region."""

    x: np.ndarray
    w: np.ndarray
    instructions: list[int]
    writes: list[tuple]            # (memory, address, words)
    y_addr: int
    y_words: int
    acc_addr: int
    count: int
    k_tiles: int
    n_tiles: int
    macs: int = field(init=False)

    def __post_init__(self):
        self.macs = self.x.shape[0] * self.x.shape[1] * self.w.shape[1]


def place_gemm(config: HardwareConfig, rng: np.random.Generator, m: int, k: int, n: int, *,
               a_addr: int, w_addr: int, p_addr: int, y_addr: int, acc_addr: int = 0,
               x_signed: bool = True, y_signed: bool = True, clamp=None, x=None,
               write_x: bool = True) -> Gemm:
    """Lay out a random ``[m, k] x [k, n]`` GEMM with the layouts of ``docs/isa.md``.

    ``X`` (random, or ``x``) goes to ABUF at ``a_addr`` with stride ``ceil(k / rows)``; the
    weights to WBUF at ``w_addr``, one block of ``k_tiles * rows`` words per column tile;
    ``n`` parameter words to PBUF at ``p_addr``; the output rows to ABUF at ``y_addr`` with
    stride ``ceil(n / cols)``. ``clamp`` is ``(lo, hi)`` or None for the full output range.
    """
    rows, cols = config.rows, config.cols
    k_tiles, n_tiles = -(-k // rows), -(-n // cols)
    if x is None:
        lo, hi = (-128, 127) if x_signed else (0, 255)
        x = rng.integers(lo, hi + 1, (m, k))
    w_lo = -(1 << (config.weight_bits - 1))
    w = rng.integers(w_lo, -w_lo, (k, n))
    # Scale so the outputs spread over the 8-bit range with some saturation.
    spread = np.sqrt(k) * 128 * (-w_lo) / 2
    multiplier = (rng.uniform(0.5, 2.0, n) * 100 / spread).astype(np.float32)
    mantissa, exponent = numerics.decompose_multiplier(multiplier)
    bias = rng.integers(-(1 << 16), 1 << 16, n)
    y_zp = int(rng.integers(-20, 21)) if y_signed else int(rng.integers(0, 60))
    lo, hi = clamp if clamp is not None else ((-128, 127) if y_signed else (0, 255))

    writes = []
    if write_x:
        padded = np.zeros((m, k_tiles * rows), np.int64)
        padded[:, :k] = x
        writes.append((isa.Memory.ABUF, a_addr, pack(padded.reshape(m * k_tiles, rows), 8)))
    padded_w = np.zeros((k_tiles * rows, n_tiles * cols), np.int64)
    padded_w[:k, :n] = w
    tiles = padded_w.reshape(k_tiles * rows, n_tiles, cols).transpose(1, 0, 2).reshape(-1, cols)
    writes.append((isa.Memory.WBUF, w_addr, pack(tiles, config.weight_bits)))
    # Channels past n get bias 0 and multiplier 1 (a zero mantissa is not a valid ParamWord).
    one_mantissa, one_exponent = numerics.decompose_multiplier(np.float32(1.0))
    params = [isa.param_word(int(b), int(mm), int(e)) for b, mm, e in zip(bias, mantissa, exponent)]
    params += [isa.param_word(0, int(one_mantissa), int(one_exponent))] * (n_tiles * cols - n)
    writes.append((isa.Memory.PBUF, p_addr, params))
    instructions = [
        isa.matmul(x_signed=int(x_signed), y_signed=int(y_signed), w_addr=w_addr + nt * k_tiles * rows,
                   a_addr=a_addr, a_stride=k_tiles, count=m, k_tiles=k_tiles, acc_addr=acc_addr,
                   p_addr=p_addr + nt * cols, y_addr=y_addr + nt, y_stride=n_tiles,
                   y_zp=y_zp, y_lo=lo, y_hi=hi)
        for nt in range(n_tiles)]
    return Gemm(x=np.asarray(x), w=w, instructions=instructions, writes=writes, y_addr=y_addr,
                y_words=m * n_tiles, acc_addr=acc_addr, count=m, k_tiles=k_tiles, n_tiles=n_tiles)
