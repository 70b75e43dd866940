"""Move bytes over an asynchronous serial line (8N1): :class:`UartTx` and :class:`UartRx`.

Both take ``divisor``, the number of clock cycles per bit (``clock_hz / baud`` rounded; see
:func:`uart_divisor`). Bits go least significant first, framed by one start bit (0) and one
stop bit (1); the idle line is 1. The receiver synchronizes its pin through two flops,
samples each bit in its middle, and drops a byte whose stop bit reads 0 (a framing error,
counted and flagged). Each side faces the rest of the design with an 8-bit stream.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx", "check_divisor", "uart_divisor"]

#: Fewest clocks per bit the receiver accepts: it needs a half bit to find the middle.
MIN_DIVISOR = 4
#: Width of the receiver's error counters (they saturate).
_COUNTER_BITS = 16


def check_divisor(divisor):
    """Raise ``ValueError`` unless ``divisor`` is an integer number of clocks per bit the UART can use."""
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clocks per bit, "
                         f"not {divisor!r}")


def uart_divisor(clock_hz: int, baud: int) -> tuple[int, float]:
    """Return the clocks-per-bit divisor for ``baud`` at ``clock_hz`` and its relative baud error.

    The error is ``(clock_hz / divisor - baud) / baud``; 8N1 needs well under 5% in total
    between both ends, so callers should refuse more than about 2% on one end.
    """
    for name, value in (("clock_hz", clock_hz), ("baud", baud)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    divisor = max(1, round(clock_hz / baud))
    return divisor, (clock_hz / divisor - baud) / baud


class UartTx(wiring.Component):
    """Send each byte offered on ``i`` as one 8N1 frame on ``tx``.

    Frames go back to back while bytes are offered: the next start bit follows the stop bit
    of the previous frame directly.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send; ``ready`` is high while the transmitter is idle and in the last
        cycle of a stop bit.
    tx : ``Out(1)``
        The serial line, 1 when idle; driven straight from a flop.
    busy : ``Out(1)``
        A frame is on the line.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor: int):
        check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        # The frame (start, 8 data, stop) shifts out LSB first; all ones when idle.
        shreg = Signal(10, init=0x3FF)
        bits_left = Signal(range(11))
        timer = Signal(range(self._divisor))

        # Ready while idle, and in the last cycle of a stop bit so frames go back to back.
        last_cycle = (bits_left == 1) & (timer == 0)
        m.d.comb += [
            self.tx.eq(shreg[0]),
            self.busy.eq(bits_left != 0),
            self.i.ready.eq((bits_left == 0) | last_cycle),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                bits_left.eq(10),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif((bits_left != 0) & (timer == 0)):
            m.d.sync += [
                shreg.eq(Cat(shreg[1:], Const(1, 1))),
                bits_left.eq(bits_left - 1),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif(bits_left != 0):
            m.d.sync += timer.eq(timer - 1)
        return m


class UartRx(wiring.Component):
    """Receive 8N1 frames on ``rx`` and offer each good byte on ``o``.

    ``rx`` passes through a two-flop synchronizer. A falling edge starts a frame; the start
    bit is checked half a bit later (a shorter glitch is ignored), and every following bit
    is sampled one ``divisor`` after the previous sample, so in its middle. The receiver is
    ready for the next start edge from the middle of the stop bit, which absorbs a sender
    up to half a bit per frame faster. A byte whose stop bit reads 0 is dropped; the
    receiver then waits for the line to go idle (1) before it looks for a start bit again.

    A byte that completes while the previous one still waits on ``o`` is dropped and
    counted in ``overruns``: the consumer must take each byte within one frame time.

    Members
    -------
    rx : ``In(1)``
        The serial line (asynchronous; 1 when idle).
    o : ``Out(stream.Signature(8))``
        Received bytes.
    framing_error : ``Out(1)``
        Sticky: a stop bit has read 0 since reset.
    framing_errors : ``Out(16)``
        Number of frames dropped for a bad stop bit (saturates).
    overruns : ``Out(16)``
        Number of bytes dropped because ``o`` was still full (saturates).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    framing_errors: Out(_COUNTER_BITS)
    overruns: Out(_COUNTER_BITS)

    def __init__(self, divisor: int):
        check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1, stages=2)

        timer = Signal(range(self._divisor))
        shreg = Signal(8)
        bit = Signal(range(8))
        full = (1 << _COUNTER_BITS) - 1  # the counters saturate here

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):  # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1),
                                 timer.eq(self._divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.o.valid & ~self.o.ready):
                        with m.If(self.overruns != full):
                            m.d.sync += self.overruns.eq(self.overruns + 1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    with m.If(self.framing_errors != full):
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m
