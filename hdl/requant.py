"""Hold the requantizer: bias, float32-exact rescaling, zero point, saturation and clamp per lane.

The arithmetic is :func:`accel.numerics.requantize_integer` (``docs/numerics.md``, section
4) with the bias added first, bit for bit, as a 9-stage pipeline per lane. With
``config.requant_lanes`` lanes for ``cols`` columns, a row takes ``cols / requant_lanes``
cycles (the lanes are time-multiplexed over the columns), which is how the small presets
save area.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .dsp import ProductBank, dsp_family
from .lanes import collect_lanes, multiplex_lanes

__all__ = ["Requantizer"]

# Widths of the recipe (docs/numerics.md, section 4).
_V_BITS = 32         # v = acc + bias, int32 wrap-around
_MANT_BITS = 24      # float32 significand, and the rounded |v| and product
_EXP_BITS = 10       # signed exponent bookkeeping: covers every 8-bit ParamWord exponent
_Q_BITS = 10         # |rne(value)| before the zero point: 0 .. 512 (512 = "saturate")
_Y_BITS = 12         # +-q + zero point, before saturation
# The final rounding divides by 2**R. For R <= _SAT_SHIFT the magnitude is at least
# 2**23 / 2**14 = 512, which saturates for every 9-bit zero point; for R > _ZERO_SHIFT it
# is below 1/2 and rounds to 0. In between a 0..9-bit shifter does the work.
_SAT_SHIFT = 14
_ZERO_SHIFT = 24
_PARTIAL_SPLIT = 17  # the 24x24 product as four partial products of at most 17x17 bits
_LANE_STAGES = 9


class Requantizer(wiring.Component):
    """Requantize rows of accumulators to int8/uint8 bytes, bit-exact with onnxruntime.

    For each lane ``c`` with parameters ``P = params[c]`` (an :class:`accel.isa.ParamWord`):

    1. ``v = acc[c] + P.bias`` (32-bit two's complement, wrapping; ``acc`` is
       sign-extended first when ``acc_width`` is 24);
    2. ``q = rne(f32(f32(v) * M))`` with ``M = P.mantissa * 2**P.exponent``, computed with
       integers only: ``|v|`` rounded half-even to 24 significant bits, the exact 24x24
       product with the mantissa, that product rounded half-even to 24 significant bits,
       then rounded half-even to an integer;
    3. ``y = clamp(sat(q + y_zp), y_lo, y_hi)``: saturation to int8 (``y_signed = 1``) or
       uint8 (``y_signed = 0``), then ``min(max(y, y_lo), y_hi)``;
    4. the output byte is ``y`` modulo 256 (the two's-complement byte of an int8).

    This equals ``numerics.requantize_integer(v, M, y_zp, dtype, clamp=(y_lo, y_hi))`` for
    every ``acc`` and every multiplier ``numerics.decompose_multiplier`` accepts
    (``2**23 <= mantissa < 2**24``, ``-63 <= exponent <= -16``). Other exponents are
    handled exactly too (large ones saturate, small ones give 0); a mantissa below
    ``2**23`` is not supported.

    Timing contract
    ---------------
    A fixed-latency pipeline without back-pressure: a row on ``i`` in cycle ``T`` (``i.valid``
    high) leaves on ``o`` in cycle ``T + latency`` with its tag, in order, where
    ``latency = 8 + spacing`` and ``spacing = cols / requant_lanes``. Rows must enter at
    least ``spacing`` cycles apart (every cycle with one lane per column): lane ``j`` takes
    column ``p * requant_lanes + j`` in the ``p``-th cycle of the row. ``params``, ``y_zp``,
    ``y_lo``, ``y_hi`` and ``y_signed`` are sampled together with the row, in the cycle its
    ``i.valid`` is high, and carried along with it: they must be valid while rows enter and
    may change in the cycle after the last row of an instruction has entered, even though
    that row is still in the pipeline.

    Pipeline stages of a lane (each ends in a register): (1) bias add; (2) absolute value;
    (3) leading-zero count; (4) normalization and rounding of ``|v|`` to 24 bits;
    (5) four partial products of the 24x24 product, registered (a
    :class:`~accel.hdl.dsp.ProductBank`: registered MULT18X18D on ECP5, LUTs on iCE40 whose
    DSPs serve the array); (6) their sum; (7) rounding of the product to 24 bits; (8) the
    final rounding shift; (9) sign, zero point, saturation and clamp.

    Parameters
    ----------
    config : HardwareConfig
        ``cols`` is the row width, ``requant_lanes`` the number of lanes, ``acc_width`` the
        accumulator width.
    tag_width : int
        Width of the tag carried from each input row to its output row.
    dsp_blocks : int or None
        Use at most this many DSP blocks for the partial products (``None``: four per lane
        where the chip's blocks fit them); the others are LUT multipliers.

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"acc": data.ArrayLayout(signed(acc_width), cols), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of accumulators per transfer.
    o : ``Out(stream.Signature(data.StructLayout({"data": data.ArrayLayout(unsigned(8), cols), "tag": unsigned(tag_width)}), always_ready=True))``
        One row of output bytes per input row, ``latency`` cycles later.
    params : ``In(data.ArrayLayout(isa.ParamWord, cols))``
        Each lane's bias, mantissa and exponent; sampled with the row.
    y_zp : ``In(signed(9))``
        Output zero point; sampled with the row.
    y_lo : ``In(signed(9))``
        Clamp low bound; sampled with the row.
    y_hi : ``In(signed(9))``
        Clamp high bound; sampled with the row.
    y_signed : ``In(1)``
        Saturate to int8 (1) or uint8 (0); sampled with the row.
    """

    def __init__(self, config: HardwareConfig, *, tag_width: int = 18, dsp_blocks: int | None = None):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        if not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self._config = config
        self._tag_width = tag_width
        self._dsp_blocks = dsp_blocks
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(config.acc_width), config.cols),
                "tag": unsigned(tag_width),
            }), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(unsigned(8), config.cols),
                "tag": unsigned(tag_width),
            }), always_ready=True)),
            "params": In(data.ArrayLayout(isa.ParamWord, config.cols)),
            "y_zp": In(signed(9)),
            "y_lo": In(signed(9)),
            "y_hi": In(signed(9)),
            "y_signed": In(1),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    @property
    def tag_width(self) -> int:
        return self._tag_width

    @property
    def spacing(self) -> int:
        """Return the fewest cycles between two rows on ``i``: ``cols / requant_lanes``."""
        return self._config.requant_spacing

    @property
    def latency(self) -> int:
        """Return the cycles from a row on ``i`` to its row on ``o``: ``8 + spacing``."""
        return _LANE_STAGES - 1 + self.spacing

    def elaborate(self, platform):
        m = Module()

        # Per-row side band: valid, tag, the zero point and the output bounds, one copy per
        # stage. Saturation then clamp, clamp(clamp(y, qmin, qmax), lo, hi), is one clamp
        # clamp(y, low, high) with low = clamp(qmin, lo, hi) <= high = clamp(qmax, lo, hi)
        # (clamp(v, a, b) = min(max(v, a), b) is monotonic in v), so the bounds are merged
        # on entry and the last stage compares once.
        c = self._config
        lanes, spacing = c.requant_lanes, self.spacing
        side_layout = data.StructLayout({
            "valid": 1, "tag": unsigned(self._tag_width), "phase": range(spacing),
            "zp": signed(9), "low": signed(9), "high": signed(9),
        })
        lane_stages = _LANE_STAGES
        side = [Signal(side_layout, name=f"side{s}") for s in range(1, lane_stages + 1)]
        qmin = Mux(self.y_signed, -128, 0)
        qmax = Mux(self.y_signed, 127, 255)
        entry = Signal(side_layout)
        m.d.comb += [
            entry.valid.eq(self.i.valid), entry.tag.eq(self.i.payload.tag), entry.zp.eq(self.y_zp),
            entry.low.eq(_clamp(qmin, self.y_lo, self.y_hi)),
            entry.high.eq(_clamp(qmax, self.y_lo, self.y_hi)),
        ]
        # Time-multiplexed lanes (hdl/lanes.py): `entry` becomes this cycle's row, or part of one.
        entry, row = multiplex_lanes(m, entry, {"acc": self.i.payload.acc, "params": self.params}, lanes)
        m.d.sync += side[0].eq(entry)
        for s in range(1, lane_stages):
            m.d.sync += side[s].eq(side[s - 1])

        outputs = [self._lane(m, platform, j, row["acc"][j], row["params"][j], side) for j in range(lanes)]
        m.d.comb += [self.o.valid.eq(collect_lanes(m, outputs, side[-1], self.o.payload.data)),
                     self.o.payload.tag.eq(side[-1].tag)]
        return m

    @staticmethod
    def dsp_blocks_for(config: HardwareConfig, family: str | None) -> int:
        """Return the DSP blocks the partial products of ``config``'s lanes take on ``family`` without a limit."""
        operand = signed(_PARTIAL_SPLIT + 1)
        primitive = ProductBank.primitive_for(operand, operand, family)
        return 4 * config.requant_lanes if primitive == "MULT18X18D" else 0

    def _lane(self, m, platform, c, acc, param, side):
        """Build lane ``c``'s pipeline; return its output byte (a stage-8 register)."""
        def reg(shape, name):
            return Signal(shape, name=f"lane{c}_{name}")

        # -- stage 1: v = acc + bias (int32 wrap). Sample the mantissa and exponent. -----
        v = reg(signed(_V_BITS), "v")
        mant1, expo1 = reg(unsigned(_MANT_BITS), "mant1"), reg(signed(8), "expo1")
        m.d.sync += [v.eq(acc + param.bias), mant1.eq(param.mantissa), expo1.eq(param.exponent)]

        # -- stage 2: sign and magnitude, |v| <= 2**31 ------------------------------------
        neg2, mag2 = reg(1, "neg2"), reg(unsigned(_V_BITS), "mag2")
        mant2 = reg(unsigned(_MANT_BITS), "mant2")
        # |v| = a * 2**(n - 24) after rounding, with n = 32 - lz significant bits, and the
        # product a * m is rounded at bit 23 + t (t = 0 or 1 below). So the value is
        # r * 2**(n - 24 + e + 23 + t) = r * 2**-R with R = lz - 31 - e - t (- carries).
        # The exponent's part, -31 - e, is ready two stages before the leading zeros.
        e2 = reg(signed(_EXP_BITS), "e2")
        m.d.sync += [
            neg2.eq(v[-1]),
            mag2.eq(Mux(v[-1], -v, v)),
            mant2.eq(mant1), e2.eq(-31 - expo1),
        ]

        # -- stage 3: leading zeros ---------------------------------------------------------
        zero, lz = _count_leading_zeros(mag2)
        neg3, zero3, mag3 = reg(1, "neg3"), reg(1, "zero3"), reg(unsigned(_V_BITS), "mag3")
        lz3 = reg(unsigned(5), "lz3")
        mant3 = reg(unsigned(_MANT_BITS), "mant3")
        e3, e3_less = reg(signed(_EXP_BITS), "e3"), reg(signed(_EXP_BITS), "e3_less")
        m.d.sync += [
            neg3.eq(neg2), zero3.eq(zero), mag3.eq(mag2), lz3.eq(lz), mant3.eq(mant2),
            e3.eq(e2), e3_less.eq(e2 - 1),
        ]

        # -- stage 4: f32(|v|): normalize to 32 bits, round half-even to 24 ---------------
        norm = Signal(unsigned(_V_BITS), name=f"lane{c}_norm")
        m.d.comb += norm.eq(mag3 << lz3)
        a_round = _round_half_even(norm, 8)  # 25 bits, top bit is the carry
        neg4, zero4 = reg(1, "neg4"), reg(1, "zero4")
        a4 = reg(unsigned(_MANT_BITS), "a4")
        mant4 = reg(unsigned(_MANT_BITS), "mant4")
        shift4 = reg(signed(_EXP_BITS), "shift4")
        carry4 = a_round[_MANT_BITS]
        m.d.sync += [
            neg4.eq(neg3), zero4.eq(zero3), mant4.eq(mant3),
            # A carry out of the rounding gives 2**24 = 2**23 * 2: renormalize.
            a4.eq(a_round[:_MANT_BITS] | (carry4 << (_MANT_BITS - 1))),
            # R = lz - 31 - e - carry: both sums are formed beside the rounding, which picks one.
            shift4.eq(Mux(carry4, lz3 + e3_less, lz3 + e3)),
        ]

        # -- stage 5: four registered partial products (one DSP block each on ECP5) ------
        # a = a_hi * 2**17 + a_lo and m = m_hi * 2**17 + m_lo, so every partial product fits
        # an 18x18 signed multiplier; the split keeps the DSP and the adders in separate stages.
        split = _PARTIAL_SPLIT
        budget = None if self._dsp_blocks is None else max(0, min(4, self._dsp_blocks - 4 * c))
        bank = ProductBank(4, signed(split + 1), signed(split + 1), family=dsp_family(platform),
                           max_blocks=budget)
        m.submodules[f"mul{c}"] = bank
        halves_a, halves_m = (a4[:split], a4[split:]), (mant4[:split], mant4[split:])
        for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            m.d.comb += [bank.a[k].eq(halves_a[i]), bank.b[k].eq(halves_m[j])]  # zero-extended
        neg5, zero5 = reg(1, "neg5"), reg(1, "zero5")
        shift5 = reg(signed(_EXP_BITS), "shift5")
        m.d.sync += [neg5.eq(neg4), zero5.eq(zero4), shift5.eq(shift4)]

        # -- stage 6: the exact 24x24 product, in [2**46, 2**48) --------------------------
        neg6a, zero6a = reg(1, "neg6a"), reg(1, "zero6a")
        p5 = reg(unsigned(2 * _MANT_BITS), "p5")
        shift6a = reg(signed(_EXP_BITS), "shift6a")
        shift5_less1, shift5_less2 = reg(signed(_EXP_BITS), "shift5_less1"), reg(signed(_EXP_BITS), "shift5_less2")
        parts = [bank.p[k].as_unsigned() for k in range(4)]
        m.d.sync += [
            neg6a.eq(neg5), zero6a.eq(zero5), shift6a.eq(shift5),
            shift5_less1.eq(shift5 - 1), shift5_less2.eq(shift5 - 2),
            p5.eq(parts[0] + ((parts[1] + parts[2]) << split) + (parts[3] << (2 * split))),
        ]
        neg5, zero5, shift5 = neg6a, zero6a, shift6a

        # -- stage 7: f32(product): round half-even to 24 significant bits ----------------
        # Both normalizations (top bit 47 or 46) are rounded side by side; the top bit picks one.
        top = p5[-1]
        r_round = Signal(unsigned(_MANT_BITS + 1), name=f"lane{c}_r_round")
        m.d.comb += r_round.eq(Mux(top, _round_half_even(p5[1:], _MANT_BITS - 1, extra_sticky=p5[0]),
                                   _round_half_even(p5[:-1], _MANT_BITS - 1)))
        carry6 = r_round[_MANT_BITS]
        neg6, zero6 = reg(1, "neg6"), reg(1, "zero6")
        r6 = reg(unsigned(_MANT_BITS), "r6")
        shift6 = reg(signed(_EXP_BITS), "shift6")
        m.d.sync += [
            neg6.eq(neg5), zero6.eq(zero5),
            r6.eq(r_round[:_MANT_BITS] | (carry6 << (_MANT_BITS - 1))),
            shift6.eq(Mux(top & carry6, shift5_less2, Mux(top | carry6, shift5_less1, shift5))),
        ]

        # -- stage 8: q = rne(r / 2**R) ---------------------------------------------------
        # R <= 14 saturates, R >= 25 gives 0; R in 15..24 shifts right by 15 + (R - 15).
        coarse, coarse_sticky = _shift_right_sticky(r6, (shift6 - (_SAT_SHIFT + 1))[:4])
        q_round = _round_half_even(coarse, _SAT_SHIFT + 1, extra_sticky=coarse_sticky)
        neg7 = reg(1, "neg7")
        q7 = reg(unsigned(_Q_BITS), "q7")
        m.d.sync += neg7.eq(neg6)
        with m.If(zero6 | (shift6 > _ZERO_SHIFT)):
            m.d.sync += q7.eq(0)
        with m.Elif(shift6 <= _SAT_SHIFT):
            m.d.sync += q7.eq(1 << (_Q_BITS - 1))
        with m.Else():
            m.d.sync += q7.eq(q_round)

        # -- stage 9: sign, zero point, saturation to the output type and clamp -----------
        s7 = side[-2]
        y = Signal(signed(_Y_BITS), name=f"lane{c}_y")
        m.d.comb += y.eq(Mux(neg7, s7.zp - q7, s7.zp + q7))
        out8 = reg(unsigned(8), "out8")
        m.d.sync += out8.eq(_clamp_ordered(y, s7.low, s7.high)[:8])
        return out8


def _clamp(value, low, high):
    """Return ``min(max(value, low), high)`` (``high`` if ``low > high``, like ``np.clip``)."""
    raised = Mux(value < low, low, value)
    return Mux(raised > high, high, raised)


def _clamp_ordered(value, low, high):
    """Return ``min(max(value, low), high)`` for ``low <= high``, comparing in parallel."""
    return Mux(value > high, high, Mux(value < low, low, value))


def _count_leading_zeros(value):
    """Return ``(all_zero, count)`` for a power-of-two-wide value; ``count`` is log2(width) bits.

    A tree of 2:1 choices (depth log2(width)); ``count`` is meaningless when ``all_zero``.
    """
    width = len(value)
    if width & (width - 1):
        raise ValueError(f"the value's width must be a power of two, not {width}")
    if width == 1:
        return ~value[0], Const(0, 0)
    half = width // 2
    zero_hi, count_hi = _count_leading_zeros(value[half:])
    zero_lo, count_lo = _count_leading_zeros(value[:half])
    return zero_hi & zero_lo, Mux(zero_hi, Cat(count_lo, 1), Cat(count_hi, 0))


def _round_half_even(value, bits, extra_sticky=0):
    """Return ``rne(value / 2**bits)`` (one bit wider than ``value[bits:]`` for the carry).

    ``extra_sticky`` ORs further nonzero bits below the kept ones into the sticky bit.
    """
    kept = value[bits:]
    guard = value[bits - 1]
    sticky = value[:bits - 1].any() | extra_sticky if bits > 1 else extra_sticky
    up = guard & (sticky | kept[0])
    return kept + up


def _shift_right_sticky(value, amount):
    """Return ``(value >> amount, OR of the bits shifted out)``, a log-depth shifter."""
    width = len(value)
    sticky = Const(0, 1)
    for j, bit in enumerate(amount):
        step = 1 << j
        lost = value[:min(step, width)].any()
        sticky = sticky | (bit & lost)
        value = Mux(bit, value >> step, value)[:width]
    return value, sticky
