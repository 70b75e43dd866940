"""Check ProcessingElement in Verilator against a Python model, cycle by cycle (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_datapath.py``), not by pytest
collection. ``PE_WEIGHT_BITS`` and ``PE_ACC_WIDTH`` in the simulator's environment give
the PE's widths (default 9 and 32).

Each cycle the bench drives new inputs just after a falling clock edge and checks the
registered outputs at the next falling edge against :class:`PeModel`. The product is
registered, so ``psum_out`` adds the product of the previous cycle's ``x``.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

CLOCK_PERIOD_NS = 10
RANDOM_CYCLES = 20_000

X_MIN, X_MAX = -256, 255  # the PE's 9-bit signed input


def wrap(value, bits):
    """Return ``value`` wrapped to a ``bits``-bit two's-complement integer."""
    return (value + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))


class PeModel:
    """Model ProcessingElement's registers, one rising clock edge per :meth:`step`."""

    def __init__(self, weight_bits=9, acc_width=32):
        self.weight_bits = weight_bits
        self.acc_width = acc_width
        self.shadow = self.active = self.product = 0  # the registers' initial values
        self.x_out = self.swap_out = self.psum_out = 0

    def reset(self, inputs):
        """Apply one clock edge per ``(x, swap, psum_in, w, w_load)`` of ``inputs`` with reset high.

        Reset clears only the control flag ``swap_out``; the data registers have no reset
        and keep clocking their inputs.
        """
        for cycle in inputs:
            self.step(*cycle)
            self.swap_out = 0

    def step(self, x, swap, psum_in, w, w_load):
        """Apply one clock edge; return ``(x_out, swap_out, psum_out)`` after it."""
        self.x_out, self.swap_out = x, swap
        self.psum_out = wrap(psum_in + self.product, self.acc_width)  # the previous cycle's product
        self.product = x * self.active
        if swap:
            self.active = self.shadow  # the shadow from before this edge
        if w_load:
            self.shadow = w
        return self.x_out, self.swap_out, self.psum_out


def random_inputs(rng, weight_bits, acc_width):
    """Return one cycle's (x, swap, psum_in, w, w_load), extremes often."""
    w_min, w_max = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    p_min, p_max = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    x = rng.choice([X_MIN, X_MAX, -1, 0, rng.randint(X_MIN, X_MAX)])
    w = rng.choice([w_min, w_max, -1, rng.randint(w_min, w_max)])
    psum = rng.choice([p_min, p_max, p_min + 70000, p_max - 70000, 0, rng.randint(p_min, p_max)])
    return x, int(rng.random() < 0.2), psum, w, int(rng.random() < 0.3)


class PeBench:
    """Drive the PE's inputs once per clock cycle and check every registered output."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.seed = seed
        self.rng = random.Random(seed)
        self.model = PeModel(int(os.environ.get("PE_WEIGHT_BITS", "9")),
                             int(os.environ.get("PE_ACC_WIDTH", "32")))
        self.cycles = 0
        dut._log.info(f"PE bench: COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')}, "
                      f"test seed={seed}")

    async def start(self):
        """Start the clock and reset the PE, leaving us just after a falling edge."""
        Clock(self.dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        self.dut.rst.value = 1
        # Reset clears control state only: load and swap in a zero weight meanwhile, so every
        # register is known (an earlier test in this simulation left weights behind).
        during_reset = [(0, 0, 0, 0, 1), (0, 1, 0, 0, 0)]
        for inputs in during_reset:
            self.drive(*inputs)
            await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.model.reset(during_reset)

    def drive(self, x, swap, psum_in, w, w_load):
        dut = self.dut
        dut.x.value = x
        dut.swap.value = swap
        dut.psum_in.value = psum_in
        dut.w.value = w
        dut.w_load.value = w_load

    async def cycle(self, x, swap, psum_in, w, w_load):
        """Apply inputs at a falling edge; check the outputs after the next rising edge."""
        self.drive(x, swap, psum_in, w, w_load)
        await FallingEdge(self.dut.clk)
        self.cycles += 1
        expected = self.model.step(x, swap, psum_in, w, w_load)
        got = (self.dut.x_out.value.to_signed(), int(self.dut.swap_out.value),
               self.dut.psum_out.value.to_signed())
        assert got == expected, (
            f"cycle {self.cycles} (test seed {self.seed}): x={x} swap={swap} psum_in={psum_in} "
            f"w={w} w_load={w_load}: (x_out, swap_out, psum_out)={got}, expected {expected}")
        return got


@cocotb.test()
async def test_extreme_products(dut):
    """Multiply every pair of extreme 9-bit operands, through load, swap and the active weight."""
    bench = PeBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    w_bits = bench.model.weight_bits
    weights = [-(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1, -1, 1, 0]
    for w in weights:
        await bench.cycle(0, 0, 0, w, 1)          # shadow <= w
        await bench.cycle(0, 1, 0, 0, 0)          # active <= w
        for x in (X_MIN, X_MAX, -1, 1, 0):
            await bench.cycle(x, 0, 0, 0, 0)      # product <= x * w
            _, _, psum = await bench.cycle(0, 0, 12345, 0, 0)
            assert psum == 12345 + x * w
    # -256 * -256 on top of the largest partial sum wraps around.
    if w_bits == 9:
        await bench.cycle(0, 0, 0, -256, 1)
        await bench.cycle(0, 1, 0, 0, 0)
        await bench.cycle(-256, 0, 0, 0, 0)
        _, _, psum = await bench.cycle(0, 0, (1 << 31) - 1, 0, 0)
        assert psum == wrap((1 << 31) - 1 + 65536, bench.model.acc_width)


@cocotb.test()
async def test_load_and_swap_on_one_edge(dut):
    """Swap and load together: active takes the old shadow, the new weight waits in shadow."""
    bench = PeBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    await bench.cycle(0, 0, 0, 7, 1)
    await bench.cycle(0, 1, 0, -5, 1)             # active <= 7, shadow <= -5
    await bench.cycle(3, 0, 0, 0, 0)              # product <= 3 * 7
    assert (await bench.cycle(0, 1, 0, 0, 0))[2] == 21   # active <= -5
    await bench.cycle(3, 0, 0, 0, 0)
    assert (await bench.cycle(0, 0, 0, 0, 0))[2] == -15


@cocotb.test()
async def test_random_cycles(dut):
    """Check every output over a long seeded random stream of loads, swaps and operands."""
    bench = PeBench(dut, cocotb.RANDOM_SEED)
    await bench.start()
    for _ in range(RANDOM_CYCLES):
        await bench.cycle(*random_inputs(bench.rng, bench.model.weight_bits,
                                         bench.model.acc_width))
    assert bench.cycles == RANDOM_CYCLES
