"""Check AcceleratorCore through its host byte streams with random idle cycles and backpressure.

Run from ``test_core.py`` through ``accel.sim.verilator.run``. The design's config comes
in ``$ACCEL_CONFIG`` (JSON). The bench is built from separate parts: a
:class:`RequestDriver` plays request bytes into ``i`` with random idle cycles, a
:class:`ReplyMonitor` collects ``o`` with random backpressure, :class:`HostLinkModel`
predicts every reply from :class:`core_model.CoreModel`, and :class:`ReplyChecker`
compares them. :class:`Testbench` composes them so each test is a few lines.
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from accel import isa
from accel.config import HW_REVISION, HardwareConfig
from accel.runtime import Ident, Paused, Read, Resume, Run, Status, Write, parse_reply, reply_length, request_bytes
from accel.sim.rtl_host import HostLinkDriver

from core_model import CoreModel, place_gemm

IDLE = 0.3           # probability of an idle cycle between request bytes
BACKPRESSURE = 0.3   # probability of o.ready low in a cycle


class RequestDriver:
    """Play bytes into the ``i`` stream; hold ``valid`` and ``payload`` until each byte is taken."""

    def __init__(self, dut, rng, idle):
        self.dut, self.rng, self.idle = dut, rng, idle
        self.pending = bytearray()
        self.holding = False     # valid is high with a byte the core has not taken yet

    def send(self, data: bytes):
        self.pending += data

    def step(self):
        """Drive one cycle (just after a falling edge); return whether a byte will be taken."""
        dut = self.dut
        if self.pending and (self.holding or self.rng.random() >= self.idle):
            dut.i__valid.value = 1
            dut.i__payload.value = self.pending[0]
            taken = bool(int(dut.i__ready.value))   # i.ready depends only on the core's state
            self.holding = not taken
            if taken:
                del self.pending[0]
            return taken
        dut.i__valid.value = 0
        return False


class ReplyMonitor:
    """Collect the bytes of the ``o`` stream, stalling it at random."""

    def __init__(self, dut, rng, backpressure):
        self.dut, self.rng, self.backpressure = dut, rng, backpressure
        self.received = bytearray()
        self.stalls = 0

    def step(self):
        dut = self.dut
        ready = int(self.rng.random() >= self.backpressure)
        dut.o__ready.value = ready
        if int(dut.o__valid.value):
            if ready:
                self.received.append(int(dut.o__payload.value))
            else:
                self.stalls += 1


class HostLinkModel:
    """Predict the core's reply to each host-link operation from a model of its memories."""

    def __init__(self, config: HardwareConfig):
        self.config = config
        self.memories = CoreModel(config)

    def expect(self, op):
        """Return the expected result of ``op`` (``None`` where it cannot be predicted: STATUS cycles)."""
        if isinstance(op, Write):
            self.memories.write(op.mem, op.addr, op.words)
            return None
        if isinstance(op, Read):
            return self.memories.read(op.mem, op.addr, op.count)
        if isinstance(op, Run):
            self.memories.run()
            return None
        if isinstance(op, Ident):
            c = self.config
            return (c.config_id(), HW_REVISION, c.rows, c.cols)
        return "status"


class ReplyChecker:
    """Compare decoded replies with the model's predictions."""

    def __init__(self, log):
        self.log = log
        self.checked = 0

    def check(self, op, got, expected):
        if isinstance(op, Ident):
            got = (got.config_id, got.hw_revision, got.rows, got.cols)
        if isinstance(op, Status):
            status, cycles = got
            assert status == 0b10, f"STATUS after a run: status {status:#04x}, expected done (0x02)"
            assert cycles > 0
            return
        assert got == expected, f"{op!r}: got {got!r}, expected {expected!r}"
        self.checked += 1


class Testbench:
    """Compose driver, monitor, model and checker around one AcceleratorCore."""

    def __init__(self, dut, seed, idle=IDLE, backpressure=BACKPRESSURE):
        self.dut = dut
        self.config = HardwareConfig.from_dict(json.loads(os.environ["ACCEL_CONFIG"]))
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.driver = RequestDriver(dut, self.rng, idle)
        self.monitor = ReplyMonitor(dut, self.rng, backpressure)
        self.model = HostLinkModel(self.config)
        self.checker = ReplyChecker(dut._log)
        self.cycles = 0
        dut._log.info(f"bench seed {seed}, config {self.config.name}")

    async def start(self):
        """Start the clock and reset the core (the rtl engine's driver does it the same way)."""
        await HostLinkDriver(self.dut).start()

    async def raw(self, request: bytes, length: int, max_cycles: int = 200_000) -> bytes:
        """Send raw bytes and return the next ``length`` reply bytes."""
        self.driver.send(request)
        start = len(self.monitor.received)
        for _ in range(max_cycles):
            await FallingEdge(self.dut.clk)
            self.cycles += 1
            if not self.driver.pending and len(self.monitor.received) >= start + length:
                break
            self.driver.step()
            self.monitor.step()
        else:
            raise AssertionError(f"no reply after {max_cycles} cycles: {len(self.driver.pending)} request "
                                 f"bytes unsent, {len(self.monitor.received) - start} of {length} received")
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 0
        reply = bytes(self.monitor.received[start:])
        assert len(reply) == length, f"got {len(reply)} reply bytes, expected {length}"
        return reply

    async def exchange(self, ops):
        """Run the operations as one byte stream; check and return their results."""
        lengths = [reply_length(op, self.config) for op in ops]
        reply = await self.raw(b"".join(request_bytes(op, self.config) for op in ops), sum(lengths))
        results, offset = [], 0
        for op, length in zip(ops, lengths):
            got = parse_reply(op, self.config, reply[offset:offset + length])
            self.checker.check(op, got, self.model.expect(op))
            results.append(got)
            offset += length
        return results


def _random_words(tb, mem, count):
    bits = tb.config.word_bytes(mem.config_field) * 8
    return tuple(tb.rng.getrandbits(bits) for _ in range(count))   # bits past the word are dropped


@cocotb.test()
async def test_ident_and_unknown_commands(dut):
    """IDENT reports the config; unknown commands and memories get 0x5A; the link stays in sync."""
    tb = Testbench(dut, cocotb.RANDOM_SEED)
    await tb.start()
    await tb.exchange([Ident()])
    for command in (0x00, 0x07, 0x7F, 0xA5, 0xFF):
        assert await tb.raw(bytes([command]), 1) == bytes([isa.NACK])
    resume = bytes([isa.Command.RESUME.value])
    assert await tb.raw(resume, 3) == bytes([isa.NACK, 0, 0]), "RESUME with nothing paused"
    header = bytes([isa.Command.READ.value, 9]) + (0).to_bytes(4, "little") + (3).to_bytes(4, "little")
    assert await tb.raw(header, 1) == bytes([isa.NACK]), "READ of memory 9"
    empty_write = bytes([isa.Command.WRITE.value, isa.Memory.ABUF.value]) + bytes(8)
    assert await tb.raw(empty_write, 1) == bytes([isa.ACK]), "WRITE of 0 words"
    await tb.exchange([Read(isa.Memory.ABUF, 5, 0), Ident()])


@cocotb.test()
async def test_stream_pauses_and_resumes(dut):
    """STREAM drains, pauses with its segment, lends the memories to the host, and goes on at its resume PC."""
    tb = Testbench(dut, cocotb.RANDOM_SEED)
    await tb.start()
    R, C = tb.config.rows, tb.config.cols
    w = tb.np_rng.integers(-100, 100, (R, C))
    first = [isa.matmul(w_addr=0, a_addr=0, a_stride=1, count=3, k_tiles=1, p_addr=0, y_addr=8, y_stride=1,
                        y_zp=0, y_lo=-128, y_hi=127, x_signed=1, y_signed=1),
             isa.stream(0x1234, 5)]
    ops = [Write(isa.Memory.IMEM, 0, tuple(first)),
           Write(isa.Memory.WBUF, 0, tuple(isa.pack_values(row, tb.config.weight_bits) for row in w)),
           Write(isa.Memory.PBUF, 0, tuple(isa.param_word(0, 1 << 23, -23) for _ in range(C))),
           Write(isa.Memory.ABUF, 0, tuple(isa.pack_values(tb.np_rng.integers(-9, 9, R), 8) for _ in range(3)))]
    for op in ops:
        tb.model.expect(op)
    await tb.raw(b"".join(request_bytes(op, tb.config) for op in ops), len(ops))
    run = await tb.raw(request_bytes(Run(), tb.config), 3)
    assert parse_reply(Run(), tb.config, run) == Paused(0x1234)
    status, cycles = parse_reply(Status(), tb.config, await tb.raw(request_bytes(Status(), tb.config), 9))
    assert status == 0b101, f"status {status:#04x} while paused, expected busy | paused"
    # the results before the STREAM are written: read them while paused (the host owns the memories)
    tb.model.memories.matmul(isa.decode(first[0]))
    results = await tb.exchange([Read(isa.Memory.ABUF, 8, 3)])
    assert results[0] == tb.model.memories.read(isa.Memory.ABUF, 8, 3)
    # the second segment: a new program at the resume PC
    await tb.exchange([Write(isa.Memory.IMEM, 5, (isa.halt(),))])
    assert parse_reply(Resume(), tb.config, await tb.raw(request_bytes(Resume(), tb.config), 3)) is None
    status, total = parse_reply(Status(), tb.config, await tb.raw(request_bytes(Status(), tb.config), 9))
    assert status == 0b10 and total > cycles, (status, cycles, total)


@cocotb.test()
async def test_memory_round_trips(dut):
    """WRITE then READ random words on every memory, with random stalls and address wrap-around."""
    tb = Testbench(dut, cocotb.RANDOM_SEED)
    await tb.start()
    for mem in isa.Memory:
        depth = getattr(tb.config, mem.config_field).depth
        for addr, count in ((0, 1), (tb.rng.randrange(depth - 8), 7), (depth - 2, 5)):
            await tb.exchange([Write(mem, addr, _random_words(tb, mem, count)), Read(mem, addr, count)])
    # Interleaved writes to all memories in one stream, read back together.
    ops = [Write(mem, 40, _random_words(tb, mem, 3)) for mem in isa.Memory]
    await tb.exchange(ops + [Read(mem, 39, 5) for mem in isa.Memory])
    dut._log.info(f"{tb.checker.checked} replies checked in {tb.cycles} cycles, "
                  f"{tb.monitor.stalls} stalled reply cycles")


@cocotb.test()
async def test_matmul_program(dut):
    """Run a two-layer program (SYNC between) with random stalls; check outputs and accumulators."""
    tb = Testbench(dut, cocotb.RANDOM_SEED)
    await tb.start()
    c = tb.config
    first = place_gemm(c, tb.np_rng, 5, 11, 6, a_addr=0, w_addr=0, p_addr=0, y_addr=100,
                       x_signed=False, y_signed=True)
    second = place_gemm(c, tb.np_rng, 5, 6, 7, a_addr=100, w_addr=200, p_addr=40, y_addr=300,
                        acc_addr=17, x_signed=True, y_signed=False, clamp=(3, 200), write_x=False)
    program = first.instructions + [isa.sync()] + second.instructions + [isa.halt()]
    ops = [Write(mem, addr, tuple(words)) for mem, addr, words in first.writes + second.writes]
    ops += [Write(isa.Memory.IMEM, 0, tuple(program)), Run(), Status(),
            Read(isa.Memory.ABUF, first.y_addr, first.y_words),
            Read(isa.Memory.ABUF, second.y_addr, second.y_words),
            Read(isa.Memory.ACCBUF, 0, 32)]
    await tb.exchange(ops)
    dut._log.info(f"{tb.checker.checked} replies checked in {tb.cycles} cycles")
