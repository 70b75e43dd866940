"""Hold the QLinearAdd lanes: onnxruntime's float32 fused multiply-adds with integer logic.

The arithmetic is :func:`accel.numerics.qlinear_add_integer` (``docs/numerics.md``, section
7, "Integer recipe") bit for bit: two FMA8 operations in series per lane, then the
CVTPS2DQ-like rounding, saturation, shift back and clamp, as a 22-stage pipeline per lane.
``config.qadd_lanes`` lanes serve the ``rows`` byte pairs of a row: with one lane per byte a
row enters every cycle; with fewer, the lanes are time-multiplexed and a row takes
``rows / qadd_lanes`` cycles.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .pe import multiplier
from .requant import _clamp, _clamp_ordered, _count_leading_zeros, _round_half_even

__all__ = ["QAddLanes"]

# Widths of the recipe (docs/numerics.md, section 7).
_Q_BITS = 9          # |X|, |Y| <= 255 + 255: one unsigned multiplier operand
_MANT_BITS = 24      # float32 significand (rx_mant, ry_mant and every rounded result)
_P_BITS = _Q_BITS + _MANT_BITS   # |q * m|
_SUM_BITS = 62       # the aligned terms and their sum: |S| < 2**61
_WINDOW = 60         # the grid is at least H - 60 (H = the larger term's top bit position)
_NORM_BITS = 64      # the sum, normalized so that its top bit is bit 63
_EXP_BITS = 13       # signed exponent bookkeeping: params are 10 bits, results stay < 2**11
_FMA_STAGES = 9
_LANE_STAGES = 1 + 2 * _FMA_STAGES + 3   # one lane's pipeline, entry to output byte
# Final rounding of v = r * 2**E (2**23 <= r < 2**24) with R = -E: R <= 14 means
# |v| >= 2**9, which saturates every kernel type; R > 24 means |v| < 1/2, which gives 0.
_SAT_SHIFT = 14
_ZERO_SHIFT = 24
_INT_BITS = 10       # |rne(v)| before saturation: 0 .. 512 (512 = "saturate")


class QAddLanes(wiring.Component):
    """Add rows of quantized bytes lane by lane like onnxruntime's QLinearAdd, bit-exact.

    For each lane ``c``, with ``P = params`` (an :class:`accel.isa.AddParams`) and the bytes
    ``a[c]``, ``b[c]`` read as int8 (``x_signed = 1``) or uint8:

    1. ``X = a + P.shift``, ``Y = b + P.shift``;
    2. ``inner = fma32(Y, ry, fixed)``, ``v = fma32(X, rx, inner)`` with
       ``rx = P.rx_mant * 2**P.rx_exp``, ``ry = P.ry_mant * 2**P.ry_exp``,
       ``fixed = P.fixed_mant * 2**P.fixed_exp``; each ``fma32`` is the exact sum rounded
       half-even to 24 significant bits, with an unbounded exponent (no float32
       subnormals or infinities), as ``numerics._fma_round_f32_integer`` does;
    3. ``q = rne(v)``; ``|v| >= 2**31`` gives the kernel type's minimum, anything else
       saturates to the kernel type: int8 if ``P.kernel_signed`` else uint8;
    4. ``y = clamp(q - P.shift, y_lo, y_hi)``, also saturated to the output type (int8 if
       ``y_signed``, else uint8; a no-op for the bounds ``numerics`` uses);
    5. the output byte is ``y`` modulo 256.

    This equals ``numerics.qlinear_add_integer`` (and so ``numerics.qlinear_add``) with
    the parameters the compiler derives from the scales and zero points, for int8 and
    uint8, with and without ``qdq_s8_to_u8`` (``tests/test_hdl_qadd.py``,
    ``tests/sim/test_qadd.py``). The datapath does not assume normalized mantissas (it
    counts leading zeros of both terms), but only the compiler's values
    (``numerics._float32_parts``: ``2**23 <= mantissa < 2**24`` or a subnormal, zero for
    ``fixed = 0``) are tested.

    Timing contract
    ---------------
    A fixed-latency pipeline without back-pressure: a row on ``i`` in cycle ``T``
    (``i.valid`` high) leaves on ``o`` in cycle ``T + latency`` with its tag, in order, with
    ``latency = 21 + spacing`` and ``spacing = rows / qadd_lanes``. Rows must enter at least
    ``spacing`` cycles apart (every cycle with one lane per byte): lane ``j`` takes byte
    ``p * qadd_lanes + j`` in the ``p``-th cycle of the row, the later bytes wait in holding
    registers, and the bytes of the row's earlier cycles wait at the output for its last.
    ``params``, ``x_signed``, ``y_signed``, ``y_lo`` and ``y_hi`` are sampled together with
    the row, in the cycle its ``i.valid`` is high, and carried along with it; they may
    change in the cycle after the last row of an instruction has entered.

    Pipeline stages (each ends in a register): (1) ``X``, ``Y`` and their magnitudes;
    (2-10) ``inner``; (11-19) ``v``; (20) the rounding shift of ``v``; (21) the kernel
    type's saturation; (22) the shift back, output type and clamp. Each FMA8 takes nine
    stages: the 9x24 product and the addend's top bit; the product's top bit; the grid;
    the two alignment shifts; the alignment; the signed add; the leading-zero count; the
    normalization; the rounding to 24 bits.

    Parameters
    ----------
    config : HardwareConfig
        ``rows`` is the row width (bytes), ``qadd_lanes`` the number of lanes.
    tag_width : int
        Width of the tag carried from each input row to its output row.

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"a": data.ArrayLayout(unsigned(8), rows), "b": data.ArrayLayout(unsigned(8), rows), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of input byte pairs per transfer.
    o : ``Out(stream.Signature(data.StructLayout({"data": data.ArrayLayout(unsigned(8), rows), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of output bytes per input row, ``latency`` cycles later.
    params : ``In(isa.AddParams)``
        The layer's constants, shared by every lane; sampled with the row.
    x_signed : ``In(1)``
        Read ``a`` and ``b`` as int8 (1) or uint8 (0); sampled with the row.
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
        """Return the cycles from a row on ``i`` to its row on ``o``: ``21 + spacing``."""
        return _LANE_STAGES - 1 + self.spacing

    # TODO: each lane is two full FMA8 datapaths: on an ECP5 (Yosys, before LUT mapping)
    # about 1,530 flip-flops, 510 carry cells and four MULT18X18D per lane (a 9x24 product
    # needs two), plus about 1,600 flip-flops of shared delay lines. The inner FMA8 depends only on the 8-bit Y, so a 256-entry
    # float32 table of ``inner[Y]`` per layer (written by the compiler, docs/numerics.md)
    # would remove half of each lane; a near/far-path split could narrow the 62-bit
    # alignment and normalization.
    def elaborate(self, platform):
        m = Module()

        # Per-row values shared by the lanes, registered on entry (stage 1): the row's
        # valid and tag travel through every stage, each parameter only as far as its
        # user. As in the requantizer, saturation to the output type and the clamp merge
        # into one clamp with bounds computed on entry.
        c = self._config
        lanes, spacing = c.qadd_lanes, self.spacing
        p = self.params
        side_layout = data.StructLayout({
            "valid": 1, "tag": unsigned(self._tag_width), "phase": range(spacing),
            "x_signed": 1,
            "rx_mant": unsigned(_MANT_BITS), "rx_exp": signed(10),
            "ry_mant": unsigned(_MANT_BITS), "ry_exp": signed(10),
            "fixed_neg": 1, "fixed_mag": unsigned(26), "fixed_exp": signed(10),
            "shift": unsigned(8), "kernel_signed": 1, "low": signed(9), "high": signed(9),
        })
        feed = Signal(side_layout, name="feed")   # this cycle's row (or part of a row)
        entry = Signal(side_layout, name="entry")
        qmin = Mux(self.y_signed, -128, 0)
        qmax = Mux(self.y_signed, 127, 255)
        fixed = p.fixed_mant
        m.d.comb += [
            feed.valid.eq(self.i.valid), feed.tag.eq(self.i.payload.tag), feed.x_signed.eq(self.x_signed),
            feed.rx_mant.eq(p.rx_mant), feed.rx_exp.eq(p.rx_exp),
            feed.ry_mant.eq(p.ry_mant), feed.ry_exp.eq(p.ry_exp),
            feed.fixed_neg.eq(fixed[-1]),
            feed.fixed_mag.eq(Mux(fixed[-1], -fixed, fixed)),
            feed.fixed_exp.eq(p.fixed_exp),
            feed.shift.eq(p.shift), feed.kernel_signed.eq(p.kernel_signed),
            feed.low.eq(_clamp(qmin, self.y_lo, self.y_hi)),
            feed.high.eq(_clamp(qmax, self.y_lo, self.y_hi)),
        ]
        a_bytes, b_bytes = self.i.payload.a, self.i.payload.b
        if spacing > 1:
            # Time-multiplexing: the lanes take bytes 0 .. lanes-1 straight from the row; the
            # later bytes wait in holding registers that shift down by `lanes` bytes per
            # cycle. `phase` is the next cycle's phase (0: no row in progress).
            phase = Signal(range(spacing), name="phase")
            held = Signal(side_layout, name="held")
            held_a = Signal(8 * c.rows, name="held_a")
            held_b = Signal(8 * c.rows, name="held_b")
            step = 8 * lanes
            with m.If(self.i.valid):
                m.d.sync += [held.eq(feed), phase.eq(1),
                             held_a.eq(a_bytes.as_value() >> step), held_b.eq(b_bytes.as_value() >> step)]
            with m.Elif(phase != 0):
                m.d.sync += [phase.eq(Mux(phase == spacing - 1, 0, phase + 1)),
                             held_a.eq(held_a >> step), held_b.eq(held_b >> step)]
            bytes_layout = data.ArrayLayout(unsigned(8), c.rows)
            a_bytes = data.View(bytes_layout, Mux(self.i.valid, a_bytes.as_value(), held_a))
            b_bytes = data.View(bytes_layout, Mux(self.i.valid, b_bytes.as_value(), held_b))
            muxed = Signal(side_layout, name="muxed")
            with m.If(self.i.valid):
                m.d.comb += muxed.eq(feed)
            with m.Elif(phase != 0):
                m.d.comb += [muxed.eq(held), muxed.phase.eq(phase)]
            feed = muxed
        m.d.sync += entry.eq(feed)
        outer = 1 + _FMA_STAGES  # the stage whose registers feed the outer FMA8
        row = {
            "ry_mant": entry.ry_mant, "ry_exp": entry.ry_exp, "fixed_neg": entry.fixed_neg,
            "fixed_mag": entry.fixed_mag, "fixed_exp": entry.fixed_exp,
            "rx_mant": _delay(m, entry.rx_mant, "rx_mant", outer - 1),
            "rx_exp": _delay(m, entry.rx_exp, "rx_exp", outer - 1),
            # stage 21 reads stage 20's copy, stage 22 stage 21's
            "kernel_signed": _delay(m, entry.kernel_signed, "kernel_signed", _LANE_STAGES - 3),
            "shift": _delay(m, entry.shift, "shift", _LANE_STAGES - 2),
            "low": _delay(m, entry.low, "low", _LANE_STAGES - 2),
            "high": _delay(m, entry.high, "high", _LANE_STAGES - 2),
            "x_signed": feed.x_signed, "add": feed.shift,   # stage 1 reads this cycle's row
        }
        valid = _delay(m, entry.valid, "valid", _LANE_STAGES - 1)
        tag = _delay(m, entry.tag, "tag", _LANE_STAGES - 1)
        last_phase = _delay(m, entry.phase, "phase", _LANE_STAGES - 1) if spacing > 1 else 0
        outputs = [self._lane(m, platform, j, a_bytes[j], b_bytes[j], row) for j in range(lanes)]
        # Bytes of the row's earlier cycles wait for its last cycle's, then leave together.
        for ph in range(spacing):
            for j in range(lanes):
                byte = ph * lanes + j
                if ph == spacing - 1:
                    m.d.comb += self.o.payload.data[byte].eq(outputs[j])
                else:
                    kept = Signal(8, name=f"out{byte}")
                    with m.If(valid & (last_phase == ph)):
                        m.d.sync += kept.eq(outputs[j])
                    m.d.comb += self.o.payload.data[byte].eq(kept)
        m.d.comb += [self.o.valid.eq(valid & (last_phase == spacing - 1)), self.o.payload.tag.eq(tag)]
        return m

    def _lane(self, m, platform, c, a, b, row):
        """Build lane ``c``'s pipeline; return its output byte (a last-stage register)."""
        def reg(shape, name):
            return Signal(shape, name=f"lane{c}_{name}")

        # -- stage 1: X = a + shift, Y = b + shift (in -128 .. 510) as sign and magnitude --
        def code(byte, name):
            value = Signal(signed(10), name=f"lane{c}_{name}")
            m.d.comb += value.eq(Mux(row["x_signed"], byte.as_signed(), byte) + row["add"])
            neg, mag = reg(1, f"{name}_neg1"), reg(unsigned(_Q_BITS), f"{name}_mag1")
            m.d.sync += [neg.eq(value[-1]), mag.eq(Mux(value[-1], -value, value))]
            return neg, mag

        x_neg, x_mag = code(a, "x")
        y_neg, y_mag = code(b, "y")

        # -- stages 2-10: inner = fma32(Y, ry, fixed) ---------------------------------------
        inner = _fma8(m, platform, f"lane{c}_inner", y_neg, y_mag, row["ry_mant"], row["ry_exp"],
                      row["fixed_neg"], row["fixed_mag"], row["fixed_exp"])
        x_neg = _delay(m, x_neg, f"lane{c}_x_neg", _FMA_STAGES)  # X waits for inner
        x_mag = _delay(m, x_mag, f"lane{c}_x_mag", _FMA_STAGES)

        # -- stages 11-19: v = fma32(X, rx, inner) ------------------------------------------
        i_neg, i_zero, i_mant, i_exp = inner
        v_neg, v_zero, v_mant, v_exp = _fma8(
            m, platform, f"lane{c}_outer", x_neg, x_mag, row["rx_mant"], row["rx_exp"],
            i_neg, Mux(i_zero, 0, i_mant), i_exp)

        # -- stage 20: q = rne(|v|) = rne(r / 2**R), R = -E; 512 stands for "saturate" -----
        shift = Signal(signed(_EXP_BITS + 1), name=f"lane{c}_shift")
        m.d.comb += shift.eq(-v_exp)
        coarse, coarse_sticky = _shift_right_jam(v_mant, (shift - (_SAT_SHIFT + 1))[:4])
        q_round = _round_half_even(coarse, _SAT_SHIFT + 1, extra_sticky=coarse_sticky)
        neg20, too_big20 = reg(1, "neg20"), reg(1, "too_big20")
        q20 = reg(unsigned(_INT_BITS), "q20")
        # |v| >= 2**31 (CVTPS2DQ's "integer indefinite"): E + 24 > 31
        m.d.sync += [neg20.eq(v_neg), too_big20.eq(~v_zero & (v_exp > 31 - _MANT_BITS))]
        with m.If(v_zero | (shift > _ZERO_SHIFT)):
            m.d.sync += q20.eq(0)
        with m.Elif(shift <= _SAT_SHIFT):
            m.d.sync += q20.eq(1 << (_INT_BITS - 1))
        with m.Else():
            m.d.sync += q20.eq(q_round)

        # -- stage 21: saturate to the kernel type (its minimum if |v| >= 2**31) ------------
        k21 = reg(signed(10), "k21")
        neg_limit = Mux(row["kernel_signed"], 128, 0)    # -kernel minimum
        pos_limit = Mux(row["kernel_signed"], 127, 255)  # kernel maximum
        with m.If(too_big20):
            m.d.sync += k21.eq(-neg_limit)
        with m.Elif(neg20):
            m.d.sync += k21.eq(-Mux(q20 > neg_limit, neg_limit, q20))
        with m.Else():
            m.d.sync += k21.eq(Mux(q20 > pos_limit, pos_limit, q20))

        # -- stage 22: shift back, output type and clamp ------------------------------------
        y = Signal(signed(11), name=f"lane{c}_y")
        m.d.comb += y.eq(k21 - row["shift"])
        out22 = reg(unsigned(8), "out22")
        m.d.sync += out22.eq(_clamp_ordered(y, row["low"], row["high"])[:8])
        return out22


def _delay(m, value, name, stages=1):
    """Return ``value`` after ``stages`` registers."""
    for s in range(stages):
        delayed = Signal.like(value, name=f"{name}_d{s + 1}" if stages > 1 else name)
        m.d.sync += delayed.eq(value)
        value = delayed
    return value


def _shift_right_jam(value, amount):
    """Return ``(value >> amount, OR of the bits shifted out)``: a plain shifter and a mask."""
    ones = Const((1 << len(value)) - 1, len(value))
    lost = (value & ~(ones << amount)[:len(value)]).any()
    return (value >> amount)[:len(value)], lost


def _zero_extend(value, width):
    """Return the unsigned ``value`` with zeros above it, ``width`` bits in all."""
    return Cat(value, Const(0, width - len(value)))


def _fma8(m, platform, name, q_neg, q_mag, mant, exp, a_neg, a_mag, a_exp):
    """Build one FMA8 (``docs/numerics.md``, section 7): ``fma32(+-q, mant * 2**exp, +-a_mag * 2**a_exp)``.

    The inputs are registers of one stage (or values derived from them); the result is
    ``(neg, zero, r, E)``, registers ``_FMA_STAGES`` stages later: the sum rounded half-even
    to 24 significant bits is ``(-1)**neg * r * 2**E`` with ``2**23 <= r < 2**24``, or zero
    if ``zero`` (then ``r`` and ``E`` mean nothing).
    """
    def reg(shape, label):
        return Signal(shape, name=f"{name}_{label}")

    def delay(value, label):
        return _delay(m, value, f"{name}_{label}")

    # -- F1: the product |q| * mant; the addend's top bit position hA = a_exp + bitlen|a| --
    a_mag_in = Signal(len(a_mag), name=f"{name}_a_mag_in")
    m.d.comb += a_mag_in.eq(a_mag)
    a_mag = a_mag_in
    mul = multiplier(unsigned(_Q_BITS), unsigned(_MANT_BITS), platform=platform)
    m.submodules[f"{name}_mul"] = mul
    m.d.comb += [mul.a.eq(q_mag), mul.b.eq(mant)]
    a_zero, a_lz = _count_leading_zeros(_zero_extend(a_mag, 32))
    p1 = reg(unsigned(_P_BITS), "p1")
    p_neg1, p_exp1 = reg(1, "p_neg1"), reg(signed(_EXP_BITS), "p_exp1")
    a_neg1, a_zero1 = reg(1, "a_neg1"), reg(1, "a_zero1")
    a_mag1 = reg(unsigned(len(a_mag)), "a_mag1")
    a_exp1, a_top1 = reg(signed(_EXP_BITS), "a_exp1"), reg(signed(_EXP_BITS), "a_top1")
    m.d.sync += [
        p1.eq(mul.p), p_neg1.eq(q_neg), p_exp1.eq(exp),
        a_neg1.eq(a_neg), a_zero1.eq(a_zero), a_mag1.eq(a_mag), a_exp1.eq(a_exp),
        a_top1.eq(a_exp + (32 - a_lz)),
    ]

    # -- F2: the product's top bit position hP = p_exp + bitlen(P) ------------------------
    p_zero, p_lz = _count_leading_zeros(_zero_extend(p1, _NORM_BITS))
    p2, p_neg2, p_zero2 = delay(p1, "p2"), delay(p_neg1, "p_neg2"), reg(1, "p_zero2")
    p_exp2, p_top2 = delay(p_exp1, "p_exp2"), reg(signed(_EXP_BITS), "p_top2")
    a_mag2, a_neg2, a_zero2 = delay(a_mag1, "a_mag2"), delay(a_neg1, "a_neg2"), delay(a_zero1, "a_zero2")
    a_exp2, a_top2 = delay(a_exp1, "a_exp2"), delay(a_top1, "a_top2")
    # Each term's floor (top - 60) is computed here too, so F3 only compares and selects.
    p_floor2, a_floor2 = reg(signed(_EXP_BITS), "p_floor2"), reg(signed(_EXP_BITS), "a_floor2")
    m.d.sync += [p_zero2.eq(p_zero), p_top2.eq(p_exp1 + (_NORM_BITS - p_lz)),
                 p_floor2.eq(p_exp1 + (_NORM_BITS - _WINDOW) - p_lz), a_floor2.eq(a_top1 - _WINDOW)]

    # -- F3: the grid g = max(lowest exponent, H - 60), over the nonzero terms ------------
    lowest = Mux(p_zero2, a_exp2, Mux(a_zero2 | (p_exp2 < a_exp2), p_exp2, a_exp2))
    floor = Signal(signed(_EXP_BITS), name=f"{name}_floor")
    m.d.comb += floor.eq(Mux(~p_zero2 & (a_zero2 | (p_top2 > a_top2)), p_floor2, a_floor2))
    g3 = reg(signed(_EXP_BITS), "g3")
    m.d.sync += g3.eq(Mux(floor > lowest, floor, lowest))
    p3, p_neg3, p_exp3 = delay(p2, "p3"), delay(p_neg2, "p_neg3"), delay(p_exp2, "p_exp3")
    a_mag3, a_neg3, a_exp3 = delay(a_mag2, "a_mag3"), delay(a_neg2, "a_neg3"), delay(a_exp2, "a_exp3")
    zero3 = delay(p_zero2 & a_zero2, "zero3")

    # -- F4: each term's shift onto the grid: left by d = exp - g >= 0 (at most 60), or
    #        right by -d with the lost bits jammed into bit 0 -----------------------------
    def plan(exp_, width, label):
        d = Signal(signed(_EXP_BITS + 1), name=f"{name}_{label}_d")
        m.d.comb += d.eq(exp_ - g3)
        left, far, amount = reg(1, f"{label}_left4"), reg(1, f"{label}_far4"), reg(6, f"{label}_amount4")
        m.d.sync += [left.eq(d >= 0), far.eq(-d >= width), amount.eq(Mux(d >= 0, d, -d)[:6])]
        return left, far, amount

    p_plan = plan(p_exp3, _P_BITS, "p")
    a_plan = plan(a_exp3, len(a_mag), "a")
    p4, p_neg4 = delay(p3, "p4"), delay(p_neg3, "p_neg4")
    a_mag4, a_neg4 = delay(a_mag3, "a_mag4"), delay(a_neg3, "a_neg4")
    g4, zero4 = delay(g3, "g4"), delay(zero3, "zero4")

    # -- F5: align both terms ---------------------------------------------------------------
    def align(mag, left, far, amount, label):
        down, sticky = _shift_right_jam(mag, amount)
        aligned = reg(unsigned(_SUM_BITS), f"{label}5")
        with m.If(left):
            m.d.sync += aligned.eq((mag << amount)[:_SUM_BITS])
        with m.Elif(far):
            m.d.sync += aligned.eq(mag.any())
        with m.Else():
            m.d.sync += aligned.eq(down | sticky)
        return aligned

    p5 = align(p4, *p_plan, "p")
    a5 = align(a_mag4, *a_plan, "a")
    p_neg5, a_neg5 = delay(p_neg4, "p_neg5"), delay(a_neg4, "a_neg5")
    g5, zero5 = delay(g4, "g5"), delay(zero4, "zero5")

    # -- F6: the signed sum, as sign and magnitude ------------------------------------------
    diff = Signal(signed(_SUM_BITS + 1), name=f"{name}_diff")
    m.d.comb += diff.eq(p5 - a5)
    neg6, mag6 = reg(1, "neg6"), reg(unsigned(_SUM_BITS + 1), "mag6")
    with m.If(p_neg5 == a_neg5):
        m.d.sync += [neg6.eq(p_neg5), mag6.eq(p5 + a5)]
    with m.Elif(diff[-1]):
        m.d.sync += [neg6.eq(a_neg5), mag6.eq(a5 - p5)]
    with m.Else():
        m.d.sync += [neg6.eq(p_neg5), mag6.eq(diff)]
    g6, zero6 = delay(g5, "g6"), delay(zero5, "zero6")

    # -- F7: leading zeros of |S| -------------------------------------------------------------
    s_zero, s_lz = _count_leading_zeros(_zero_extend(mag6, _NORM_BITS))
    neg7, mag7, g7 = delay(neg6, "neg7"), delay(mag6, "mag7"), delay(g6, "g7")
    zero7, lz7 = reg(1, "zero7"), reg(6, "lz7")
    m.d.sync += [zero7.eq(zero6 | s_zero), lz7.eq(s_lz)]

    # -- F8: normalize so that the top bit is bit 63: |S| = norm * 2**(lz - 63) --------------
    norm8 = reg(unsigned(_NORM_BITS), "norm8")
    e8 = reg(signed(_EXP_BITS), "e8")
    m.d.sync += [norm8.eq((mag7 << lz7)[:_NORM_BITS]),
                 e8.eq(g7 + (_NORM_BITS - _MANT_BITS) - lz7)]
    neg8, zero8 = delay(neg7, "neg8"), delay(zero7, "zero8")

    # -- F9: round half-even to 24 significant bits; a carry gives 2**24 = 2**23 * 2 ---------
    rounded = _round_half_even(norm8, _NORM_BITS - _MANT_BITS)
    carry = rounded[_MANT_BITS]
    r9, e9 = reg(unsigned(_MANT_BITS), "r9"), reg(signed(_EXP_BITS), "e9")
    m.d.sync += [r9.eq(rounded[:_MANT_BITS] | (carry << (_MANT_BITS - 1))), e9.eq(e8 + carry)]
    neg9, zero9 = delay(neg8, "neg9"), delay(zero8, "zero9")
    return neg9, zero9, r9, e9
