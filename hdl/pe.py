"""Hold the systolic array's processing element and the multiplier factory it uses.

:class:`ProcessingElement` is one weight-stationary multiply-accumulate cell: it keeps a
shadow and an active weight, multiplies the input from the left by the active weight and
adds the partial sum from above. :func:`multiplier` is the one place that decides how a
product is built, so a platform-specific DSP primitive can replace the generic ``*``
without touching the PE or the other users of a multiplier (the requantizer).
"""

from amaranth.hdl import Module, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["X_WIDTH", "Multiplier", "multiplier", "ProcessingElement"]

#: Width of an array input: int8 or uint8 activations, sign- or zero-extended to 9 bits.
X_WIDTH = 9


class Multiplier(wiring.Component):
    """Multiply two integers combinationally with the generic ``*`` operator.

    The product is exact: it has ``a_width + b_width`` bits and is signed if either operand
    is signed.

    Parameters
    ----------
    a_shape, b_shape : shape-like
        The operands' shapes.

    Members
    -------
    a : ``In(a_shape)``
        First operand.
    b : ``In(b_shape)``
        Second operand.
    p : ``Out(Shape(a_width + b_width, a_signed or b_signed))``
        ``a * b``, combinational.
    """

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for name, shape in (("a_shape", a_shape), ("b_shape", b_shape)):
            if shape.width < 1:
                raise ValueError(f"{name} must be at least 1 bit wide, not {shape!r}")
        product = Shape(a_shape.width + b_shape.width, a_shape.signed or b_shape.signed)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(product)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(self.a * self.b)
        return m


def multiplier(a_shape, b_shape, *, platform=None) -> wiring.Component:
    """Return a combinational multiplier component for ``platform`` (ports ``a``, ``b``, ``p``).

    Every multiplier of the datapath comes from here, so this is where a platform's DSP
    block is chosen.
    """
    # TODO: instantiate SB_MAC16 (iCE40) or MULT18X18D (ECP5) here, chosen by the
    # platform's family; until then Yosys infers whatever the plain `*` maps to (LUTs on
    # iCE40 without `synth_ice40 -dsp`, unregistered MULT18X18D on ECP5). Unregistered, the
    # PE's multiply-add reaches about 100 MHz on an ECP5-85 (4x4 array, nextpnr out of
    # context), short of the ulx3s preset's 125 MHz; a registered DSP adds a pipeline stage.
    return Multiplier(a_shape, b_shape)


class ProcessingElement(wiring.Component):
    """Multiply the input from the left by a stationary weight and add the partial sum from above.

    The PE holds two weights. ``w_load`` writes ``w`` into the *shadow* weight; ``swap``
    copies the shadow weight into the *active* weight. Each clock edge then registers:

    * ``x_out <= x`` and ``swap_out <= swap`` (to the PE on the right);
    * ``psum_out <= psum_in + x * active`` (to the PE below), wrapping modulo
      ``2**acc_width``;
    * ``active <= shadow`` if ``swap`` is high; ``shadow <= w`` if ``w_load`` is high. Both
      may happen on the same edge: ``active`` then receives the shadow weight from before
      that edge.

    The product uses the registered active weight, so ``swap`` must be asserted one cycle
    *before* the first input that needs the new weight. Forwarding ``swap`` and ``x``
    through the same one-cycle delay keeps that one-cycle lead along a row of PEs: this is
    the swap wavefront of :class:`~accel.hdl.systolic.SystolicArray`.

    Parameters
    ----------
    weight_bits : int
        Width of a signed weight (8 or 9).
    acc_width : int
        Width of the signed partial sums.

    Members
    -------
    x : ``In(signed(9))``
        The input from the left.
    swap : ``In(1)``
        Copy the shadow weight into the active weight at this clock edge.
    psum_in : ``In(signed(acc_width))``
        The partial sum from above.
    w : ``In(signed(weight_bits))``
        A new shadow weight.
    w_load : ``In(1)``
        Write ``w`` into the shadow weight at this clock edge.
    x_out : ``Out(signed(9))``
        ``x``, registered.
    swap_out : ``Out(1)``
        ``swap``, registered.
    psum_out : ``Out(signed(acc_width))``
        ``psum_in + x * active``, registered.
    """

    def __init__(self, *, weight_bits: int = 9, acc_width: int = 32):
        if not isinstance(weight_bits, int) or not 2 <= weight_bits <= 18:
            raise ValueError(f"weight_bits must be an integer from 2 to 18, not {weight_bits!r}")
        if not isinstance(acc_width, int) or acc_width < X_WIDTH + weight_bits:
            raise ValueError(f"acc_width must be an integer of at least {X_WIDTH + weight_bits} "
                             f"(one full product), not {acc_width!r}")
        self._weight_bits = weight_bits
        self._acc_width = acc_width
        super().__init__({
            "x": In(signed(X_WIDTH)),
            "swap": In(1),
            "psum_in": In(signed(acc_width)),
            "w": In(signed(weight_bits)),
            "w_load": In(1),
            "x_out": Out(signed(X_WIDTH)),
            "swap_out": Out(1),
            "psum_out": Out(signed(acc_width)),
        })

    @property
    def weight_bits(self) -> int:
        return self._weight_bits

    @property
    def acc_width(self) -> int:
        return self._acc_width

    def elaborate(self, platform):
        m = Module()

        shadow = Signal(signed(self._weight_bits))
        active = Signal(signed(self._weight_bits))
        with m.If(self.w_load):
            m.d.sync += shadow.eq(self.w)
        with m.If(self.swap):
            m.d.sync += active.eq(shadow)

        m.submodules.mul = mul = multiplier(signed(X_WIDTH), signed(self._weight_bits),
                                            platform=platform)
        m.d.comb += [mul.a.eq(self.x), mul.b.eq(active)]
        m.d.sync += [
            self.x_out.eq(self.x),
            self.swap_out.eq(self.swap),
            self.psum_out.eq(self.psum_in + mul.p),  # truncated to acc_width: wraps
        ]
        return m
