"""Hold the systolic array's processing element and the multiplier factory it uses.

:class:`ProcessingElement` is one weight-stationary multiply-accumulate cell: it keeps a
shadow and an active weight, multiplies the input from the left by the active weight and
adds the partial sum from above; its product is registered, in a DSP block on the chips
(:mod:`accel.hdl.dsp` chooses it). :func:`multiplier` builds the combinational multipliers
of the requantizer and the QLinearAdd lanes.
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

    The requantizer's and the QLinearAdd lanes' multipliers come from here. The PEs'
    registered products come from :class:`accel.hdl.dsp.ProductBank`.
    """
    # TODO: a combinational multiplier is what Yosys maps to an unregistered MULT18X18D on
    # ECP5 (or LUTs on iCE40, whose DSPs all serve the PEs); the pipelines around it keep
    # it between registers.
    return Multiplier(a_shape, b_shape)


class ProcessingElement(wiring.Component):
    """Multiply the input from the left by a stationary weight and add the partial sum from above.

    The PE holds two weights. ``w_load`` writes ``w`` into the *shadow* weight; ``swap``
    copies the shadow weight into the *active* weight. Each clock edge then registers:

    * ``x_out <= x`` and ``swap_out <= swap`` (to the PE on the right);
    * ``product <= x * active`` (the multiplier's pipeline register, inside a DSP block
      on the chips, see :mod:`accel.hdl.dsp`);
    * ``psum_out <= psum_in + product`` (the product of the *previous* cycle's ``x``; to
      the PE below), wrapping modulo ``2**acc_width``;
    * ``active <= shadow`` if ``swap`` is high; ``shadow <= w`` if ``w_load`` is high. Both
      may happen on the same edge: ``active`` then receives the shadow weight from before
      that edge.

    So ``x`` leads the partial sum by one cycle: ``psum_out`` after edge ``t + 1`` is
    ``psum_in(t) + x(t - 1) * active(t - 1)``. The product uses the registered active
    weight, so ``swap`` must be asserted one cycle *before* the first input that needs the
    new weight. Forwarding ``swap`` and ``x`` through the same one-cycle delay keeps both
    leads along a row of PEs (see :class:`~accel.hdl.systolic.SystolicArray`).

    Parameters
    ----------
    weight_bits : int
        Width of a signed weight (8 or 9).
    acc_width : int
        Width of the signed partial sums.
    own_multiplier : bool
        Build the PE's own one-product :class:`~accel.hdl.dsp.ProductBank` (the default).
        With ``False`` the PE exposes the multiplier's operands and product as ports, so an
        array can pack several PEs' products into one DSP block.

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
        ``psum_in + product``, registered.
    mul_a : ``Out(signed(9))``
        Only with ``own_multiplier=False``: ``x``, to the external multiplier.
    mul_b : ``Out(signed(weight_bits))``
        Only with ``own_multiplier=False``: the active weight, to the external multiplier.
    mul_p : ``In(signed(9 + weight_bits))``
        Only with ``own_multiplier=False``: ``mul_a * mul_b`` of the previous cycle.
    """

    def __init__(self, *, weight_bits: int = 9, acc_width: int = 32, own_multiplier: bool = True):
        if not isinstance(weight_bits, int) or not 2 <= weight_bits <= 18:
            raise ValueError(f"weight_bits must be an integer from 2 to 18, not {weight_bits!r}")
        if not isinstance(acc_width, int) or acc_width < X_WIDTH + weight_bits:
            raise ValueError(f"acc_width must be an integer of at least {X_WIDTH + weight_bits} "
                             f"(one full product), not {acc_width!r}")
        self._weight_bits = weight_bits
        self._acc_width = acc_width
        self._own_multiplier = bool(own_multiplier)
        members = {
            "x": In(signed(X_WIDTH)),
            "swap": In(1),
            "psum_in": In(signed(acc_width)),
            "w": In(signed(weight_bits)),
            "w_load": In(1),
            "x_out": Out(signed(X_WIDTH)),
            "swap_out": Out(1),
            "psum_out": Out(signed(acc_width)),
        }
        if not own_multiplier:
            members.update({
                "mul_a": Out(signed(X_WIDTH)),
                "mul_b": Out(signed(weight_bits)),
                "mul_p": In(signed(X_WIDTH + weight_bits)),
            })
        super().__init__(members)

    @property
    def weight_bits(self) -> int:
        return self._weight_bits

    @property
    def acc_width(self) -> int:
        return self._acc_width

    @property
    def own_multiplier(self) -> bool:
        return self._own_multiplier

    def elaborate(self, platform):
        from .dsp import ProductBank, dsp_family
        m = Module()

        # Data registers have no reset (only control state does): after a reset their values
        # are never used before they are written, and a reset net to every PE flip-flop costs
        # routing on the big arrays (docs/architecture.md, "Mapping to iCE40 and ECP5").
        shadow = Signal(signed(self._weight_bits), reset_less=True)
        active = Signal(signed(self._weight_bits), reset_less=True)
        x_out = Signal(signed(X_WIDTH), reset_less=True)
        psum_out = Signal(signed(self._acc_width), reset_less=True)
        m.d.comb += [self.x_out.eq(x_out), self.psum_out.eq(psum_out)]
        with m.If(self.w_load):
            m.d.sync += shadow.eq(self.w)
        with m.If(self.swap):
            m.d.sync += active.eq(shadow)

        if self._own_multiplier:
            m.submodules.mul = bank = ProductBank(1, signed(X_WIDTH), signed(self._weight_bits),
                                                  family=dsp_family(platform))
            mul_a, mul_b, product = bank.a[0], bank.b[0], bank.p[0]
        else:
            mul_a, mul_b, product = self.mul_a, self.mul_b, self.mul_p
        m.d.comb += [mul_a.eq(self.x), mul_b.eq(active)]
        m.d.sync += [
            x_out.eq(self.x),
            self.swap_out.eq(self.swap),
            psum_out.eq(self.psum_in + product),  # truncated to acc_width: wraps
        ]
        return m
