"""Hold the toolchain smoke-test design: a single signed int8 multiply-accumulate unit.

:class:`SmokeMac` is deliberately tiny. It proves the toolchain end to end (Amaranth to
Verilog, Verilator through cocotb, Amaranth's own simulator) before any real hardware
exists, and gives the simulation infrastructure a design that builds in seconds.
"""

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SmokeMac"]


class SmokeMac(wiring.Component):
    """Multiply two signed 8-bit operands and accumulate the products in 32 bits.

    The accumulator is a register in the ``sync`` domain. On each clock edge:

    - with ``clear`` high, it becomes 0 (``clear`` wins over ``enable``);
    - otherwise, with ``enable`` high, it becomes ``acc + a * b``, wrapping modulo 2**32;
    - otherwise it holds its value.

    Reset (``rst`` in the generated Verilog) also sets it to 0.

    Members
    -------
    a : ``In(signed(8))``
        First operand.
    b : ``In(signed(8))``
        Second operand.
    clear : ``In(1)``
        Synchronous clear of the accumulator.
    enable : ``In(1)``
        Accumulate ``a * b`` on this clock edge.
    acc : ``Out(signed(32))``
        The accumulator, updated one clock edge after the inputs are sampled.
    """

    a: In(signed(8))
    b: In(signed(8))
    clear: In(1)
    enable: In(1)
    acc: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Elif(self.enable):
            # a * b is signed(16); the sum is truncated back to 32 bits, so it wraps.
            m.d.sync += self.acc.eq(self.acc + self.a * self.b)
        return m
