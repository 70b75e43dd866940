"""Check a ProductBank built from SB_MAC16 blocks in Verilator against ``a * b`` (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_dsp.py``), not by pytest collection.
The design is :class:`accel.hdl.dsp.ProductBank` with ``family="ice40"``, simulated with
Yosys's behavioural ``SB_MAC16`` model (``share/ice40/cells_sim.v``). ``DSP_COUNT`` in the
simulator's environment is the bank's product count (an odd count leaves half a block
unused). Each cycle drives new operands just after a falling edge and checks the products
of the previous cycle's operands at the next falling edge.
"""

import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

A_BITS, B_BITS = 9, 8
A_MIN, A_MAX = -255, 255     # every int8 or uint8 byte, sign- or zero-extended
B_MIN, B_MAX = -128, 127
RANDOM_CYCLES = 20_000


def pack(values, bits):
    """Return the flat port value of an array of ``bits``-bit two's-complement integers."""
    return sum((v % (1 << bits)) << (bits * i) for i, v in enumerate(values))


def unpack(value, bits, count):
    """Return the signed integers packed in a flat port value."""
    fields = [(value >> (bits * i)) & ((1 << bits) - 1) for i in range(count)]
    return [f - (1 << bits) if f >> (bits - 1) else f for f in fields]


class ProductBankBench:
    """Drive one operand set per cycle and check each registered product."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.count = int(os.environ.get("DSP_COUNT", "3"))
        self.rng = random.Random(seed)
        self.seed = seed
        self.checked = 0
        dut._log.info(f"ProductBank bench: count={self.count}, test seed={seed}")

    async def start(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.a.value = 0
        self.dut.b.value = 0
        await FallingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        assert unpack(int(self.dut.p.value), A_BITS + B_BITS, self.count) == [0] * self.count

    async def run(self, operand_sets):
        """Apply each ``(a_list, b_list)`` for one cycle; check the products a cycle later."""
        for a, b in operand_sets:
            self.dut.a.value = pack(a, A_BITS)
            self.dut.b.value = pack(b, B_BITS)
            await FallingEdge(self.dut.clk)
            got = unpack(int(self.dut.p.value), A_BITS + B_BITS, self.count)
            expected = [x * y for x, y in zip(a, b)]
            assert got == expected, f"seed {self.seed}: a={a} b={b}: p={got}, expected {expected}"
            self.checked += 1


@cocotb.test()
async def test_extreme_operands(dut):
    bench = ProductBankBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    corners = [A_MIN, A_MAX, -128, 127, 128, -1, 0, 1]
    pairs = list(itertools.product(corners, [B_MIN, B_MAX, -1, 0, 1]))
    n = bench.count
    await bench.run([([a] * n, [b] * n) for a, b in pairs])
    await bench.run([([a, -a] * n)[:n], ([b, b] * n)[:n]] for a, b in pairs)
    dut._log.info(f"MEASURE cases={bench.checked}")


@cocotb.test()
async def test_random_operands(dut):
    bench = ProductBankBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    rng, n = bench.rng, bench.count
    await bench.run(([rng.randint(A_MIN, A_MAX) for _ in range(n)], [rng.randint(B_MIN, B_MAX) for _ in range(n)])
                    for _ in range(RANDOM_CYCLES))
    dut._log.info(f"MEASURE cases={bench.checked}")
