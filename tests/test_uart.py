# amaranth: UnusedElaboratable=no
"""Check the 8N1 UART pair in Amaranth's simulator: loopback, bit timing, framing errors, overruns.

``ACCEL_SEED`` picks the random seed (default 1); every random test prints it.
"""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from accel.hdl.uart import MIN_DIVISOR, UartRx, UartTx, uart_divisor

from .test_hdl_datapath import rng_for, simulate, stream_put


class Loopback(wiring.Component):
    """Wire a transmitter's line to a receiver's pin (both with the same divisor)."""

    def __init__(self, divisor):
        self.tx = UartTx(divisor)
        self.rx = UartRx(divisor)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx
        m.submodules.rx = self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


async def drive_frame(ctx, pin, byte, period, *, stop=1):
    """Drive one 8N1 frame of ``byte`` on ``pin``, ``period`` clocks per bit (``stop`` = stop bit value)."""
    for level in [0, *((byte >> n) & 1 for n in range(8)), stop]:
        ctx.set(pin, level)
        await ctx.tick().repeat(period)
    ctx.set(pin, 1)


async def collect(ctx, rx, count, *, stall=None, rng=None, limit):
    """Take ``count`` bytes from ``rx.o`` within ``limit`` cycles; stall ``ready`` at random if asked."""
    got = []
    for _ in range(limit):
        ready = 1 if stall is None else int(rng.random() >= stall)
        ctx.set(rx.o.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
        if ready and valid:
            got.append(payload)
            if len(got) == count:
                return got
    return got


@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_loopback_carries_random_bytes(divisor):
    rng = rng_for(divisor)
    data = [int(b) for b in rng.integers(0, 256, 96)] + [0x00, 0xFF, 0x55, 0xAA]
    result = {}

    def make():
        dut = Loopback(divisor)
        stall_rng = rng_for(divisor, 1)

        async def sender(ctx):
            for byte in data:
                await stream_put(ctx, dut.tx.i, byte)

        async def receiver(ctx):
            # Stalls of a few cycles are fine: a byte waits on `o` for up to a frame.
            result["got"] = await collect(ctx, dut.rx, len(data), stall=0.3, rng=stall_rng,
                                          limit=(len(data) + 2) * 10 * divisor + 100)
            result["overruns"] = ctx.get(dut.rx.overruns)
            result["framing"] = ctx.get(dut.rx.framing_errors)

        return dut, [sender, receiver]

    simulate(make)
    assert result["got"] == data
    assert (result["overruns"], result["framing"]) == (0, 0)


def test_tx_bit_timing_is_exact_and_frames_are_back_to_back():
    divisor = 6
    dut = UartTx(divisor)
    levels = []

    async def sender(ctx):
        await stream_put(ctx, dut.i, 0xA5)
        await stream_put(ctx, dut.i, 0x0F)

    async def sampler(ctx):
        while not ctx.get(dut.busy):  # `until` would return one cycle late (pre-edge values)
            await ctx.tick()
        for _ in range(20 * divisor):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()
        assert ctx.get(dut.tx) == 1 and not ctx.get(dut.busy)

    simulate(lambda: (dut, [sender, sampler]))
    bits = [levels[n * divisor:(n + 1) * divisor] for n in range(20)]
    assert all(len(set(b)) == 1 for b in bits), "a bit changed inside its period"
    expected = []
    for byte in (0xA5, 0x0F):
        expected += [0, *((byte >> n) & 1 for n in range(8)), 1]
    assert [b[0] for b in bits] == expected


@pytest.mark.parametrize("sender_period", [98, 100, 102])
def test_rx_tolerates_a_two_percent_baud_mismatch(sender_period):
    rng = rng_for(sender_period)
    data = [int(b) for b in rng.integers(0, 256, 12)]
    dut = UartRx(100)
    result = {}

    async def line(ctx):
        for byte in data:
            await drive_frame(ctx, dut.rx, byte, sender_period)

    async def receiver(ctx):
        result["got"] = await collect(ctx, dut, len(data), limit=(len(data) + 1) * 1100)

    simulate(lambda: (dut, [line, receiver]))
    assert result["got"] == data


def test_rx_drops_a_bad_stop_bit_counts_it_and_recovers():
    divisor = 8
    dut = UartRx(divisor)
    result = {}

    async def line(ctx):
        await drive_frame(ctx, dut.rx, 0x3C, divisor)
        await drive_frame(ctx, dut.rx, 0x00, divisor, stop=0)  # a break: stop bit low
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(3 * divisor)  # the line stays low a while: no new frames
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_frame(ctx, dut.rx, 0xC3, divisor)
        ctx.set(dut.rx, 0)  # a glitch shorter than half a bit is not a start bit
        await ctx.tick().repeat(1)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_frame(ctx, dut.rx, 0x7E, divisor)

    async def receiver(ctx):
        assert ctx.get(dut.framing_error) == 0
        result["got"] = await collect(ctx, dut, 3, limit=60 * divisor)
        result["framing"] = (ctx.get(dut.framing_error), ctx.get(dut.framing_errors))

    simulate(lambda: (dut, [line, receiver]))
    assert result["got"] == [0x3C, 0xC3, 0x7E]
    assert result["framing"] == (1, 1)


def test_rx_counts_an_overrun_and_keeps_the_waiting_byte():
    divisor = 4
    dut = UartRx(divisor)
    result = {}

    async def line(ctx):
        for byte in (0x11, 0x22, 0x33):
            await drive_frame(ctx, dut.rx, byte, divisor)

    async def receiver(ctx):
        ctx.set(dut.o.ready, 0)
        await ctx.tick().repeat(32 * divisor)  # all three frames arrive; nobody takes them
        result["overruns"] = ctx.get(dut.overruns)
        result["got"] = await collect(ctx, dut, 3, limit=4)

    simulate(lambda: (dut, [line, receiver]))
    assert result["overruns"] == 2
    assert result["got"] == [0x11]


@pytest.mark.parametrize("cls", [UartTx, UartRx])
@pytest.mark.parametrize("divisor", [0, MIN_DIVISOR - 1, 4.0, True])
def test_bad_divisors_are_refused(cls, divisor):
    with pytest.raises(ValueError, match=f"divisor must be an integer of at least {MIN_DIVISOR}"):
        cls(divisor)


def test_uart_divisor_rounds_and_reports_the_error():
    assert uart_divisor(12_000_000, 115_200) == (104, pytest.approx(12e6 / 104 / 115200 - 1))
    assert uart_divisor(30_000_000, 3_000_000) == (10, 0.0)
    with pytest.raises(ValueError, match="baud must be a positive integer"):
        uart_divisor(12_000_000, 0)
