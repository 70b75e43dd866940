# amaranth: UnusedElaboratable=no
"""Deferred requantization on the RTL: shared requantizer lanes no longer slow the last K tile.

With ``requant_lanes < cols`` (``config.deferred_requant``) a MATMUL's last K tile is summed
into its context's half of ACC like the other tiles, one row per cycle, and a drainer feeds
the rows from ACC to the requantizer, ``requant_spacing`` cycles apart, while the next
MATMUL streams. These tests run random back-to-back GEMMs (no SYNC between them, so the
drains overlap the streaming) on two such configurations and check:

* the output bytes against the reference model (``core_model.CoreModel``);
* the whole ACC against the emulator (which keeps each context's sums in its half);
* the cycles the RTL counts against the compiler's cycle model (``compiler/cycles.py``),
  for the GEMMs and for sequences of MATMULs chosen to make the drains queue.
"""

import os
import random

import numpy as np
import pytest

from accel import isa
from accel.compiler.cycles import CycleModel
from accel.config import HardwareConfig, preset
from accel.runtime import Read, Run, Status, Write
from accel.sim.emulator import EmulatorTarget

from .core_model import CoreModel, place_gemm
from .test_core import _matmul

SEED = int(os.environ.get("ACCEL_SEED", "11"))
ICEBREAKER = preset("icebreaker")  # 4x4, one lane: a row every 4 cycles
TWO_LANES = HardwareConfig.from_dict({**preset("sim-small").to_dict(), "name": "sim-small-rq2",
                                      "requant_lanes": 2, "accbuf": {"depth": 64, "kind": "auto"}})
CONFIGS = {"icebreaker": ICEBREAKER, "sim-small-rq2": TWO_LANES}


def test_the_configs_defer():
    assert [(c.requant_spacing, c.deferred_requant, c.acc_rows) for c in CONFIGS.values()] == [(4, True, 128),
                                                                                                (2, True, 32)]
    assert not preset("sim-small").deferred_requant and preset("ulx3s-85f").deferred_requant


@pytest.fixture(scope="module", params=list(CONFIGS))
def target(request, open_core):
    with open_core(CONFIGS[request.param]) as t:
        yield t


def _run_both(target, writes, program, reads):
    """Run on the RTL and the emulator; return (rtl replies, emulator replies), each [STATUS, *reads]."""
    config = target.config
    writes = list(writes) + [Write(isa.Memory.IMEM, 0, tuple(program))]
    emulator = EmulatorTarget(config)
    replies = []
    for engine in (target, emulator):
        engine.execute(writes)
        replies.append(engine.execute([Run(), Status()] + list(reads))[1:])
    return replies


@pytest.mark.parametrize("trial", range(3))
def test_back_to_back_gemms(target, trial):
    config = target.config
    rng = np.random.default_rng([SEED, trial, config.requant_spacing])
    print(f"seed={SEED} trial={trial} {config.name}")
    gemms = []
    for i in range(5):
        m = int(rng.integers(1, config.acc_rows + 1)) if i % 2 else int(rng.integers(1, 9))
        k, n = int(rng.integers(1, 6 * config.rows)), int(rng.integers(1, 3 * config.cols))
        gemms.append(place_gemm(config, rng, m, k, n, a_addr=1000 * i, w_addr=400 * i, p_addr=16 * i,
                                y_addr=6000 + 200 * i, acc_addr=int(rng.integers(0, config.acc_rows - m + 1)),
                                x_signed=bool(rng.integers(2)), y_signed=bool(rng.integers(2))))
    model = CoreModel(config)
    writes = [Write(mem, addr, tuple(words)) for g in gemms for mem, addr, words in g.writes]
    writes.append(Write(isa.Memory.ACCBUF, 0, (0,) * config.accbuf.depth))
    program = [insn for g in gemms for insn in g.instructions] + [isa.halt()]
    for op in writes + [Write(isa.Memory.IMEM, 0, tuple(program))]:
        model.write(op.mem, op.addr, op.words)
    model.run()
    reads = [Read(isa.Memory.ABUF, g.y_addr, g.y_words) for g in gemms] + [
        Read(isa.Memory.ACCBUF, 0, config.accbuf.depth)]
    rtl, emu = _run_both(target, writes, program, reads)
    assert rtl[0][0] == 0b10
    for g, got in zip(gemms, rtl[1:]):
        assert list(got) == model.read(isa.Memory.ABUF, g.y_addr, g.y_words), f"seed {SEED}: GEMM at {g.y_addr}"
    assert rtl[1:] == emu[1:]  # the outputs, and each context's sums in its half of ACC
    print(f"{len(program) - 1} MATMULs: rtl {rtl[0][1]} cycles, model {emu[0][1]}")
    assert rtl[0][1] == emu[0][1]


def test_cycle_model_matches(target):
    """Sequences where a drain outlasts the next MATMUL's streaming (so drains queue), and SYNCs between."""
    config = target.config
    rnd = random.Random(SEED)
    print(f"seed={SEED} {config.name}")
    params = Write(isa.Memory.PBUF, 0, (isa.param_word(0, 1 << 23, -30),) * config.cols)
    sequences = [[(1, 1)], [(24, 1)] * 6, [(30, 9)] * 3, [(5, 3), (1, 1), (9, 2), (3, 1)], [(1, 1), "S", (1, 1)]]
    sequences += [["S" if rnd.random() < 0.1 else (rnd.choice([1, 2, 5, 13, 32]), rnd.choice([1, 1, 2, 4, 9]))
                   for _ in range(rnd.randint(1, 8))] for _ in range(20)]
    for sequence in sequences:
        program = [isa.sync() if step == "S" else _matmul(*step) for step in sequence] + [isa.halt()]
        rtl, _ = _run_both(target, [params], program, [])
        model = CycleModel(config)
        for step in sequence:
            if step == "S":
                model.step(isa.Opcode.SYNC)
            else:
                model.step(isa.Opcode.MATMUL, *step)
        model.step(isa.Opcode.HALT)
        assert rtl[0] == (0b10, model.cycles), sequence


def test_streaming_hides_the_shared_lanes(target):
    """A 9-K-tile MATMUL after another costs its streaming alone, 9 * count cycles, not 8 * count + S * count."""
    config = target.config
    params = Write(isa.Memory.PBUF, 0, (isa.param_word(0, 1 << 23, -30),) * config.cols)
    count = 24
    one, three = (_run_both(target, [params], [_matmul(count, 9)] * n + [isa.halt()], [])[0][0][1] for n in (1, 3))
    print(f"{config.name}: one MATMUL {one} cycles, three {three}")
    assert three - one == 2 * 9 * count
