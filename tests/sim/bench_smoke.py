"""Check SmokeMac in Verilator against a Python model of the accumulator (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_toolchain.py``), not by pytest
collection.

The bench drives inputs just after a falling clock edge and checks ``acc`` at the next
falling edge, so each check sees exactly one rising edge's worth of change. The seed of
each test is ``cocotb.RANDOM_SEED``, which cocotb 2.1 derives from ``COCOTB_RANDOM_SEED``
(``run(seed=...)``) and the test's name; both are logged.

``SMOKE_BENCH_FAULT=<n>`` in the simulator's environment skews every expected value by
``n``, so the checks must fail: ``test_toolchain.py`` uses it to prove that a failing bench
fails the calling pytest function.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

CLOCK_PERIOD_NS = 10
RANDOM_OPERATIONS = 2000

INT8_MIN, INT8_MAX = -128, 127


def wrap_int32(value):
    """Return ``value`` wrapped to a signed 32-bit integer, as the hardware register does."""
    return (value + 2**31) % 2**32 - 2**31


def random_operation(rng):
    """Return (a, b, clear, enable): mostly random MACs, with edge cases and clears mixed in."""
    if rng.random() < 0.10:
        a, b = rng.choice([(INT8_MIN, INT8_MIN), (INT8_MAX, INT8_MIN), (INT8_MIN, INT8_MAX),
                           (INT8_MAX, INT8_MAX), (INT8_MIN, 0), (0, INT8_MIN), (-1, -1)])
    else:
        a, b = rng.randint(INT8_MIN, INT8_MAX), rng.randint(INT8_MIN, INT8_MAX)
    clear = int(rng.random() < 0.02)
    enable = int(rng.random() < 0.9)
    return a, b, clear, enable


class MacModel:
    """Model SmokeMac's accumulator, one rising clock edge per :meth:`step`."""

    def __init__(self):
        self.acc = 0

    def step(self, a, b, clear, enable, rst=0):
        if rst or clear:
            self.acc = 0
        elif enable:
            self.acc = wrap_int32(self.acc + a * b)
        return self.acc


class SmokeMacBench:
    """Drive SmokeMac's inputs once per clock cycle and check every accumulator value."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.seed = seed
        self.rng = random.Random(seed)
        self.model = MacModel()
        self.cycles = 0
        self.fault = int(os.environ.get("SMOKE_BENCH_FAULT", "0"))
        # cocotb 2.1 derives each test's seed from COCOTB_RANDOM_SEED and the test's name.
        regression_seed = os.environ.get("COCOTB_RANDOM_SEED", "(random, see 'Seeding' above)")
        dut._log.info(f"SmokeMac bench: COCOTB_RANDOM_SEED={regression_seed}, test seed={seed}")

    async def start(self):
        """Start the clock, align to a falling edge, reset and check that ``acc`` is zero."""
        Clock(self.dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        for port in (self.dut.a, self.dut.b, self.dut.clear, self.dut.enable):
            port.value = 0
        await FallingEdge(self.dut.clk)
        await self.cycle(0, 0, clear=0, enable=0, rst=1)
        await self.cycle(0, 0, clear=0, enable=0, rst=0)

    async def cycle(self, a, b, clear, enable, rst=0):
        """Apply inputs at a falling edge; check ``acc`` at the next one, after one rising edge."""
        dut = self.dut
        dut.a.value = a
        dut.b.value = b
        dut.clear.value = clear
        dut.enable.value = enable
        dut.rst.value = rst
        await FallingEdge(dut.clk)
        self.cycles += 1
        expected = self.model.step(a, b, clear, enable, rst) + self.fault
        got = dut.acc.value.to_signed()
        assert got == expected, (
            f"cycle {self.cycles} (test seed {self.seed}): a={a} b={b} clear={clear} "
            f"enable={enable} rst={rst}: acc={got}, expected {expected}")


@cocotb.test()
async def test_edge_cases(dut):
    """Accumulate the extreme products, hold, clear (which wins over enable) and reset."""
    bench = SmokeMacBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    await bench.cycle(INT8_MIN, INT8_MIN, clear=0, enable=1)  # +16384
    assert bench.model.acc == 16384
    await bench.cycle(INT8_MAX, INT8_MIN, clear=0, enable=1)  # -16256
    await bench.cycle(INT8_MIN, INT8_MAX, clear=0, enable=1)  # -16256
    assert bench.model.acc == 16384 - 2 * 16256
    await bench.cycle(INT8_MAX, INT8_MAX, clear=0, enable=0)  # held
    assert bench.model.acc == 16384 - 2 * 16256
    await bench.cycle(INT8_MAX, INT8_MAX, clear=1, enable=1)  # clear wins
    assert bench.model.acc == 0
    for _ in range(5):
        await bench.cycle(INT8_MIN, INT8_MIN, clear=0, enable=1)
    assert bench.model.acc == 5 * 16384
    await bench.cycle(INT8_MIN, INT8_MIN, clear=0, enable=1, rst=1)  # reset wins too
    assert bench.model.acc == 0


@cocotb.test()
async def test_random_macs(dut):
    """Check every accumulator value over a long seeded random stream of MACs and clears."""
    bench = SmokeMacBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    for _ in range(RANDOM_OPERATIONS):
        await bench.cycle(*random_operation(bench.rng))
    assert bench.cycles == RANDOM_OPERATIONS + 2


@cocotb.test()
async def test_free_running_wraps(dut):
    """Let the MAC run unattended for many cycles, then check the wrapped 32-bit sum.

    No Python runs per cycle here, so this also measures raw simulation speed. With
    127 * -128 per cycle the sum passes -2**31 after about 132,000 cycles and wraps.
    """
    cycles = 200_000
    bench = SmokeMacBench(dut, cocotb.RANDOM_SEED)
    await bench.start()  # leaves us just after a falling edge
    dut.a.value = INT8_MAX
    dut.b.value = INT8_MIN
    dut.enable.value = 1
    await Timer(cycles * CLOCK_PERIOD_NS, unit="ns")  # exactly `cycles` rising edges
    expected = wrap_int32(cycles * INT8_MAX * INT8_MIN)
    assert expected != cycles * INT8_MAX * INT8_MIN, "the test must cross the int32 range"
    got = dut.acc.value.to_signed()
    assert got == expected, f"after {cycles} cycles of 127 * -128: acc={got}, expected {expected}"
