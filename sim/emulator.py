"""Execute compiled programs instruction by instruction on NumPy images of the accelerator's memories.

:class:`EmulatorTarget` is a :class:`~accel.runtime.Target`: it answers the host-link
operations (WRITE, READ, RUN, RESUME, STATUS, IDENT) like the hardware, decodes every instruction
with :func:`accel.isa.decode` and executes it as ``docs/isa.md`` specifies, one whole
MATMUL at a time with NumPy (all rows and tiles at once), requantizing with
:func:`accel.numerics.requantize_integer` on the parameter words. Its cycle count comes
from :mod:`accel.compiler.cycles`, the model the compiler reports.

The emulator is stricter than the hardware: an access past a buffer's depth, a MATMUL that
writes rows it reads, a MATMUL that reads rows an earlier MATMUL wrote without a SYNC in
between (the hardware may not have written them yet), or an invalid parameter word raises
:class:`DeviceError` naming the instruction.

:class:`EmulatorDevice` is the ``emu`` device of :func:`accel.open_device`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import numerics
from ..compiler.cycles import CycleModel, vector_cycles
from ..compiler.layout import pack_words, unpack_param_words, unpack_words, wrap_signed
from ..config import HW_REVISION, HardwareConfig
from ..errors import DeviceError
from ..isa import ADD_TABLE_WORDS, ADDR_BITS, Memory, Opcode, Vop, add_recipe, decode, input_packs, window_addresses
from ..runtime import HardwareDevice, Ident, IdentInfo, Paused, Read, Resume, Run, Status, Target, Write

__all__ = ["EmulatorTarget", "EmulatorDevice"]

STATUS_BUSY = 1
STATUS_DONE = 2
STATUS_PAUSED = 4
_BY_MATMUL, _BY_VECTOR = 1, 2  # what wrote an ABUF word since the last SYNC


class EmulatorTarget(Target):
    """Emulate one accelerator of ``config`` at the instruction level.

    Members: ``imem`` (list of instruction words), ``wbuf`` (int64 ``[depth, cols]`` signed
    weights), ``abuf`` (uint8 ``[depth, rows]`` bytes), ``pbuf`` (list of parameter words),
    ``accbuf`` (int64 ``[depth, cols]`` accumulators), ``cycles`` (of the last RUN).
    """

    def __init__(self, config: HardwareConfig):
        self.config = config
        self.imem = [0] * config.imem.depth
        self.wbuf = np.zeros((config.wbuf.depth, config.cols), np.int64)
        self.abuf = np.zeros((config.abuf.depth, config.rows), np.uint8)
        self.pbuf = [0] * config.pbuf.depth
        self.accbuf = np.zeros((config.accbuf.depth, config.cols), np.int64)
        self._context = 0
        self.cycles = 0
        self.status = 0
        self._decoded: dict[int, _Insn] = {}
        self._params: dict[int, tuple] = {}

    # -- host link ------------------------------------------------------------------------
    def execute(self, ops: list) -> list:
        results = []
        for op in ops:
            if isinstance(op, Write):
                results.append(self._write(op.mem, op.addr, op.words))
            elif isinstance(op, Read):
                results.append(self._read(op.mem, op.addr, op.count))
            elif isinstance(op, Run):
                results.append(self.run())
            elif isinstance(op, Resume):
                results.append(self.resume())
            elif isinstance(op, Status):
                results.append((self.status, self.cycles))
            elif isinstance(op, Ident):
                cfg = self.config
                results.append(IdentInfo(cfg.config_id(), HW_REVISION, cfg.rows, cfg.cols))
            else:
                raise DeviceError(f"emu: not a host-link operation: {op!r}")
        return results

    def _span(self, mem: Memory, addr: int, count: int, what: str) -> slice:
        depth = getattr(self.config, mem.config_field).depth
        if addr < 0 or count < 0 or addr + count > depth:
            raise DeviceError(f"emu: {what} of {count} words at {mem.name} address {addr} runs past its depth {depth}")
        return slice(addr, addr + count)

    def _write(self, mem: Memory, addr: int, words) -> None:
        cfg, span = self.config, self._span(mem, addr, len(words), "WRITE")
        if mem == Memory.IMEM:
            self.imem[span] = [int(w) for w in words]
        elif mem == Memory.WBUF:
            self.wbuf[span] = unpack_words(words, cfg.cols, cfg.weight_bits, signed=True)
        elif mem == Memory.ABUF:
            self.abuf[span] = unpack_words(words, cfg.rows, 8, signed=False)
        elif mem == Memory.PBUF:
            self.pbuf[span] = [int(w) for w in words]
            self._params.clear()
        else:
            self.accbuf[span] = unpack_words(words, cfg.cols, cfg.acc_width, signed=True)
        return None

    def _read(self, mem: Memory, addr: int, count: int) -> list[int]:
        cfg, span = self.config, self._span(mem, addr, count, "READ")
        if mem == Memory.IMEM:
            return list(self.imem[span])
        if mem == Memory.WBUF:
            return pack_words(self.wbuf[span], cfg.weight_bits)
        if mem == Memory.ABUF:
            return pack_words(self.abuf[span], 8)
        if mem == Memory.PBUF:
            return list(self.pbuf[span])
        return pack_words(self.accbuf[span], cfg.acc_width)

    # -- execution ------------------------------------------------------------------------
    def run(self) -> Paused | None:
        """Execute the program from IMEM address 0 to its HALT or first STREAM."""
        self._model = CycleModel(self.config)
        self._geometry: _Geometry | None = None  # the SETCONV registers (unset at RUN)
        self._context = 0  # the instruction context of the next MATMUL (contexts restart at RUN)
        return self._execute(0)

    def resume(self) -> Paused | None:
        """Continue a run paused at a STREAM, at the STREAM's resume PC."""
        if self.status != STATUS_BUSY | STATUS_PAUSED:
            raise DeviceError("emu: RESUME with no run paused at a STREAM")
        return self._execute(self._resume_pc)

    def _execute(self, pc: int) -> Paused | None:
        model = self._model
        self.status = STATUS_BUSY
        pending = np.zeros(self.config.abuf.depth, np.uint8)  # who wrote each ABUF word since the last SYNC (0: none)
        results: list[_Result] = []
        geometry = self._geometry
        while pc < self.config.imem.depth:
            insn = self._decode(pc)
            pc += 1
            reads = 0
            if isinstance(insn, _Geometry):
                geometry = insn
                model.step(Opcode.SETCONV)
                continue
            if insn.opcode == Opcode.MATMUL:
                results.append(self._matmul(pc - 1, insn, pending, geometry))
            elif insn.opcode in (Opcode.SYNC, Opcode.HALT, Opcode.STREAM):
                self._write_results(results)
                results, pending[:] = [], 0
            elif insn.opcode == Opcode.VECTOR:  # implies a SYNC before it
                self._write_results(results)
                results, pending[:] = [], 0
                reads = self._vector(pc - 1, insn, pending, geometry)
            model.step(insn.opcode, insn.count, insn.k_tiles, reads, conv=bool(insn.conv))
            if insn.opcode == Opcode.HALT:
                self.cycles, self.status = model.cycles, STATUS_DONE
                return None
            if insn.opcode == Opcode.STREAM:
                self._geometry, self._resume_pc = geometry, insn.a_addr
                self.cycles, self.status = model.cycles, STATUS_BUSY | STATUS_PAUSED
                return Paused(insn.count)
        self.status = 0
        raise DeviceError(f"emu: the program ran past the end of IMEM (address {self.config.imem.depth - 1}) "
                          f"without a HALT")

    def _decode(self, pc: int) -> "_Insn":
        word = self.imem[pc]
        insn = self._decoded.get(word)
        if insn is None:
            view = decode(word)
            try:
                if view.opcode == Opcode.SETCONV:
                    insn = self._decoded[word] = _Geometry(*(int(getattr(view, name)) for name in _Geometry._fields))
                else:
                    insn = self._decoded[word] = _Insn(*(getattr(view, name) for name in _Insn._fields))
            except ValueError:
                raise DeviceError(f"emu: IMEM {pc} holds opcode {word & 0xF}, which is not an instruction") from None
        return insn

    def _matmul(self, pc: int, insn: "_Insn", pending: np.ndarray, geometry: "_Geometry | None") -> "_Result":
        """Accumulate one MATMUL; return its int32 sums, which :meth:`_write_results` requantizes into ABUF."""
        cfg, where = self.config, f"emu: MATMUL at IMEM {pc}"
        R, count, k_tiles = cfg.rows, insn.count, insn.k_tiles
        if not 1 <= count <= cfg.acc_rows or k_tiles < 1:
            raise DeviceError(f"{where}: count {count} must be 1..{cfg.acc_rows} and k_tiles {k_tiles} >= 1")
        if cfg.deferred_requant and insn.acc_addr + count > cfg.acc_rows:
            raise DeviceError(f"{where}: ACC rows {insn.acc_addr}..{insn.acc_addr + count - 1} exceed the "
                              f"{cfg.acc_rows} rows of an instruction context's half of ACC")
        dtype = np.dtype(np.int8 if insn.y_signed else np.uint8)
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        if not (lo <= insn.y_zp <= hi and lo <= insn.y_lo <= insn.y_hi <= hi):
            raise DeviceError(f"{where}: y_zp {insn.y_zp} and clamp [{insn.y_lo}, {insn.y_hi}] must lie in "
                              f"[{lo}, {hi}] for {dtype.name} results")
        w = self.wbuf[self._span(Memory.WBUF, insn.w_addr, k_tiles * R, where)]
        m = np.arange(count)
        if insn.conv:
            if geometry is None:
                raise DeviceError(f"{where} is a conv-mode MATMUL, but no SETCONV ran before it")
            if k_tiles != geometry.kh * geometry.kw * geometry.c_chunks:
                raise DeviceError(f"{where}: k_tiles {k_tiles} must be kh*kw*c_chunks = "
                                  f"{geometry.kh}*{geometry.kw}*{geometry.c_chunks} in conv mode")
            taps = np.arange(k_tiles)
            cc = taps % geometry.c_chunks
            kx = (taps // geometry.c_chunks) % geometry.kw
            ky = taps // (geometry.c_chunks * geometry.kw)
            if geometry.pack:
                if geometry.c_chunks != 1 or geometry.pack not in input_packs(R):
                    raise DeviceError(f"{where}: packed taps (pack {geometry.pack}) need c_chunks = 1 and "
                                      f"2**pack pixels per word to divide its {R} bytes, not c_chunks "
                                      f"{geometry.c_chunks}")
                a_idx, a_byte, valid = geometry.packed_bytes(insn, m, ky, kx, R)
            else:
                a_idx, valid = geometry.addresses(insn, m, ky, kx, cc)
        else:
            a_idx = insn.a_addr + m[:, None] * insn.a_stride + np.arange(k_tiles)[None, :]
            valid = np.ones(a_idx.shape, bool)
        y_idx = insn.y_addr + m * insn.y_stride
        read = a_idx[valid]
        if read.size:
            self._span(Memory.ABUF, int(read.min()), int(read.max()) - int(read.min()) + 1, where)
        self._span(Memory.ABUF, int(y_idx.min()), int(y_idx.max()) - int(y_idx.min()) + 1, where)
        self._check_hazards(where, read, y_idx, pending)
        if insn.conv and geometry.pack:  # [count, k_tiles, R] bytes, gathered one at a time
            x = self.abuf[np.where(valid, a_idx, 0), np.where(valid, a_byte, 0)]
        else:
            x = self.abuf[np.where(valid, a_idx, 0)]  # [count, k_tiles, R] bytes
        if insn.conv:  # valid is per byte when packed, per word otherwise
            x[~valid] = np.uint8(geometry.x_pad & 0xFF)
        x = (x.view(np.int8) if insn.x_signed else x).astype(np.float64).reshape(count, k_tiles * R)
        wf = w.astype(np.float64)
        # Exact in float64: |x @ w| < 2**53. Two's complement wrap-around is modular, so wrapping
        # once at the end equals wrapping after every tile.
        acc = wrap_signed(np.matmul(x, wf).astype(np.int64), cfg.acc_width)
        if cfg.deferred_requant:  # the context's half of ACC holds the full sums (deferred requantization)
            base = self._context * cfg.acc_rows + insn.acc_addr
            self.accbuf[base:base + count] = acc
            self._context ^= 1
        elif k_tiles > 1:  # the ACC rows hold the partial sums before the last tile
            partial = np.matmul(x[:, :-R], wf[:-R]).astype(np.int64)
            self.accbuf[self._span(Memory.ACCBUF, insn.acc_addr, count, where)] = wrap_signed(partial, cfg.acc_width)
        bias, multiplier = self._param_words(pc, insn.p_addr)
        return _Result(pc, y_idx, wrap_signed(acc + bias, 32), np.broadcast_to(multiplier, acc.shape),
                       (dtype, insn.y_zp, insn.y_lo, insn.y_hi))

    @staticmethod
    def _check_hazards(where: str, read: np.ndarray, y_idx: np.ndarray, pending: np.ndarray) -> None:
        """Refuse reads of unsynchronized results and writes over the instruction's own input; mark ``y_idx`` pending."""
        if pending[read].any():
            writer = "MATMUL" if pending[read][pending[read] != 0][0] == _BY_MATMUL else "VECTOR"
            raise DeviceError(f"{where} reads ABUF {int(read[pending[read] != 0][0])}, which an earlier {writer} "
                              f"writes with no SYNC in between")
        if read.size and not (y_idx.max() < read.min() or y_idx.min() > read.max()) and np.isin(y_idx, read).any():
            raise DeviceError(f"{where} writes ABUF {int(y_idx[np.isin(y_idx, read)][0])}, which it also reads")
        pending[y_idx] = _BY_VECTOR if where.startswith("emu: VECTOR") else _BY_MATMUL

    def _vector(self, pc: int, insn: "_Insn", pending: np.ndarray, geometry: "_Geometry | None") -> int:
        """Execute one VECTOR instruction into ABUF; return the ABUF words it reads (for the cycle model)."""
        cfg, where = self.config, f"emu: VECTOR {insn.vop.name} at IMEM {pc}"
        count = insn.count
        if count == 0:
            return 0
        y_dtype = np.dtype(np.int8 if insn.y_signed else np.uint8)
        lo, hi = np.iinfo(y_dtype).min, np.iinfo(y_dtype).max
        if not (lo <= insn.y_zp <= hi and lo <= insn.y_lo <= insn.y_hi <= hi):
            raise DeviceError(f"{where}: y_zp {insn.y_zp} and clamp [{insn.y_lo}, {insn.y_hi}] must lie in "
                              f"[{lo}, {hi}] for {y_dtype.name} results")

        def words(idx):
            self._span(Memory.ABUF, int(idx.min()), int(idx.max()) - int(idx.min()) + 1, where)
            raw = self.abuf[idx]
            return (raw.view(np.int8) if insn.x_signed else raw).astype(np.int64)

        m = np.arange(count)
        if insn.vop in (Vop.MAX, Vop.GSUM) and geometry is None:
            raise DeviceError(f"{where} needs the geometry registers, but no SETCONV ran before it")
        if insn.vop == Vop.MAX:
            g = geometry
            if g.pack:
                raise DeviceError(f"{where}: VECTOR MAX reads whole pixels; the geometry registers have packed "
                                  f"taps (pack {g.pack})")
            ky, kx = np.divmod(np.arange(g.kh * g.kw), g.kw)
            chunks_ = np.arange(g.c_chunks)
            # [count, taps, c_chunks] addresses
            a_idx, valid = g.addresses(insn, m, np.repeat(ky, g.c_chunks), np.repeat(kx, g.c_chunks),
                                       np.tile(chunks_, g.kh * g.kw))
            a_idx, valid = a_idx.reshape(count, -1, g.c_chunks), valid.reshape(count, -1, g.c_chunks)
            if not valid.any(axis=1).all():
                raise DeviceError(f"{where}: an output pixel's window lies wholly in the padding")
            x = words(np.where(valid, a_idx, a_idx[valid][0]))
            x = np.where(valid[..., None], x, np.iinfo(np.int64).min).max(axis=1)  # [count, c_chunks, R]
            y_idx = (insn.y_addr + m[:, None] * insn.y_stride + chunks_[None, :]).ravel()
            read = a_idx[valid]
            y = np.clip(x.reshape(-1, cfg.rows), insn.y_lo, insn.y_hi)
            reads = vector_cycles(self.config, insn.vop, count, g.c_chunks, g.kh, g.kw)
        elif insn.vop == Vop.GSUM:
            c_chunks = geometry.c_chunks
            a_idx = insn.a_addr + m[:, None] * insn.a_stride + np.arange(c_chunks)[None, :]
            acc = words(a_idx).sum(axis=0)  # [c_chunks, R], exact
            bias, multiplier = self._param_words(pc, insn.p_addr, c_chunks * cfg.rows)
            v = wrap_signed(acc.ravel() + bias, 32)
            try:
                y = numerics.requantize_integer(v, multiplier, insn.y_zp, y_dtype, (insn.y_lo, insn.y_hi))
            except ValueError as exc:
                raise DeviceError(f"{where}: {exc}") from None
            y = y.reshape(c_chunks, cfg.rows)
            y_idx, read = insn.y_addr + np.arange(c_chunks), a_idx.ravel()
            reads = vector_cycles(self.config, insn.vop, count, c_chunks)
        else:  # ADD
            a_idx, b_idx = insn.a_addr + m * insn.a_stride, insn.w_addr + m * insn.b_stride
            y = numerics.qlinear_add_by_recipe(words(a_idx), words(b_idx), self._add_recipe(pc, insn.p_addr),
                                               insn.y_lo, insn.y_hi)
            y_idx, read = insn.y_addr + m * insn.y_stride, np.concatenate([a_idx, b_idx])
            reads = vector_cycles(self.config, insn.vop, count)
        self._span(Memory.ABUF, int(y_idx.min()), int(y_idx.max()) - int(y_idx.min()) + 1, where)
        self._check_hazards(where, read, y_idx, pending)
        self.abuf[y_idx] = np.asarray(y, np.int64).astype(y_dtype).view(np.uint8)
        return reads

    def _add_recipe(self, pc: int, p_addr: int) -> numerics.AddRecipe:
        """Return the ``numerics.AddRecipe`` in PBUF words ``p_addr .. p_addr + ADD_TABLE_WORDS``."""
        span = self._span(Memory.PBUF, p_addr, 1 + ADD_TABLE_WORDS, f"emu: VECTOR ADD at IMEM {pc}")
        return add_recipe(self.pbuf[span])

    def _write_results(self, results: list["_Result"]) -> None:
        """Requantize finished MATMULs into ABUF, one NumPy call per distinct (dtype, zero point, clamp).

        Results land at the next SYNC or HALT; no instruction before it may read them (the
        hazard check in :meth:`_matmul`), so the order of writes is invisible.
        """
        groups: dict[tuple, list[_Result]] = {}
        for result in results:
            groups.setdefault(result.output, []).append(result)
        for (dtype, zp, lo, hi), group in groups.items():
            v = np.concatenate([r.sums for r in group])
            multiplier = np.concatenate([r.multiplier for r in group])
            try:
                y = numerics.requantize_integer(v, multiplier, zp, dtype, (lo, hi))
            except ValueError as exc:
                raise DeviceError(f"emu: MATMUL at IMEM {group[0].pc}: {exc}") from None
            self.abuf[np.concatenate([r.rows for r in group])] = y.view(np.uint8)

    def _param_words(self, pc: int, p_addr: int, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the int32 biases and float32 multipliers of PBUF words ``p_addr .. p_addr + count - 1`` (``cols``)."""
        count = self.config.cols if count is None else count
        params = self._params.get((p_addr, count))
        if params is None:
            span = self._span(Memory.PBUF, p_addr, count, f"emu: instruction at IMEM {pc}")
            bias, mantissa, exponent = unpack_param_words(self.pbuf[span])
            bad = (mantissa < 1 << 23) | (exponent < -63) | (exponent > -16)
            if bad.any():
                raise DeviceError(f"emu: instruction at IMEM {pc}: PBUF word {p_addr + int(np.flatnonzero(bad)[0])} holds "
                                  f"no valid multiplier (mantissa must be in [2**23, 2**24), exponent in [-63, -16])")
            multiplier = np.ldexp(mantissa.astype(np.float64), exponent).astype(np.float32)  # exact: 24-bit mantissa
            params = self._params[(p_addr, count)] = (bias, multiplier)
        return params


class _Insn(NamedTuple):
    """Hold one decoded instruction's fields as plain integers (decoding through the ``isa.Insn`` view)."""

    opcode: Opcode
    x_signed: int
    y_signed: int
    w_addr: int
    a_addr: int
    a_stride: int
    count: int
    k_tiles: int
    acc_addr: int
    p_addr: int
    y_addr: int
    y_stride: int
    y_zp: int
    y_lo: int
    y_hi: int
    conv: int
    oy0: int
    ox0: int
    vop: Vop
    b_stride: int


class _Geometry(NamedTuple):
    """Hold the geometry registers a SETCONV loads (``isa.ConvGeometry``)."""

    in_h: int
    in_w: int
    out_w: int
    kh: int
    kw: int
    stride_y: int
    stride_x: int
    dil_y: int
    dil_x: int
    pad_t: int
    pad_l: int
    c_chunks: int
    x_pad: int
    step_x: int
    step_row: int
    tap_x: int
    tap_row: int
    pack: int

    def inputs(self, insn: _Insn, m: np.ndarray, ky: np.ndarray, kx: np.ndarray):
        """Return the input coordinates ``iy, ix`` ``[len(m), len(ky)]`` of output pixels ``m`` (from ``(oy0, ox0)``) at taps ``(ky, kx)``.

        ``kx`` steps ``dil_x << pack`` pixels: one kernel column, or one tap group when packed.
        """
        if self.out_w == 0:
            raise DeviceError("emu: the geometry registers have out_w = 0")
        pixel = insn.oy0 * self.out_w + insn.ox0 + m
        oy, ox = np.divmod(pixel, self.out_w)
        iy = oy[:, None] * self.stride_y + ky[None, :] * self.dil_y - self.pad_t
        ix = ox[:, None] * self.stride_x + kx[None, :] * (self.dil_x << self.pack) - self.pad_l
        return iy, ix

    def addresses(self, insn: _Insn, m: np.ndarray, ky: np.ndarray, kx: np.ndarray, cc: np.ndarray):
        """Return the ABUF words ``[len(m), len(ky)]`` of output pixels ``m`` (from ``(oy0, ox0)``) at taps ``(ky, kx, cc)``, and which lie inside the input."""
        iy, ix = self.inputs(insn, m, ky, kx)
        valid = (iy >= 0) & (iy < self.in_h) & (ix >= 0) & (ix < self.in_w)
        words = window_addresses(self, insn.a_addr, insn.ox0, m[:, None], ky[None, :], kx[None, :])
        return (words + cc[None, :]) & ((1 << ADDR_BITS) - 1), valid

    def packed_bytes(self, insn: _Insn, m: np.ndarray, ky: np.ndarray, kx: np.ndarray, rows: int):
        """Return the ABUF word and byte ``[len(m), len(ky), rows]`` of each input byte with packed taps, and which lie inside.

        With ``pack = p`` an ABUF word holds ``2**p`` pixels of ``rows >> p`` bytes and the
        addresses count pixels: byte ``r`` of tap group ``kx`` of output pixel ``m`` is byte
        ``r % (rows >> p)`` of pixel ``a + r // (rows >> p)``, where ``a`` is the group's
        first pixel (:func:`accel.isa.window_addresses`). The hardware reads the word of
        ``a`` and the next one and rotates them; bytes of pixels outside the input read
        ``x_pad``.
        """
        p = self.pack
        per_pixel = rows >> p
        iy, ix = self.inputs(insn, m, ky, kx)
        slot = np.arange(rows) // per_pixel
        ix = ix[..., None] + slot
        valid = ((iy >= 0) & (iy < self.in_h))[..., None] & (ix >= 0) & (ix < self.in_w)
        first = window_addresses(self, insn.a_addr, insn.ox0, m[:, None], ky[None, :], kx[None, :])
        pixels = (first[..., None] + slot) & ((1 << ADDR_BITS) - 1)
        byte = (pixels & ((1 << p) - 1)) * per_pixel + np.arange(rows) % per_pixel
        return pixels >> p, byte, valid


class _Result(NamedTuple):
    """Hold one MATMUL's int32 sums until they are requantized into ABUF rows."""

    pc: int
    rows: np.ndarray        # ABUF word of each output row
    sums: np.ndarray        # int32 [count, cols]: acc + bias
    multiplier: np.ndarray  # float32 [count, cols]
    output: tuple           # (dtype, y_zp, y_lo, y_hi)


class EmulatorDevice(HardwareDevice):
    """Run compiled artifacts on the instruction-level emulator (``accel.open_device("emu")``)."""

    name = "emu"

    def _make_target(self, config: HardwareConfig) -> EmulatorTarget:
        return EmulatorTarget(config)
