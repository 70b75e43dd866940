"""Execute VECTOR instructions: window max pooling, global sums with requantization, and QLinearAdd.

:class:`VectorUnit` runs one ``VECTOR`` instruction at a time (``docs/isa.md``, section
"Convolution, pooling and element-wise ops"). The controller starts it only when every
earlier instruction is written back (a ``VECTOR`` implies a ``SYNC``), so while it is busy
it owns the ABUF read and write ports, the PBUF read port and the core's requantizer.

Sharing the requantizer instead of instantiating a second one is deliberate: one lane is
about 2,500 LUT4s on iCE40 (``docs/architecture.md``), the MATMUL back end is idle while a ``VECTOR``
runs, and a ``GSUM`` pushes only one row per channel chunk, so a second copy would buy
nothing but area. ``ADD`` has its own :class:`~accel.hdl.qadd.QAddLanes` (a different
datapath: two float32 FMAs per lane).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .controller import _COORD_BITS, TAG_WIDTH, Tag, requantizer_members, window_start
from .qadd import QAddLanes
from .requant import _clamp

__all__ = ["VectorUnit"]

_SUM_BITS = 32  # GSUM lane sums: exact for count * 255 < 2**31


class VectorUnit(wiring.Component):
    """Execute ``VECTOR MAX``, ``GSUM`` and ``ADD`` on whole ABUF words, one word per cycle.

    ``start`` (one cycle) samples ``insn`` and ``geometry``; ``busy`` is high from the next
    cycle until the last result is written. The memory ports are initiator-side
    (synchronous reads, data the cycle after ``en``) and idle while not ``busy``.

    * ``MAX``: for each output pixel ``m`` (``(oy, ox)`` counted from ``(oy0, ox0)``, ``ox``
      wrapping at ``out_w``) and chunk ``cc``, one cycle per kernel tap (taps outside the
      input are not read and never win), the lane-wise max clamped to ``[y_lo, y_hi]``
      and written to ``ABUF[y_addr + m*y_stride + cc]`` (the clamp carries a fused ReLU,
      as ``docs/isa.md`` says). A window entirely in the padding gives the type's minimum
      (ONNX pads never allow one).
    * ``GSUM``: for each chunk ``cc``, ``count`` reads summed per lane in 32 bits while the
      ``rows`` ParamWords ``PBUF[p_addr + cc*rows ..]`` load, then one row into the
      requantizer (``y_zp``, clamp, ``y_signed``) and its result to ``ABUF[y_addr + cc]``.
      TODO: with ``acc_width = 24`` the requantizer sees the sums modulo ``2**24``.
    * ``ADD``: the :class:`accel.isa.AddParams` word ``PBUF[p_addr]`` and the recipe's table
      (``PBUF[p_addr + 1 ..]``, ``isa.ADD_TABLE_WORDS`` words, written into the lanes' tables
      one word per cycle), then per row ``i`` two reads (``ABUF[a_addr + i*a_stride]`` and
      ``ABUF[w_addr + i*b_stride]``) into a :class:`~accel.hdl.qadd.QAddLanes` (its own,
      ``qadd.latency`` stages with ``Q = config.qadd_spacing``) whose rows land at
      ``ABUF[y_addr + i*y_stride]``. With ``Q > 2`` (fewer lanes than bytes) the first
      read of the next row waits so that rows enter the lanes ``Q`` cycles apart.

    Timing (measured, ``tests/sim/test_conv_core.py``): one ``VECTOR``, from its fetch to the
    next instruction's fetch when nothing is in flight before it, takes
    ``count * c_chunks * kh * kw + 9`` cycles for ``MAX``,
    ``c_chunks * (max(count, rows - 1) + 2) + 8 + L`` for ``GSUM`` (``L`` the requantizer's
    latency) and ``(count - 1) * max(2, Q) + 147 + Q`` for ``ADD`` (``2 * count + 146`` with
    one lane per byte; fetch and decode 2, the drain check 1, three cycles of address
    preparation, 130 cycles of recipe loading for ``ADD``, the loop, then the pipeline
    drain: 1 for ``MAX``, the requantizer's latency (9 with one lane per column) or the add
    lanes' ``5 + Q``).

    Members
    -------
    start : ``In(1)``
    insn : ``In(isa.Insn)``
    geometry : ``In(isa.ConvGeometry)``
    busy : ``Out(1)``
    abuf_r : ``In(ReadPort.Signature(...))``
    abuf_w : ``In(WritePort.Signature(...))``
    pbuf : ``In(ReadPort.Signature(...))``
    rq_i : ``Out(stream.Signature(...{"acc", "tag"}, always_ready=True))``
        To the shared :class:`Requantizer` ``i``.
    rq_o : ``In(stream.Signature(...{"data", "tag"}, always_ready=True))``
        From the shared :class:`Requantizer` ``o``.
    params : ``Out(data.ArrayLayout(isa.ParamWord, cols))``
    y_zp, y_lo, y_hi : ``Out(signed(9))``
    y_signed : ``Out(1)``
        The requantizer's parameters while ``busy``.
    """

    def __init__(self, config: HardwareConfig):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        self._config = config
        c = config
        super().__init__({
            "start": In(1),
            "insn": In(isa.Insn),
            "geometry": In(isa.ConvGeometry),
            "busy": Out(1),
            "abuf_r": In(ReadPort.Signature(addr_width=c.abuf.addr_bits, shape=unsigned(c.abuf_word_bits))),
            "abuf_w": In(WritePort.Signature(addr_width=c.abuf.addr_bits, shape=unsigned(c.abuf_word_bits))),
            "pbuf": In(ReadPort.Signature(addr_width=c.pbuf.addr_bits, shape=unsigned(isa.PARAM_BITS))),
            **requantizer_members(c),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        lanes = c.rows
        A = c.abuf.addr_bits

        ins = Signal(isa.Insn)
        g = Signal(isa.ConvGeometry)
        m.d.comb += [
            self.abuf_r.en.eq(0), self.abuf_w.en.eq(0), self.pbuf.en.eq(0),
            self.y_zp.eq(ins.y_zp), self.y_lo.eq(ins.y_lo), self.y_hi.eq(ins.y_hi),
            self.y_signed.eq(ins.y_signed),
        ]

        def lane(word, i, signed_bytes):
            byte = word[8 * i:8 * i + 8]
            return Cat(byte, byte[7] & signed_bytes).as_signed()

        # -- the first output pixel's input coordinates, registered during PREP -------------
        k = window_start(m, g, ins)

        # -- MAX: pixel -> chunk -> ky -> kx, one tap read per cycle -------------------------
        mx_m = Signal(16)
        mx_ox = Signal(12)
        mx_cc = Signal(8)
        mx_kx = Signal(5)
        mx_ky = Signal(5)
        mx_pix = Signal(A)        # the output pixel's window corner: a_addr, then step_x / step_row
        mx_iy0 = Signal(signed(_COORD_BITS))   # oy*stride_y - pad_t
        mx_ix0 = Signal(signed(_COORD_BITS))   # ox*stride_x - pad_l
        mx_tap = Signal(A)        # (ky*dil_y*in_w + kx*dil_x)*a_stride
        mx_dy = Signal(signed(_COORD_BITS))    # ky*dil_y
        mx_dx = Signal(signed(_COORD_BITS))    # kx*dil_x
        mx_y_row = Signal(A)      # y_addr + m*y_stride
        iy = Signal(signed(_COORD_BITS))
        ix = Signal(signed(_COORD_BITS))
        inside = Signal()
        m.d.comb += [
            iy.eq(mx_iy0 + mx_dy), ix.eq(mx_ix0 + mx_dx),
            inside.eq((iy >= 0) & (iy < g.in_h) & (ix >= 0) & (ix < g.in_w)),
        ]
        last_kx = mx_kx == g.kw - 1
        last_ky = mx_ky == g.kh - 1
        last_cc = mx_cc == g.c_chunks - 1
        last_m = mx_m == ins.count - 1

        # The read stage: data arrives the cycle after the issue.
        r_valid, r_inside, r_first, r_last = Signal(), Signal(), Signal(), Signal()
        r_sum = Signal()          # a GSUM read (else a MAX tap)
        r_waddr = Signal(A)
        run = Signal(data.ArrayLayout(signed(9), lanes))
        best = Signal(data.ArrayLayout(signed(9), lanes))
        floor = Mux(ins.x_signed, -128, 0)
        m.d.sync += r_valid.eq(0)
        for i in range(lanes):
            value = Mux(r_inside, lane(self.abuf_r.data, i, ins.x_signed), floor)
            base = Mux(r_first, floor, run[i])
            m.d.comb += best[i].eq(Mux(value > base, value, base))
        with m.If(r_valid & ~r_sum):
            m.d.sync += run.eq(best)
            with m.If(r_last):
                m.d.comb += [
                    self.abuf_w.en.eq(1), self.abuf_w.addr.eq(r_waddr),
                    self.abuf_w.data.eq(Cat(*(_clamp(best[i], ins.y_lo, ins.y_hi)[:8] for i in range(lanes)))),
                ]

        # -- GSUM: chunk -> pixel, exact lane sums, params loading alongside -----------------
        gs_p = Signal(16)
        gs_cc = Signal(8)
        gs_addr = Signal(A)       # a_addr + p*a_stride + cc
        gs_sum = Signal(data.ArrayLayout(signed(_SUM_BITS), lanes))
        gs_pb_addr = Signal(c.pbuf.addr_bits)
        gs_pb_left = Signal(range(lanes + 1))
        gs_pb_store = Signal()
        bank = Signal(data.ArrayLayout(isa.ParamWord, lanes))
        pending = Signal(range(256 + 1))   # rows in the requantizer
        m.d.comb += [self.params.eq(bank), self.pbuf.addr.eq(gs_pb_addr)]
        m.d.sync += gs_pb_store.eq(0)
        with m.If(gs_pb_store):
            m.d.sync += bank.as_value().eq(Cat(bank.as_value()[isa.PARAM_BITS:], self.pbuf.data))
        with m.If(r_valid & r_sum):
            for i in range(lanes):
                m.d.sync += gs_sum[i].eq(Mux(r_first, 0, gs_sum[i]) + lane(self.abuf_r.data, i, ins.x_signed))
        rq_tag = data.View(Tag, self.rq_o.payload.tag)
        with m.If(self.busy & self.rq_o.valid):
            m.d.comb += [
                self.abuf_w.en.eq(1), self.abuf_w.addr.eq(ins.y_addr + rq_tag.m),
                self.abuf_w.data.eq(self.rq_o.payload.data),
            ]
        push = Signal()
        m.d.comb += [
            self.rq_i.valid.eq(push),
            self.rq_i.payload.acc.eq(gs_sum),
            self.rq_i.payload.tag.eq(gs_cc),  # Tag.m: the chunk
        ]

        # -- ADD: two reads per row into the QLinearAdd lanes -------------------------------
        m.submodules.qadd = qadd = QAddLanes(c, tag_width=TAG_WIDTH)
        ad_params = Signal(isa.PARAM_BITS)
        ad_pb_left = Signal(range(isa.ADD_TABLE_WORDS + 2))   # PBUF words still to read
        ad_pb_store = Signal()
        ad_pb_word = Signal(range(isa.ADD_TABLE_WORDS + 1))   # PBUF words stored: the head, then table words
        ad_i = Signal(16)
        ad_b_phase = Signal()      # the next read is the second operand
        ad_a_addr = Signal(A)      # a_addr + i*a_stride
        ad_b_addr = Signal(A)      # w_addr + i*b_stride
        ad_y_addr = Signal(A)      # y_addr + j*y_stride of the next result j
        ad_first = Signal(c.abuf_word_bits)
        ad_r_a, ad_r_b = Signal(), Signal()   # abuf_r.data is a first / second operand
        # Time-multiplexed lanes take a row every `spacing` cycles: hold the next first read.
        ad_spacing = qadd.spacing
        ad_wait = Signal(range(max(ad_spacing - 1, 1)))
        m.d.sync += [ad_pb_store.eq(0), ad_r_a.eq(0), ad_r_b.eq(0)]
        with m.If(ad_pb_store):
            m.d.sync += ad_pb_word.eq(ad_pb_word + 1)
            with m.If(ad_pb_word == 0):
                m.d.sync += ad_params.eq(self.pbuf.data)
            with m.Else():
                m.d.comb += [qadd.table.valid.eq(1), qadd.table.payload.addr.eq(ad_pb_word - 1),
                             qadd.table.payload.data.eq(self.pbuf.data)]
        with m.If(ad_r_a):
            m.d.sync += ad_first.eq(self.abuf_r.data)
        m.d.comb += [
            qadd.params.eq(ad_params),
            qadd.x_signed.eq(ins.x_signed), qadd.y_signed.eq(ins.y_signed),
            qadd.y_lo.eq(ins.y_lo), qadd.y_hi.eq(ins.y_hi),
            qadd.i.valid.eq(ad_r_b),
            qadd.i.payload.a.eq(ad_first),
            qadd.i.payload.b.eq(self.abuf_r.data),
        ]
        with m.If(self.busy & qadd.o.valid):
            m.d.comb += [
                self.abuf_w.en.eq(1), self.abuf_w.addr.eq(ad_y_addr),
                self.abuf_w.data.eq(qadd.o.payload.data),
            ]
            m.d.sync += ad_y_addr.eq(ad_y_addr + ins.y_stride)

        m.d.sync += pending.eq(pending + push + qadd.i.valid
                               - (self.busy & self.rq_o.valid) - (self.busy & qadd.o.valid))

        prep = Signal(2)
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [ins.eq(self.insn), g.eq(self.geometry), self.busy.eq(1), prep.eq(0)]
                    m.next = "PREP"

            with m.State("PREP"):
                m.d.sync += prep.eq(prep + 1)
                with m.If(prep == 2):
                    m.d.sync += [
                        mx_m.eq(0), mx_ox.eq(ins.ox0), mx_cc.eq(0), mx_kx.eq(0), mx_ky.eq(0),
                        mx_pix.eq(ins.a_addr),
                        mx_iy0.eq(k["ys0"] - g.pad_t), mx_ix0.eq(k["xs0"] - g.pad_l),
                        mx_tap.eq(0), mx_dy.eq(0), mx_dx.eq(0),
                        mx_y_row.eq(ins.y_addr),
                        gs_p.eq(0), gs_cc.eq(0), gs_addr.eq(ins.a_addr),
                        gs_pb_addr.eq(ins.p_addr), gs_pb_left.eq(lanes),
                    ]
                    with m.If(ins.count == 0):
                        m.next = "DRAIN"
                    with m.Elif(ins.vop == isa.Vop.MAX):
                        m.next = "MAX"
                    with m.Elif(ins.vop == isa.Vop.GSUM):
                        m.next = "GSUM"
                    with m.Elif(ins.vop == isa.Vop.ADD):
                        m.d.sync += [
                            ad_pb_left.eq(1 + isa.ADD_TABLE_WORDS), ad_pb_word.eq(0),
                            gs_pb_addr.eq(ins.p_addr), ad_i.eq(0), ad_b_phase.eq(0), ad_wait.eq(0),
                            ad_a_addr.eq(ins.a_addr), ad_b_addr.eq(ins.w_addr), ad_y_addr.eq(ins.y_addr),
                        ]
                        m.next = "ADD_PARAMS"
                    with m.Else():
                        m.next = "DRAIN"

            with m.State("MAX"):
                m.d.comb += [
                    self.abuf_r.en.eq(inside),
                    self.abuf_r.addr.eq(mx_pix + mx_cc + mx_tap),
                ]
                m.d.sync += [
                    r_valid.eq(1), r_sum.eq(0), r_inside.eq(inside),
                    r_first.eq((mx_kx == 0) & (mx_ky == 0)), r_last.eq(last_kx & last_ky),
                    r_waddr.eq(mx_y_row + mx_cc),
                ]
                with m.If(~last_kx):
                    m.d.sync += [mx_kx.eq(mx_kx + 1), mx_tap.eq(mx_tap + g.tap_x), mx_dx.eq(mx_dx + g.dil_x)]
                with m.Elif(~last_ky):
                    m.d.sync += [
                        mx_kx.eq(0), mx_ky.eq(mx_ky + 1),
                        mx_tap.eq(mx_tap + g.tap_row),
                        mx_dx.eq(0), mx_dy.eq(mx_dy + g.dil_y),
                    ]
                with m.Else():
                    m.d.sync += [mx_kx.eq(0), mx_ky.eq(0), mx_tap.eq(0),
                                 mx_dx.eq(0), mx_dy.eq(0)]
                    with m.If(~last_cc):
                        m.d.sync += mx_cc.eq(mx_cc + 1)
                    with m.Else():
                        m.d.sync += [mx_cc.eq(0), mx_m.eq(mx_m + 1), mx_y_row.eq(mx_y_row + ins.y_stride)]
                        with m.If(last_m):
                            m.next = "DRAIN"
                        with m.Elif(mx_ox == g.out_w - 1):
                            m.d.sync += [
                                mx_ox.eq(0), mx_iy0.eq(mx_iy0 + g.stride_y), mx_ix0.eq(-g.pad_l),
                                mx_pix.eq(mx_pix + g.step_row),
                            ]
                        with m.Else():
                            m.d.sync += [mx_ox.eq(mx_ox + 1), mx_ix0.eq(mx_ix0 + g.stride_x),
                                         mx_pix.eq(mx_pix + g.step_x)]

            with m.State("GSUM"):
                with m.If(gs_pb_left != 0):
                    m.d.comb += self.pbuf.en.eq(1)
                    m.d.sync += [gs_pb_addr.eq(gs_pb_addr + 1), gs_pb_left.eq(gs_pb_left - 1), gs_pb_store.eq(1)]
                with m.If(gs_p != ins.count):
                    m.d.comb += [self.abuf_r.en.eq(1), self.abuf_r.addr.eq(gs_addr)]
                    m.d.sync += [
                        r_valid.eq(1), r_sum.eq(1), r_last.eq(0), r_first.eq(gs_p == 0),
                        gs_p.eq(gs_p + 1), gs_addr.eq(gs_addr + ins.a_stride),
                    ]
                with m.Elif((gs_pb_left == 0) & ~gs_pb_store & ~r_valid):
                    # The sums and the parameters are complete: requantize this chunk.
                    m.d.comb += push.eq(1)
                    m.d.sync += [
                        gs_p.eq(0), gs_cc.eq(gs_cc + 1), gs_addr.eq(ins.a_addr + gs_cc + 1),
                        gs_pb_left.eq(lanes),
                    ]
                    with m.If(gs_cc == g.c_chunks - 1):
                        m.next = "DRAIN"

            with m.State("ADD_PARAMS"):
                with m.If(ad_pb_left != 0):
                    m.d.comb += self.pbuf.en.eq(1)
                    m.d.sync += [gs_pb_addr.eq(gs_pb_addr + 1), ad_pb_left.eq(ad_pb_left - 1), ad_pb_store.eq(1)]
                with m.Elif(~ad_pb_store):
                    m.next = "ADD"

            with m.State("ADD"):
                with m.If(ad_b_phase | (ad_wait == 0)):
                    m.d.comb += [self.abuf_r.en.eq(1), self.abuf_r.addr.eq(Mux(ad_b_phase, ad_b_addr, ad_a_addr))]
                    m.d.sync += [ad_b_phase.eq(~ad_b_phase), ad_r_a.eq(~ad_b_phase), ad_r_b.eq(ad_b_phase)]
                with m.Else():
                    m.d.sync += ad_wait.eq(ad_wait - 1)
                with m.If(ad_b_phase):
                    m.d.sync += [
                        ad_i.eq(ad_i + 1),
                        ad_a_addr.eq(ad_a_addr + ins.a_stride), ad_b_addr.eq(ad_b_addr + ins.b_stride),
                    ]
                    if ad_spacing > 2:
                        m.d.sync += ad_wait.eq(ad_spacing - 2)
                    with m.If(ad_i == ins.count - 1):
                        m.next = "DRAIN"

            with m.State("DRAIN"):
                with m.If(~r_valid & ~ad_r_b & (pending == 0) & ~push):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        return m
