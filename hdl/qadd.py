"""Hold the QLinearAdd lanes: a compile-time-verified integer recipe per layer, one multiply and a table.

The arithmetic is :func:`accel.numerics.qlinear_add_by_recipe` (``docs/numerics.md``,
section 7): ``w = x * mult + table[t]``, a floor shift, an optional tie-to-even fix-up
and a clamp. :func:`accel.numerics.qlinear_add_recipe` finds the layer's constants and
checks them against onnxruntime's QLinearAdd on all 65,536 input pairs, so the lanes are
bit-exact with onnxruntime. The lanes form a 6-stage pipeline each and keep their own copy
of the layer's 256-entry table in two block RAMs. ``config.qadd_lanes`` lanes serve the
``rows`` byte pairs of a row: with one lane per byte a row enters every cycle; with fewer,
the lanes are time-multiplexed and a row takes ``rows / qadd_lanes`` cycles.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .lanes import collect_lanes, multiplex_lanes
from .requant import _clamp

__all__ = ["QAddLanes"]

_LANE_STAGES = 6     # one lane's pipeline, entry to output byte
_MULT_BITS = 24      # isa.AddParams.mult
_SPLIT = 12          # x * mult as two 8x12 partial products
_ENTRY_BITS = 32     # a signed table entry
_W_BITS = 34         # w = x * mult + table[t]: |x * mult| < 2**32, |table[t]| <= 2**31
_TABLE_ADDR_BITS = (isa.ADD_TABLE_WORDS - 1).bit_length()


class QAddLanes(wiring.Component):
    """Add rows of quantized bytes lane by lane like onnxruntime's QLinearAdd, bit-exact.

    For each byte ``j`` of a row, with ``P = params`` (an :class:`accel.isa.AddParams`) and
    ``T`` the table written through ``table``:

    1. ``x = a[j]`` read as int8 (``x_signed = 1``) or uint8, ``t = b[j]`` (unsigned, the
       table index);
    2. ``w = x * P.mult + T[t]`` (exact, 34-bit signed);
    3. ``q = w >> P.shift`` (arithmetic: floor); if ``P.tie_even``, the shifted-out bits
       are all zero and ``q`` is odd, ``q -= 1``;
    4. ``y = clamp(q, low, high)`` with ``low = clamp(qmin, y_lo, y_hi)``,
       ``high = clamp(qmax, y_lo, y_hi)`` and ``qmin, qmax`` = -128, 127 if ``y_signed``,
       else 0, 255 (saturation to the output type and the clamp in one);
    5. the output byte is ``y`` modulo 256.

    This is ``numerics.qlinear_add_by_recipe(x, t, recipe, low, high)``, which equals
    ``numerics.qlinear_add`` (onnxruntime) for the recipe ``numerics.qlinear_add_recipe``
    returns; ``isa.add_params(recipe)`` gives ``params`` (its first word) and the table
    words. When the recipe's ``x_is_b`` is set, the multiplied operand is the node's ``b``:
    it goes on port ``a`` (``tests/test_hdl_qadd.py``, ``tests/sim/test_qadd.py``).

    Timing contract
    ---------------
    A fixed-latency pipeline without back-pressure: a row on ``i`` in cycle ``T``
    (``i.valid`` high) leaves on ``o`` in cycle ``T + latency`` with its tag, in order, with
    ``latency = 5 + spacing`` and ``spacing = rows / qadd_lanes``. Rows must enter at least
    ``spacing`` cycles apart (every cycle with one lane per byte): lane ``j`` takes byte
    ``p * qadd_lanes + j`` in the ``p``-th cycle of the row, the later bytes wait in holding
    registers, and the bytes of the row's earlier cycles wait at the output for its last.
    ``params``, ``x_signed``, ``y_signed``, ``y_lo`` and ``y_hi`` are sampled together with
    the row, in the cycle its ``i.valid`` is high, and carried along with it; they may
    change in the cycle after the last row of an instruction has entered.

    ``table`` writes table word ``addr`` (entries ``2 * addr`` in ``data[0:32]`` and
    ``2 * addr + 1`` in ``data[32:64]``, two's complement) into every lane's copy in the
    cycle ``table.valid`` is high. Writes must happen while no row is in flight (no row
    between its cycle on ``i`` and its cycle on ``o``); a row may enter in the cycle after
    the last write and sees the new table. The table is not reset.

    Pipeline stages of a lane (each ends in a register): (1) the table read (each lane
    holds the even and the odd entries in two 128x32 memories with a synchronous read
    port, block RAM; the reads pause while ``table`` writes) and the unsigned partial
    products ``a * mult[0:12]`` and ``a * mult[12:24]``; (2) both memories' outputs, and
    ``x * mult`` from the partial products (minus ``mult * 256`` for a negative int8);
    (3) ``w``, with the entry picked by ``t``'s low bit; (4) the arithmetic shift and the
    tie detection; (5) the tie fix-up and the comparisons with the bounds; (6) the clamp.

    Parameters
    ----------
    config : HardwareConfig
        ``rows`` is the row width (bytes), ``qadd_lanes`` the number of lanes.
    tag_width : int
        Width of the tag carried from each input row to its output row.

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"a": data.ArrayLayout(unsigned(8), rows), "b": data.ArrayLayout(unsigned(8), rows), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of input byte pairs per transfer: ``a`` is multiplied, ``b`` indexes the table.
    o : ``Out(stream.Signature(data.StructLayout({"data": data.ArrayLayout(unsigned(8), rows), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of output bytes per input row, ``latency`` cycles later.
    table : ``In(stream.Signature(data.StructLayout({"addr": unsigned(7), "data": unsigned(64)}), always_ready=True))``
        One table word (two entries) per transfer, written into every lane's table.
    params : ``In(isa.AddParams)``
        The layer's ``mult``, ``shift`` and ``tie_even``, shared by every lane; sampled
        with the row.
    x_signed : ``In(1)``
        Read ``a`` as int8 (1) or uint8 (0); sampled with the row.
    y_signed : ``In(1)``
        Saturate the result to int8 (1) or uint8 (0); sampled with the row.
    y_lo : ``In(signed(9))``
        Clamp low bound; sampled with the row.
    y_hi : ``In(signed(9))``
        Clamp high bound; sampled with the row.
    """

    def __init__(self, config: HardwareConfig, *, tag_width: int = 18):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        if not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self._config = config
        self._tag_width = tag_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(unsigned(8), config.rows),
                "b": data.ArrayLayout(unsigned(8), config.rows),
                "tag": unsigned(tag_width),
            }), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(unsigned(8), config.rows),
                "tag": unsigned(tag_width),
            }), always_ready=True)),
            "table": In(stream.Signature(data.StructLayout({
                "addr": unsigned(_TABLE_ADDR_BITS),
                "data": unsigned(2 * _ENTRY_BITS),
            }), always_ready=True)),
            "params": In(isa.AddParams),
            "x_signed": In(1),
            "y_signed": In(1),
            "y_lo": In(signed(9)),
            "y_hi": In(signed(9)),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    @property
    def tag_width(self) -> int:
        return self._tag_width

    @property
    def spacing(self) -> int:
        """Return the fewest cycles between two rows on ``i``: ``rows / qadd_lanes``."""
        return self._config.qadd_spacing

    @property
    def latency(self) -> int:
        """Return the cycles from a row on ``i`` to its row on ``o``: ``5 + spacing``."""
        return _LANE_STAGES - 1 + self.spacing

    def elaborate(self, platform):
        m = Module()

        # Per-row side band: the row's valid, tag and phase travel through every stage,
        # each parameter only as far as the last stage that reads it. As in the
        # requantizer, saturation to the output type and the clamp merge into one clamp
        # with bounds computed on entry.
        c = self._config
        lanes, spacing = c.qadd_lanes, self.spacing  # time-multiplexed as hdl/lanes.py describes
        fields = {  # field: (shape, the last side-band copy read; -1: on entry only)
            "valid": (1, _LANE_STAGES - 1), "tag": (unsigned(self._tag_width), _LANE_STAGES - 1),
            "phase": (range(spacing), _LANE_STAGES - 1),
            "x_signed": (1, -1), "mult": (unsigned(_MULT_BITS), 0),   # stages 1, 2
            "shift": (unsigned(5), 2), "tie_even": (1, 2),              # stage 4
            "low": (signed(9), 4), "high": (signed(9), 4),              # stages 5, 6
        }
        side_layout = data.StructLayout({name: shape for name, (shape, _) in fields.items()})
        side = [Signal(data.StructLayout({name: shape for name, (shape, last) in fields.items() if last >= s}),
                       name=f"side{s + 1}") for s in range(_LANE_STAGES)]
        feed = Signal(side_layout, name="feed")   # the row entering now
        low = _clamp(Mux(self.y_signed, -128, 0), self.y_lo, self.y_hi)
        high = _clamp(Mux(self.y_signed, 127, 255), self.y_lo, self.y_hi)
        m.d.comb += [
            feed.valid.eq(self.i.valid), feed.tag.eq(self.i.payload.tag), feed.x_signed.eq(self.x_signed),
            feed.mult.eq(self.params.mult), feed.shift.eq(self.params.shift),
            feed.tie_even.eq(self.params.tie_even),
            feed.low.eq(low), feed.high.eq(high),
        ]
        # From here on `feed` is this cycle's row, or part of a row.
        feed, row = multiplex_lanes(m, feed, {"a": self.i.payload.a, "b": self.i.payload.b}, lanes)
        for s, copy in enumerate(side):
            previous = side[s - 1] if s else feed
            m.d.sync += [getattr(copy, name).eq(getattr(previous, name)) for name in copy.shape().members]

        outputs = [self._lane(m, j, row["a"][j], row["b"][j], feed, side) for j in range(lanes)]
        m.d.comb += [self.o.valid.eq(collect_lanes(m, outputs, side[-1], self.o.payload.data)),
                     self.o.payload.tag.eq(side[-1].tag)]
        return m

    def _lane(self, m, c, a, b, feed, side):
        """Build lane ``c``'s table and pipeline; return its output byte (a stage-6 register).

        ``feed`` is the side band entering now (stage 1 reads it); stage ``k > 1`` reads
        ``side[k - 2]``, the copy registered at the end of stage ``k - 1``.
        """
        def reg(shape, name):
            return Signal(shape, name=f"lane{c}_{name}")

        # -- the table: even entries in one memory, odd ones in the other -------------------
        halves = []
        for k, label in enumerate(("even", "odd")):
            mem = memory.Memory(shape=signed(_ENTRY_BITS), depth=isa.ADD_TABLE_WORDS, init=[])
            m.submodules[f"lane{c}_{label}"] = mem
            write = mem.write_port()
            m.d.comb += [write.addr.eq(self.table.payload.addr), write.en.eq(self.table.valid),
                         write.data.eq(self.table.payload.data[k * _ENTRY_BITS:(k + 1) * _ENTRY_BITS])]
            # The read port pauses while the table is written (no row is in flight then), so
            # Yosys needs no logic for a read colliding with a write.
            read = mem.read_port()
            m.d.comb += [read.addr.eq(b[1:]), read.en.eq(~self.table.valid)]
            halves.append(read.data)

        # -- stage 1: table read; a * mult[0:12] and a * mult[12:24] (unsigned) -------------
        mult = feed.mult
        lo1, hi1 = reg(unsigned(8 + _SPLIT), "lo1"), reg(unsigned(8 + _MULT_BITS - _SPLIT), "hi1")
        odd1, neg1 = reg(1, "odd1"), reg(1, "neg1")
        m.d.sync += [lo1.eq(a * mult[:_SPLIT]), hi1.eq(a * mult[_SPLIT:]),
                     odd1.eq(b[0]), neg1.eq(feed.x_signed & a[7])]

        # -- stage 2: both table entries, registered as they leave the memories (their
        #    clock-to-output delay is long); x * mult (an int8 x = a - 256) ----------------
        even2, odd2 = reg(signed(_ENTRY_BITS), "even2"), reg(signed(_ENTRY_BITS), "odd2")
        odd2_pick = reg(1, "odd2_pick")
        prod2 = reg(signed(_W_BITS - 1), "prod2")
        m.d.sync += [even2.eq(halves[0]), odd2.eq(halves[1]), odd2_pick.eq(odd1),
                     prod2.eq(lo1 + (hi1 << _SPLIT) - Mux(neg1, side[0].mult, 0) * 256)]

        # -- stage 3: w = x * mult + table[t] -----------------------------------------------
        w3 = reg(signed(_W_BITS), "w3")
        m.d.sync += w3.eq(Mux(odd2_pick, odd2, even2) + prod2)

        # -- stage 4: q = w >> shift (floor); a tie if the shifted-out bits are zero --------
        shift = side[2].shift
        ones = Const((1 << _W_BITS) - 1, _W_BITS)
        q4, tie4 = reg(signed(_W_BITS), "q4"), reg(1, "tie4")
        m.d.sync += [q4.eq(w3 >> shift),
                     tie4.eq(side[2].tie_even & ~(w3.as_unsigned() & ~(ones << shift)[:_W_BITS]).any())]

        # -- stage 5: an odd q at a tie goes down to even (clear bit 0); compare with the
        #    bounds. The comparators see q's low 10 bits (q - 1 < low is q <= low) beside
        #    the tie logic and the check that q fits 10 bits, which then pick. -----------
        s4 = side[3]
        down = Signal(name=f"lane{c}_down")
        q10 = Signal(signed(10), name=f"lane{c}_q10")
        fits = Signal(name=f"lane{c}_fits")      # -512 <= q <= 511: q == q10
        top = q4[9:]
        m.d.comb += [down.eq(tie4 & q4[0]), q10.eq(q4[:10]), fits.eq(~top.any() | top.all())]
        above5, below5, y5 = reg(1, "above5"), reg(1, "below5"), reg(unsigned(8), "y5")
        m.d.sync += [
            # at a tie, q - 1 > high and q > high differ at q = high + 1 only: both give high
            above5.eq(Mux(fits, q10 > s4.high, ~q4[-1])),
            below5.eq(Mux(fits, Mux(down, q10 <= s4.low, q10 < s4.low), q4[-1])),
            y5.eq(Cat(q4[0] & ~down, q4[1:8])),
        ]

        # -- stage 6: clamp -------------------------------------------------------------------
        s5 = side[4]
        out6 = reg(unsigned(8), "out6")
        m.d.sync += out6.eq(Mux(above5, s5.high[:8], Mux(below5, s5.low[:8], y5)))
        return out6
