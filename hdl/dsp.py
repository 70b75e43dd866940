"""Choose the chip's DSP blocks for the systolic array's products: SB_MAC16, MULT18X18D or ``*``.

:func:`dsp_family` reads the family off the Amaranth platform a design is elaborated for
(``None`` in simulation), and :class:`ProductBank` builds a row of registered products for
it. This is the one place that knows about multiplier primitives:

* ``"ice40"`` (iCE40 UltraPlus, ``SB_MAC16``): two 8x8 products per block (``MODE_8x8``),
  so the ``icebreaker`` preset's 16 PEs need 8 blocks. An operand ``a`` of 9 bits (an
  int8 or uint8 activation, sign- or zero-extended) is split into its low byte ``u``
  (unsigned, into the multiplier) and its sign ``s``: ``a * b = u * b - 256 * s * b``; the
  block's 16-bit adder adds the correction ``-256 * s * b`` through its ``C``/``D`` input.
  The sum is registered in the block's output register (``TOPOUTPUT_SELECT = 1``).
* ``"ecp5"`` (``MULT18X18D``): one signed 18x18 block per product with its output
  register (``REG_OUTPUT_CLK = "CLK0"``).
* ``None`` (simulation, other chips): ``a * b`` into a register.

Every variant has the same contract (one cycle of latency, the exact product), so the
systolic array, its latency and the cycle model do not depend on the chip. A bank may be
limited to ``max_blocks`` blocks (:func:`dsp_blocks` gives the device's total; the core
gives the requantizer its share first and the array the rest); the products beyond them
use the generic ``*``, which Yosys builds from LUTs (``synth_ice40`` without ``-dsp``,
``synth_ecp5 -nodsp``: inference would map them onto blocks that are already taken). The primitive
configurations are checked against Yosys's behavioural model of ``SB_MAC16`` in
``tests/sim/test_dsp.py``.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FAMILIES", "dsp_family", "dsp_blocks", "ProductBank", "SB_MAC16_PAIR_PARAMS"]

# DSP blocks per device (Lattice data sheets): SB_MAC16 on iCE40 UltraPlus, MULT18X18D on ECP5.
_DEVICE_BLOCKS = {"iCE40UP3K": 4, "iCE40UP5K": 8, "LFE5U-12F": 28, "LFE5U-25F": 28, "LFE5U-45F": 72,
                  "LFE5U-85F": 156, "LFE5UM-25F": 28, "LFE5UM-45F": 72, "LFE5UM-85F": 156,
                  "LFE5UM5G-25F": 28, "LFE5UM5G-45F": 72, "LFE5UM5G-85F": 156}

#: The DSP families :class:`ProductBank` maps to primitives.
FAMILIES = ("ice40", "ecp5")

#: ``SB_MAC16`` parameters for two registered 8x8 products plus 16-bit addends (top: A[15:8]
#: x B[15:8] + C, bottom: A[7:0] x B[7:0] + D; A unsigned, B signed).
SB_MAC16_PAIR_PARAMS = {
    "MODE_8x8": 1, "A_SIGNED": 0, "B_SIGNED": 1,
    "A_REG": 0, "B_REG": 0, "C_REG": 0, "D_REG": 0,
    "TOP_8x8_MULT_REG": 0, "BOT_8x8_MULT_REG": 0,
    "PIPELINE_16x16_MULT_REG1": 0, "PIPELINE_16x16_MULT_REG2": 0,
    "TOPOUTPUT_SELECT": 1, "TOPADDSUB_LOWERINPUT": 1, "TOPADDSUB_UPPERINPUT": 1, "TOPADDSUB_CARRYSELECT": 0,
    "BOTOUTPUT_SELECT": 1, "BOTADDSUB_LOWERINPUT": 1, "BOTADDSUB_UPPERINPUT": 1, "BOTADDSUB_CARRYSELECT": 0,
    "NEG_TRIGGER": 0,
}


def dsp_family(platform) -> str | None:
    """Return the DSP family of ``platform``: ``"ice40"`` (UltraPlus), ``"ecp5"`` or ``None``.

    ``None`` (no platform, as in simulation, or a chip without supported DSP blocks) selects
    the generic ``*``.
    """
    if platform is None:
        return None
    if getattr(platform, "family", None) == "ecp5":
        return "ecp5"
    device = str(getattr(platform, "device", ""))
    if device.startswith("iCE40UP"):
        return "ice40"
    return None


def dsp_blocks(platform) -> int | None:
    """Return how many DSP blocks ``platform``'s device has, or ``None`` if unknown or without a platform."""
    if platform is None:
        return None
    return _DEVICE_BLOCKS.get(str(getattr(platform, "device", "")))


class ProductBank(wiring.Component):
    """Register ``count`` exact products ``p[i] = a[i] * b[i]``, one clock cycle after the operands.

    Parameters
    ----------
    count : int
        Number of products.
    a_shape, b_shape : shape-like
        The operands' shapes (signed).
    family : str or None
        ``"ice40"``, ``"ecp5"`` or ``None`` (generic), usually :func:`dsp_family`'s answer.
        ``"ice40"`` needs ``a`` of 9 bits and ``b`` of at most 8 and is exact for
        ``-255 <= a <= 255`` (every int8 or uint8 byte); other shapes fall back to the
        generic ``*``. ``"ecp5"`` needs both operands to fit 18 bits.
    max_blocks : int or None
        Use at most this many DSP blocks (``None``: as many as the products need); the
        products beyond them use the generic ``*`` (LUTs), with the same contract.

    Members
    -------
    a : ``In(data.ArrayLayout(a_shape, count))``
        First operands.
    b : ``In(data.ArrayLayout(b_shape, count))``
        Second operands.
    p : ``Out(data.ArrayLayout(signed(a_width + b_width), count))``
        The products of the operands of the previous cycle.
    """

    def __init__(self, count: int, a_shape, b_shape, *, family: str | None = None,
                 max_blocks: int | None = None):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for name, shape in (("a_shape", a_shape), ("b_shape", b_shape)):
            if not shape.signed or shape.width < 2:
                raise ValueError(f"{name} must be signed and at least 2 bits wide, not {shape!r}")
        if family is not None and family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES} or None, not {family!r}")
        if family == "ecp5" and max(a_shape.width, b_shape.width) > 18:
            raise ValueError(f"MULT18X18D operands must fit 18 bits, not {a_shape!r} x {b_shape!r}")
        if max_blocks is not None and (not isinstance(max_blocks, int) or max_blocks < 0):
            raise ValueError(f"max_blocks must be a non-negative integer or None, not {max_blocks!r}")
        self._count = count
        self._family = family
        self._max_blocks = max_blocks
        product = signed(a_shape.width + b_shape.width)
        super().__init__({
            "a": In(data.ArrayLayout(a_shape, count)),
            "b": In(data.ArrayLayout(b_shape, count)),
            "p": Out(data.ArrayLayout(product, count)),
        })

    @property
    def count(self) -> int:
        return self._count

    @property
    def family(self) -> str | None:
        return self._family

    @staticmethod
    def primitive_for(a_shape, b_shape, family: str | None) -> str | None:
        """Return the primitive a bank of these operands uses on ``family``, or ``None`` (LUTs)."""
        a, b = Shape.cast(a_shape), Shape.cast(b_shape)
        if family == "ice40" and a.width == 9 and b.width <= 8:
            return "SB_MAC16"
        if family == "ecp5":
            return "MULT18X18D"
        return None

    @property
    def primitive(self) -> str | None:
        """Return the primitive the bank instantiates (``"SB_MAC16"``, ``"MULT18X18D"``) or ``None``."""
        return self.primitive_for(self.a.shape().elem_shape, self.b.shape().elem_shape, self._family)

    @property
    def blocks(self) -> int:
        """Return how many DSP blocks the bank instantiates."""
        per_block = {"SB_MAC16": 2, "MULT18X18D": 1}.get(self.primitive)
        if per_block is None:
            return 0
        wanted = -(-self._count // per_block)
        return wanted if self._max_blocks is None else min(wanted, self._max_blocks)

    def elaborate(self, platform):
        m = Module()
        primitive, blocks = self.primitive, self.blocks
        in_blocks = 0
        if primitive == "SB_MAC16":
            in_blocks = min(self._count, 2 * blocks)
            for pair in range(0, in_blocks, 2):
                self._mac16_pair(m, pair, min(2, in_blocks - pair))
        elif primitive == "MULT18X18D":
            in_blocks = blocks
            for i in range(in_blocks):
                self._mult18(m, i)
        for i in range(in_blocks, self._count):
            product = Signal.like(self.p[i], name=f"prod{i}_r", reset_less=True)  # data: no reset
            m.d.sync += product.eq(self.a[i] * self.b[i])
            m.d.comb += self.p[i].eq(product)
        return m

    def _mac16_pair(self, m, first, n):
        """Instantiate one SB_MAC16 for products ``first`` (top half) and ``first + 1`` (bottom)."""
        mac_a, mac_b, mac_c, mac_d = (Signal(16, name=f"mac{first // 2}_{h}") for h in "abcd")
        out = Signal(32, name=f"mac{first // 2}_o")
        halves = []  # (a byte, b byte, addend, product slice) for the top, then the bottom half
        for k in range(n):
            i = first + k
            a, b = self.a[i], self.b[i]
            b8 = Signal(signed(8), name=f"prod{i}_b")
            m.d.comb += b8.eq(b)
            # -256 * sign(a) * b, modulo 2**16: the high byte is -b when a is negative.
            fix = Signal(16, name=f"prod{i}_fix")
            m.d.comb += fix.eq(Mux(a[-1], -b8, 0)[:8] << 8)
            halves.append((a[:8], b8.as_unsigned(), fix))
        while len(halves) < 2:
            halves.append((Const(0, 8), Const(0, 8), Const(0, 16)))
        (a_top, b_top, c_top), (a_bot, b_bot, c_bot) = halves
        m.d.comb += [
            mac_a.eq(a_bot | (a_top << 8)), mac_b.eq(b_bot | (b_top << 8)),
            mac_c.eq(c_top), mac_d.eq(c_bot),
        ]
        m.submodules[f"mac{first // 2}"] = Instance(
            "SB_MAC16",
            **{f"p_{key}": value for key, value in SB_MAC16_PAIR_PARAMS.items()},
            i_CLK=ClockSignal(), i_CE=1,
            i_A=mac_a, i_B=mac_b, i_C=mac_c, i_D=mac_d,
            i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
            i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,  # data: no reset
            i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
            i_OHOLDTOP=0, i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
            o_O=out,
        )
        # Top half: O[31:16]; bottom half: O[15:0]; both exact in 16 signed bits.
        m.d.comb += self.p[first].eq(out[16:].as_signed())
        if n == 2:
            m.d.comb += self.p[first + 1].eq(out[:16].as_signed())

    def _mult18(self, m, i):
        """Instantiate one MULT18X18D (signed, output register) for product ``i``."""
        a18, b18 = Signal(signed(18), name=f"prod{i}_a"), Signal(signed(18), name=f"prod{i}_b")
        out = Signal(36, name=f"prod{i}_p")
        m.d.comb += [a18.eq(self.a[i]), b18.eq(self.b[i])]
        ports = {f"i_A{j}": a18[j] for j in range(18)}
        ports.update({f"i_B{j}": b18[j] for j in range(18)})
        ports.update({f"i_C{j}": 0 for j in range(18)})
        ports.update({f"o_P{j}": out[j] for j in range(36)})
        m.submodules[f"mult{i}"] = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="NONE", p_REG_INPUTB_CLK="NONE", p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0",
            p_REG_OUTPUT_RST="RST0", p_RESETMODE="SYNC", p_GSR="DISABLED",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal(), i_CLK1=0, i_CLK2=0, i_CLK3=0,
            i_CE0=1, i_CE1=0, i_CE2=0, i_CE3=0,
            i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0,  # data: no reset
            **ports,
        )
        m.d.comb += self.p[i].eq(out[:len(self.p[i])].as_signed())

