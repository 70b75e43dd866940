"""Carry the raw host link of ``docs/isa.md`` over a lossy byte line in framed, checksummed packets.

:class:`FramedLink` sits between a UART's byte streams and the core's raw host-link
streams. It buffers each request frame whole, checks its CRC, and only then replays the
raw request into the core, so a damaged frame is never executed. It collects the core's
reply and sends it back in a reply frame. ``docs/protocol.md`` defines the wire format;
this module holds its constants and :func:`crc16`, which the host driver
(:mod:`accel.driver`) shares.
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SOF", "MAX_PAYLOAD", "MAX_REPLY", "REQUEST_HEADER", "REPLY_HEADER", "CRC_BYTES",
           "LinkCommand", "LinkStatus", "crc16", "FramedLink"]

#: First byte of every frame, in both directions.
SOF = 0x7E
#: Largest request payload (bytes after the header, before the CRC): one 512 x 8 EBR.
MAX_PAYLOAD = 512
#: Largest reply payload: one 512 x 8 EBR.
MAX_REPLY = 512
#: Request header: SOF, length u16, sequence u8, command u8, reply length u16.
REQUEST_HEADER = 7
#: Reply header: SOF, length u16, sequence u8, status u8.
REPLY_HEADER = 5
#: CRC-16/CCITT-FALSE, most significant byte first.
CRC_BYTES = 2

_CRC_POLY = 0x1021
_CRC_INIT = 0xFFFF


class LinkCommand(enum.IntEnum):
    """Number the commands of a request frame (``docs/protocol.md``)."""

    RESET = 0x00     # reset the core and forget the last sequence number -> ACK
    WRITE = 0x01     # raw WRITE: mem u8, addr u32, count u32, words -> raw reply
    READ = 0x02      # raw READ
    RUN = 0x03       # raw RUN
    STATUS = 0x04    # raw STATUS
    IDENT = 0x05     # raw IDENT (config hash, gateware revision)
    RESUME = 0x06    # raw RESUME
    LOAD = 0x07      # load program: addr u32, count u32, words -> replayed as raw WRITE to IMEM
    CYCLES = 0x08    # the link's free-running clock cycle counter -> u32


class LinkStatus(enum.IntEnum):
    """Number the status byte of a reply frame: ACK or a NACK error code."""

    ACK = 0x00
    BAD_CRC = 0x01       # the frame's CRC did not match; nothing was executed
    TOO_LONG = 0x02      # length or reply length above the buffers; the frame was dropped
    TRUNCATED = 0x03     # the line went quiet in the middle of a frame
    BAD_COMMAND = 0x04   # unknown command byte; nothing was executed
    CORE_TIMEOUT = 0x05  # the core stopped moving bytes; it was reset


#: Commands replayed into the core (LOAD becomes WRITE to IMEM).
_REPLAYED = (LinkCommand.WRITE, LinkCommand.READ, LinkCommand.RUN, LinkCommand.STATUS,
             LinkCommand.IDENT, LinkCommand.RESUME, LinkCommand.LOAD)
_RAW_WRITE = 0x01
_IMEM = 0x00


def crc16(data: bytes, crc: int = _CRC_INIT) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF, no reflection, no xorout).

    Appending the result most significant byte first makes the CRC of the whole zero.
    """
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _crc16_next(crc, byte):
    """Return the Amaranth expression of ``crc`` after one more ``byte`` (unrolled, 8 bits)."""
    bits = [crc[n] for n in range(16)]
    for n in range(7, -1, -1):
        feedback = bits[15] ^ byte[n]
        shifted = [Const(0, 1)] + bits[:15]
        bits = [shifted[k] ^ feedback if (_CRC_POLY >> k) & 1 else shifted[k] for k in range(16)]
    return Cat(*bits)


class FramedLink(wiring.Component):
    """Check request frames from ``i``, replay good ones into the core, and frame its replies on ``o``.

    ``FramedLink(config)`` fits the board top's link-stage factory (``link=FramedLink``);
    the config only sets the default timeout, ``2**timeout_bits`` cycles of about 4 ms.

    One frame is handled at a time (stop-and-wait). Bytes arriving while a frame executes
    or its reply goes out are dropped. A frame whose sequence number equals that of the
    last executed frame is answered again from the reply buffer without executing it
    (a retransmission after a lost reply); ``RESET`` forgets that number. If no byte
    arrives for ``2**timeout_bits`` cycles in the middle of a frame, the frame is dropped
    and answered with ``TRUNCATED``; if the core neither takes nor gives a byte for that
    long while it is not busy, it is reset and the frame answered with ``CORE_TIMEOUT``.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes from the line (a UART receiver). Always ready.
    o : ``Out(stream.Signature(8))``
        Bytes to the line (a UART transmitter).
    core_i : ``Out(stream.Signature(8))``
        Raw request bytes to the core's ``i``.
    core_o : ``In(stream.Signature(8))``
        Raw reply bytes from the core's ``o``. Always ready: bytes past the expected reply
        length, or outside a command, are dropped.
    core_busy : ``In(1)``
        The core is running a program (pauses the core timeout).
    core_reset : ``Out(1)``
        One-cycle pulse: reset the core (``RESET``, or after a core timeout).
    frame_error : ``Out(1)``
        One-cycle pulse for each damaged frame (for a status LED).
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    core_i: Out(stream.Signature(8))
    core_o: In(stream.Signature(8))
    core_busy: In(1)
    core_reset: Out(1)
    frame_error: Out(1)

    def __init__(self, config=None, *, timeout_bits: int | None = None):
        if timeout_bits is None:
            # About 4 ms: longer than a USB bridge's gaps inside a frame, short enough to retry fast.
            clock_hz = 30_000_000 if config is None else config.clock_hz
            timeout_bits = max(4, (clock_hz // 250).bit_length())
        if not isinstance(timeout_bits, int) or not 4 <= timeout_bits <= 32:
            raise ValueError(f"timeout_bits must be an integer from 4 to 32, not {timeout_bits!r}")
        self._timeout_bits = timeout_bits
        super().__init__()

    @property
    def timeout_bits(self) -> int:
        return self._timeout_bits

    @property
    def timeout_cycles(self) -> int:
        """Return the cycles of silence after which a frame or a command is abandoned."""
        return 1 << self._timeout_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_mem = rx_mem = Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        m.submodules.tx_mem = tx_mem = Memory(shape=8, depth=MAX_REPLY, init=[])
        rx_w, rx_r = rx_mem.write_port(), rx_mem.read_port(transparent_for=())
        tx_w, tx_r = tx_mem.write_port(), tx_mem.read_port(transparent_for=())

        crc = Signal(16, init=_CRC_INIT)
        length = Signal(range(MAX_PAYLOAD + 1))      # request payload bytes
        rlen = Signal(range(MAX_REPLY + 1))          # expected raw reply bytes
        seq = Signal(8)
        cmd = Signal(8)
        hi = Signal(8)                               # high byte of a u16 being received
        count = Signal(range(MAX_PAYLOAD + 2))       # bytes moved in the current phase
        got = Signal(range(MAX_REPLY + 1))           # reply bytes collected
        last_seq = Signal(8)
        have_last = Signal()
        status = Signal(8)                           # of the stored reply
        reply_len = Signal(range(MAX_REPLY + 1))     # of the stored reply
        nack = Signal(8)                             # nonzero: answer this NACK, not the stored reply
        timer = Signal(self._timeout_bits + 1)
        expired = timer[-1]
        cycles = Signal(32)
        count_next = Signal.like(count)
        m.d.comb += count_next.eq(count + 1)
        hold_cycles = Signal()                       # the counter stands still while CYCLES reads it
        with m.If(~hold_cycles):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.sync += timer.eq(timer + ~expired)
        m.d.comb += self.core_o.ready.eq(1)

        in_byte = self.i.payload
        # One CRC network for both directions: received bytes, or the byte being sent.
        sending = Signal()
        crc_in = _crc16_next(crc, Mux(sending, self.o.payload, in_byte))
        m.d.comb += self.i.ready.eq(1)

        def restart_timer():
            m.d.sync += timer.eq(0)

        def fail(code):
            m.d.sync += nack.eq(code)
            m.d.comb += self.frame_error.eq(1)
            m.next = "SEND_SOF"

        # -- datapath shared by the states ------------------------------------------------
        replayed = Signal()
        raw_cmd = Signal(8)
        m.d.comb += [replayed.eq(Cat(*(cmd == command for command in _REPLAYED)).any()),
                     raw_cmd.eq(Mux(cmd == LinkCommand.LOAD, _RAW_WRITE, cmd)),
                     rx_w.addr.eq(count), rx_w.data.eq(in_byte)]
        # Reply bytes go to the reply buffer while `collect` (the replay states).
        collect = Signal()
        m.d.comb += [tx_w.addr.eq(got), tx_w.data.eq(self.core_o.payload)]
        with m.If(self.core_o.valid & (got != rlen) & collect):
            m.d.comb += tx_w.en.eq(1)
            m.d.sync += got.eq(got + 1)
            restart_timer()
        with m.If(self.core_busy):
            restart_timer()
        # Both buffers are read one byte ahead: rx_r.data / tx_r.data is byte `count`.
        advance = Signal()
        read_addr = Mux(advance, count_next, count)
        m.d.comb += [rx_r.addr.eq(read_addr), rx_r.en.eq(1), tx_r.addr.eq(read_addr), tx_r.en.eq(1)]
        # The reply: nack != 0 sends that NACK without data, else the stored reply.
        out_len = Signal(range(MAX_REPLY + 1))
        out_status = Signal(8)
        m.d.comb += [out_len.eq(reply_len), out_status.eq(status)]
        with m.If(nack != 0):
            m.d.comb += [out_len.eq(0), out_status.eq(nack)]
        out_fire = self.o.valid & self.o.ready

        def receive(name, action):
            """Add a state that takes one frame byte, runs ``action()`` and restarts the timer."""
            with m.State(name):
                with m.If(self.i.valid):
                    m.d.sync += crc.eq(crc_in)
                    restart_timer()
                    action()
                with m.Elif(expired):
                    fail(LinkStatus.TRUNCATED)

        def goto(state):
            def action():
                m.next = state
            return action

        def core_timeout():
            with m.If(expired & ~self.core_busy):
                m.d.comb += self.core_reset.eq(1)
                m.d.sync += [status.eq(LinkStatus.CORE_TIMEOUT), reply_len.eq(0)]
                m.next = "SEND_SOF"

        def send(name, byte, action, *, crc_update=True, first=False):
            """Add a state that sends ``byte`` on ``o`` and then runs ``action()``."""
            with m.State(name):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(byte), sending.eq(1)]
                with m.If(out_fire):
                    if first:
                        m.d.sync += [crc.eq(_CRC_INIT), count.eq(0)]
                    elif crc_update:
                        m.d.sync += crc.eq(crc_in)
                    action()

        with m.FSM():
            # -- receive ---------------------------------------------------------------
            with m.State("HUNT"):
                with m.If(self.i.valid & (in_byte == SOF)):
                    m.d.sync += [crc.eq(_CRC_INIT), nack.eq(0), count.eq(0)]
                    restart_timer()
                    m.next = "LEN_LO"

            def len_hi():
                m.d.sync += length.eq(Cat(hi, in_byte))
                with m.If(Cat(hi, in_byte) > MAX_PAYLOAD):
                    fail(LinkStatus.TOO_LONG)
                with m.Else():
                    m.next = "SEQ"

            def rlen_hi():
                m.d.sync += rlen.eq(Cat(hi, in_byte))
                with m.If(Cat(hi, in_byte) > MAX_REPLY):
                    fail(LinkStatus.TOO_LONG)
                with m.Elif(length == 0):
                    m.next = "CRC_HI"
                with m.Else():
                    m.next = "DATA"

            def data():
                m.d.comb += rx_w.en.eq(1)
                m.d.sync += count.eq(count_next)
                with m.If(count_next == length):
                    m.next = "CRC_HI"

            def crc_lo():
                with m.If(crc_in != 0):
                    fail(LinkStatus.BAD_CRC)
                with m.Else():
                    m.next = "CHECK"

            def keep(signal, state):
                def action():
                    m.d.sync += signal.eq(in_byte)
                    m.next = state
                return action

            receive("LEN_LO", keep(hi, "LEN_HI"))
            receive("LEN_HI", len_hi)
            receive("SEQ", keep(seq, "CMD"))
            receive("CMD", keep(cmd, "RLEN_LO"))
            receive("RLEN_LO", keep(hi, "RLEN_HI"))
            receive("RLEN_HI", rlen_hi)
            receive("DATA", data)
            receive("CRC_HI", goto("CRC_LO"))
            receive("CRC_LO", crc_lo)

            # -- execute ---------------------------------------------------------------
            with m.State("CHECK"):
                m.d.sync += [count.eq(0), got.eq(0)]
                restart_timer()
                with m.If(cmd == LinkCommand.RESET):
                    m.d.comb += self.core_reset.eq(1)
                    m.d.sync += [have_last.eq(0), status.eq(LinkStatus.ACK), reply_len.eq(0)]
                    m.next = "SEND_SOF"
                with m.Elif(have_last & (seq == last_seq)):
                    m.next = "SEND_SOF"                  # a retransmission: answer it again
                with m.Elif(cmd == LinkCommand.CYCLES):
                    m.d.comb += hold_cycles.eq(1)
                    m.d.sync += [have_last.eq(1), last_seq.eq(seq), status.eq(LinkStatus.ACK), reply_len.eq(4)]
                    m.next = "SNAPSHOT"
                with m.Elif(replayed):
                    m.d.sync += [have_last.eq(1), last_seq.eq(seq)]
                    m.next = "REPLAY_CMD"
                with m.Else():
                    fail(LinkStatus.BAD_COMMAND)
            with m.State("SNAPSHOT"):
                # Four cycles, one byte each, with the counter held: a consistent value.
                m.d.comb += [tx_w.addr.eq(count), tx_w.data.eq(cycles.word_select(count[:2], 8)), tx_w.en.eq(1),
                             hold_cycles.eq(1)]
                m.d.sync += count.eq(count_next)
                with m.If(count == 3):
                    m.next = "SEND_SOF"

            def replay(name, byte, action):
                """Add a state that offers ``byte`` to the core and runs ``action()`` when it is taken."""
                with m.State(name):
                    m.d.comb += [collect.eq(1), self.core_i.valid.eq(1), self.core_i.payload.eq(byte)]
                    with m.If(self.core_i.ready):
                        restart_timer()
                        action()
                    core_timeout()

            def to_payload():
                with m.If(length == 0):
                    m.next = "REPLAY_WAIT"
                with m.Else():
                    m.next = "REPLAY_DATA"

            def after_cmd():
                with m.If(cmd == LinkCommand.LOAD):
                    m.next = "REPLAY_MEM"
                with m.Else():
                    to_payload()

            def step(last, state):
                """Return an action that moves to the next buffered byte, and to ``state`` after ``last``."""
                def action():
                    m.d.comb += advance.eq(1)
                    m.d.sync += count.eq(count_next)
                    with m.If(count_next == last):
                        m.next = state
                return action

            replay("REPLAY_CMD", raw_cmd, after_cmd)
            replay("REPLAY_MEM", _IMEM, to_payload)
            replay("REPLAY_DATA", rx_r.data, step(length, "REPLAY_WAIT"))
            with m.State("REPLAY_WAIT"):
                m.d.comb += collect.eq(1)
                with m.If(got == rlen):
                    m.d.sync += [status.eq(LinkStatus.ACK), reply_len.eq(rlen)]
                    m.next = "SEND_SOF"
                with m.Else():
                    core_timeout()

            # -- reply -----------------------------------------------------------------
            def after_status():
                with m.If(out_len == 0):
                    m.next = "SEND_CRC_HI"
                with m.Else():
                    m.next = "SEND_DATA"

            send("SEND_SOF", SOF, goto("SEND_LEN_LO"), first=True)
            send("SEND_LEN_LO", out_len[:8], goto("SEND_LEN_HI"))
            send("SEND_LEN_HI", out_len[8:], goto("SEND_SEQ"))
            send("SEND_SEQ", seq, goto("SEND_STATUS"))
            send("SEND_STATUS", out_status, after_status)
            send("SEND_DATA", tx_r.data, step(out_len, "SEND_CRC_HI"))
            send("SEND_CRC_HI", crc[8:], goto("SEND_CRC_LO"), crc_update=False)
            send("SEND_CRC_LO", crc[:8], goto("HUNT"), crc_update=False)
        return m
