"""Fetch, decode and execute the program: the MATMUL sequencer (with im2col), accumulation and write-back.

:class:`Controller` runs a program from IMEM when started and keeps the systolic array
busy. Its parts work concurrently and hand work to each other in instruction order:

* **front**: fetches an instruction, decodes it through a view of :class:`accel.isa.Insn`
  and dispatches a ``MATMUL`` to the weight and input sequencers and to the back end (an
  instruction *context*); ``SYNC`` and ``HALT`` wait until everything before them is
  written back; ``SETCONV`` loads the geometry registers (a view of
  :class:`accel.isa.ConvGeometry`); a ``VECTOR`` waits like ``SYNC``, then starts the
  :class:`~accel.hdl.vector.VectorUnit` (``vec_start``) and waits until it is done; a
  ``STREAM`` waits like ``SYNC``, then pauses (``paused``, the memories go to the host)
  until ``resume`` and goes on at the instruction's resume PC;
* **weight sequencer**: streams the ``k_tiles * rows`` consecutive WBUF words of an
  instruction into the array's ``load`` port. The array's shadow tile lets it load tile
  ``kt + 1`` while tile ``kt`` streams;
* **parameter loader**: reads the instruction's ``cols`` PBUF words into one of two
  parameter banks (one per context);
* **input sequencer**: streams ``count`` ABUF rows per tile into the array's ``x`` port,
  sign- or zero-extended to 9 bits, ``first`` on row 0 of each tile, tagged
  ``{m, first_tile, last_tile}``. With ``conv = 1`` the rows come from the im2col
  address generator: a per-tile base (kernel tap ``(ky, kx)`` and channel chunk ``cc``,
  ``cc`` fastest) plus a per-row pixel offset, both kept with adders only (``ox`` wraps
  at ``out_w`` into the next output row); a row whose input pixel is outside the image
  streams ``x_pad`` bytes instead. The address steps come precomputed (SETCONV ``step_x``,
  ``step_row``, ``tap_x``, ``tap_row``; ``a_addr`` is the first window's corner); ``PREP``
  registers the first pixel's input coordinates (``oy0*stride_y``, ``ox0*stride_x``).
  With packed taps (SETCONV ``pack``) addresses count pixels, ``2**pack`` to a word: a row
  is the word holding its first pixel and the next one (``abuf_r_next``), rotated so that
  pixel comes first, with ``x_pad`` in the bytes of pixels outside the image;
* **accumulate stage**: adds each output row to ``ACC[acc_addr + m]`` (unless it is of the
  first tile) and writes it back (unless it is of the last tile); last-tile rows go to the
  requantizer with their instruction's parameters;
* **drainer** (deferred requantization, ``config.deferred_requant``): instead, last-tile rows
  are written back too, each context in its half of ACC, and once a context's rows are all
  there the drainer reads them through its own ACC read port, one every
  ``requant_spacing`` cycles, into the requantizer;
* **write-back**: stores requantized rows at ``ABUF[y_addr + m*y_stride]``.

Two contexts let one instruction's results drain while the next one streams.

Timing (measured on the RTL, ``tests/sim/test_core.py``; ``R = rows``, ``C = cols``,
array latency ``R + C + 1``, requantizer latency 9 with one lane per column):

* a run of one ``MATMUL`` and ``HALT`` takes
  ``count + (k_tiles - 1) * max(count, R + 1) + 2R + C + 16`` cycles: fetch, decode and
  dispatch (3), the first weight tile (``R + 1``), the input read (1), streaming, then the
  drain: array, accumulate (1), requantizer, write-back (1) and the ``HALT`` (2);
* each further ``MATMUL`` adds ``k_tiles * max(count, R + 1)``: its first tile loads while
  the previous instruction's last tile streams, and its fetch and parameter load overlap
  too. Only two instructions can be in flight, so an instruction that streams for fewer
  cycles than the drain (about ``R + C + 14``) can make the one after next wait. With
  time-multiplexed requantizer lanes (``requant_spacing > 1``) the requantization is
  deferred: the drainer reads a context's rows from ACC ``requant_spacing`` cycles apart
  once all of them are accumulated, while the next instruction streams (``compiler/cycles.py``);
* ``SYNC`` waits for the full drain; ``NOP`` and ``SETCONV`` take 2 cycles, a
  ``HALT``-only program 3;
* a conv-mode ``MATMUL`` streams exactly like a plain one (one row per cycle, padding rows
  included); its fetch takes 2 more cycles (``PREP``), which show when nothing streams
  before it or when the front end is what it waits for (short instructions); after a
  long enough ``MATMUL`` the preparation overlaps, and it adds ``k_tiles * max(count, R + 1)``
  as above. A 3x3 conv over 32x32x16 to 16 channels on 4x4 takes 147,488 cycles for
  147,456 ideal (99.98%);
* a ``VECTOR`` costs its drain wait plus the vector unit's time (``hdl/vector.py``).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .pe import X_WIDTH

__all__ = ["Tag", "TAG_WIDTH", "Controller", "window_start", "requantizer_members"]

_CONTEXTS = 2  # the code below assumes exactly two (one bit pointers)


class Tag(data.Struct):
    """Lay out the tag that travels with each input row through the array and the requantizer."""

    m: unsigned(16)        # row within the tile, 0 .. count-1
    first_tile: unsigned(1)
    last_tile: unsigned(1)


TAG_WIDTH = data.Layout.cast(Tag).size


class _Context(data.Struct):
    """Hold what the back end needs of one MATMUL in flight (the parameters live in a bank)."""

    count: unsigned(16)
    acc_addr: unsigned(16)
    y_addr: unsigned(20)
    y_stride: unsigned(16)
    y_zp: signed(9)
    y_lo: signed(9)
    y_hi: signed(9)
    y_signed: unsigned(1)


_COORD_BITS = 24  # signed input coordinates: (oy0 + count) * stride_y plus a tap offset


def _conv_stream_layout(addr_bits):
    """Return the layout of the constants one conv-mode MATMUL streams with."""
    return data.StructLayout({
        "in_h": 12, "in_w": 12, "out_w": 12, "kw": 5, "c_chunks": 8, "pad": 8, "pad_l": 5,
        "stride_x": 4, "stride_y": 4, "dil_x": 4, "dil_y": 4,
        "pack": 3, "group_dx": 11,               # packed taps: log2 pixels per word; dil_x << pack
        "ox0": 12, "ys0": _COORD_BITS - 1, "xs0": _COORD_BITS - 1,
        "step_x": addr_bits,                     # SETCONV step_x
        "step_row": addr_bits,                   # SETCONV step_row
        "tap_x": addr_bits,                      # next kx: tap_x - (c_chunks - 1)
        "tap_row": addr_bits,                    # next ky: tap_row - (c_chunks - 1)
    })


def window_start(m, geometry, insn):
    """Register the input coordinates of a conv or pool instruction's first output pixel; return them by name.

    ``ys0 = oy0 * stride_y`` and ``xs0 = ox0 * stride_x`` (``geometry`` is an
    :class:`accel.isa.ConvGeometry` view, ``insn`` an :class:`accel.isa.Insn` view, both
    held while they settle). Everything else the address generators add comes precomputed
    in the instruction (``a_addr``, :func:`accel.isa.window_origin`) and the SETCONV
    (``step_x``, ``step_row``, ``tap_x``, ``tap_row``): the hardware has no other multiplier.
    """
    coord = _COORD_BITS - 1
    k = {name: Signal(coord, name=f"k_{name}") for name in ("ys0", "xs0")}
    m.d.sync += [k["ys0"].eq(insn.oy0 * geometry.stride_y), k["xs0"].eq(insn.ox0 * geometry.stride_x)]
    return k


def requantizer_members(config):
    """Return the signature members of a user of the :class:`Requantizer`: ``rq_i``, ``rq_o``, its parameters."""
    return {
        "rq_i": Out(stream.Signature(data.StructLayout({
            "acc": data.ArrayLayout(signed(config.acc_width), config.cols), "tag": unsigned(TAG_WIDTH)}),
            always_ready=True)),
        "rq_o": In(stream.Signature(data.StructLayout({
            "data": data.ArrayLayout(unsigned(8), config.cols), "tag": unsigned(TAG_WIDTH)}),
            always_ready=True)),
        "params": Out(data.ArrayLayout(isa.ParamWord, config.cols)),
        "y_zp": Out(signed(9)),
        "y_lo": Out(signed(9)),
        "y_hi": Out(signed(9)),
        "y_signed": Out(1),
    }


class Controller(wiring.Component):
    """Execute a program from IMEM per ``docs/isa.md``: ``NOP``, ``MATMUL``, ``SYNC``, ``HALT``, ``SETCONV``, ``VECTOR``, ``STREAM``.

    ``start`` runs the program from PC 0 (also while paused); ``busy`` is high from the
    cycle after ``start`` until ``HALT`` has waited for every result to be written, and
    ``halted`` pulses in the cycle ``busy`` falls. A ``STREAM`` drains, then holds
    ``paused`` (with ``busy``) and its ``segment`` until ``resume``; ``cycles`` counts the
    busy cycles of the last run that are not paused. A ``MATMUL``
    with ``count = 0`` or ``k_tiles = 0`` does nothing; unknown opcodes act as ``NOP``.

    Memory ports are initiator-side :class:`amaranth.lib.memory.ReadPort` /
    :class:`WritePort` signatures with synchronous reads (data the cycle after ``en``,
    held while ``en`` is low). The controller drives them only while ``busy`` and not
    ``paused``. The ACC read
    port must be transparent to the ACC write port: a row's read-add-write then sees the
    previous tile's write even when both hit the same word in consecutive cycles
    (``count = 1``).

    Members
    -------
    start : ``In(1)``
    busy : ``Out(1)``
    halted : ``Out(1)``
    paused : ``Out(1)``
        Waiting at a ``STREAM`` for ``resume``; the memories are free for the host.
    segment : ``Out(16)``
        The stream segment the paused ``STREAM`` asks for (its ``count`` field).
    resume : ``In(1)``
        Go on after a ``STREAM`` (one-cycle pulse; ignored unless ``paused``).
    cycles : ``Out(64)``
    imem : ``In(ReadPort.Signature(addr_width=imem.addr_bits, shape=256))``
    wbuf : ``In(ReadPort.Signature(...))``
    pbuf : ``In(ReadPort.Signature(...))``
    abuf_r : ``In(ReadPort.Signature(...))``
        Input rows.
    abuf_r_next : ``In(abuf word)``
        The ABUF word after the one ``abuf_r`` returns (:class:`~accel.hdl.buffers.PairedReadBuffer`),
        for packed taps.
    abuf_w : ``In(WritePort.Signature(...))``
        Results.
    acc_r : ``In(ReadPort.Signature(...))``
    acc_w : ``In(WritePort.Signature(...))``
    acc_d : ``In(ReadPort.Signature(...))``
        The drainer's ACC read port (only with ``config.deferred_requant``); a second read
        port of the same memory, not transparent.
    load : ``Out(stream.Signature(data.ArrayLayout(signed(weight_bits), cols)))``
        To :class:`SystolicArray` ``load``.
    x : ``Out(stream.Signature(...{"data", "first", "tag"}))``
        To :class:`SystolicArray` ``x``; the tag is a :class:`Tag`.
    y : ``In(stream.Signature(...{"data", "tag"}, always_ready=True))``
        From :class:`SystolicArray` ``y``.
    rq_i : ``Out(stream.Signature(...{"acc", "tag"}, always_ready=True))``
        To :class:`Requantizer` ``i``.
    rq_o : ``In(stream.Signature(...{"data", "tag"}, always_ready=True))``
        From :class:`Requantizer` ``o``.
    params : ``Out(data.ArrayLayout(isa.ParamWord, cols))``
    y_zp, y_lo, y_hi : ``Out(signed(9))``
    y_signed : ``Out(1)``
        The parameters of the row on ``rq_i``.
    geometry : ``Out(isa.ConvGeometry)``
        The geometry registers (last ``SETCONV``).
    vec_insn : ``Out(isa.Insn)``
        The ``VECTOR`` instruction, valid while ``vec_start`` is high.
    vec_start : ``Out(1)``
        Start the vector unit (one cycle, once earlier results are written).
    vec_busy : ``In(1)``
        The vector unit is running (from the cycle after ``vec_start``).
    """

    def __init__(self, config: HardwareConfig):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        self._config = config
        c = config
        acc_row = data.ArrayLayout(signed(c.acc_width), c.cols)

        def rp(spec, bits):
            return In(ReadPort.Signature(addr_width=spec.addr_bits, shape=unsigned(bits)))

        def wp(spec, bits):
            return In(WritePort.Signature(addr_width=spec.addr_bits, shape=unsigned(bits)))

        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "halted": Out(1),
            "paused": Out(1),
            "segment": Out(16),
            "resume": In(1),
            "cycles": Out(64),
            "imem": rp(c.imem, isa.INSN_BITS),
            "wbuf": rp(c.wbuf, c.wbuf_word_bits),
            "pbuf": rp(c.pbuf, isa.PARAM_BITS),
            "abuf_r": rp(c.abuf, c.abuf_word_bits),
            "abuf_r_next": In(unsigned(c.abuf_word_bits)),
            "abuf_w": wp(c.abuf, c.abuf_word_bits),
            "acc_r": rp(c.accbuf, c.acc_word_bits),
            "acc_w": wp(c.accbuf, c.acc_word_bits),
            **({"acc_d": rp(c.accbuf, c.acc_word_bits)} if c.deferred_requant else {}),
            "load": Out(stream.Signature(data.ArrayLayout(signed(c.weight_bits), c.cols))),
            "x": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(X_WIDTH), c.rows),
                "first": 1,
                "tag": unsigned(TAG_WIDTH),
            }))),
            "y": In(stream.Signature(data.StructLayout({
                "data": acc_row, "tag": unsigned(TAG_WIDTH)}), always_ready=True)),
            **requantizer_members(c),
            "geometry": Out(isa.ConvGeometry),
            "vec_insn": Out(isa.Insn),
            "vec_start": Out(1),
            "vec_busy": In(1),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        rows, cols = c.rows, c.cols

        # Every memory port is idle unless a unit below enables it.
        deferred = c.deferred_requant
        for port in (self.imem, self.wbuf, self.pbuf, self.abuf_r, self.acc_r, *([self.acc_d] if deferred else [])):
            m.d.comb += port.en.eq(0)
        for port in (self.abuf_w, self.acc_w):
            m.d.comb += port.en.eq(0)

        insn = data.View(isa.Insn, self.imem.data)  # held while imem.en is low

        # -- contexts of MATMULs in flight -----------------------------------------------
        ctx = [Signal(_Context, name=f"ctx{i}") for i in range(_CONTEXTS)]
        ctx_valid = Signal(_CONTEXTS)
        banks = [Signal(data.ArrayLayout(isa.ParamWord, cols), name=f"params{i}")
                 for i in range(_CONTEXTS)]
        push_ptr = Signal(range(_CONTEXTS))   # next context the front fills
        acc_ptr = Signal(range(_CONTEXTS))    # context of the rows entering the accumulate stage
        wb_ptr = Signal(range(_CONTEXTS))     # context of the rows leaving the requantizer
        ctx_set = Signal(_CONTEXTS)
        ctx_clear = Signal(_CONTEXTS)
        m.d.sync += ctx_valid.eq((ctx_valid | ctx_set) & ~ctx_clear)

        def ctx_at(ptr):
            return data.View(_Context, Mux(ptr, ctx[1].as_value(), ctx[0].as_value()))

        def acc_word(ptr, addr):
            """Return the ACC address of row ``addr`` of context ``ptr``: its half of ACC when deferring."""
            if not deferred:
                return addr
            return Cat(addr[:c.accbuf.addr_bits - 1], ptr)

        drain_ptr = Signal(range(_CONTEXTS))  # context the drainer reads from ACC (deferred requantization)
        # Every context is free when a run starts (or restarts at a STREAM): number them from 0,
        # so the ACC half each MATMUL uses depends only on the program.
        restart_contexts = [push_ptr.eq(0), acc_ptr.eq(0), wb_ptr.eq(0), drain_ptr.eq(0)]

        # -- weight sequencer --------------------------------------------------------------
        w_ptr = Signal(c.wbuf.addr_bits)
        w_left = Signal(range(2**16 * rows + 1))
        w_dv = Signal()                       # load.payload (the WBUF read data) is valid
        w_issue = Signal()
        m.d.comb += [
            w_issue.eq((w_left != 0) & (~w_dv | self.load.ready)),
            self.wbuf.addr.eq(w_ptr),
            self.wbuf.en.eq(w_issue),
            self.load.valid.eq(w_dv),
            self.load.payload.eq(self.wbuf.data),
        ]
        with m.If(w_issue):
            m.d.sync += [w_ptr.eq(w_ptr + 1), w_left.eq(w_left - 1), w_dv.eq(1)]
        with m.Elif(self.load.ready):
            m.d.sync += w_dv.eq(0)

        # -- input sequencer ---------------------------------------------------------------
        x_active = Signal()
        x_dv = Signal()
        x_tile_addr = Signal(c.abuf.addr_bits)   # a_addr + kt
        x_row_addr = Signal(c.abuf.addr_bits)    # a_addr + kt + m*a_stride
        x_m = Signal(16)
        x_kt = Signal(16)
        x_count = Signal(16)
        x_k_tiles = Signal(16)
        x_stride = Signal(16)
        x_signed = Signal()
        x_tag = Signal(Tag)
        x_first = Signal()
        x_row_signed = Signal()
        x_issue = Signal()
        x_last_row = Signal()
        x_last_tile = Signal()
        x_finishing = Signal()               # issuing the instruction's final row
        m.d.comb += [
            x_issue.eq(x_active & (~x_dv | self.x.ready)),
            x_last_row.eq(x_m == x_count - 1),
            x_last_tile.eq(x_kt == x_k_tiles - 1),
            x_finishing.eq(x_issue & x_last_row & x_last_tile),
            self.abuf_r.en.eq(x_issue),
            self.x.valid.eq(x_dv),
            self.x.payload.first.eq(x_first),
            self.x.payload.tag.eq(x_tag),
        ]
        # Conv mode (hardware im2col): the row address is the tile's base (kernel tap and
        # channel chunk) plus the output pixel's offset, both kept incrementally; rows whose
        # input pixel lies outside the image read as x_pad bytes.
        # With packed taps (SETCONV pack = p > 0) the addresses count pixels, 2**p to a word:
        # the row is the word holding the tap group's first pixel and the next word, rotated
        # so that pixel comes first, with x_pad in the bytes of pixels outside the input.
        A = c.abuf.addr_bits
        PA = isa.ADDR_BITS                     # conv addresses: words, or pixels when packed
        L = (rows - 1).bit_length()            # bits of a byte index within the word
        packs = isa.input_packs(rows)          # 2**p pixels of rows >> p bytes fit a word
        geom = Signal(isa.ConvGeometry)        # the geometry registers (SETCONV)
        x_conv = Signal()
        xc = Signal(_conv_stream_layout(PA))   # constants of the conv MATMUL streaming
        xc_base = Signal(PA)                   # a_addr + cc + ky*(tap_row + (kw-1)*tap_x) + kx*tap_x
        xc_tap_dy = Signal(signed(_COORD_BITS))  # ky*dil_y - pad_t
        xc_tap_dx = Signal(signed(_COORD_BITS))  # kx*(dil_x << pack) - pad_l
        xc_cc = Signal(8)
        xc_kx = Signal(5)
        xc_ox = Signal(12)
        xc_ys = Signal(unsigned(_COORD_BITS - 1))  # oy*stride_y
        xc_xs = Signal(unsigned(_COORD_BITS - 1))  # ox*stride_x
        xc_pix = Signal(PA)                    # the output pixel's window from (oy0, ox0)'s: step_x, step_row
        xc_iy = Signal(signed(_COORD_BITS))
        xc_ix = Signal(signed(_COORD_BITS))
        xc_addr = Signal(PA)                   # the tap's word, or its group's first pixel when packed
        xc_below = Signal(signed(_COORD_BITS + 1))  # -ix: slots below it are left of the input
        xc_above = Signal(signed(_COORD_BITS + 1))  # in_w - ix: slots from it on are right of it
        xc_slot_in = Signal(rows)              # which pixel slots of the row lie inside the input
        xc_byte_in = Signal(rows)              # which bytes: slot of byte r = r // (rows >> pack)
        x_row_pad = Signal(rows)               # per byte, registered with the read
        x_row_shift = Signal(L)                # bytes to rotate the word pair by, registered too
        m.d.comb += [
            xc_iy.eq(xc_ys + xc_tap_dy),
            xc_ix.eq(xc_xs + xc_tap_dx),
            xc_addr.eq(xc_base + xc_pix),
            xc_below.eq(-xc_ix),
            xc_above.eq(xc.in_w - xc_ix),
        ]
        row_in = (xc_iy >= 0) & (xc_iy < xc.in_h)
        m.d.comb += xc_slot_in.eq(Cat(row_in & (xc_below <= slot) & (xc_above > slot) for slot in range(rows)))
        # the group's first pixel is slot (addr mod 2**pack): its first byte is that times rows >> pack
        slot_byte = Signal(L)
        with m.Switch(xc.pack):
            for p in packs:
                with m.Case(p):
                    m.d.comb += [
                        xc_byte_in.eq(Cat(xc_slot_in[r // (rows >> p)] for r in range(rows))),
                        self.abuf_r.addr.eq(Mux(x_conv, (xc_addr >> p)[:A], x_row_addr)),
                        slot_byte.eq(xc_addr[:p] * (rows >> p)),
                    ]
            with m.Default():  # pixels that do not divide the word: refused by the compiler
                m.d.comb += [xc_byte_in.eq(0), self.abuf_r.addr.eq(Mux(x_conv, xc_addr[:A], x_row_addr))]
        pair = Cat(self.abuf_r.data, self.abuf_r_next)
        row = Signal(8 * rows)
        m.d.comb += row.eq(pair >> (x_row_shift << 3))
        for r in range(rows):
            byte = Mux(x_row_pad[r], xc.pad, row[8 * r:8 * r + 8])
            m.d.comb += self.x.payload.data[r].eq(Cat(byte, byte[7] & x_row_signed))
        with m.If(x_issue):
            m.d.sync += [
                x_row_pad.eq(Mux(x_conv, ~xc_byte_in, 0)),
                x_row_shift.eq(Mux(x_conv, slot_byte, 0)),
            ]
            with m.If(x_last_row):
                m.d.sync += [
                    xc_ox.eq(xc.ox0), xc_ys.eq(xc.ys0), xc_xs.eq(xc.xs0), xc_pix.eq(0),
                ]
                with m.If(xc_cc == xc.c_chunks - 1):
                    m.d.sync += xc_cc.eq(0)
                    with m.If(xc_kx == xc.kw - 1):
                        m.d.sync += [
                            xc_kx.eq(0),
                            xc_base.eq(xc_base + xc.tap_row),
                            xc_tap_dy.eq(xc_tap_dy + xc.dil_y),
                            xc_tap_dx.eq(-xc.pad_l),
                        ]
                    with m.Else():
                        m.d.sync += [
                            xc_kx.eq(xc_kx + 1),
                            xc_base.eq(xc_base + xc.tap_x),
                            xc_tap_dx.eq(xc_tap_dx + xc.group_dx),
                        ]
                with m.Else():
                    m.d.sync += [xc_cc.eq(xc_cc + 1), xc_base.eq(xc_base + 1)]
            with m.Elif(xc_ox == xc.out_w - 1):
                m.d.sync += [
                    xc_ox.eq(0), xc_ys.eq(xc_ys + xc.stride_y), xc_xs.eq(0),
                    xc_pix.eq(xc_pix + xc.step_row),
                ]
            with m.Else():
                m.d.sync += [xc_ox.eq(xc_ox + 1), xc_xs.eq(xc_xs + xc.stride_x), xc_pix.eq(xc_pix + xc.step_x)]
        with m.If(x_issue):
            m.d.sync += [
                x_dv.eq(1),
                x_first.eq(x_m == 0),
                x_row_signed.eq(x_signed),
                x_tag.m.eq(x_m),
                x_tag.first_tile.eq(x_kt == 0),
                x_tag.last_tile.eq(x_last_tile),
            ]
            with m.If(x_last_row):
                m.d.sync += [
                    x_m.eq(0),
                    x_kt.eq(x_kt + 1),
                    x_tile_addr.eq(x_tile_addr + 1),
                    x_row_addr.eq(x_tile_addr + 1),
                ]
                with m.If(x_last_tile):
                    m.d.sync += x_active.eq(0)
            with m.Else():
                m.d.sync += [x_m.eq(x_m + 1), x_row_addr.eq(x_row_addr + x_stride)]
        with m.Elif(self.x.ready):
            m.d.sync += x_dv.eq(0)

        # -- parameter loader --------------------------------------------------------------
        p_busy = Signal()
        p_addr = Signal(c.pbuf.addr_bits)
        p_left = Signal(range(cols + 1))
        p_store = Signal()                   # pbuf.data holds a word for bank p_bank
        p_bank = Signal(range(_CONTEXTS))
        m.d.comb += self.pbuf.addr.eq(p_addr)
        m.d.sync += p_store.eq(0)
        with m.If(p_busy):
            m.d.comb += self.pbuf.en.eq(1)
            m.d.sync += [p_addr.eq(p_addr + 1), p_left.eq(p_left - 1), p_store.eq(1)]
            with m.If(p_left == 1):
                m.d.sync += p_busy.eq(0)
        with m.If(p_store):
            # Channel 0 is read first: shift in at the top, it ends at the bottom.
            for i, bank in enumerate(banks):
                with m.If(p_bank == i):
                    m.d.sync += bank.as_value().eq(
                        Cat(bank.as_value()[isa.PARAM_BITS:], self.pbuf.data))

        # -- conv preparation: the per-instruction constants, in register stages ----------
        # Computed every cycle from the decoded instruction (held in imem.data) and the
        # geometry registers; PREP waits for them. Streaming only adds and compares.
        g = geom
        k = window_start(m, g, insn)
        p3_tap_x, p3_tap_row = (Signal(PA, name=f"p3_{n}") for n in ("tap_x", "tap_row"))
        m.d.sync += [
            p3_tap_x.eq(g.tap_x - (g.c_chunks - 1)),
            p3_tap_row.eq(g.tap_row - (g.c_chunks - 1)),
        ]
        m.d.comb += [self.geometry.eq(geom), self.vec_insn.eq(self.imem.data)]

        # -- front: fetch, decode, dispatch ------------------------------------------------
        pc = Signal(c.imem.addr_bits)
        prep = Signal(1)
        w_sent = Signal()
        x_sent = Signal()
        pushed = Signal()
        drained = Signal()
        m.d.comb += drained.eq((w_left == 0) & ~w_dv & ~x_active & ~x_dv & ~p_busy & (ctx_valid == 0))

        resume_pc = Signal.like(pc)
        with m.If(self.busy & ~self.paused):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.cycles.eq(0), pc.eq(0), *restart_contexts]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [self.imem.addr.eq(pc), self.imem.en.eq(1)]
                m.next = "DECODE"

            with m.State("DECODE"):
                m.d.sync += [w_sent.eq(0), x_sent.eq(0), pushed.eq(0)]
                with m.Switch(insn.opcode):
                    with m.Case(isa.Opcode.MATMUL):
                        with m.If((insn.count == 0) | (insn.k_tiles == 0)):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "FETCH"
                        with m.Elif(insn.conv):
                            m.d.sync += prep.eq(0)
                            m.next = "PREP"
                        with m.Else():
                            m.next = "MATMUL"
                    with m.Case(isa.Opcode.SETCONV):
                        m.d.sync += [geom.eq(self.imem.data), pc.eq(pc + 1)]
                        m.next = "FETCH"
                    with m.Case(isa.Opcode.VECTOR):
                        m.next = "VECTOR"
                    with m.Case(isa.Opcode.SYNC):
                        m.next = "SYNC"
                    with m.Case(isa.Opcode.STREAM):
                        m.d.sync += [self.segment.eq(insn.count), resume_pc.eq(insn.a_addr)]
                        m.next = "STREAM"
                    with m.Case(isa.Opcode.HALT):
                        m.next = "HALT"
                    with m.Default():
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"

            with m.State("PREP"):
                m.d.sync += prep.eq(1)
                with m.If(prep):
                    m.next = "MATMUL"

            with m.State("MATMUL"):
                w_go = Signal()
                push_go = Signal()
                x_go = Signal()
                m.d.comb += [
                    w_go.eq(~w_sent & (w_left == 0)),
                    push_go.eq(~pushed & ~p_busy & ~ctx_valid.bit_select(push_ptr, 1)),
                    # The rows reach the back end long after the context is pushed, and
                    # the parameters (cols + 1 cycles) are loaded before the first row
                    # arrives (at least rows + cols + 4 cycles), so dispatch at once.
                    # The input sequencer takes the next instruction while it issues the
                    # last row of the current one (the dispatch below overrides its updates).
                    x_go.eq(~x_sent & (pushed | push_go) & (~x_active | x_finishing)),
                ]
                with m.If(w_go):
                    m.d.sync += [w_sent.eq(1), w_ptr.eq(insn.w_addr), w_left.eq(insn.k_tiles * rows)]
                with m.If(push_go):
                    m.d.sync += [
                        pushed.eq(1),
                        push_ptr.eq(push_ptr + 1),
                        p_busy.eq(1), p_addr.eq(insn.p_addr), p_left.eq(cols), p_bank.eq(push_ptr),
                    ]
                    m.d.comb += ctx_set.eq(1 << push_ptr)
                    for i in range(_CONTEXTS):
                        with m.If(push_ptr == i):
                            m.d.sync += [
                                ctx[i].count.eq(insn.count),
                                ctx[i].acc_addr.eq(insn.acc_addr),
                                ctx[i].y_addr.eq(insn.y_addr),
                                ctx[i].y_stride.eq(insn.y_stride),
                                ctx[i].y_zp.eq(insn.y_zp),
                                ctx[i].y_lo.eq(insn.y_lo),
                                ctx[i].y_hi.eq(insn.y_hi),
                                ctx[i].y_signed.eq(insn.y_signed),
                            ]
                with m.If(x_go):
                    m.d.sync += [
                        x_sent.eq(1), x_active.eq(1),
                        x_tile_addr.eq(insn.a_addr), x_row_addr.eq(insn.a_addr),
                        x_m.eq(0), x_kt.eq(0),
                        x_count.eq(insn.count), x_k_tiles.eq(insn.k_tiles),
                        x_stride.eq(insn.a_stride), x_signed.eq(insn.x_signed),
                        x_conv.eq(insn.conv),
                        xc.in_h.eq(g.in_h), xc.in_w.eq(g.in_w), xc.out_w.eq(g.out_w), xc.kw.eq(g.kw),
                        xc.c_chunks.eq(g.c_chunks), xc.pad.eq(g.x_pad[:8]),
                        xc.stride_x.eq(g.stride_x), xc.stride_y.eq(g.stride_y),
                        xc.dil_x.eq(g.dil_x), xc.dil_y.eq(g.dil_y), xc.pad_l.eq(g.pad_l),
                        xc.pack.eq(g.pack), xc.group_dx.eq(g.dil_x << g.pack),
                        xc.ox0.eq(insn.ox0), xc.ys0.eq(k["ys0"]), xc.xs0.eq(k["xs0"]),
                        xc.step_x.eq(g.step_x), xc.step_row.eq(g.step_row),
                        xc.tap_x.eq(p3_tap_x), xc.tap_row.eq(p3_tap_row),
                        xc_base.eq(insn.a_addr), xc_tap_dy.eq(-g.pad_t), xc_tap_dx.eq(-g.pad_l),
                        xc_cc.eq(0), xc_kx.eq(0), xc_ox.eq(insn.ox0), xc_ys.eq(k["ys0"]), xc_xs.eq(k["xs0"]),
                        xc_pix.eq(0),
                    ]
                with m.If((w_sent | w_go) & (x_sent | x_go)):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"

            with m.State("VECTOR"):
                # A VECTOR implies a SYNC, then owns the ABUF and PBUF ports and the
                # requantizer until it is done.
                with m.If(drained):
                    m.d.comb += self.vec_start.eq(1)
                    m.next = "VECTOR_RUN"

            with m.State("VECTOR_RUN"):
                with m.If(~self.vec_busy):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"

            with m.State("SYNC"):
                with m.If(drained):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"

            with m.State("STREAM"):
                with m.If(drained):
                    m.next = "PAUSED"

            with m.State("PAUSED"):
                m.d.comb += self.paused.eq(1)
                with m.If(self.start):
                    m.d.sync += [self.cycles.eq(0), pc.eq(0), *restart_contexts]
                    m.next = "FETCH"
                with m.Elif(self.resume):
                    m.d.sync += pc.eq(resume_pc)
                    m.next = "FETCH"

            with m.State("HALT"):
                with m.If(drained):
                    m.d.sync += self.busy.eq(0)
                    m.d.comb += self.halted.eq(1)
                    m.next = "IDLE"

        # -- accumulate stage --------------------------------------------------------------
        # A: the row arrives; read its accumulator. B: add, then write back or requantize.
        y_tag = data.View(Tag, self.y.payload.tag)
        ctx_a = ctx_at(acc_ptr)
        a_valid = Signal()
        a_sums = Signal.like(self.y.payload.data)
        a_tag = Signal(Tag)
        a_addr = Signal(c.accbuf.addr_bits)
        a_ctx = Signal(range(_CONTEXTS))
        m.d.comb += [
            self.acc_r.addr.eq(acc_word(acc_ptr, ctx_a.acc_addr + y_tag.m)),
            self.acc_r.en.eq(self.y.valid & ~y_tag.first_tile),
        ]
        m.d.sync += [
            a_valid.eq(self.y.valid),
            a_sums.eq(self.y.payload.data),
            a_tag.eq(y_tag),
            a_addr.eq(acc_word(acc_ptr, ctx_a.acc_addr + y_tag.m)),
            a_ctx.eq(acc_ptr),
        ]
        with m.If(self.y.valid & y_tag.last_tile & (y_tag.m == ctx_a.count - 1)):
            m.d.sync += acc_ptr.eq(acc_ptr + 1)

        previous = data.View(data.ArrayLayout(signed(c.acc_width), cols), self.acc_r.data)
        acc = Signal.like(self.y.payload.data)
        for lane in range(cols):
            m.d.comb += acc[lane].eq(Mux(a_tag.first_tile, a_sums[lane], a_sums[lane] + previous[lane]))
        m.d.comb += [self.acc_w.addr.eq(a_addr), self.acc_w.data.eq(acc)]
        ctx_b = ctx_at(a_ctx)
        if not deferred:
            # The last tile's sums go straight to the requantizer.
            m.d.comb += [
                self.acc_w.en.eq(a_valid & ~a_tag.last_tile),
                self.rq_i.valid.eq(a_valid & a_tag.last_tile),
                self.rq_i.payload.acc.eq(acc),
                self.rq_i.payload.tag.eq(a_tag),
            ]
            rq_ctx = a_ctx
        else:
            # -- drainer (deferred requantization) ---------------------------------------
            # The last tile's sums are written to ACC like the others; once a context's last
            # row is written, the drainer reads its rows back, one every requant_spacing
            # cycles, into the requantizer, while the next MATMUL accumulates into the other
            # half of ACC (its own read port: the two never read the same half).
            spacing = c.requant_spacing
            accumulated = Signal(_CONTEXTS)  # a context's rows are all in ACC, not yet all drained
            acc_set = Signal(_CONTEXTS)
            acc_clear = Signal(_CONTEXTS)
            m.d.sync += accumulated.eq((accumulated | acc_set) & ~acc_clear)
            m.d.comb += self.acc_w.en.eq(a_valid)
            with m.If(a_valid & a_tag.last_tile & (a_tag.m == ctx_b.count - 1)):
                m.d.comb += acc_set.eq(1 << a_ctx)
            ctx_d = ctx_at(drain_ptr)
            d_m = Signal(16)
            d_wait = Signal(range(spacing))
            d_issue = Signal()
            d_valid = Signal()
            d_tag = Signal(Tag)
            d_ctx = Signal(range(_CONTEXTS))
            m.d.comb += [
                d_issue.eq(accumulated.bit_select(drain_ptr, 1) & (d_wait == 0)),
                self.acc_d.addr.eq(acc_word(drain_ptr, ctx_d.acc_addr + d_m)),
                self.acc_d.en.eq(d_issue),
            ]
            m.d.sync += [d_valid.eq(d_issue), d_tag.m.eq(d_m), d_tag.last_tile.eq(1), d_ctx.eq(drain_ptr)]
            with m.If(d_issue):
                m.d.sync += d_wait.eq(spacing - 1)
                with m.If(d_m == ctx_d.count - 1):
                    m.d.sync += [d_m.eq(0), drain_ptr.eq(drain_ptr + 1)]
                    m.d.comb += acc_clear.eq(1 << drain_ptr)
                with m.Else():
                    m.d.sync += d_m.eq(d_m + 1)
            with m.Elif(d_wait != 0):
                m.d.sync += d_wait.eq(d_wait - 1)
            m.d.comb += [
                self.rq_i.valid.eq(d_valid),
                self.rq_i.payload.acc.eq(self.acc_d.data),
                self.rq_i.payload.tag.eq(d_tag),
            ]
            rq_ctx = d_ctx
        ctx_q = ctx_at(rq_ctx)
        m.d.comb += [
            self.params.eq(Mux(rq_ctx, banks[1].as_value(), banks[0].as_value())),
            self.y_zp.eq(ctx_q.y_zp),
            self.y_lo.eq(ctx_q.y_lo),
            self.y_hi.eq(ctx_q.y_hi),
            self.y_signed.eq(ctx_q.y_signed),
        ]

        # -- write-back ----------------------------------------------------------------------
        ctx_w = ctx_at(wb_ptr)
        rq_tag = data.View(Tag, self.rq_o.payload.tag)
        wb_offset = Signal(c.abuf.addr_bits)     # m * y_stride, kept incrementally
        m.d.comb += [
            self.abuf_w.addr.eq(ctx_w.y_addr + wb_offset),
            self.abuf_w.data.eq(self.rq_o.payload.data),
            self.abuf_w.en.eq(self.rq_o.valid),
        ]
        with m.If(self.rq_o.valid):
            with m.If(rq_tag.m == ctx_w.count - 1):
                m.d.sync += [wb_offset.eq(0), wb_ptr.eq(wb_ptr + 1)]
                m.d.comb += ctx_clear.eq(1 << wb_ptr)
            with m.Else():
                m.d.sync += wb_offset.eq(wb_offset + ctx_w.y_stride)
        return m
