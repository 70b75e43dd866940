"""Check SpramBuffer (SB_SPRAM256KA blocks) in Verilator against a dictionary (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_dsp.py``), not by pytest collection.
``SPRAM_DEPTH_WORDS`` and ``SPRAM_WORD_BITS`` in the simulator's environment give the
buffer's size. Each cycle is a write, a read or idle (never a read and a write together,
the buffer's contract); read data is checked the cycle after the read and while it holds.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

OPERATIONS = 6000


@cocotb.test()
async def test_random_reads_and_writes(dut):
    depth = int(os.environ.get("SPRAM_DEPTH_WORDS", "32768"))
    bits = int(os.environ.get("SPRAM_WORD_BITS", "20"))
    rng = random.Random(cocotb.RANDOM_SEED)
    dut._log.info(f"SpramBuffer bench: {depth} x {bits}, test seed={cocotb.RANDOM_SEED}")
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.read__en.value = 0
    dut.write__en.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    stored = {}
    # Addresses at both ends of every bank, and random ones.
    hot = [0, 1, depth - 1, depth // 2, depth // 2 - 1, 16383 % depth, 16384 % depth]
    expected, checked = None, 0
    for _ in range(OPERATIONS):
        op = rng.random()
        addr = rng.choice(hot) if rng.random() < 0.3 else rng.randrange(depth)
        dut.read__en.value = 0
        dut.write__en.value = 0
        if op < 0.45 or not stored:
            value = rng.choice([0, (1 << bits) - 1, rng.getrandbits(bits)])
            dut.write__addr.value = addr
            dut.write__data.value = value
            dut.write__en.value = 1
            stored[addr] = value
            expected = None  # a write leaves the read data undefined
        elif op < 0.9:
            addr = rng.choice(list(stored)) if rng.random() < 0.8 else addr
            dut.read__addr.value = addr
            dut.read__en.value = 1
            expected = stored.get(addr)
        await FallingEdge(dut.clk)
        if expected is not None:
            got = int(dut.read__data.value)
            assert got == expected, f"seed {cocotb.RANDOM_SEED}: read {addr}: {got:#x}, expected {expected:#x}"
            checked += 1
    dut._log.info(f"MEASURE reads_checked={checked} words_written={len(stored)}")
